/**
 * Issue 4, point 2: a run executes on the in-process queue (real
 * graphile-worker, LISTEN on): queued → running → succeeded with its attempt,
 * instance and usage; every event in run_events with seq 1..n; deltas
 * written through, coalesced only while a write is in flight; exactly one
 * assistant message holding the streamed text.
 */
import { describe, it, expect, vi } from "vitest";
import { createEventWriter, MAX_DELTA_CHARS } from "../server/queue/runEvents.js";
import { assistantMessages, jobsOf, newConversation, postRun, runEvents, runRow, scriptOf, useQueueFixture, waitFor, waitForNoJob, waitForStatus, type EventRow } from "./helpers/queue.js";

const fx = useQueueFixture({ queue: { listener: true, env: { RETRY_ATTEMPTS: "2" } } });

/** seq is 1..n without gaps and runs.last_seq is n. */
async function expectGaplessSeq(runId: string, events: EventRow[]) {
  expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
  expect((await runRow(fx.db, runId)).last_seq).toBe(events.length);
}

describe("execute (point 2)", () => {
  it("runs queued → running → succeeded, storing every event and one assistant message", async () => {
    const client = fx.api.client();
    const conv = await newConversation(client);
    const deltas = Array.from({ length: 30 }, (_, i) => `tok${i} `);
    const posted = await postRun(client, conv, scriptOf({ gate: "exec", text: deltas, delayMs: 5, usage: { promptTokens: 12, completionTokens: 34 } }));
    expect(posted.status).toBe("queued");
    const { runId } = posted;

    // Running, held at the gate (after routing): the run is claimed for this instance's first attempt.
    await waitFor("the route event", async () => (await runEvents(fx.db, runId)).some((e) => e.type === "route"));
    const running = await runRow(fx.db, runId);
    expect(running).toMatchObject({ status: "running", attempt: 1, failures: 0, instance_id: fx.q.instanceId, agent: "scripted" });
    expect(running.started_at).toBeInstanceOf(Date);
    expect((await client.get(`/api/runs/${runId}`)).body.status).toBe("running");

    fx.agents.open("exec");
    const done = await waitForStatus(fx.db, runId, ["succeeded", "failed", "cancelled"]);
    expect(done).toMatchObject({
      status: "succeeded",
      attempt: 1,
      failures: 0,
      instance_id: fx.q.instanceId,
      agent: "scripted",
      route_reason: "scripted by the test",
      prompt_tokens: 12,
      completion_tokens: 34,
      error_code: null,
    });
    expect(done.finished_at).toBeInstanceOf(Date);
    const dto = (await client.get(`/api/runs/${runId}`)).body;
    expect(dto).toMatchObject({ status: "succeeded", attempt: 1, failures: 0, agent: "scripted", error: null, usage: { promptTokens: 12, completionTokens: 34 } });

    const events = await runEvents(fx.db, runId);
    await expectGaplessSeq(runId, events);
    expect(events.every((e) => e.attempt === 1)).toBe(true);
    expect(events[0]).toMatchObject({ type: "status", data: { status: "running", attempt: 1, of: 3 } });
    expect(events[1]).toMatchObject({ type: "route", data: { agent: "scripted", reason: "scripted by the test" } });
    const texts = events.filter((e) => e.type === "text.delta").map((e) => e.data.text as string);
    // Written through: at most one row per delta (fewer when deltas came while a write was in flight), the same text in the same order.
    expect(texts.length).toBeGreaterThan(0);
    expect(texts.length).toBeLessThanOrEqual(deltas.length);
    expect(texts.join("")).toBe(deltas.join(""));
    expect(events.map((e) => e.type)).toEqual(["status", "route", ...texts.map(() => "text.delta"), "usage", "done"]);
    expect(events.at(-2)?.data).toEqual({ promptTokens: 12, completionTokens: 34 });

    const answers = await assistantMessages(fx.db, runId);
    expect(answers).toEqual([{ id: expect.any(String), content: deltas.join(""), agent: "scripted" }]);
    expect(events.at(-1)?.data).toEqual({ messageId: answers[0]?.id });
    const page = (await client.get(`/api/conversations/${conv}/messages`)).body;
    expect(page.items.map((m: { role: string; content: string; runId: string | null }) => [m.role, m.runId])).toEqual([
      ["user", null],
      ["assistant", runId],
    ]);
    // The job is done with.
    await waitForNoJob(fx.db, runId);
    expect(fx.agents.callsFor(runId)).toHaveLength(1);
  });

  it("runs streaming side by side each get their own gapless seq and one answer", async () => {
    const client = fx.api.client();
    const conv = await newConversation(client);
    const runIds: string[] = [];
    for (let i = 0; i < 6; i++) {
      const text = Array.from({ length: 8 }, (_, k) => `r${i}-${k};`);
      runIds.push((await postRun(client, conv, scriptOf({ text, delayMs: 15 }))).runId);
    }
    for (const runId of runIds) {
      expect((await waitForStatus(fx.db, runId, ["succeeded", "failed", "cancelled"])).status).toBe("succeeded");
      const events = await runEvents(fx.db, runId);
      await expectGaplessSeq(runId, events);
      const i = runIds.indexOf(runId);
      const expected = Array.from({ length: 8 }, (_, k) => `r${i}-${k};`).join("");
      expect(events.filter((e) => e.type === "text.delta").map((e) => e.data.text as string).join("")).toBe(expected);
      expect((await assistantMessages(fx.db, runId)).map((m) => m.content)).toEqual([expected]);
      // No usage reported: none stored.
      expect(await runRow(fx.db, runId)).toMatchObject({ prompt_tokens: null, completion_tokens: null });
    }
  });

  it("an attempt that another attempt has taken over from (recovered elsewhere) writes no answer", async () => {
    const client = fx.api.client();
    const conv = await newConversation(client);
    const { runId } = await postRun(client, conv, scriptOf({ gate: "superseded", text: ["stale answer"] }));
    await waitFor("the route event", async () => (await runEvents(fx.db, runId)).some((e) => e.type === "route"));
    // What recovery and a second instance's claim leave behind: the run belongs to attempt 2 now.
    await fx.db.pool.query("update runs set attempt = 2, instance_id = 'elsewhere' where id = $1", [runId]);
    fx.agents.open("superseded");
    await waitFor("the first attempt to end", () => fx.agents.callsFor(runId)[0]?.endedAt !== undefined);
    await waitFor("the job to be done with", async () => (await jobsOf(fx.db, runId)).length === 0);
    expect(await runRow(fx.db, runId)).toMatchObject({ status: "running", attempt: 2, instance_id: "elsewhere" });
    expect(await assistantMessages(fx.db, runId)).toEqual([]);
    expect((await runEvents(fx.db, runId)).map((e) => e.type)).not.toContain("done");
    await fx.db.pool.query("update runs set status = 'cancelled', finished_at = now() where id = $1", [runId]);
  });
});

/**
 * The event writer's contract (issue 5's "chunk sent → delta stored"): a
 * delta is written as soon as it comes when no write is in flight; what comes
 * while one is in flight is coalesced into the next single write. Shown on a
 * finished run of the queue's (its attempt 1 is the writer's), with the
 * database write held slow by a lock on the run's row.
 */
describe("event writer: write-through with coalescing", () => {
  const APPEND_WAITING = `select count(*)::int as n from pg_stat_activity
    where datname = current_database() and wait_event_type = 'Lock' and query like '%insert into run_events%'`;

  /** A run the queue is done with (failed at once), and its last seq. */
  async function finishedRun(): Promise<{ runId: string; lastSeq: number }> {
    const client = fx.api.client();
    const conv = await newConversation(client);
    const { runId } = await postRun(client, conv, scriptOf({ fail: { code: "bad_input", message: "no", retryable: false } }));
    await waitForStatus(fx.db, runId, ["failed"]);
    await waitForNoJob(fx.db, runId);
    return { runId, lastSeq: (await runRow(fx.db, runId)).last_seq };
  }

  it("stores a delta without waiting for a timer or a flush when no write is in flight", async () => {
    const { runId, lastSeq } = await finishedRun();
    const writer = createEventWriter(fx.db.pool, runId, 1);
    // With timers frozen, a delta held for a batch window would never be written.
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] });
    try {
      writer.delta("at once");
      let stored: EventRow[] = [];
      for (let i = 0; i < 2000 && stored.length === 0; i++) stored = (await runEvents(fx.db, runId)).filter((e) => e.seq > lastSeq);
      expect(stored).toEqual([{ seq: lastSeq + 1, attempt: 1, type: "text.delta", data: { text: "at once" } }]);
    } finally {
      vi.useRealTimers();
    }
    await writer.flush();
  });

  it("with a write held slow, coalesces what comes meanwhile into one next write: few rows, order and text kept, one write in flight", async () => {
    const { runId, lastSeq } = await finishedRun();
    const writer = createEventWriter(fx.db.pool, runId, 1);
    const lock = await fx.db.pool.connect();
    try {
      await lock.query("begin");
      await lock.query("select 1 from runs where id = $1 for update", [runId]);
      writer.delta("first ");
      // The first delta's write is issued at once and waits on the lock.
      await waitFor("the first write to wait on the lock", async () => (await fx.db.pool.query(APPEND_WAITING)).rows[0].n === 1);
      const chunk = "x".repeat(99) + " ";
      const burst = Array.from({ length: 50 }, () => chunk);
      for (const c of burst) writer.delta(c);
      writer.event("usage", { promptTokens: 1, completionTokens: 2 });
      const tail = Array.from({ length: 10 }, (_, i) => `t${i} `);
      for (const c of tail) writer.delta(c);
      // Everything after the first is waiting in memory, not in a second write.
      expect((await fx.db.pool.query(APPEND_WAITING)).rows[0].n).toBe(1);
      await lock.query("commit");
    } finally {
      lock.release();
    }
    await writer.flush();

    const stored = (await runEvents(fx.db, runId)).filter((e) => e.seq > lastSeq);
    expect(stored.map((e) => e.seq)).toEqual(stored.map((_, i) => lastSeq + 1 + i));
    const types = stored.map((e) => e.type);
    // "first ", the burst (5,000 characters: two events of at most MAX_DELTA_CHARS), usage, the tail in one.
    expect(types).toEqual(["text.delta", "text.delta", "text.delta", "usage", "text.delta"]);
    const texts = stored.map((e) => (e.type === "text.delta" ? (e.data.text as string) : ""));
    expect(texts[0]).toBe("first ");
    expect(texts[1]! + texts[2]!).toBe("x".repeat(99).concat(" ").repeat(50));
    expect(Math.max(...texts.map((t) => t.length))).toBeLessThanOrEqual(MAX_DELTA_CHARS);
    expect(stored[3]?.data).toEqual({ promptTokens: 1, completionTokens: 2 });
    expect(texts[4]).toBe(Array.from({ length: 10 }, (_, i) => `t${i} `).join(""));
    expect((await runRow(fx.db, runId)).last_seq).toBe(lastSeq + stored.length);
  });

  it("hands back what is unwritten when closed, after the write in flight, and writes nothing more", async () => {
    const { runId, lastSeq } = await finishedRun();
    const writer = createEventWriter(fx.db.pool, runId, 1);
    const lock = await fx.db.pool.connect();
    let closing: ReturnType<typeof writer.close>;
    try {
      await lock.query("begin");
      await lock.query("select 1 from runs where id = $1 for update", [runId]);
      writer.delta("written ");
      await waitFor("the first write to wait on the lock", async () => (await fx.db.pool.query(APPEND_WAITING)).rows[0].n === 1);
      writer.delta("left ");
      writer.delta("over");
      closing = writer.close();
      await lock.query("commit");
    } finally {
      lock.release();
    }
    expect(await closing).toEqual({ events: [{ type: "text.delta", data: { text: "left over" } }], route: null });
    writer.delta("after close");
    await writer.flush();
    const stored = (await runEvents(fx.db, runId)).filter((e) => e.seq > lastSeq);
    expect(stored.map((e) => e.data.text)).toEqual(["written "]);
  });
});

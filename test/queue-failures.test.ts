/**
 * Issue 4, point 3: failures count, interruptions do not. Retryable agent
 * failures and timeouts retry up to RETRY_ATTEMPTS (our count in
 * runs.failures, with backoff that honours retryAfterMs), then the run fails
 * with a stable code; a non-retryable failure fails at once; each retry starts
 * with `reset {attempt}`. A queue stopped mid-run hands the run back to
 * `queued` without counting, and another queue completes it once.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { assistantMessages, jobsOf, postRun, runEvents, runRow, scriptOf, startTestQueue, useQueueFixture, waitFor, waitForNoJob, waitForStatus, type EventRow, type TestQueue } from "./helpers/queue.js";
import { RunAborted } from "../server/queue/executeRun.js";

const fx = useQueueFixture();
const FINISHED = ["succeeded", "failed", "cancelled"];

/**
 * Event types grouped by attempt. A failed attempt's text may or may not have
 * been written before it failed (what was still batched is dropped: the next
 * attempt's reset drops it on the client anyway), so `text` says whether to
 * keep text.delta events.
 */
const typesByAttempt = (events: EventRow[], text = true) => {
  const out: Record<number, string[]> = {};
  for (const e of events) if (text || e.type !== "text.delta") (out[e.attempt] ??= []).push(e.type);
  return out;
};

describe("failures count (RETRY_ATTEMPTS=2, JOB_TIMEOUT_MS=400)", () => {
  let q: TestQueue;
  beforeAll(async () => {
    q = await startTestQueue(fx.db, fx.agents.orchestrator, { env: { RETRY_ATTEMPTS: "2", JOB_TIMEOUT_MS: "400" } });
  });
  afterAll(async () => {
    await q?.stop();
  });

  // The runs below wait out real backoffs (1 s, 2 s); they run side by side.
  describe.concurrent("", () => {
    it("a retryable failure is retried RETRY_ATTEMPTS times, then the run fails with its code and message", async ({ expect }) => {
      const fail = { code: "provider_unavailable", message: "The model provider is unavailable", retryable: true };
      const { runId } = await postRun(fx.client, fx.conv, scriptOf({ text: ["partial "], fail }));
      const run = await waitForStatus(fx.db, runId, FINISHED);
      expect(run).toMatchObject({ status: "failed", failures: 3, attempt: 3, error_code: fail.code, error_message: fail.message });
      expect(run.finished_at).toBeInstanceOf(Date);
      expect(fx.agents.callsFor(runId).map((c) => c.attempt)).toEqual([1, 2, 3]);
      expect((await fx.client.get(`/api/runs/${runId}`)).body).toMatchObject({ status: "failed", failures: 3, error: { code: fail.code, message: fail.message } });

      const events = await runEvents(fx.db, runId);
      expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
      expect(typesByAttempt(events, false)).toEqual({
        1: ["status", "route", "status"],
        2: ["reset", "status", "route", "status"],
        3: ["reset", "status", "route", "failed"],
      });
      const retrying = events.filter((e) => e.type === "status" && e.data.status === "retrying").map((e) => e.data);
      expect(retrying).toMatchObject([
        { attempt: 2, of: 3, reason: fail.message },
        { attempt: 3, of: 3, reason: fail.message },
      ]);
      expect(events.filter((e) => e.type === "reset").map((e) => e.data)).toEqual([{ attempt: 2 }, { attempt: 3 }]);
      expect(events.at(-1)?.data).toEqual({ code: fail.code, message: fail.message });
      expect(await assistantMessages(fx.db, runId)).toEqual([]);
      await waitForNoJob(fx.db, runId);
    });

    it("a timeout counts as a failure with code timeout", async ({ expect }) => {
      const { runId } = await postRun(fx.client, fx.conv, scriptOf({ hang: true }));
      const run = await waitForStatus(fx.db, runId, FINISHED);
      expect(run).toMatchObject({ status: "failed", failures: 3, attempt: 3, error_code: "timeout" });
      const calls = fx.agents.callsFor(runId);
      expect(calls).toHaveLength(3);
      for (const c of calls) {
        expect(c.outcome).toBe("aborted");
        expect(c.abortReason).toBeInstanceOf(RunAborted);
        expect((c.abortReason as RunAborted).kind).toBe("timeout");
      }
      const events = await runEvents(fx.db, runId);
      expect(events.filter((e) => e.type === "reset").map((e) => e.data)).toEqual([{ attempt: 2 }, { attempt: 3 }]);
      expect(events.at(-1)).toMatchObject({ type: "failed", attempt: 3, data: { code: "timeout" } });
      expect(await assistantMessages(fx.db, runId)).toEqual([]);
    });

    it("a non-retryable failure fails the run at once", async ({ expect }) => {
      const fail = { code: "bad_input", message: "That cannot be answered", retryable: false };
      const { runId } = await postRun(fx.client, fx.conv, scriptOf({ fail }, { text: ["never"] }));
      const run = await waitForStatus(fx.db, runId, FINISHED);
      expect(run).toMatchObject({ status: "failed", failures: 1, attempt: 1, error_code: fail.code, error_message: fail.message });
      expect(fx.agents.callsFor(runId)).toHaveLength(1);
      const events = await runEvents(fx.db, runId);
      expect(events.map((e) => e.type)).toEqual(["status", "route", "failed"]);
      expect(await assistantMessages(fx.db, runId)).toEqual([]);
      await waitForNoJob(fx.db, runId);
    });

    it("the retry waits for retryAfterMs; the next attempt starts with reset and answers once", async ({ expect }) => {
      const fail = { code: "rate_limited", message: "The provider asked us to slow down", retryable: true, retryAfterMs: 2500 };
      const { runId } = await postRun(fx.client, fx.conv, scriptOf({ text: ["half an "], fail }, { text: ["a whole ", "answer"] }));

      // Between the attempts: queued, the failure counted, the job due no sooner than retryAfterMs.
      const between = await waitFor("the first failure", async () => {
        const row = await runRow(fx.db, runId);
        return row.failures > 0 || FINISHED.includes(row.status) ? row : undefined;
      });
      expect(between).toMatchObject({ status: "queued", failures: 1, attempt: 1, error_code: fail.code });
      const [first] = fx.agents.callsFor(runId);
      const failedAt = first?.failedAtMs ?? Infinity;
      const [job] = await jobsOf(fx.db, runId);
      expect(job?.locked_at).toBeNull();
      expect(job?.run_at.getTime()).toBeGreaterThanOrEqual(failedAt + fail.retryAfterMs);
      const retrying = (await runEvents(fx.db, runId)).at(-1);
      expect(retrying).toMatchObject({ type: "status", data: { status: "retrying", attempt: 2, of: 3 } });
      expect(Date.parse(retrying?.data.until as string)).toBe(job?.run_at.getTime());

      const run = await waitForStatus(fx.db, runId, FINISHED);
      expect(run).toMatchObject({ status: "succeeded", failures: 1, attempt: 2, error_code: null, error_message: null });
      const calls = fx.agents.callsFor(runId);
      expect(calls.map((c) => c.attempt)).toEqual([1, 2]);
      expect(calls[1]?.startedAtMs).toBeGreaterThanOrEqual(job?.run_at.getTime() ?? Infinity);

      const events = await runEvents(fx.db, runId);
      expect(typesByAttempt(events, false)).toEqual({
        1: ["status", "route", "status"],
        2: ["reset", "status", "route", "done"],
      });
      expect(events.filter((e) => e.attempt === 2 && e.type === "text.delta").map((e) => e.data.text as string).join("")).toBe("a whole answer");
      expect(events.find((e) => e.type === "reset")?.data).toEqual({ attempt: 2 });
      expect((await assistantMessages(fx.db, runId)).map((m) => m.content)).toEqual(["a whole answer"]);
    });
  });
});

describe("interruptions do not count", () => {
  it("a queue stopped mid-run hands the run back to queued uncounted; another queue completes it once", async () => {
    const first = await startTestQueue(fx.db, fx.agents.orchestrator, { graceMs: 100, env: { RETRY_ATTEMPTS: "2" } });
    let second: TestQueue | undefined;
    try {
      const { runId } = await postRun(fx.client, fx.conv, scriptOf({ text: ["partial "], hang: true }, { text: ["the full ", "answer"] }));
      await waitFor("the first attempt's text to be stored", async () => (await runEvents(fx.db, runId)).some((e) => e.type === "text.delta"));
      await first.stop();

      const call = fx.agents.callsFor(runId)[0];
      expect(call?.outcome).toBe("aborted");
      expect((call?.abortReason as RunAborted).kind).toBe("shutdown");
      const handedBack = await runRow(fx.db, runId);
      expect(handedBack).toMatchObject({ status: "queued", failures: 0, attempt: 1, instance_id: null, error_code: null });
      expect((await runEvents(fx.db, runId)).at(-1)).toMatchObject({ type: "status", attempt: 1, data: { status: "queued", reason: "interrupted" } });
      const jobs = await jobsOf(fx.db, runId);
      expect(jobs).toHaveLength(1);
      expect(jobs[0]?.locked_at).toBeNull();

      second = await startTestQueue(fx.db, fx.agents.orchestrator, { env: { RETRY_ATTEMPTS: "2" } });
      const run = await waitForStatus(fx.db, runId, FINISHED);
      expect(run).toMatchObject({ status: "succeeded", failures: 0, attempt: 2, instance_id: second.instanceId });
      expect((await assistantMessages(fx.db, runId)).map((m) => m.content)).toEqual(["the full answer"]);
      const events = await runEvents(fx.db, runId);
      expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
      expect(typesByAttempt(events)[2]).toEqual(["reset", "status", "route", "text.delta", "done"]);
      expect(events.filter((e) => e.attempt === 2)[1]?.data).toMatchObject({ status: "running", attempt: 1, of: 3 });
      await waitForNoJob(fx.db, runId);
    } finally {
      await first.stop();
      await second?.stop();
    }
  });

  it("a database connection lost mid-run (the writer's backend terminated) hands the run back uncounted; the next attempt answers once", async () => {
    const q = await startTestQueue(fx.db, fx.agents.orchestrator, { env: { RETRY_ATTEMPTS: "2" } });
    // The run's next statement (the usage write, or the ending that carries it) waiting on our lock.
    const WAITING_WRITE = `select pid from pg_stat_activity
      where datname = current_database() and wait_event_type = 'Lock' and pid <> pg_backend_pid()`;
    let cut: Promise<number> | undefined;
    fx.agents.hook("cut-connection", async (runId) => {
      await waitFor("the first delta to be stored", async () => (await runEvents(fx.db, runId)).some((e) => e.type === "text.delta"));
      // Hold the run's row so the next write waits in the database, then end
      // that write's backend: a connection lost in the middle of the run.
      const lock = await fx.db.pool.connect();
      await lock.query("begin");
      await lock.query("select 1 from runs where id = $1 for update", [runId]);
      cut = (async () => {
        try {
          const pid = await waitFor("the next write to wait on the lock", async () => (await fx.db.pool.query<{ pid: number }>(WAITING_WRITE)).rows[0]?.pid);
          await fx.db.pool.query("select pg_terminate_backend($1)", [pid]);
          return pid;
        } finally {
          await lock.query("commit");
          lock.release();
        }
      })();
    });
    try {
      const { runId } = await postRun(fx.client, fx.conv, scriptOf({ text: ["before "], hook: "cut-connection", usage: { promptTokens: 1, completionTokens: 1 } }, { text: ["the full ", "answer"] }));
      const run = await waitForStatus(fx.db, runId, FINISHED);
      expect(await cut).toBeGreaterThan(0);
      expect(run).toMatchObject({ status: "succeeded", failures: 0, attempt: 2, error_code: null });
      expect((await assistantMessages(fx.db, runId)).map((m) => m.content)).toEqual(["the full answer"]);
      const events = await runEvents(fx.db, runId);
      expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
      expect(events.filter((e) => e.attempt === 1).at(-1)).toMatchObject({ type: "status", data: { status: "queued", reason: "interrupted" } });
      expect(events.some((e) => e.type === "status" && e.data.status === "retrying")).toBe(false);
      await waitForNoJob(fx.db, runId);
    } finally {
      await q.stop();
    }
  });
});

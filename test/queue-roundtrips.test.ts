/**
 * Issue 4's speed goal, as a count that does not depend on the machine: the
 * database round trips the queue makes per run. Every statement the queue's
 * two pools send (the app pool: claim, events, finish; graphile-worker's pool:
 * fetch and complete) is recorded by wrapping pg's Client#query, and a run
 * that routes, streams 20 deltas at once and reports usage is counted from
 * the POST until its job is gone. The periodic loops (heartbeat, queue stats,
 * cancel poll) are told apart by their text and left out.
 *
 * Before the statements were merged an attempt took 12 app statements (claim,
 * status event, history, route update, route event, deltas, usage, and a
 * six-statement finish transaction); now 2: the claim (with the status event
 * and the history) and the ending (the events not written yet, here the
 * route with its update of the run, the deltas and usage, which the agent
 * yields in one burst; the answer, the run's success and its terminal event).
 * Neither NOTIFYs: a notifying commit holds PostgreSQL's notify lock through
 * its WAL flush, so the ending's notification goes in a statement of its own
 * that does not wait for the disk (server/queue/runNotifier.ts), coalesced
 * across runs under load: at most one more per run, counted apart.
 *
 * A run that asks by name for an agent that may run before its claim
 * (`Agent.pure`: hello, math) takes 1: its job carries the message, the agent
 * runs from that, and the claim, the events and the answer are one statement
 * (claimAndSucceed). An agent of that kind that fails or takes longer than
 * PRE_CLAIM_MS goes the usual way, and is run again there. Where such a run
 * starts on the instance its message was posted to (localStart.ts), that one
 * statement also deletes the job, which graphile-worker never fetches.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import pg from "pg";
import {
  assistantMessages,
  newConversation,
  postRun,
  runEvents,
  runRow,
  scriptOf,
  useQueueFixture,
  waitFor,
  waitForNoJob,
  waitForStatus,
  type QueueFixture,
} from "./helpers/queue.js";
import { PRE_CLAIM_MS } from "../server/queue/executeRun.js";

/** application_name of startTestQueue's pools. */
const APP = "test-queue";
const WORKER = "test-queue-worker";
/** The notification-only statement (runNotifier.ts); the claim also sets synchronous_commit, but notifies nobody. */
const NOTIFY = /set_config\('synchronous_commit', 'off', true\)\) s,\s+lateral \(select pg_notify\(/;
/** Statements of the periodic loops, not of a run. */
const BACKGROUND = [/\binstances\b/, /id = any\(\$1::uuid\[\]\) and cancel_requested_at/];

interface Seen {
  app: string;
  /** The connection's database: each fixture has its own. */
  db: string;
  text: string;
}

const seen: Seen[] = [];
let recording = false;
type QueryFn = (...args: unknown[]) => unknown;
type Params = { connectionParameters?: { application_name?: string; database?: string } };
const proto = pg.Client.prototype as unknown as { query: QueryFn } & Params;
const original = proto.query;

const fx = useQueueFixture({ queue: { listener: true } });

beforeAll(async () => {
  proto.query = function (this: Params, ...args: unknown[]) {
    if (recording) {
      const first = args[0];
      const text = typeof first === "string" ? first : ((first as { text?: string } | null)?.text ?? "");
      seen.push({ app: this.connectionParameters?.application_name ?? "", db: this.connectionParameters?.database ?? "", text });
    }
    return original.apply(this, args);
  };
});
afterAll(async () => {
  proto.query = original;
});

const RUNS = 10;

/** The statements of `f`'s queue seen while recording, the periodic loops left out. */
const ofFixture = (f: QueueFixture) =>
  seen.filter((s) => s.db === f.db.name && (s.app === APP || s.app === WORKER) && !BACKGROUND.some((re) => re.test(s.text)));

/** Records what `fn` sends. */
async function recorded(fn: () => Promise<void>): Promise<void> {
  seen.length = 0;
  recording = true;
  try {
    await fn();
  } finally {
    recording = false;
  }
}

describe("database round trips per run", () => {
  it("a run that routes, streams and reports usage at once takes 2 app statements", async () => {
    const client = fx.api.client();
    const conv = await newConversation(client);
    const text = Array.from({ length: 20 }, (_, i) => `w${i} `);
    const script = scriptOf({ text, usage: { promptTokens: 3, completionTokens: 20 } });
    // Warm-up: graphile-worker's first fetch and the pools' connections.
    const warm = await postRun(client, conv, script);
    await waitForStatus(fx.db, warm.runId, ["succeeded"]);
    await waitForNoJob(fx.db, warm.runId);

    seen.length = 0;
    recording = true;
    const ids: string[] = [];
    for (let i = 0; i < RUNS; i++) {
      const { runId } = await postRun(client, conv, script);
      ids.push(runId);
      expect((await waitForStatus(fx.db, runId, ["succeeded", "failed", "cancelled"])).status).toBe("succeeded");
      await waitForNoJob(fx.db, runId);
    }
    recording = false;

    const ofRuns = ofFixture(fx);
    const perRun = (app: string) => ofRuns.filter((s) => s.app === app && !NOTIFY.test(s.text)).length / RUNS;
    const notifiesPerRun = ofRuns.filter((s) => s.app === APP && NOTIFY.test(s.text)).length / RUNS;
    const byText = new Map<string, number>();
    for (const s of ofRuns) {
      const key = `${s.app}: ${s.text.replace(/\s+/g, " ").trim().slice(0, 70)}`;
      byText.set(key, (byText.get(key) ?? 0) + 1);
    }
    console.info(
      `round trips per run: app ${perRun(APP)} + ${notifiesPerRun} notification-only, graphile-worker ${perRun(WORKER)}\n` +
        [...byText].map(([k, n]) => `  ${(n / RUNS).toFixed(1)}  ${k}`).join("\n"),
    );

    // What the merged statements must still deliver.
    for (const runId of ids) {
      const events = await runEvents(fx.db, runId);
      expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
      const types = events.map((e) => e.type);
      expect(types[0]).toBe("status");
      expect(types[1]).toBe("route");
      expect(await runRow(fx.db, runId)).toMatchObject({ agent: "scripted", route_reason: "scripted by the test", prompt_tokens: 3, completion_tokens: 20 });
      expect(types.slice(-2)).toEqual(["usage", "done"]);
      expect(events.filter((e) => e.type === "text.delta").map((e) => e.data.text as string).join("")).toBe(text.join(""));
      const answers = await assistantMessages(fx.db, runId);
      expect(answers.map((a) => a.content)).toEqual([text.join("")]);
      expect(events.at(-1)?.data).toEqual({ messageId: answers[0]?.id });
    }
    // graphile-worker's own (fetch, complete, an empty fetch after, its poll) are printed above, not asserted: they are not ours.
    expect(perRun(APP)).toBeLessThanOrEqual(2);
    expect(notifiesPerRun).toBeLessThanOrEqual(1);
  });
});

describe("a run of an agent that may run before its claim", () => {
  // The scripted agent, named hello (an agent the API lets a message ask for) and pure.
  const pf = useQueueFixture({ queue: { listener: true }, agent: { name: "hello", pure: true } });
  const appStatements = () => ofFixture(pf).filter((s) => s.app === APP && !NOTIFY.test(s.text));

  async function runOne(script: string): Promise<string> {
    const { runId } = await postRun(pf.client, pf.conv, script, "hello");
    expect((await waitForStatus(pf.db, runId, ["succeeded", "failed", "cancelled"])).status).not.toBe("cancelled");
    await waitForNoJob(pf.db, runId);
    return runId;
  }

  it("takes one app statement: claim, events and answer at once", async () => {
    const text = ["one ", "two ", "three"];
    const script = scriptOf({ text, usage: { promptTokens: 2, completionTokens: 3 } });
    await runOne(script); // warm-up
    const ids: string[] = [];
    await recorded(async () => {
      for (let i = 0; i < RUNS; i++) ids.push(await runOne(script));
    });
    expect(appStatements().length / RUNS).toBe(1);
    expect(appStatements().every((s) => s.text.includes("status = 'succeeded', attempt = attempt + 1"))).toBe(true);
    for (const runId of ids) {
      const events = await runEvents(pf.db, runId);
      expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
      expect(events.map((e) => e.type)).toEqual(["status", "route", "text.delta", "usage", "done"]);
      expect(events[0]?.data).toEqual({ status: "running", attempt: 1, of: 4 });
      expect(events[2]?.data).toEqual({ text: text.join("") });
      const row = await runRow(pf.db, runId);
      expect(row).toMatchObject({ status: "succeeded", attempt: 1, failures: 0, agent: "hello", route_reason: "scripted by the test", prompt_tokens: 2, completion_tokens: 3 });
      expect(row.started_at).not.toBeNull();
      expect(row.finished_at).not.toBeNull();
      const answers = await assistantMessages(pf.db, runId);
      expect(answers).toEqual([{ id: expect.any(String), content: text.join(""), agent: "hello" }]);
      expect(events.at(-1)?.data).toEqual({ messageId: answers[0]?.id });
      // The agent ran once, before the claim (attempt 0).
      expect(pf.agents.callsFor(runId).map((c) => [c.attempt, c.outcome])).toEqual([[0, "done"]]);
    }
  });

  it("goes the usual way when the agent takes longer than PRE_CLAIM_MS: claimed first, run again, `running` stored", async () => {
    const runId = await runOne(scriptOf({ text: ["slow"], holdMs: PRE_CLAIM_MS * 5 }));
    const calls = pf.agents.callsFor(runId);
    expect(calls.map((c) => [c.attempt, c.outcome])).toEqual([
      [0, "aborted"],
      [1, "done"],
    ]);
    expect(await runRow(pf.db, runId)).toMatchObject({ status: "succeeded", attempt: 1 });
    const events = await runEvents(pf.db, runId);
    expect(events.map((e) => e.type)).toEqual(["status", "route", "text.delta", "done"]);
    expect((await assistantMessages(pf.db, runId)).map((a) => a.content)).toEqual(["slow"]);
  });

  it("does not wait past PRE_CLAIM_MS for an agent that ignores its signal: the claimed attempt starts while it still runs", async () => {
    let hooked = 0;
    pf.agents.hook("stubborn", async () => {
      // The first call (before the claim) takes long and does not watch the signal; the claimed one is quick.
      if (hooked++ === 0) await new Promise((r) => setTimeout(r, PRE_CLAIM_MS * 10));
    });
    const runId = await runOne(scriptOf({ text: ["late"], hook: "stubborn" }));
    await waitFor("the run before the claim to end", () => pf.agents.callsFor(runId)[0]?.endedAt !== undefined);
    const [early, claimed] = pf.agents.callsFor(runId);
    expect([early?.attempt, claimed?.attempt, claimed?.outcome]).toEqual([0, 1, "done"]);
    expect(claimed?.startedAt).toBeLessThan(early?.endedAt ?? 0);
    expect((await runEvents(pf.db, runId)).map((e) => e.type)).toEqual(["status", "route", "text.delta", "done"]);
    expect((await assistantMessages(pf.db, runId)).map((a) => a.content)).toEqual(["late"]);
  });

  it("goes the usual way when the agent fails before the claim: the failure is recorded by a claimed attempt", async () => {
    const runId = await runOne(scriptOf({ fail: { code: "bad_input", message: "no such thing", retryable: false } }));
    expect(pf.agents.callsFor(runId).map((c) => [c.attempt, c.outcome])).toEqual([
      [0, "failed"],
      [1, "failed"],
    ]);
    expect(await runRow(pf.db, runId)).toMatchObject({ status: "failed", attempt: 1, error_code: "bad_input" });
    expect((await runEvents(pf.db, runId)).map((e) => e.type)).toEqual(["status", "route", "failed"]);
    expect(await assistantMessages(pf.db, runId)).toEqual([]);
  });

  it("does not run before the claim when the agent is not asked for by name", async () => {
    const { runId } = await postRun(pf.client, pf.conv, scriptOf({ text: ["routed"] }));
    expect((await waitForStatus(pf.db, runId, ["succeeded", "failed", "cancelled"])).status).toBe("succeeded");
    expect(pf.agents.callsFor(runId).map((c) => c.attempt)).toEqual([1]);
  });
});

describe("a run that starts where its message was posted", () => {
  // As the built server wires it (localStart.ts): the POST's instance runs a pure agent's run at once.
  const lf = useQueueFixture({ queue: { listener: true }, agent: { name: "hello", pure: true }, localStarts: true });

  it("takes one app statement after the POST (claim, events, answer and the job's deletion) and no job fetch or completion by graphile-worker", async () => {
    const script = scriptOf({ text: ["here"] });
    const runOne = async () => {
      const { runId } = await postRun(lf.client, lf.conv, script, "hello");
      expect((await waitForStatus(lf.db, runId, ["succeeded", "failed", "cancelled"])).status).toBe("succeeded");
      await waitForNoJob(lf.db, runId);
      return runId;
    };
    await runOne(); // warm-up
    const ids: string[] = [];
    await recorded(async () => {
      for (let i = 0; i < RUNS; i++) ids.push(await runOne());
    });
    const app = ofFixture(lf).filter((s) => s.app === APP && !NOTIFY.test(s.text));
    expect(app.length / RUNS).toBe(1);
    expect(app.every((s) => s.text.includes("graphile_worker.complete_jobs"))).toBe(true);
    // graphile-worker is nudged by each job's NOTIFY and looks (finding none due), but never completes one.
    const worker = ofFixture(lf).filter((s) => s.app === WORKER);
    expect(worker.filter((s) => /delete from "graphile_worker"\._private_jobs/.test(s.text))).toEqual([]);
    for (const runId of ids) {
      expect(lf.agents.callsFor(runId).map((c) => [c.attempt, c.outcome])).toEqual([[0, "done"]]);
      expect((await assistantMessages(lf.db, runId)).map((a) => a.content)).toEqual(["here"]);
    }
  });
});

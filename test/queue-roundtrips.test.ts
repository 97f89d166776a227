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
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import pg from "pg";
import { assistantMessages, newConversation, postRun, runEvents, runRow, scriptOf, useQueueFixture, waitForNoJob, waitForStatus } from "./helpers/queue.js";

/** application_name of startTestQueue's pools. */
const APP = "test-queue";
const WORKER = "test-queue-worker";
/** The notification-only statement (runNotifier.ts); the claim also sets synchronous_commit, but notifies nobody. */
const NOTIFY = /set_config\('synchronous_commit', 'off', true\)\) s,\s+lateral \(select pg_notify\(/;
/** Statements of the periodic loops, not of a run. */
const BACKGROUND = [/\binstances\b/, /id = any\(\$1::uuid\[\]\) and cancel_requested_at/];

interface Seen {
  app: string;
  text: string;
}

const seen: Seen[] = [];
let recording = false;
type QueryFn = (...args: unknown[]) => unknown;
const proto = pg.Client.prototype as unknown as { query: QueryFn; connectionParameters?: { application_name?: string } };
const original = proto.query;

const fx = useQueueFixture({ queue: { listener: true } });

beforeAll(async () => {
  proto.query = function (this: { connectionParameters?: { application_name?: string } }, ...args: unknown[]) {
    if (recording) {
      const first = args[0];
      const text = typeof first === "string" ? first : ((first as { text?: string } | null)?.text ?? "");
      seen.push({ app: this.connectionParameters?.application_name ?? "", text });
    }
    return original.apply(this, args);
  };
});
afterAll(async () => {
  proto.query = original;
});

const RUNS = 10;

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

    const ofRuns = seen.filter((s) => (s.app === APP || s.app === WORKER) && !BACKGROUND.some((re) => re.test(s.text)));
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

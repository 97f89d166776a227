/**
 * Issue 4: the NOTIFYs a run sends on `run_events`. A notifying transaction
 * holds PostgreSQL's cluster-wide notify lock through its WAL flush, so
 * notifying commits are flushed one at a time; under load they bound the
 * runs per second. The claim therefore sends none of its own: a run that
 * yields its events at once is announced once, by its ending; one that stays
 * silent past CLAIM_NOTIFY_AFTER_MS (an LLM router deciding) still has its
 * `status running` announced while it is silent.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import pg from "pg";
import type { Orchestrator, RoutedEvent } from "../server/agents/types.js";
import { CLAIM_NOTIFY_AFTER_MS } from "../server/queue/executeRun.js";
import { RUN_EVENTS_CHANNEL } from "../server/queue/runEvents.js";
import { clientConfigFromUrl } from "../server/db/pool.js";
import { newConversation, postRun, runEvents, runRow, startTestQueue, useQueueFixture, waitFor, waitForStatus, type TestQueue } from "./helpers/queue.js";

/** The message content: silent for `silentMs`, then a route and the deltas. */
const script = (s: { silentMs?: number; text: string[] }) => JSON.stringify(s);

const orchestrator: Orchestrator = {
  agentNames: () => ["scripted"],
  historyFreeAgents: () => [],
  async *run(input): AsyncGenerator<RoutedEvent> {
    const s = JSON.parse(input.content) as { silentMs?: number; text: string[] };
    if (s.silentMs) await new Promise((r) => setTimeout(r, s.silentMs));
    yield { type: "route", agent: "scripted", reason: "scripted by the test" };
    for (const text of s.text) yield { type: "text.delta", text };
  },
};

const fx = useQueueFixture();
let q: TestQueue;
let listen: pg.Client;
const heard: { runId: string; seq: number; at: number }[] = [];
const heardFor = (runId: string) => heard.filter((n) => n.runId === runId);

beforeAll(async () => {
  q = await startTestQueue(fx.db, orchestrator, { listener: true });
  listen = new pg.Client(clientConfigFromUrl(fx.db.url));
  listen.on("error", () => undefined);
  listen.on("notification", (n) => {
    const [runId, seq] = (n.payload ?? "").split(":");
    heard.push({ runId: runId ?? "", seq: Number(seq), at: performance.now() });
  });
  await listen.connect();
  await listen.query(`listen ${RUN_EVENTS_CHANNEL}`);
});
afterAll(async () => {
  await listen?.end().catch(() => undefined);
  await q?.stop();
});

describe("run_events notifications", () => {
  it("a run that yields at once is announced once, by its ending, up to its last event", async () => {
    const client = fx.api.client();
    const conv = await newConversation(client);
    const { runId } = await postRun(client, conv, script({ text: ["a ", "b ", "c"] }));
    await waitForStatus(fx.db, runId, ["succeeded"]);
    const last = (await runRow(fx.db, runId)).last_seq;
    await waitFor("the ending's notification", () => heardFor(runId).some((n) => n.seq === last));
    // Longer than the claim's own would take to come, were it sent.
    await new Promise((r) => setTimeout(r, CLAIM_NOTIFY_AFTER_MS * 3));
    expect(heardFor(runId).map((n) => n.seq)).toEqual([last]);
  });

  it("a run silent past CLAIM_NOTIFY_AFTER_MS has its claim announced while it is silent", async () => {
    const client = fx.api.client();
    const conv = await newConversation(client);
    const silentMs = CLAIM_NOTIFY_AFTER_MS * 10;
    const { runId } = await postRun(client, conv, script({ silentMs, text: ["x"] }));
    const first = await waitFor("the claim's notification", () => heardFor(runId)[0]);
    // Said while only the claim's event was stored (the route comes after the silence).
    expect(first.seq).toBe(1);
    expect((await runEvents(fx.db, runId)).map((e) => e.type)).toEqual(["status"]);
    await waitForStatus(fx.db, runId, ["succeeded"]);
    const last = (await runRow(fx.db, runId)).last_seq;
    await waitFor("the ending's notification", () => heardFor(runId).some((n) => n.seq === last));
    expect(heardFor(runId).map((n) => n.seq)).toEqual([1, last]);
  });
});

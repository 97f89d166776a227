/**
 * Issue 8, point 2, on the built server with the fake LLM: "LLM hang past the
 * timeout" and "429 and 5xx", end to end (the assistant's HTTP call, the
 * queue's retry and backoff, the stored run, events and answer). The pieces
 * are also tested alone: the provider's error mapping in
 * agents-assistant.test.ts, the queue's retry rules with a scripted agent in
 * queue-failures.test.ts.
 */
import { describe, it, expect, beforeAll } from "vitest";
import type { FakeReply } from "./helpers/fakeLlm.js";
import { Client } from "./helpers/dataApi.js";
import { ask } from "./helpers/ws.js";
import { useServerFixture } from "./helpers/failures.js";
import { runEvents, waitForStatus, type EventRow } from "./helpers/queue.js";

const JOB_TIMEOUT_MS = 1500;

const fx = useServerFixture();
let client: Client;

/** Replies by the user message's content, in order (the last repeats), with each request's arrival time. */
const plans = new Map<string, FakeReply[]>();
const arrivals = new Map<string, { at: number; index: number }[]>();

beforeAll(async () => {
  fx.llm.setDefault((body, req) => {
    const user = [...(body.messages ?? [])].reverse().find((m) => m.role === "user")?.content ?? "";
    const seen = arrivals.get(user) ?? [];
    seen.push({ at: Date.now(), index: req.index });
    arrivals.set(user, seen);
    const plan = plans.get(user) ?? [{ text: "unplanned" }];
    return plan[Math.min(seen.length, plan.length) - 1] as FakeReply;
  });
  // The idle (stall) timeout of the provider stays at its 30 s default: only the job timeout can end a hang here.
  const inst = await fx.spawn({ JOB_TIMEOUT_MS: String(JOB_TIMEOUT_MS), RETRY_ATTEMPTS: "2" });
  client = new Client(inst.baseUrl);
  await client.userId();
}, 60_000);

const FINISHED = ["succeeded", "failed", "cancelled"];
const assistantMessages = async (runId: string) =>
  (await fx.db.pool.query<{ content: string }>("select content from messages where role = 'assistant' and run_id = $1", [runId])).rows.map((r) => r.content);
const requestsOf = (content: string) => (arrivals.get(content) ?? []).map((a) => fx.llm.requests[a.index]);
const byAttempt = (events: EventRow[], type: string) => events.filter((e) => e.type === type).map((e) => e.attempt);

describe("LLM hang past the timeout", () => {
  it("a provider that stops mid-answer is cut off at JOB_TIMEOUT_MS: its HTTP call is closed, the attempt counts, the retry answers once", async () => {
    const content = "hang on the first try";
    plans.set(content, [{ text: "partial text that never finishes", chunkSize: 4, fault: { kind: "stall", afterChunks: 3 } }, { text: "The retry's whole answer.", chunkSize: 5 }]);
    const runId = await ask(client, content, "assistant");
    const run = await waitForStatus(fx.db, runId, FINISHED, 30_000);
    expect(run).toMatchObject({ status: "succeeded", attempt: 2, failures: 1, error_code: null });
    const reqs = requestsOf(content);
    expect(reqs).toHaveLength(2);
    // The hung request was abandoned by the server, not left open.
    expect(reqs[0]?.disconnected).toBe(true);
    expect(reqs[0]?.chunksSent).toBe(3);
    const events = await runEvents(fx.db, runId);
    const retrying = events.find((e) => e.type === "status" && e.data.status === "retrying");
    expect(retrying).toMatchObject({ attempt: 1, data: { attempt: 2 } });
    // Ended by the job timeout (the provider's own stall timer is 30 s away), and said so.
    expect(String(retrying?.data.reason)).toBe("The agent took too long to answer");
    expect(events.find((e) => e.type === "reset")).toMatchObject({ attempt: 2, data: { attempt: 2 } });
    expect(events.at(-1)).toMatchObject({ type: "done", attempt: 2 });
    expect(await assistantMessages(runId)).toEqual(["The retry's whole answer."]);
  });

  it("a provider that never answers fails the run with code timeout once the attempts are spent, with every call closed and no answer", async () => {
    const content = "hang every time";
    plans.set(content, [{ text: "never", fault: { kind: "stall", afterChunks: 0 } }]);
    const runId = await ask(client, content, "assistant");
    const run = await waitForStatus(fx.db, runId, FINISHED, 45_000);
    expect(run).toMatchObject({ status: "failed", attempt: 3, failures: 3, error_code: "timeout" });
    const reqs = requestsOf(content);
    expect(reqs).toHaveLength(3);
    await expect.poll(() => reqs.every((r) => r?.disconnected)).toBe(true);
    const events = await runEvents(fx.db, runId);
    expect(byAttempt(events, "reset")).toEqual([2, 3]);
    expect(events.at(-1)).toMatchObject({ type: "failed", attempt: 3, data: { code: "timeout" } });
    expect(byAttempt(events, "text.delta")).toEqual([]);
    expect(await assistantMessages(runId)).toEqual([]);
    const api = await client.get(`/api/runs/${runId}`);
    expect(api.body).toMatchObject({ status: "failed", error: { code: "timeout" } });
  });
});

describe("429 and 5xx", () => {
  it("a 429 with Retry-After, then a 503: each retried (the first not before Retry-After), then one answer", async () => {
    const content = "busy provider";
    plans.set(content, [{ fault: { kind: "status", status: 429, retryAfter: "2" } }, { fault: { kind: "status", status: 503 } }, { text: "Answered on the third try.", chunkSize: 4 }]);
    const runId = await ask(client, content, "assistant");
    const run = await waitForStatus(fx.db, runId, FINISHED, 45_000);
    expect(run).toMatchObject({ status: "succeeded", attempt: 3, failures: 2, error_code: null });
    const times = (arrivals.get(content) ?? []).map((a) => a.at);
    expect(times).toHaveLength(3);
    // Retry-After: 2 s, counted from the failure, which came after the request.
    expect((times[1] ?? 0) - (times[0] ?? 0)).toBeGreaterThanOrEqual(2000);
    const events = await runEvents(fx.db, runId);
    const retrying = events.filter((e) => e.type === "status" && e.data.status === "retrying");
    expect(retrying.map((e) => [e.attempt, e.data.attempt])).toEqual([
      [1, 2],
      [2, 3],
    ]);
    expect(byAttempt(events, "reset")).toEqual([2, 3]);
    expect(events.at(-1)).toMatchObject({ type: "done", attempt: 3 });
    expect(await assistantMessages(runId)).toEqual(["Answered on the third try."]);
  });

  it("5xx on every attempt: the run fails with provider_unavailable after RETRY_ATTEMPTS retries, no answer", async () => {
    const content = "provider down";
    plans.set(content, [{ fault: { kind: "status", status: 500 } }, { fault: { kind: "status", status: 502 } }, { fault: { kind: "status", status: 503 } }]);
    const runId = await ask(client, content, "assistant");
    const run = await waitForStatus(fx.db, runId, FINISHED, 45_000);
    expect(run).toMatchObject({ status: "failed", attempt: 3, failures: 3, error_code: "provider_unavailable" });
    expect(requestsOf(content)).toHaveLength(3);
    const events = await runEvents(fx.db, runId);
    expect(events.at(-1)).toMatchObject({ type: "failed", attempt: 3, data: { code: "provider_unavailable" } });
    expect(await assistantMessages(runId)).toEqual([]);
  });

  it("a 429 for an exhausted quota fails at once, without a retry", async () => {
    const content = "no quota left";
    plans.set(content, [{ fault: { kind: "status", status: 429, code: "insufficient_quota" } }, { text: "must never be asked" }]);
    const runId = await ask(client, content, "assistant");
    const run = await waitForStatus(fx.db, runId, FINISHED, 30_000);
    expect(run).toMatchObject({ status: "failed", attempt: 1, failures: 1, error_code: "provider_quota" });
    expect(requestsOf(content)).toHaveLength(1);
    expect(await assistantMessages(runId)).toEqual([]);
  });
});

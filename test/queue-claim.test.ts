/**
 * The claim (runStatements.ts): what a run's attempt starts with. The
 * conversation's history is read for agents that may use it; a run that asks
 * by name for an agent that reads none (hello, math) gets its own message
 * alone, and no other message is read. The claim and success in one
 * statement (claimAndSucceed), for an agent that ran before its claim, and
 * the job's payload that lets it. And the schema's rule that open runs, and
 * only they, have no `finished_at`, which the open-runs index relies on.
 */
import { describe, it, expect } from "vitest";
import { newConversation, postRun, useQueueFixture } from "./helpers/queue.js";
import { claimAndSucceed, claimRun } from "../server/queue/runStatements.js";
import { PAYLOAD_CONTENT_MAX } from "../server/queue/enqueue.js";
import { createOrchestrator } from "../server/agents/orchestrator.js";
import { createAgentRegistry } from "../server/agents/registry.js";
import { loadConfig } from "../server/config.js";
import { unlimitedBudget } from "../server/agents/budget.js";

// No queue runs here: every run stays queued until the test claims it.
const fx = useQueueFixture();

const post = async (conversation: string, content: string, agent?: string) => (await postRun(fx.client, conversation, content, agent)).runId;

const claim = (runId: string, historyFreeAgents: string[]) =>
  claimRun(fx.db.pool, runId, "test-instance", { maxAttempts: 4, historyLimit: 20, prepared: false, historyFreeAgents });

describe("the claim", () => {
  it("reads the conversation up to the run's message, oldest first, for an agent that may use it", async () => {
    const conv = await newConversation(fx.client);
    await post(conv, "first");
    await post(conv, "second");
    const run = await post(conv, "third");
    await post(conv, "after it");
    const c = await claim(run, ["hello", "math"]);
    expect(c?.content).toBe("third");
    expect(c?.turns).toEqual([
      { role: "user", content: "first" },
      { role: "user", content: "second" },
      { role: "user", content: "third" },
    ]);
  });

  it("gives a run that asked for an agent reading no history its own message alone", async () => {
    const conv = await newConversation(fx.client);
    await post(conv, "earlier");
    const run = await post(conv, "hi there", "hello");
    const c = await claim(run, ["hello", "math"]);
    expect(c?.content).toBe("hi there");
    expect(c?.turns).toEqual([{ role: "user", content: "hi there" }]);
    expect(c?.run.requested_agent).toBe("hello");
    // The same claim for an agent not in the list reads the history (a second attempt of the run).
    await fx.db.pool.query("update runs set status = 'queued' where id = $1", [run]);
    const again = await claim(run, ["math"]);
    expect(again?.run.attempt).toBe(2);
    expect(again?.turns.map((t) => t.content)).toEqual(["earlier", "hi there"]);
  });

  it("the orchestrator names hello and math as reading no history, not the assistant", () => {
    const config = loadConfig({ NODE_ENV: "test" });
    const registry = createAgentRegistry(config, { budget: unlimitedBudget });
    expect([...createOrchestrator(registry, config).historyFreeAgents()].sort()).toEqual(["hello", "math"]);
  });
});

const payloadOf = async (runId: string) =>
  (await fx.db.pool.query<{ payload: unknown }>("select payload from graphile_worker._private_jobs where key = $1", [runId])).rows[0]?.payload;

const eventsOf = async (runId: string) =>
  (await fx.db.pool.query<{ seq: number; attempt: number; type: string; data: unknown }>("select seq, attempt, type, data from run_events where run_id = $1 order by seq", [runId])).rows;

const answersOf = async (runId: string) =>
  (await fx.db.pool.query<{ id: string; content: string }>("select id, content from messages where run_id = $1", [runId])).rows;

const succeed = (runId: string, text = "hello there", agentStartedAt = performance.now()) =>
  claimAndSucceed(
    fx.db.pool,
    runId,
    "test-instance",
    {
      events: [{ type: "route", data: { agent: "hello", reason: "asked for" } }, { type: "text.delta", data: { text } }],
      route: { agent: "hello", reason: "asked for" },
      text,
      usage: null,
      agentStartedAt,
    },
    { maxAttempts: 4, prepared: false },
  );

const timesOf = async (runId: string) =>
  (await fx.db.pool.query<{ created_at: Date; started_at: Date; finished_at: Date }>("select created_at, started_at, finished_at from runs where id = $1", [runId])).rows[0];

describe("a run's job payload", () => {
  it("carries the agent and the message of a run that asked for an agent by name, up to PAYLOAD_CONTENT_MAX characters", async () => {
    const conv = await newConversation(fx.client);
    expect(await payloadOf(await post(conv, "2+2", "math"))).toMatchObject({ agent: "math", content: "2+2" });
    const unnamed = await post(conv, "2+2");
    expect(await payloadOf(unnamed)).toEqual({ runId: unnamed });
    const long = await post(conv, "x".repeat(PAYLOAD_CONTENT_MAX + 1), "math");
    expect(await payloadOf(long)).toEqual({ runId: long });
    const edge = await post(conv, "y".repeat(PAYLOAD_CONTENT_MAX), "hello");
    expect(await payloadOf(edge)).toEqual({ runId: edge, agent: "hello", content: "y".repeat(PAYLOAD_CONTENT_MAX) });
  });
});

describe("claim and success in one statement", () => {
  it("records the claim's events, the agent's and `done` under consecutive seqs, the answer once, and the run succeeded", async () => {
    const conv = await newConversation(fx.client);
    const run = await post(conv, "hi", "hello");
    const done = await succeed(run);
    expect(done).toMatchObject({ attempt: 1, failures: 0, lastSeq: 4 });
    const answers = await answersOf(run);
    expect(answers.map((a) => a.content)).toEqual(["hello there"]);
    expect(await eventsOf(run)).toEqual([
      { seq: 1, attempt: 1, type: "status", data: { status: "running", attempt: 1, of: 4 } },
      { seq: 2, attempt: 1, type: "route", data: { agent: "hello", reason: "asked for" } },
      { seq: 3, attempt: 1, type: "text.delta", data: { text: "hello there" } },
      { seq: 4, attempt: 1, type: "done", data: { messageId: answers[0]?.id } },
    ]);
    const row = (await fx.db.pool.query("select status, attempt, instance_id, agent, route_reason, last_seq, started_at, finished_at from runs where id = $1", [run])).rows[0];
    expect(row).toMatchObject({ status: "succeeded", attempt: 1, instance_id: "test-instance", agent: "hello", route_reason: "asked for", last_seq: 4 });
    expect(row.started_at).toBeInstanceOf(Date);
    expect(row.finished_at).toBeInstanceOf(Date);
    // Over: a second one (a duplicate job) writes nothing.
    expect(await succeed(run, "again")).toBeNull();
    expect((await eventsOf(run)).length).toBe(4);
    expect((await answersOf(run)).map((a) => a.content)).toEqual(["hello there"]);
  });

  it("takes over a run an earlier attempt left running: a new attempt, `reset` first, seqs after the old ones", async () => {
    const conv = await newConversation(fx.client);
    const run = await post(conv, "hi", "hello");
    const first = await claim(run, ["hello"]);
    expect(first?.run.attempt).toBe(1);
    const done = await succeed(run);
    expect(done).toMatchObject({ attempt: 2, lastSeq: 6 });
    const events = await eventsOf(run);
    expect(events.map((e) => [e.seq, e.attempt, e.type])).toEqual([
      [1, 1, "status"],
      [2, 2, "reset"],
      [3, 2, "status"],
      [4, 2, "route"],
      [5, 2, "text.delta"],
      [6, 2, "done"],
    ]);
    expect(events[1]?.data).toEqual({ attempt: 2 });
  });

  it("dates the start when the attempt started, before its agent ran, never before the run was created", async () => {
    const conv = await newConversation(fx.client);
    const run = await post(conv, "hi", "hello");
    await new Promise((r) => setTimeout(r, 700));
    // The attempt started 500 ms before the statement (its agent took that long).
    await succeed(run, "hello there", performance.now() - 500);
    const t = await timesOf(run);
    const ahead = (t?.finished_at.getTime() ?? 0) - (t?.started_at.getTime() ?? 0);
    expect(ahead).toBeGreaterThanOrEqual(499);
    expect(ahead).toBeLessThan(650);
    // An attempt said to have started before the run existed starts when it was created.
    const early = await post(conv, "hi", "hello");
    await succeed(early, "hello there", performance.now() - 3_600_000);
    const e = await timesOf(early);
    expect(e?.started_at.getTime()).toBe(e?.created_at.getTime());
  });

  it("writes nothing for a run whose cancel was requested before it started", async () => {
    const conv = await newConversation(fx.client);
    const run = await post(conv, "hi", "hello");
    await fx.db.pool.query("update runs set cancel_requested_at = now() where id = $1", [run]);
    expect(await succeed(run)).toBeNull();
    expect(await eventsOf(run)).toEqual([]);
    expect(await answersOf(run)).toEqual([]);
    const row = (await fx.db.pool.query("select status, attempt from runs where id = $1", [run])).rows[0];
    expect(row).toEqual({ status: "queued", attempt: 0 });
  });

  it("the orchestrator lets hello and math run before their claim, not the assistant", () => {
    const config = loadConfig({ NODE_ENV: "test" });
    const registry = createAgentRegistry(config, { budget: unlimitedBudget });
    expect([...(createOrchestrator(registry, config).preClaimAgents?.() ?? [])].sort()).toEqual(["hello", "math"]);
  });
});

describe("runs' finished_at", () => {
  it("is set exactly when the run is over: the database refuses anything else", async () => {
    const conv = await newConversation(fx.client);
    const run = await post(conv, "check");
    const set = (status: string, finished: boolean) =>
      fx.db.pool.query(`update runs set status = $2, finished_at = ${finished ? "now()" : "null"} where id = $1`, [run, status]);
    await expect(set("succeeded", false)).rejects.toThrow(/runs_finished_iff_over/);
    await expect(set("queued", true)).rejects.toThrow(/runs_finished_iff_over/);
    await expect(set("running", true)).rejects.toThrow(/runs_finished_iff_over/);
    await set("failed", true);
    const r = await fx.db.pool.query<{ status: string }>("select status from runs where id = $1", [run]);
    expect(r.rows[0]?.status).toBe("failed");
  });
});

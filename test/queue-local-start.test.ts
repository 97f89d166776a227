/**
 * Runs that start on the instance their message was posted to
 * (server/queue/localStart.ts): a run that asks by name for an agent that
 * may run before its claim (`Agent.pure`) starts right after the POST's
 * commit, without waiting for graphile-worker to fetch its job, which the
 * POST adds deferred. What must hold: the run is answered once, its job is
 * gone with the claim, the job is what answers the run when this instance
 * does not (it died after the commit, or the agent took too long), the
 * slots are the queue's (never more agents at once than
 * MAX_CONCURRENT_JOBS), and the one-statement claim takes only a run no
 * attempt has taken, and only a job no worker holds.
 */
import { describe, it, expect } from "vitest";
import {
  assistantMessages,
  expectMetricSettled,
  jobsOf,
  metricSample,
  postRun,
  runEvents,
  runRow,
  scriptOf,
  useQueueFixture,
  waitForNoJob,
  waitForStatus,
  type QueueFixture,
} from "./helpers/queue.js";
import { LOCAL_START_DEFER_MS, type LocalStart } from "../server/queue/localStart.js";
import { PRE_CLAIM_MS } from "../server/queue/executeRun.js";
import { claimAndSucceed } from "../server/queue/runStatements.js";
import { createSlots } from "../server/queue/slots.js";

const LOCAL_STARTS = "agent_run_local_starts_total";
const OUTCOMES = ["succeeded", "not_run", "queued", "error"] as const;

/**
 * How much agent_run_local_starts_total grew, by outcome, while `fn` ran:
 * once the `settled` outcome's count has grown by one (it is counted just
 * after the run's status is written).
 */
async function countsDuring(fx: QueueFixture, settled: (typeof OUTCOMES)[number], fn: () => Promise<void>): Promise<Record<string, number>> {
  const counts = async () => Promise.all(OUTCOMES.map((outcome) => metricSample(fx.q.metrics, LOCAL_STARTS, { outcome })));
  const before = await counts();
  await fn();
  await expectMetricSettled(fx.q.metrics, LOCAL_STARTS, { outcome: settled }, (before[OUTCOMES.indexOf(settled)] ?? 0) + 1);
  const after = await counts();
  return Object.fromEntries(OUTCOMES.map((o, i) => [o, (after[i] ?? 0) - (before[i] ?? 0)]).filter(([, d]) => d !== 0));
}

describe("a run that starts where its message was posted", () => {
  // The scripted agent, named hello (an agent the API lets a message ask for) and pure.
  // MAX_CONCURRENT_JOBS 2, so that slots run out within a test.
  const fx = useQueueFixture({
    queue: { listener: true, env: { MAX_CONCURRENT_JOBS: "2" } },
    agent: { name: "hello", pure: true },
    localStarts: true,
  });

  it("is answered here: once, with the events of a claim and a success, and its job gone with the claim", async () => {
    let runId = "";
    const delta = await countsDuring(fx, "succeeded", async () => {
      runId = (await postRun(fx.client, fx.conv, scriptOf({ text: ["Hel", "lo"] }), "hello")).runId;
      await waitForStatus(fx.db, runId, ["succeeded"]);
    });
    expect(delta).toEqual({ succeeded: 1 });
    // Gone in the statement that answered the run: no worker fetched it.
    expect(await jobsOf(fx.db, runId)).toEqual([]);
    expect((await assistantMessages(fx.db, runId)).map((m) => m.content)).toEqual(["Hello"]);
    const events = await runEvents(fx.db, runId);
    // (Deltas that come at once are stored as one.)
    expect(events.map((e) => e.type)).toEqual(["status", "route", "text.delta", "done"]);
    expect(events.map((e) => e.seq)).toEqual([1, 2, 3, 4]);
    const run = await runRow(fx.db, runId);
    expect(run).toMatchObject({ attempt: 1, failures: 0, instance_id: fx.q.instanceId });
    // The agent ran once, here, before the claim.
    expect(fx.agents.callsFor(runId).map((c) => c.attempt)).toEqual([0]);
  });

  it("adds its job deferred, so the job answers it when this instance never runs it (it died after the commit)", async () => {
    // Slots are reserved as usual, but the run is never started: as if the instance were killed right after the commit.
    const reserved: LocalStart[] = [];
    fx.localStarts.bind({
      reserve(agent) {
        const slot = fx.q.queue.localStarts.reserve(agent);
        if (!slot) return null;
        reserved.push(slot);
        return { deferMs: slot.deferMs, release: () => slot.release(), start: () => slot.release() };
      },
    });
    try {
      const { runId } = await postRun(fx.client, fx.conv, scriptOf({ text: ["late"] }), "hello");
      expect(reserved).toHaveLength(1);
      const created = (await runRow(fx.db, runId)).created_at;
      const [job] = await jobsOf(fx.db, runId);
      expect(job?.locked_at).toBeNull();
      // Due a deferral after the run was created: no worker takes it meanwhile.
      expect((job?.run_at.getTime() ?? 0) - created.getTime()).toBeGreaterThanOrEqual(LOCAL_START_DEFER_MS - 1);
      const run = await waitForStatus(fx.db, runId, ["succeeded"], LOCAL_START_DEFER_MS + 15_000);
      expect(run.started_at!.getTime() - created.getTime()).toBeGreaterThanOrEqual(LOCAL_START_DEFER_MS - 1);
      expect((await assistantMessages(fx.db, runId)).map((m) => m.content)).toEqual(["late"]);
      await waitForNoJob(fx.db, runId);
    } finally {
      fx.localStarts.bind(fx.q.queue.localStarts);
    }
  });

  it(`hands a run whose agent takes longer than PRE_CLAIM_MS (${PRE_CLAIM_MS} ms) to the queue at once, not after the deferral`, async () => {
    let runId = "";
    const delta = await countsDuring(fx, "queued", async () => {
      runId = (await postRun(fx.client, fx.conv, scriptOf({ holdMs: PRE_CLAIM_MS * 5, text: ["slow"] }), "hello")).runId;
      await waitForStatus(fx.db, runId, ["succeeded"]);
      await waitForNoJob(fx.db, runId);
    });
    expect(delta).toEqual({ queued: 1 });
    const run = await runRow(fx.db, runId);
    // A job left deferred could not have started before created_at + LOCAL_START_DEFER_MS.
    expect(run.started_at!.getTime() - run.created_at.getTime()).toBeLessThan(LOCAL_START_DEFER_MS);
    expect(run).toMatchObject({ attempt: 1, failures: 0 });
    expect((await assistantMessages(fx.db, runId)).map((m) => m.content)).toEqual(["slow"]);
    // Run here before the claim (attempt 0, abandoned), then by the worker:
    // before its claim too (its job carries the message), abandoned again,
    // then claimed. Only the claimed attempt's events are stored.
    const calls = fx.agents.callsFor(runId);
    expect(calls.map((c) => c.attempt)).toEqual([0, 0, 1]);
    expect(calls.map((c) => c.outcome)).toEqual(["aborted", "aborted", "done"]);
    expect((await runEvents(fx.db, runId)).filter((e) => e.type === "done")).toHaveLength(1);
  });

  it("shares the queue's slots: with MAX_CONCURRENT_JOBS 2, never more than 2 agents run at once, and every run is answered", async () => {
    // 12 runs at once, each holding its agent for about half of PRE_CLAIM_MS;
    // a local start that finds no slot leaves its run to the queue.
    const runs = await Promise.all(
      Array.from({ length: 12 }, (_, i) => postRun(fx.client, fx.conv, scriptOf({ holdMs: PRE_CLAIM_MS / 2, text: [`r${i}`] }), "hello")),
    );
    for (const { runId } of runs) await waitForStatus(fx.db, runId, ["succeeded"]);
    expect(fx.agents.maxRunning).toBeLessThanOrEqual(2);
    for (const [i, { runId }] of runs.entries()) expect((await assistantMessages(fx.db, runId)).map((m) => m.content)).toEqual([`r${i}`]);
  });

  it("reserves a slot only for a pure agent asked for by name, while a slot is free and the queue runs", async () => {
    const { localStarts } = fx.q.queue;
    expect(localStarts.reserve(undefined)).toBeNull();
    expect(localStarts.reserve("assistant")).toBeNull();
    const a = localStarts.reserve("hello");
    const b = localStarts.reserve("hello");
    expect(a).not.toBeNull();
    expect(b).not.toBeNull();
    // Both of MAX_CONCURRENT_JOBS's slots are held.
    expect(localStarts.reserve("hello")).toBeNull();
    a?.release();
    a?.release(); // twice: frees one slot, not two
    const c = localStarts.reserve("hello");
    expect(c).not.toBeNull();
    expect(localStarts.reserve("hello")).toBeNull();
    b?.release();
    c?.release();
  });
});

describe("no run starts where posted once the queue stops", () => {
  const fx = useQueueFixture({ queue: { listener: true }, agent: { name: "hello", pure: true }, localStarts: true });

  it("reserves nothing after stop(); the run waits in the queue for another instance", async () => {
    const slot = fx.q.queue.localStarts.reserve("hello");
    expect(slot).not.toBeNull();
    slot?.release();
    await fx.q.stop();
    expect(fx.q.queue.localStarts.reserve("hello")).toBeNull();
    const { runId } = await postRun(fx.client, fx.conv, scriptOf({ text: ["x"] }), "hello");
    const [job] = await jobsOf(fx.db, runId);
    // Due now (not deferred): any instance's worker takes it.
    expect(job?.run_at.getTime()).toBeLessThanOrEqual(Date.now());
    expect((await runRow(fx.db, runId)).status).toBe("queued");
  });
});

describe("the one-statement claim of a run started where it was posted", () => {
  // No queue: the test plays the instance the message was posted to.
  const fx = useQueueFixture({ agent: { name: "hello", pure: true } });

  /** Posts a run through a store whose start only records the job id (as the POST hands it over). */
  async function postDeferred(content: string): Promise<{ runId: string; jobId: string }> {
    const { runId } = await postRun(fx.client, fx.conv, content, "hello");
    const [job] = await jobsOf(fx.db, runId);
    if (!job) throw new Error("no job");
    return { runId, jobId: job.id };
  }
  const succeed = (runId: string, postedJobId: string) =>
    claimAndSucceed(
      fx.db.pool,
      runId,
      "posting-instance",
      { events: [], route: null, text: "answer", usage: null, agentStartedAt: performance.now() },
      { maxAttempts: 4, prepared: false, postedJobId },
    );

  it("answers the run and deletes its job", async () => {
    const { runId, jobId } = await postDeferred("one");
    expect(await succeed(runId, jobId)).toMatchObject({ attempt: 1 });
    expect(await jobsOf(fx.db, runId)).toEqual([]);
    expect((await runRow(fx.db, runId)).status).toBe("succeeded");
  });

  it("leaves a job a worker holds (it fetched it meanwhile): that worker's attempt finds the run answered", async () => {
    const { runId, jobId } = await postDeferred("two");
    await fx.db.pool.query("update graphile_worker._private_jobs set locked_at = now(), locked_by = 'another-worker' where id = $1", [jobId]);
    expect(await succeed(runId, jobId)).toMatchObject({ attempt: 1 });
    expect((await jobsOf(fx.db, runId)).map((j) => j.id)).toEqual([jobId]);
  });

  it("takes no run an attempt has taken already, and writes nothing", async () => {
    const { runId, jobId } = await postDeferred("three");
    await fx.db.pool.query("update runs set status = 'running', attempt = 1, last_seq = 1 where id = $1", [runId]);
    expect(await succeed(runId, jobId)).toBeNull();
    expect(await runEvents(fx.db, runId)).toEqual([]);
    expect(await assistantMessages(fx.db, runId)).toEqual([]);
    expect(await jobsOf(fx.db, runId)).toHaveLength(1);
    // Nor a run taken and handed back (queued again, attempt 1).
    await fx.db.pool.query("update runs set status = 'queued' where id = $1", [runId]);
    expect(await succeed(runId, jobId)).toBeNull();
  });
});

describe("slots", () => {
  it("hand a released slot to the longest waiter; a waiter whose signal fires goes on without one", async () => {
    const slots = createSlots(1);
    expect(slots.tryTake()).toBe(true);
    expect(slots.tryTake()).toBe(false);
    const first = slots.take(new AbortController().signal);
    const gaveUp = new AbortController();
    const second = slots.take(gaveUp.signal);
    gaveUp.abort();
    expect(await second).toBe(false);
    slots.release();
    expect(await first).toBe(true);
    expect(slots.free).toBe(0);
    slots.release();
    expect(slots.free).toBe(1);
    // No more free slots than there are, however often released.
    slots.release();
    expect(slots.free).toBe(1);
  });
});

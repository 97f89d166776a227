/**
 * Issue 4, points 5 (crash recovery) and 6 (graceful hand-back), with two
 * real server processes on one PostgreSQL and one fake LLM. A run's first
 * attempt streams slowly so it is still running when its instance is killed
 * or stopped; the retry answers at once. Only processes spawned here are
 * signalled, by PID.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { startFakeLlm, type FakeLlm } from "./helpers/fakeLlm.js";
import { createCluster, quickReply, scriptByContent, slowReply, tail, type Cluster } from "./helpers/cluster.js";
import { waitFor, type ServerProcess } from "./helpers/spawnServer.js";
import { sleep } from "./fixtures/process.js";

const HEARTBEAT_MS = 500;
const RECOVERY_AFTER_MS = 3000;
/** Leaves the queue 2.5 s of grace after SIGTERM (services.ts keeps 2.5 s back for the hand-back). */
const SHUTDOWN_TIMEOUT_MS = 5000;

let db: TestDatabase;
let llm: FakeLlm;
let cluster: Cluster;
let script: ReturnType<typeof scriptByContent>;

beforeAll(async () => {
  [db, llm] = await Promise.all([createTestDatabase({ migrate: true }), startFakeLlm()]);
  script = scriptByContent(llm);
  cluster = createCluster({
    db,
    llm,
    env: { HEARTBEAT_MS: String(HEARTBEAT_MS), RECOVERY_AFTER_MS: String(RECOVERY_AFTER_MS), SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) },
  });
});
afterAll(async () => {
  await cluster?.stopAll();
  await llm?.close();
  await db?.drop();
});

/** Tops the cluster up to two live instances. */
async function twoInstances(): Promise<[ServerProcess, ServerProcess]> {
  const missing = 2 - cluster.live().length;
  await Promise.all(Array.from({ length: Math.max(0, missing) }, () => cluster.spawn()));
  const [a, b] = cluster.live();
  if (!a || !b) throw new Error("two instances expected");
  return [a, b];
}

/** Posts `content` and waits until an instance has claimed the run and the LLM has started answering it. */
async function startRun(content: string) {
  const [a] = await twoInstances();
  const client = await cluster.client(a);
  const { runId } = await cluster.ask(client, content);
  await cluster.waitForRun(runId, (r) => r.status === "running", 15_000);
  const until = Date.now() + 10_000;
  while (script.requests(content) === 0 && Date.now() < until) await sleep(20);
  expect(script.requests(content), "the LLM was asked").toBe(1);
  const runner = await cluster.runnerOf(runId);
  const other = cluster.live().find((s) => s !== runner);
  if (!other) throw new Error("no second instance");
  return { runId, runner, other };
}

/** Resolves with the exit of `s`, or rejects after `ms`. */
async function exitWithin(s: ServerProcess, ms: number) {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      s.exited,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`pid ${s.pid} did not exit within ${ms} ms\n${tail(s)}`)), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

describe("crash recovery (point 5)", () => {
  it("a SIGKILLed instance's run is finished by the other: one answer, the crash not counted, the new attempt starting with reset", async () => {
    const content = "Tell me a long story about a lighthouse keeper";
    script.plan(content, slowReply(30), quickReply("The lighthouse story, told once."));
    const { runId, runner, other } = await startRun(content);
    // Some of the first attempt's text is stored before the crash.
    const until = Date.now() + 5000;
    while (!(await cluster.events(runId)).some((e) => e.type === "text.delta") && Date.now() < until) await sleep(50);

    const killedAt = Date.now();
    runner.kill("SIGKILL");
    expect((await exitWithin(runner, 5000)).signal).toBe("SIGKILL");

    const done = await cluster.waitForRun(runId, (r) => r.status === "succeeded", 45_000);
    const seconds = (Date.now() - killedAt) / 1000;
    // Silent for RECOVERY_AFTER_MS, a sweep, a poll: seconds, far inside 45 s.
    expect(seconds).toBeLessThan(45);
    expect(seconds).toBeLessThan(RECOVERY_AFTER_MS / 1000 + 10);
    expect(done.failures).toBe(0);
    expect(done.attempt).toBe(2);
    expect(done.error_code).toBeNull();
    expect(await cluster.runnerOf(runId)).toBe(other);

    const messages = await cluster.assistantMessages(runId);
    expect(messages).toHaveLength(1);
    expect(messages[0]?.content).toBe("The lighthouse story, told once.");

    const events = await cluster.events(runId);
    const first = events.filter((e) => e.attempt === 1);
    const second = events.filter((e) => e.attempt === 2);
    expect(first.some((e) => e.type === "text.delta")).toBe(true);
    expect(first.at(-1)).toMatchObject({ type: "status", data: { status: "queued" } });
    expect(second[0]).toMatchObject({ type: "reset", data: { attempt: 2 } });
    expect(second.at(-1)?.type).toBe("done");
    expect(events.some((e) => e.type === "failed" || e.type === "cancelled")).toBe(false);
    // seq increases by one across both attempts.
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));

    // The survivor declared the killed instance dead.
    const dead = await db.pool.query<{ dead_at: Date | null }>("select dead_at from instances where pid = $1", [runner.pid]);
    expect(dead.rows[0]?.dead_at).toBeInstanceOf(Date);
    await other.waitForLog((l) => l.msg === "instance declared dead; its runs were handed back" && Array.isArray(l.runs) && l.runs.includes(runId), 1000);
  });

  it("an instance paused past the recovery window (SIGSTOP) loses its run to the other, which answers it once; resumed, it is live again and keeps its later runs", async () => {
    const content = "Describe the migration of arctic terns";
    script.plan(content, slowReply(30), quickReply("Terns, answered once."));
    const { runId, runner, other } = await startRun(content);

    runner.kill("SIGSTOP");
    let resumedAt: Date;
    try {
      const done = await cluster.waitForRun(runId, (r) => r.status === "succeeded", 20_000);
      expect(done.attempt).toBe(2);
      expect(done.failures).toBe(0);
      expect(await cluster.runnerOf(runId)).toBe(other);
    } finally {
      resumedAt = new Date();
      runner.kill("SIGCONT");
    }

    // Back: it heartbeats again and counts as live, and says what happened.
    await waitFor(async () => {
      const r = await db.pool.query<{ dead_at: Date | null; heartbeat_at: Date }>("select dead_at, heartbeat_at from instances where pid = $1", [runner.pid]);
      const row = r.rows[0];
      return row && row.dead_at === null && row.heartbeat_at > resumedAt;
    }, 5000).catch(async () => {
      const r = await db.pool.query("select * from instances where pid = $1", [runner.pid]);
      throw new Error(`the resumed instance is not live again: ${JSON.stringify(r.rows)}`);
    });
    await runner.waitForLog((l) => typeof l.msg === "string" && l.msg.startsWith("this instance had been declared dead"), 5000);

    // Its resumed attempt goes on streaming but cannot answer the run again.
    await sleep(1000);
    expect((await cluster.assistantMessages(runId)).map((m) => m.content)).toEqual(["Terns, answered once."]);

    // A run it takes now, longer than the recovery window, stays its own.
    const later = "Explain the long history of tea";
    script.plan(later, slowReply(RECOVERY_AFTER_MS / 1000 + 3, "tea"), quickReply("Taken away from its instance."));
    const client = await cluster.client(runner);
    other.kill("SIGSTOP"); // for a moment, well inside the recovery window, so that the resumed instance takes the run
    const laterId = await (async () => {
      try {
        const { runId: id } = await cluster.ask(client, later);
        await cluster.waitForRun(id, (r) => r.status === "running", 10_000);
        return id;
      } finally {
        other.kill("SIGCONT");
      }
    })();
    expect(await cluster.runnerOf(laterId)).toBe(runner);
    const laterDone = await cluster.waitForRun(laterId, (r) => r.status === "succeeded", 20_000);
    expect(laterDone.attempt, `${tail(runner)}\n${tail(other)}`).toBe(1);
    expect(script.requests(later)).toBe(1);
    expect(await cluster.assistantMessages(laterId)).toHaveLength(1);

    // The resumed, superseded attempt wrote nothing into the run's log once
    // the new attempt had begun: a client would show its text after `reset`.
    const events = await cluster.events(runId);
    const reset = events.findIndex((e) => e.type === "reset");
    const stale = events.slice(reset).filter((e) => e.attempt === 1);
    expect(stale.map((e) => `${e.seq}:${e.type}`), "events of attempt 1 after attempt 2 began (executeRun.ts / runEvents.ts)").toEqual([]);
  });
});

describe("graceful hand-back (point 6)", () => {
  it("SIGTERM: a run that cannot finish by the deadline goes back to the queue uncounted, the instance exits 0, the other completes it once", async () => {
    const content = "Write a very long essay about tides";
    script.plan(content, slowReply(30), quickReply("The essay about tides."));
    const { runId, runner, other } = await startRun(content);

    const signalledAt = Date.now();
    runner.kill("SIGTERM");
    const exit = await exitWithin(runner, SHUTDOWN_TIMEOUT_MS + 2000);
    expect(exit, tail(runner)).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalledAt).toBeLessThan(SHUTDOWN_TIMEOUT_MS + 1000);
    // The stopping instance aborted its attempt and said so.
    expect(runner.logs.some((l) => l.msg === "run interrupted; handed back to the queue" && l.runId === runId), tail(runner)).toBe(true);
    expect(llm.requests.some((r) => r.disconnected && JSON.stringify(r.body.messages).includes(content))).toBe(true);

    const done = await cluster.waitForRun(runId, (r) => r.status === "succeeded", 20_000);
    expect(done.failures).toBe(0);
    expect(done.attempt).toBe(2);
    expect(await cluster.runnerOf(runId)).toBe(other);
    // Handed back at once, not waiting for the recovery window of a dead instance.
    expect(Date.now() - signalledAt).toBeLessThan(SHUTDOWN_TIMEOUT_MS + RECOVERY_AFTER_MS);

    const messages = await cluster.assistantMessages(runId);
    expect(messages).toHaveLength(1);
    expect(messages[0]?.content).toBe("The essay about tides.");
    const events = await cluster.events(runId);
    expect(events.filter((e) => e.attempt === 1).at(-1)).toMatchObject({ type: "status", data: { status: "queued", reason: "interrupted" } });
    expect(events.filter((e) => e.attempt === 2)[0]).toMatchObject({ type: "reset", data: { attempt: 2 } });
    expect(events.some((e) => e.type === "failed" || e.type === "cancelled")).toBe(false);
  });

  it("SIGTERM: a short run finishes on the stopping instance itself before it exits 0", async () => {
    const content = "Give me a brief haiku about snow";
    script.plan(content, slowReply(1.5, "snow"));
    const { runId, runner } = await startRun(content);

    runner.kill("SIGTERM");
    const exit = await exitWithin(runner, SHUTDOWN_TIMEOUT_MS + 2000);
    expect(exit, tail(runner)).toEqual({ code: 0, signal: null });

    const done = await cluster.run(runId);
    expect(done.status).toBe("succeeded");
    expect(done.attempt).toBe(1);
    expect(done.failures).toBe(0);
    const owner = await db.pool.query<{ pid: string }>("select i.pid from runs r join instances i on i.id = r.instance_id where r.id = $1", [runId]);
    expect(Number(owner.rows[0]?.pid)).toBe(runner.pid);
    expect(script.requests(content)).toBe(1);
    expect(await cluster.assistantMessages(runId)).toHaveLength(1);
    const events = await cluster.events(runId);
    expect(events.some((e) => e.type === "reset")).toBe(false);
    expect(events.at(-1)?.type).toBe("done");
  });
});

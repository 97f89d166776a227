/**
 * The recovery sweep's own-instance half: a run this instance marked
 * `running` whose attempt here is no longer executing (its ending was lost
 * with the database, and graphile-worker's unawaited failJob/completeJob of
 * its job too) is handed back like a dead instance's run, instead of waiting
 * out graphile-worker's 4 h lock expiry. So is the job of a queued run whose
 * attempt failed before its claim (the chaos test's database restart caught
 * one so). A run still in flight is left alone.
 */
import { describe, it, expect } from "vitest";
import { pino } from "pino";
import { createInstanceRegistry } from "../server/queue/recovery.js";
import { createMetrics } from "../server/ops/metrics.js";
import { jobsOf, postRun, runEvents, runRow, useQueueFixture } from "./helpers/queue.js";

const fx = useQueueFixture();

/**
 * One recovery sweep as instance `instanceId` would run it, whose worker pool
 * is `workerId` and whose attempts are executing `inFlight`.
 */
async function sweepAs(instanceId: string, workerId: string, inFlight: string[]): Promise<void> {
  const registry = createInstanceRegistry({
    pool: fx.db.pool,
    log: pino({ level: "silent" }),
    metrics: createMetrics(),
    instanceId,
    version: "test",
    heartbeatMs: 60_000,
    recoveryAfterMs: 30_000,
    workerIds: () => [workerId],
    inFlightRunIds: () => inFlight,
  });
  await registry.sweep();
}

describe("recovery sweep: this instance's stranded runs", () => {
  it("hands back a run marked running here that no attempt here executes; leaves the one in flight", async () => {
    const instanceId = "test-instance-own-sweep";
    const stranded = (await postRun(fx.client, fx.conv, "stranded")).runId;
    const inFlight = (await postRun(fx.client, fx.conv, "in flight")).runId;
    // What an attempt leaves when its ending could not be written: running,
    // this instance's, its job still locked by a worker of this instance.
    await fx.db.pool.query(
      `update runs set status = 'running', instance_id = $1, attempt = 1, updated_at = now() - interval '10 seconds' where id = any($2::uuid[])`,
      [instanceId, [stranded, inFlight]],
    );
    await fx.db.pool.query(
      `update graphile_worker._private_jobs set locked_by = 'worker-own', locked_at = now() - interval '10 seconds' where key = any($1::text[])`,
      [[stranded, inFlight]],
    );
    await sweepAs(instanceId, "worker-own", [inFlight]);

    expect(await runRow(fx.db, stranded)).toMatchObject({ status: "queued", instance_id: null, attempt: 1 });
    expect((await runEvents(fx.db, stranded)).at(-1)).toMatchObject({ type: "status", attempt: 1, data: { status: "queued", reason: "interrupted" } });
    // A fresh, unlocked job runs it again; the old locked one can no longer run.
    const jobs = await jobsOf(fx.db, stranded);
    expect(jobs).toHaveLength(1);
    expect(jobs[0]?.locked_at).toBeNull();

    expect(await runRow(fx.db, inFlight)).toMatchObject({ status: "running", instance_id: instanceId });
    expect((await jobsOf(fx.db, inFlight))[0]?.locked_at).not.toBeNull();
  });

  it("replaces the job a worker here holds for a queued run no attempt here executes; leaves the one in flight", async () => {
    const instanceId = "test-instance-unclaimed";
    const unclaimed = (await postRun(fx.client, fx.conv, "failed before its claim")).runId;
    const inFlight = (await postRun(fx.client, fx.conv, "about to claim")).runId;
    // What an attempt leaves when its claim failed with the database and
    // graphile-worker's failJob too: the run queued, its job locked by a worker of this instance.
    await fx.db.pool.query(
      `update graphile_worker._private_jobs set locked_by = 'worker-unclaimed', locked_at = now() - interval '10 seconds' where key = any($1::text[])`,
      [[unclaimed, inFlight]],
    );
    const eventsBefore = await runEvents(fx.db, unclaimed);
    await sweepAs(instanceId, "worker-unclaimed", [inFlight]);

    // A fresh, unlocked job; the run itself is as it was.
    const jobs = await jobsOf(fx.db, unclaimed);
    expect(jobs).toHaveLength(1);
    expect(jobs[0]?.locked_at).toBeNull();
    expect(await runRow(fx.db, unclaimed)).toMatchObject({ status: "queued", attempt: 0 });
    expect(await runEvents(fx.db, unclaimed)).toEqual(eventsBefore);

    expect((await jobsOf(fx.db, inFlight))[0]?.locked_at).not.toBeNull();
  });
});

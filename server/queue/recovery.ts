/**
 * Instance liveness. Each instance heartbeats into `instances`; any live
 * instance that finds one silent for `recoveryAfterMs` declares it dead (one
 * winner, by a conditional UPDATE), releases the job locks of its worker pools
 * (graphile-worker's force_unlock_workers) and hands its running runs back to
 * the queue, so they run again elsewhere within seconds, not hours.
 */
import type { PoolClient } from "pg";
import type { Pool } from "../db/pool.js";
import type { Logger } from "../ops/logger.js";
import type { Metrics } from "../ops/metrics.js";
import { appendEvents } from "./runEvents.js";
import { withTransaction } from "../db/transaction.js";
import { scheduleRunSql } from "./enqueue.js";
import { OPEN_RUN_SQL } from "../../shared/schema.js";

export interface InstanceRegistryDeps {
  pool: Pool;
  log: Logger;
  metrics: Metrics;
  instanceId: string;
  version: string;
  heartbeatMs: number;
  recoveryAfterMs: number;
  /** graphile-worker pool ids of this instance. */
  workerIds(): string[];
  /** Runs an attempt on this instance is executing right now. */
  inFlightRunIds(): string[];
}

/**
 * Runs just set back to `queued`: their `status queued` event, and a fresh job
 * instead of the old one (removed; if still locked, graphile-worker marks it
 * so it never runs again).
 */
async function requeue(client: PoolClient, runs: { id: string; attempt: number }[], reason: string): Promise<void> {
  for (const r of runs) {
    await appendEvents(client, r.id, r.attempt, [{ type: "status", data: { status: "queued", reason } }]);
    await reschedule(client, r.id);
  }
}

/** A new job for the run, now; its old one, if locked, can no longer run (remove_job clears its key and spends its attempts). */
async function reschedule(client: PoolClient, runId: string): Promise<void> {
  await client.query("select graphile_worker.remove_job($1)", [runId]);
  await client.query(scheduleRunSql, [runId, new Date()]);
}

export function createInstanceRegistry(deps: InstanceRegistryDeps) {
  const { pool, log } = deps;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let beating: Promise<void> = Promise.resolve();

  /**
   * Writes this instance's heartbeat. An instance that was declared dead while
   * it was only paused (CPU throttled, stopped, cut off from the database past
   * the recovery window) is live again from here on: otherwise the orphan-lock
   * release below would take every job it locks from now on away from it once
   * the job runs longer than the recovery window.
   */
  async function heartbeat() {
    const r = await pool.query<{ was_dead: Date | null }>(
      `with prev as (select dead_at from instances where id = $1)
       insert into instances (id, version, pid, worker_ids) values ($1, $2, $3, $4)
       on conflict (id) do update set heartbeat_at = now(), worker_ids = excluded.worker_ids, dead_at = null
       returning (select dead_at from prev) as was_dead`,
      [deps.instanceId, deps.version, process.pid, deps.workerIds()],
    );
    const deadAt = r.rows[0]?.was_dead;
    if (deadAt) {
      log.warn(
        { deadAt },
        "this instance had been declared dead (silent past the recovery window) and is back; the runs it held were handed back and its attempts at them no longer count",
      );
    }
  }

  /**
   * Declares silent instances dead and releases what they held, in one
   * transaction (a failure leaves them to the next sweep). Returns how many it
   * recovered.
   *
   * A handed-back run gets a new job rather than its old, unlocked one: if the
   * "dead" instance was only paused, it may yet finish its attempt, and
   * graphile-worker then deletes the job it ran by id, whoever holds it now.
   */
  async function sweep(): Promise<number> {
    const dead: { id: string; worker_ids: string[]; runs: string[] }[] = [];
    await withTransaction(pool, async (client) => {
      const found = await client.query<{ id: string; worker_ids: string[] }>(
        `update instances set dead_at = now()
         where dead_at is null and id <> $1 and heartbeat_at < now() - make_interval(secs => $2::double precision / 1000)
         returning id, worker_ids`,
        [deps.instanceId, deps.recoveryAfterMs],
      );
      for (const inst of found.rows) {
        if (inst.worker_ids.length) await client.query("select graphile_worker.force_unlock_workers($1::text[])", [inst.worker_ids]);
        const runs = await client.query<{ id: string; attempt: number }>(
          `update runs set status = 'queued', instance_id = null, updated_at = now()
           where ${OPEN_RUN_SQL} and instance_id = $1 and status = 'running' returning id, attempt`,
          [inst.id],
        );
        await requeue(client, runs.rows, "instance lost");
        dead.push({ ...inst, runs: runs.rows.map((r) => r.id) });
      }
    });
    for (const inst of dead) {
      log.warn({ instance: inst.id, workerIds: inst.worker_ids, runs: inst.runs }, "instance declared dead; its runs were handed back");
    }
    // This instance's own runs that no attempt here executes any more: the
    // attempt's ending was lost with the database (and graphile-worker's
    // unawaited failJob/completeJob of its job with it), so nothing else would
    // move them until graphile-worker's 4 h lock expiry. Handed back the same way.
    const stranded = await withTransaction(pool, async (client) => {
      const runs = await client.query<{ id: string; attempt: number }>(
        `update runs set status = 'queued', instance_id = null, updated_at = now()
         where ${OPEN_RUN_SQL} and instance_id = $1 and status = 'running' and id <> all($2::uuid[])
           and updated_at < now() - interval '2 seconds'
         returning id, attempt`,
        [deps.instanceId, deps.inFlightRunIds()],
      );
      await requeue(client, runs.rows, "interrupted");
      // Queued runs whose job a worker here holds but no attempt here executes:
      // the attempt failed before its claim (the database lost under it) and
      // graphile-worker's failJob was lost too. The run is as it was; only its
      // job needs replacing.
      const unclaimed = await client.query<{ id: string }>(
        `select r.id from runs r join graphile_worker.jobs j on j.key = r.id::text
         where ${OPEN_RUN_SQL} and r.status = 'queued' and j.locked_by = any($1::text[])
           and j.locked_at < now() - interval '2 seconds' and r.id <> all($2::uuid[])`,
        [deps.workerIds(), deps.inFlightRunIds()],
      );
      for (const r of unclaimed.rows) await reschedule(client, r.id);
      return [...runs.rows, ...unclaimed.rows].map((r) => r.id);
    });
    if (stranded.length) log.warn({ runs: stranded }, "runs whose attempt here ended without a record (database lost) were handed back");
    // Job locks held by a worker pool no live instance owns (it died before its
    // first heartbeat named the pool): released once older than the recovery window.
    await pool.query(
      `select graphile_worker.force_unlock_workers(array_agg(distinct locked_by))
       from graphile_worker.jobs
       where locked_by is not null
         and locked_at < now() - make_interval(secs => $1::double precision / 1000)
         and locked_by <> all (coalesce((select array_agg(w) from instances, unnest(worker_ids) w where dead_at is null), '{}'))
       having count(*) > 0`,
      [deps.recoveryAfterMs],
    );
    // Forget instances long dead.
    await pool.query("delete from instances where dead_at < now() - interval '1 day'");
    return dead.length;
  }

  async function tick() {
    try {
      await heartbeat();
      await sweep();
    } catch (err) {
      deps.metrics.backgroundErrors.inc({ loop: "instance-heartbeat" });
      log.warn({ err }, "heartbeat or recovery sweep failed");
    }
  }

  return {
    async start() {
      await heartbeat();
      const loop = () => {
        if (stopped) return;
        beating = tick().finally(() => {
          if (!stopped) timer = setTimeout(loop, deps.heartbeatMs);
        });
      };
      timer = setTimeout(loop, deps.heartbeatMs);
    },
    sweep,
    /** Writes the heartbeat now (e.g. when a worker pool id becomes known). */
    heartbeat,
    /**
     * Stops heartbeating and leaves as if silent since the epoch, so the next
     * sweep elsewhere releases anything this instance could not hand back itself.
     */
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await beating;
      await pool
        .query("update instances set heartbeat_at = to_timestamp(0) where id = $1", [deps.instanceId])
        .catch((err: unknown) => log.warn({ err }, "could not mark this instance as gone"));
    },
  };
}

export type InstanceRegistry = ReturnType<typeof createInstanceRegistry>;

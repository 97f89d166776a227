import type { Pool } from "../db/pool.js";
import { OPEN_RUN_SQL } from "../../shared/schema.js";

export interface QueueStats {
  queued: number;
  running: number;
  oldestQueuedSeconds: number;
  liveInstances: number;
}

/** One indexed query for the queue's state across all instances. */
export async function readQueueStats(pool: Pool, recoveryAfterMs: number): Promise<QueueStats> {
  const r = await pool.query<{ queued: string; running: string; oldest: number | null; instances: string }>(
    `select
       (select count(*) from runs where ${OPEN_RUN_SQL} and status = 'queued') as queued,
       (select count(*) from runs where ${OPEN_RUN_SQL} and status = 'running') as running,
       (select extract(epoch from now() - min(created_at)) from runs where ${OPEN_RUN_SQL} and status = 'queued')::float8 as oldest,
       (select count(*) from instances where dead_at is null
          and heartbeat_at > now() - make_interval(secs => $1::double precision / 1000)) as instances`,
    [recoveryAfterMs],
  );
  const row = r.rows[0];
  return {
    queued: Number(row?.queued ?? 0),
    running: Number(row?.running ?? 0),
    oldestQueuedSeconds: row?.oldest ?? 0,
    liveInstances: Number(row?.instances ?? 0),
  };
}

import type { Pool } from "../db/pool.js";
import { SELECT_COLUMNS, toEvent, type EventRow, type StoredEvent } from "./hub.js";
import { REPLAY_PAGE } from "./runStream.js";
import { RUN_STATUS_VALUES } from "../../shared/realtime.js";
import type { RunStatus as SchemaRunStatus } from "../../shared/schema.js";

type RunStatus = (typeof RUN_STATUS_VALUES)[number];
// shared/realtime.ts keeps its own list (the client imports it, not drizzle); it must be the schema's.
const _sameStatuses: [RunStatus, SchemaRunStatus] extends [SchemaRunStatus, RunStatus] ? true : never = true;

/** Statuses after which a run writes nothing more. */
const FINISHED: ReadonlySet<RunStatus> = new Set(["succeeded", "failed", "cancelled"]);

export interface StreamableRun {
  status: RunStatus;
  /** runs.last_seq now: every event up to it is stored and readable. */
  lastSeq: number;
  finished: boolean;
  /**
   * The first replay page, the stored events after `after` (at most
   * REPLAY_PAGE), read in the same statement: the same snapshot as `lastSeq`.
   */
  firstPage: StoredEvent[];
}

// The run (only the caller's) left-joined to its first replay page: no row
// means not theirs, one row of null events an empty page. One statement, so a
// subscriber goes live one round trip sooner than with the ownership check
// and the replay's first read apart.
const RUN_AND_PAGE_SQL = `select r.status as run_status, r.last_seq as run_last_seq, ${SELECT_COLUMNS}, false as local
from runs r left join lateral (
  select * from run_events e where e.run_id = r.id and e.seq > $3 order by e.seq limit $4
) e on true
where r.id = $1 and r.user_id = $2
order by e.seq`;

type RunAndPageRow = { run_status: RunStatus; run_last_seq: number } & (EventRow | { [K in keyof EventRow]: null });

/**
 * The caller's run as a stream after `after` needs it, or null when it is not
 * theirs (or does not exist).
 */
export async function readRunForStream(pool: Pool, userId: string, runId: string, after: number): Promise<StreamableRun | null> {
  const r = await pool.query<RunAndPageRow>(RUN_AND_PAGE_SQL, [runId, userId, after, REPLAY_PAGE]);
  const first = r.rows[0];
  if (!first) return null;
  const firstPage: StoredEvent[] = [];
  for (const row of r.rows) if (row.seq !== null) firstPage.push(toEvent(row as EventRow));
  return { status: first.run_status, lastSeq: first.run_last_seq, finished: FINISHED.has(first.run_status), firstPage };
}

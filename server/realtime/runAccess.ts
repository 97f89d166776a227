import type { Pool } from "../db/pool.js";
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
}

/** The caller's run as a stream needs it, or null when it is not theirs (or does not exist). */
export async function readRunForStream(pool: Pool, userId: string, runId: string): Promise<StreamableRun | null> {
  const r = await pool.query<{ status: RunStatus; last_seq: number }>("select status, last_seq from runs where id = $1 and user_id = $2", [runId, userId]);
  const row = r.rows[0];
  return row ? { status: row.status, lastSeq: row.last_seq, finished: FINISHED.has(row.status) } : null;
}

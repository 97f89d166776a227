import type { PoolClient } from "pg";
import type { Pool } from "../db/pool.js";
import type { RunEventType } from "../../shared/realtime.js";

/** NOTIFY channel carrying `<runId>:<last seq>` after events are stored. */
export const RUN_EVENTS_CHANNEL = "run_events";

type Queryable = Pick<Pool, "query"> | PoolClient;

/** The attempt writing is no longer the run's current one (another took over after a pause). */
export class AttemptSuperseded extends Error {
  constructor(readonly runId: string, readonly attempt: number) {
    super(`attempt ${attempt} of run ${runId} was superseded`);
    this.name = "AttemptSuperseded";
  }
}

/**
 * Appends events to a run's log in one statement: `runs.last_seq` hands out
 * the sequence numbers (per run, increasing, assigned by the database) and a
 * NOTIFY tells every instance, on commit.
 */
const APPEND_SQL = `
with s as (
  update runs set last_seq = last_seq + cardinality($3::text[]) where id = $1 and attempt = $2 returning last_seq
), ins as (
  insert into run_events (run_id, seq, attempt, type, data, created_at)
  select $1, s.last_seq - cardinality($3::text[]) + t.ord, $2, t.type, t.data, clock_timestamp()
  from s, unnest($3::text[], $4::jsonb[]) with ordinality as t(type, data, ord)
  returning seq
), n as (
  select pg_notify('${RUN_EVENTS_CHANNEL}', $1::text || ':' || max(seq)) from ins
)
select (select max(seq) from ins) as seq, (select count(*) from n) as notified`;

export interface PendingEvent {
  type: RunEventType;
  data: unknown;
}

/**
 * Only the run's current attempt may write: a superseded one (an instance
 * that was paused past the recovery window) gets AttemptSuperseded.
 */
export async function appendEvents(db: Queryable, runId: string, attempt: number, events: PendingEvent[]): Promise<number> {
  if (events.length === 0) return 0;
  const r = await db.query<{ seq: number | null }>(APPEND_SQL, [
    runId,
    attempt,
    events.map((e) => e.type),
    events.map((e) => JSON.stringify(e.data ?? {})),
  ]);
  const seq = r.rows[0]?.seq;
  if (seq === null || seq === undefined) throw new AttemptSuperseded(runId, attempt);
  return seq;
}

/** How long text deltas are held to be written (and sent) together. */
export const DELTA_BATCH_MS = 40;
const MAX_BATCH_CHARS = 4096;

/**
 * Buffers text deltas for about 40 ms (or 4 KB) and writes them as one
 * event; any other event flushes the buffer first, so order is kept.
 * Errors surface on the next call (or flush), never in the void.
 */
export function createEventWriter(pool: Pool, runId: string, attempt: number) {
  let text = "";
  let timer: NodeJS.Timeout | null = null;
  let chain: Promise<unknown> = Promise.resolve();
  let failure: unknown = null;

  const enqueue = (events: PendingEvent[]) => {
    chain = chain.then(() => appendEvents(pool, runId, attempt, events)).catch((err: unknown) => {
      failure ??= err;
    });
    return chain;
  };
  const takeText = (): PendingEvent[] => {
    if (timer) clearTimeout(timer);
    timer = null;
    if (!text) return [];
    const e: PendingEvent = { type: "text.delta", data: { text } };
    text = "";
    return [e];
  };
  const check = () => {
    if (failure) throw failure;
  };

  return {
    delta(chunk: string) {
      check();
      text += chunk;
      if (text.length >= MAX_BATCH_CHARS) void enqueue(takeText());
      else timer ??= setTimeout(() => void enqueue(takeText()), DELTA_BATCH_MS);
    },
    async event(type: RunEventType, data: unknown) {
      check();
      await enqueue([...takeText(), { type, data }]);
      check();
    },
    /** Writes whatever is buffered and waits for every write so far. */
    async flush() {
      await enqueue(takeText());
      check();
    },
    /** Drops the buffer and timer (the attempt is over). */
    discard() {
      takeText();
    },
  };
}

export type EventWriter = ReturnType<typeof createEventWriter>;

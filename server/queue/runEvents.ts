import type { PoolClient } from "pg";
import { statement, type Pool } from "../db/pool.js";
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
 * An event as stored, with the columns every reader makes its frame from:
 * `data` is jsonb's text output and `stored_at` the row's created_at in ms
 * since the epoch, as the hub reads them.
 */
export interface StoredEventRow {
  run_id: string;
  seq: number;
  attempt: number;
  type: RunEventType;
  data: string;
  stored_at: number;
}

/** `created_at` as a StoredEventRow's `stored_at` (ms since the epoch): one expression for every statement that returns rows. */
export const STORED_AT_SQL = (column: string) => `(extract(epoch from ${column}) * 1000)::float8`;

/**
 * Appends events to a run's log in one statement: `runs.last_seq` hands out
 * the sequence numbers (per run, increasing, assigned by the database) and a
 * NOTIFY tells every instance, on commit. $5/$6, when not null, also record
 * the run's route (agent, reason) in the same update. Answers the rows as
 * stored (no row: the attempt was superseded), so the instance running the
 * attempt can hand them to its own subscribers without reading them back.
 */
const APPEND_SQL = `
with s as (
  update runs set last_seq = last_seq + cardinality($3::text[]),
    agent = coalesce($5::text, agent),
    route_reason = coalesce($6::text, route_reason),
    updated_at = case when $5::text is null then updated_at else now() end
  where id = $1 and attempt = $2 returning last_seq
), ins as (
  insert into run_events (run_id, seq, attempt, type, data, created_at)
  select $1, s.last_seq - cardinality($3::text[]) + t.ord, $2, t.type, t.data, clock_timestamp()
  from s, unnest($3::text[], $4::jsonb[]) with ordinality as t(type, data, ord)
  returning seq, type, data, created_at
), n as (
  select pg_notify('${RUN_EVENTS_CHANNEL}', $1::text || ':' || max(seq)) from ins
)
select i.seq, i.type, i.data::text as data, ${STORED_AT_SQL("i.created_at")} as stored_at, (select count(*) from n) as notified
from ins i order by i.seq`;

export interface PendingEvent {
  type: RunEventType;
  data: unknown;
}

/** The run's route, recorded on `runs` together with its `route` event. */
export interface RouteUpdate {
  agent: string;
  reason: string;
}

/**
 * Only the run's current attempt may write: a superseded one (an instance
 * that was paused past the recovery window) gets AttemptSuperseded.
 * Resolves with the rows as stored, in seq order.
 */
export async function appendStoredEvents(
  db: Queryable,
  runId: string,
  attempt: number,
  events: PendingEvent[],
  opts: { route?: RouteUpdate | null; prepared?: boolean } = {},
): Promise<StoredEventRow[]> {
  if (events.length === 0) return [];
  const values = [runId, attempt, events.map((e) => e.type), events.map((e) => JSON.stringify(e.data ?? {})), opts.route?.agent ?? null, opts.route?.reason ?? null];
  const r = await db.query<{ seq: number; type: RunEventType; data: string; stored_at: number }>(statement("esa_run_append_events", APPEND_SQL, values, opts.prepared ?? false));
  if (r.rows.length === 0) throw new AttemptSuperseded(runId, attempt);
  return r.rows.map((row) => ({ run_id: runId, seq: row.seq, attempt, type: row.type, data: row.data, stored_at: row.stored_at }));
}

/** {@link appendStoredEvents}, answering the last seq written (0 when there was nothing to write). */
export async function appendEvents(
  db: Queryable,
  runId: string,
  attempt: number,
  events: PendingEvent[],
  opts: { route?: RouteUpdate | null; prepared?: boolean } = {},
): Promise<number> {
  const rows = await appendStoredEvents(db, runId, attempt, events, opts);
  return rows.at(-1)?.seq ?? 0;
}

/** Text deltas coalesced while a write is in flight become events of at most this many characters. */
export const MAX_DELTA_CHARS = 4096;

/** What a writer had not written when it was closed: for the statement that ends the attempt. */
export interface Unwritten {
  events: PendingEvent[];
  route: RouteUpdate | null;
}

/**
 * Events not yet written, in order: consecutive text deltas coalesced into
 * one `text.delta` event of up to MAX_DELTA_CHARS, and the run's route as
 * the last `route` event set it. `take` hands them over and starts afresh.
 */
export function createEventBuffer() {
  let events: PendingEvent[] = [];
  /** The data of the last event when it is a text delta still open to more text. */
  let openText: { text: string } | null = null;
  let route: RouteUpdate | null = null;
  return {
    get empty() {
      return events.length === 0;
    },
    delta(chunk: string) {
      if (openText && openText.text.length + chunk.length <= MAX_DELTA_CHARS) {
        openText.text += chunk;
      } else {
        openText = { text: chunk };
        events.push({ type: "text.delta", data: openText });
      }
    },
    /** Any other event; `routeUpdate` records the run's route with it (the `route` event). */
    event(type: RunEventType, data: unknown, routeUpdate?: RouteUpdate) {
      events.push({ type, data });
      openText = null;
      if (routeUpdate) route = routeUpdate;
    },
    take(): Unwritten {
      const out = { events, route };
      events = [];
      openText = null;
      route = null;
      return out;
    },
  };
}

/**
 * Writes a run's events through, in order, with at most one write in flight:
 * an event (or text delta) is written at once when no write is in flight
 * (at the end of the current event-loop turn, so what an agent yields in one
 * synchronous burst goes in one write); what arrives while a write is in
 * flight is coalesced into the next single write (consecutive text deltas
 * into one `text.delta` event of up to MAX_DELTA_CHARS). So a quiet stream is
 * stored as it comes, a busy one is batched by the database's own round-trip
 * time, and a slow database never gets more than one write per run at a time.
 * There is no time window: nothing waits for a timer.
 *
 * Nothing here waits for the write: errors (AttemptSuperseded, a lost
 * database) surface on the next call, on flush() or on close().
 *
 * `onStored` is told each write's rows once they are committed, in order
 * (this instance's subscribers get them without a NOTIFY and a read back).
 */
export function createEventWriter(
  pool: Pool,
  runId: string,
  attempt: number,
  opts: { prepared?: boolean; onStored?: (rows: StoredEventRow[]) => void } = {},
) {
  const pending = createEventBuffer();
  let inflight: Promise<void> | null = null;
  let scheduled: NodeJS.Immediate | null = null;
  let failure: unknown = null;
  let closed = false;

  const check = () => {
    if (failure) throw failure;
  };
  const unschedule = () => {
    if (scheduled) clearImmediate(scheduled);
    scheduled = null;
  };
  /** Writes everything pending now, unless a write is in flight (it calls this again when done). */
  const write = () => {
    unschedule();
    if (inflight || closed || failure || pending.empty) return;
    const batch = pending.take();
    inflight = appendStoredEvents(pool, runId, attempt, batch.events, { route: batch.route, prepared: opts.prepared ?? false }).then(
      (rows) => {
        inflight = null;
        try {
          opts.onStored?.(rows);
        } catch {
          // Nothing is lost: the write's NOTIFY brings the rows to every subscriber through the hub's read.
        }
        write();
      },
      (err: unknown) => {
        failure ??= err;
        inflight = null;
      },
    );
  };
  /** Something was added: with no write in flight, write it at the end of this event-loop turn. */
  const start = () => {
    if (!inflight && !scheduled && !closed) scheduled = setImmediate(write);
  };
  const settled = async () => {
    while (inflight) await inflight;
  };

  return {
    delta(chunk: string) {
      check();
      if (closed) return;
      pending.delta(chunk);
      start();
    },
    /** Any other event; `routeUpdate` records the run's route with it (the `route` event). */
    event(type: RunEventType, data: unknown, routeUpdate?: RouteUpdate) {
      check();
      if (closed) return;
      pending.event(type, data, routeUpdate);
      start();
    },
    /** Waits until everything so far is stored. */
    async flush() {
      while (!closed && !failure && (inflight || !pending.empty)) {
        write();
        await settled();
      }
      check();
    },
    /**
     * Ends the writer: waits for the write in flight and hands back what is
     * not written yet, for the statement that ends the attempt to write with
     * it. Throws what a write failed with.
     */
    async close(): Promise<Unwritten> {
      closed = true;
      unschedule();
      await settled();
      check();
      return pending.take();
    },
    /** Ends the writer dropping what is not written; waits for the write in flight, ignoring its outcome. */
    async discard() {
      closed = true;
      unschedule();
      pending.take();
      await settled();
    },
  };
}

export type EventWriter = ReturnType<typeof createEventWriter>;

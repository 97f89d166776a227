/**
 * The per-process fan-out of run events. Whichever instance runs a job
 * appends its events to `run_events` and NOTIFYs `run_events` with
 * `<runId>:<last seq>`; here, one feed per run with local subscribers reads
 * the new rows once and hands the same frame to every subscriber.
 *
 * Without LISTEN (a transaction pooler, or the LISTEN connection being down)
 * the feeds are polled; with it, a slow safety poll and a catch-up after each
 * reconnect cover notifications that could not arrive.
 */
import type { Pool } from "../db/pool.js";
import type { Listener } from "../db/listener.js";
import type { Logger } from "../ops/logger.js";
import type { Metrics } from "../ops/metrics.js";
import { RUN_EVENTS_CHANNEL, STORED_AT_SQL, type StoredEventRow } from "../queue/runEvents.js";
import type { RunEventType } from "../../shared/realtime.js";
import { SECOND } from "../config.js";

/** A stored event, with its frame serialized once for every subscriber. */
export interface StoredEvent {
  runId: string;
  seq: number;
  attempt: number;
  type: RunEventType;
  /** The `event` frame as sent over WebSocket (and as SSE `data:`), JSON text. */
  frame: string;
  /** When it was stored (run_events.created_at, the database's clock), ms since the epoch. */
  storedAt: number;
  /** Stored by a run executing on this instance (runs.instance_id when read). */
  local: boolean;
}

/** A live subscriber of one run: told each new event once, in seq order. */
export interface RunSink {
  deliver(event: StoredEvent): void;
}

export interface HubOptions {
  /** Polling interval when LISTEN is unavailable or its connection is down, ms. Default 150 ms. */
  pollMs?: number;
  /** With LISTEN up: a poll now and then for what a notification could not say, ms. Default 5 s. */
  safetyPollMs?: number;
  /** Rows per read; a feed further behind is read again at once. Default 1000. */
  batchRows?: number;
}

export interface HubDeps {
  pool: Pool;
  /** Null where LISTEN cannot work (a transaction pooler): the hub polls. */
  listener: Listener | null;
  log: Logger;
  metrics?: Metrics;
  /** This instance's id, as the queue writes it in runs.instance_id. */
  instanceId: string;
  options?: HubOptions;
}

interface Feed {
  runId: string;
  /** The highest seq handed to the sinks. */
  cursor: number;
  sinks: Set<RunSink>;
  /** A notification or poll says there may be rows after the cursor. */
  dirty: boolean;
}

export interface EventRow extends StoredEventRow {
  local: boolean | null;
}

/** The columns of a StoredEventRow, read from `run_events e`: the very expressions the append and the claim return theirs with. */
export const SELECT_COLUMNS = `e.run_id, e.seq, e.attempt, e.type, e.data::text as data,
  ${STORED_AT_SQL("e.created_at")} as stored_at`;

/** Several runs' new rows in one statement: each run's rows after its cursor. */
const FEEDS_SQL = `
select ${SELECT_COLUMNS}, r.instance_id = $3 as local
from unnest($1::uuid[], $2::int[]) as w(run_id, after)
join run_events e on e.run_id = w.run_id and e.seq > w.after
left join runs r on r.id = w.run_id
order by e.run_id, e.seq
limit $4`;

const REPLAY_SQL = `
select ${SELECT_COLUMNS}, false as local
from run_events e where e.run_id = $1 and e.seq > $2
order by e.seq limit $3`;

/** The frame text; `data` is jsonb's text output, valid JSON as it stands. */
export function toEvent(row: EventRow): StoredEvent {
  const frame = `{"type":"event","runId":"${row.run_id}","seq":${row.seq},"attempt":${row.attempt},"event":${JSON.stringify(row.type)},"data":${row.data}}`;
  return { runId: row.run_id, seq: row.seq, attempt: row.attempt, type: row.type, frame, storedAt: row.stored_at, local: row.local === true };
}

/** `<runId>:<seq>` (further `:` fields ignored) → its parts, or null. */
export function parseRunNotification(payload: string): { runId: string; seq: number } | null {
  const [runId, seqText] = payload.split(":", 2);
  const seq = Number(seqText);
  return runId && seqText && Number.isSafeInteger(seq) ? { runId: runId.toLowerCase(), seq } : null;
}

export function createRunHub(deps: HubDeps) {
  const { pool, listener, log } = deps;
  const pollMs = deps.options?.pollMs ?? 150;
  const safetyPollMs = deps.options?.safetyPollMs ?? 5 * SECOND;
  const batchRows = deps.options?.batchRows ?? 1000;
  const feeds = new Map<string, Feed>();
  let reading = false;
  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let lastFullRead = Date.now();
  let failingSince: number | null = null;
  const unlisten: (() => void)[] = [];

  function markAll() {
    for (const f of feeds.values()) f.dirty = true;
    if (feeds.size) schedule();
  }

  function schedule() {
    if (reading || stopped) return;
    reading = true;
    setImmediate(() =>
      readDirty().catch((err: unknown) => {
        deps.metrics?.backgroundErrors.inc({ loop: "realtime-hub" });
        log.error({ err }, "run event fan-out failed");
      }),
    );
  }

  /** Reads every dirty feed's new rows, one statement at a time, until none is dirty. */
  async function readDirty() {
    try {
      for (;;) {
        const targets = [...feeds.values()].filter((f) => f.dirty);
        if (targets.length === 0 || stopped) break;
        for (const f of targets) f.dirty = false;
        let rows: EventRow[];
        try {
          const r = await pool.query<EventRow>(FEEDS_SQL, [targets.map((f) => f.runId), targets.map((f) => f.cursor), deps.instanceId, batchRows]);
          rows = r.rows;
        } catch (err) {
          for (const f of targets) f.dirty = true;
          deps.metrics?.backgroundErrors.inc({ loop: "realtime-hub" });
          // Once per outage at warn: the database monitor reports the outage itself.
          if (failingSince === null) log.warn({ err, runs: targets.length }, "reading run events failed; retrying");
          else log.debug({ err }, "reading run events failed again");
          failingSince ??= Date.now();
          await new Promise((r) => setTimeout(r, 250));
          continue;
        }
        if (failingSince !== null) {
          log.info({ downMs: Date.now() - failingSince }, "reading run events works again");
          failingSince = null;
        }
        for (const row of rows) {
          const feed = feeds.get(row.run_id);
          if (!feed || row.seq <= feed.cursor) continue;
          feed.cursor = row.seq;
          deliver(feed, toEvent(row));
        }
        // A full batch may have left rows behind: read again.
        if (rows.length >= batchRows) for (const f of targets) f.dirty = true;
      }
    } finally {
      reading = false;
    }
    if (!stopped && [...feeds.values()].some((f) => f.dirty)) schedule();
  }

  function deliver(feed: Feed, event: StoredEvent) {
    for (const sink of [...feed.sinks]) {
      try {
        sink.deliver(event);
      } catch (err) {
        log.error({ err, runId: feed.runId }, "run event subscriber failed");
      }
    }
  }

  function onNotification(payload: string) {
    const n = parseRunNotification(payload);
    if (!n) return;
    const feed = feeds.get(n.runId);
    if (!feed || n.seq <= feed.cursor) return;
    feed.dirty = true;
    schedule();
  }

  return {
    /** Starts listening (or polling). */
    async start() {
      if (listener) {
        unlisten.push(await listener.on(RUN_EVENTS_CHANNEL, onNotification));
        // Whatever was stored while the connection was down.
        unlisten.push(listener.onReconnect(markAll));
      }
      timer = setInterval(() => {
        const listening = listener?.connected === true;
        if (listening && Date.now() - lastFullRead < safetyPollMs) return;
        lastFullRead = Date.now();
        markAll();
      }, pollMs);
      timer.unref();
    },

    /**
     * Registers a live subscriber: it gets every event stored after the
     * feed's cursor. A new feed starts at `knownSeq`, a seq read from the
     * database (so every event up to it is already readable, for the
     * subscriber's replay); an existing feed keeps its own cursor.
     */
    subscribe(runId: string, knownSeq: number, sink: RunSink): () => void {
      const id = runId.toLowerCase();
      let feed = feeds.get(id);
      if (!feed) {
        feed = { runId: id, cursor: knownSeq, sinks: new Set(), dirty: true };
        feeds.set(id, feed);
        // Rows stored between that read and now had no feed to notify.
        schedule();
      }
      feed.sinks.add(sink);
      const f = feed;
      return () => {
        f.sinks.delete(sink);
        if (f.sinks.size === 0 && feeds.get(id) === f) feeds.delete(id);
      };
    },

    /**
     * Events a run executing on this instance has just stored (committed, in
     * seq order): its subscribers here get them at once, not after the
     * NOTIFY comes back and the rows are read again. Only rows that follow on
     * from what the feed has delivered go this way; after a gap (events
     * stored but not read yet) the feed reads from the table as usual, and
     * the cursor keeps either way from delivering a row twice.
     */
    publish(rows: readonly StoredEventRow[]) {
      for (const row of rows) {
        const feed = feeds.get(row.run_id.toLowerCase());
        if (!feed || row.seq <= feed.cursor) continue;
        if (row.seq !== feed.cursor + 1) {
          feed.dirty = true;
          schedule();
          continue;
        }
        feed.cursor = row.seq;
        deliver(feed, toEvent({ ...row, local: true }));
      }
    },

    /** The run's stored events after `after`, oldest first (a replay page). */
    async read(runId: string, after: number, limit: number): Promise<StoredEvent[]> {
      const r = await pool.query<EventRow>(REPLAY_SQL, [runId, after, limit]);
      return r.rows.map(toEvent);
    },

    /** Runs with at least one local subscriber. */
    get feeds() {
      return feeds.size;
    },

    async stop() {
      stopped = true;
      if (timer) clearInterval(timer);
      for (const u of unlisten.splice(0)) u();
      feeds.clear();
    },
  };
}

export type RunHub = ReturnType<typeof createRunHub>;

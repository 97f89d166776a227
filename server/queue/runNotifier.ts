/**
 * NOTIFYs for run events already stored, sent in transactions of their own
 * with `synchronous_commit` off, coalesced while one is in flight.
 *
 * Why not NOTIFY in the statement that stores the events: a transaction that
 * notifies takes PostgreSQL's cluster-wide notify lock at commit
 * (async.c, PreCommit_Notify) and holds it through its WAL flush, so
 * notifying commits are flushed one at a time, never grouped, and under load
 * they queue on that lock (wait event Lock:object) and bound the runs per
 * second. A notification-only transaction has nothing to make durable: the
 * events it announces were committed (and flushed) by their own statement, so
 * its commit need not wait for the disk, and it holds the lock for a moment.
 *
 * A notification that is lost (the process dies between the two, or the send
 * fails) loses no event: subscribers read the table, and the hub's safety
 * poll and reconnect catch-up find what no notification announced.
 */
import { statement, type Pool } from "../db/pool.js";
import type { Logger } from "../ops/logger.js";
import { RUN_EVENTS_CHANNEL } from "./runEvents.js";

/** $1 `<runId>:<seq>` payloads. One notification each, in order; the commit does not wait for a WAL flush. */
const NOTIFY_SQL = `select count(*) filter (where n is not null)::int as sent
from (select set_config('synchronous_commit', 'off', true)) s,
  lateral (select pg_notify('${RUN_EVENTS_CHANNEL}', p) as n from unnest($1::text[]) as p) x`;

export interface RunNotifier {
  /** Announces that the run's events up to `seq` are stored (sent at once, or with the next send). */
  announce(runId: string, seq: number): void;
  /** Waits for what is pending and in flight (shutdown). */
  flush(): Promise<void>;
}

export function createRunNotifier(deps: { pool: Pool; log: Logger; prepared: boolean; onError?: () => void }): RunNotifier {
  /** Per run, the highest seq not yet announced. */
  let pending = new Map<string, number>();
  let inflight: Promise<void> | null = null;

  const send = () => {
    if (inflight || pending.size === 0) return;
    const payloads = [...pending].map(([runId, seq]) => `${runId}:${seq}`);
    pending = new Map();
    inflight = deps.pool
      .query(statement("esa_run_events_notify", NOTIFY_SQL, [payloads], deps.prepared))
      .then(
        () => undefined,
        (err: unknown) => {
          deps.onError?.();
          deps.log.warn({ err, runs: payloads.length }, "notifying run events failed; subscribers catch up by polling");
        },
      )
      .finally(() => {
        inflight = null;
        send();
      });
  };

  return {
    announce(runId, seq) {
      const known = pending.get(runId);
      if (known === undefined || seq > known) pending.set(runId, seq);
      send();
    },
    async flush() {
      while (inflight) await inflight;
    },
  };
}

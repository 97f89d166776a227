import type { Pool } from "../db/pool.js";
import type { Listener } from "../db/listener.js";
import type { Logger } from "../ops/logger.js";
import { appendEvents } from "./runEvents.js";
import { withTransaction } from "../db/transaction.js";
import type { CancelWatch } from "./executeRun.js";

export const RUN_CANCEL_CHANNEL = "run_cancel";

/**
 * Delivers cancel requests to the instance running the run: NOTIFY for speed,
 * and a poll of the watched runs every `pollMs` for when LISTEN is not there
 * (a transaction pooler) or a notification was missed.
 */
export function createCancelWatch(opts: { pool: Pool; listener: Listener | null; log: Logger; pollMs?: number }): CancelWatch & { stop(): void } {
  const watchers = new Map<string, Set<() => void>>();
  const fire = (runId: string) => {
    const set = watchers.get(runId);
    if (!set) return;
    watchers.delete(runId);
    for (const cb of set) cb();
  };
  const unlisten = opts.listener?.on(RUN_CANCEL_CHANNEL, (payload) => fire(payload));
  const poll = setInterval(() => {
    if (watchers.size === 0) return;
    opts.pool
      .query<{ id: string }>("select id from runs where id = any($1::uuid[]) and cancel_requested_at is not null", [[...watchers.keys()]])
      .then((r) => {
        for (const row of r.rows) fire(row.id);
      })
      .catch((err: unknown) => opts.log.warn({ err }, "cancel poll failed"));
  }, opts.pollMs ?? 500);
  poll.unref();
  return {
    watch(runId, onCancel) {
      let set = watchers.get(runId);
      if (!set) watchers.set(runId, (set = new Set()));
      set.add(onCancel);
      return () => {
        set.delete(onCancel);
        if (set.size === 0 && watchers.get(runId) === set) watchers.delete(runId);
      };
    },
    stop() {
      clearInterval(poll);
      // The listener outlives the queue (it is shared): leave it as found.
      void unlisten?.then((off) => off());
    },
  };
}

/**
 * POST /api/runs/:id/cancel. Idempotent: a finished run is returned as it is,
 * untouched. A queued run is cancelled here and its job removed; a running one
 * is marked and told through NOTIFY (and the poll), and ends itself.
 * Returns false when the run is not the caller's.
 */
export async function requestCancel(pool: Pool, userId: string, runId: string): Promise<boolean> {
  return withTransaction(pool, async (client) => {
    const r = await client.query<{ status: string; attempt: number }>(
      "select status, attempt from runs where id = $1 and user_id = $2 for update",
      [runId, userId],
    );
    const row = r.rows[0];
    if (!row) return false;
    if (row.status === "queued") {
      await client.query(
        `update runs set status = 'cancelled', cancel_requested_at = coalesce(cancel_requested_at, now()),
           finished_at = now(), updated_at = now()
         where id = $1`,
        [runId],
      );
      await client.query("select graphile_worker.remove_job($1)", [runId]);
      await appendEvents(client, runId, row.attempt, [{ type: "cancelled", data: {} }]);
    } else if (row.status === "running") {
      await client.query("update runs set cancel_requested_at = coalesce(cancel_requested_at, now()), updated_at = now() where id = $1", [runId]);
      await client.query(`select pg_notify('${RUN_CANCEL_CHANNEL}', $1)`, [runId]);
    }
    return true;
  });
}

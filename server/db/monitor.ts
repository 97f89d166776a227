import type { Pool } from "./pool.js";
import type { Lifecycle } from "../ops/lifecycle.js";
import type { Logger } from "../ops/logger.js";
import type { Metrics } from "../ops/metrics.js";
import { sleep } from "../ops/releasers.js";

/** Keeps the `database` component current: one cheap query a second. */
export function monitorDatabase(pool: Pool, deps: { lifecycle: Lifecycle; log: Logger; metrics: Metrics; intervalMs: number }) {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const noAnswer = new Error("no answer within 2 s");
  const ping = () =>
    Promise.race([
      pool.query("select 1"),
      sleep(2000).then(() => {
        throw noAnswer;
      }),
    ]);
  const tick = async () => {
    try {
      // A connection killed under the first ping (pg_terminate_backend, a
      // failover) is not an outage: the pool drops it, so ask once more on a
      // fresh one before saying the database is unreachable.
      await ping().catch((err: unknown) => {
        if (err === noAnswer) throw err;
        return ping();
      });
      if (!deps.lifecycle.components().database?.ok) deps.log.warn("database reachable again");
      deps.lifecycle.setComponent("database", true);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (deps.lifecycle.components().database?.ok) deps.log.error({ err }, "database unreachable");
      deps.lifecycle.setComponent("database", false, `database unreachable: ${message}`);
      deps.metrics.backgroundErrors.inc({ loop: "database-monitor" });
    } finally {
      if (!stopped) timer = setTimeout(() => void tick(), deps.intervalMs);
    }
  };
  timer = setTimeout(() => void tick(), deps.intervalMs);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

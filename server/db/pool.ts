import pg from "pg";
import { parse, toClientConfig } from "pg-connection-string";
import type { Config } from "../config.js";
import type { Logger } from "../ops/logger.js";

export type Pool = pg.Pool;

/**
 * Connection options from a URL with libpq's `sslmode` meaning (disable,
 * prefer, require, verify-ca, verify-full), which is what a provider's URL
 * intends, and without pg's deprecation warning for require/prefer.
 */
export function clientConfigFromUrl(url: string): pg.ClientConfig {
  return toClientConfig(parse(url, { useLibpqCompat: true }));
}

/**
 * The pooled connection every query goes through. Idle clients that die
 * (pg_terminate_backend, a database restart) are dropped and replaced; an
 * `error` listener on the pool and on every client keeps such an event from
 * ever reaching `uncaughtException`.
 */
export function createPool(
  db: Config["database"],
  url: string,
  log: Logger,
  opts: { max?: number; applicationName?: string } = {},
): Pool {
  const pool = new pg.Pool({
    ...clientConfigFromUrl(url),
    max: opts.max ?? db.maxConnections,
    idleTimeoutMillis: db.idleTimeoutMs,
    connectionTimeoutMillis: db.connectTimeoutMs,
    statement_timeout: db.statementTimeoutMs || undefined,
    application_name: opts.applicationName ?? "esa-agents",
    keepAlive: true,
  });
  pool.on("error", (err) => {
    log.warn({ err }, "idle database connection failed; it was removed from the pool");
  });
  pool.on("connect", (client) => {
    client.on("error", (err) => {
      log.warn({ err }, "database connection failed");
    });
  });
  return pool;
}

import pg from "pg";
import { parse, toClientConfig } from "pg-connection-string";
import type { Config } from "../config.js";
import type { Logger } from "../ops/logger.js";

export type Pool = pg.Pool;

/**
 * `text` as a named prepared statement (parsed once per connection, then only
 * bound and executed) when `prepared`; a transaction-mode pooler may hand each
 * execution to another server connection, so there it is sent unnamed.
 */
export const statement = (name: string, text: string, values: unknown[], prepared: boolean): pg.QueryConfig =>
  prepared ? { name, text, values } : { text, values };

/** The sslmode values libpq accepts, plus pg's own `no-verify`. */
const SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full", "no-verify"];

/** A query parameter of a connection URL, without parsing (and so without pg's side effects). */
function urlParam(url: string, name: string): string | undefined {
  const m = new RegExp(`[?&]${name}=([^&#]*)`).exec(url);
  return m?.[1] === undefined ? undefined : decodeURIComponent(m[1]);
}

/**
 * Connection options from a URL with libpq's `sslmode` meaning, which is what a
 * provider's URL intends, and without pg's "SECURITY WARNING" deprecation
 * warning for prefer/require/verify-ca (pg-connection-string's libpq mode):
 *
 * - `disable`, `allow`: plaintext (`allow` tries plaintext first in libpq; pg
 *   cannot fall back to SSL, so plaintext is its first and only attempt).
 * - `prefer`, `require`: SSL without certificate checks (`prefer` cannot fall
 *   back to plaintext in pg; a server without SSL is a connection error).
 *   `require` with `sslrootcert` checks the chain, as in libpq.
 * - `verify-ca`: SSL, chain checked against `sslrootcert`, host name not.
 * - `verify-full`: SSL, chain and host name checked.
 * - `no-verify` (pg's, not libpq's): SSL without checks.
 * - none: pg's default (plaintext unless PGSSLMODE says otherwise, as in libpq).
 *
 * Throws on an sslmode libpq would refuse, and on verify-ca without a CA file.
 */
export function clientConfigFromUrl(url: string): pg.ClientConfig {
  const sslmode = urlParam(url, "sslmode");
  if (sslmode !== undefined && !SSL_MODES.includes(sslmode)) {
    throw new Error(`database URL: invalid sslmode "${sslmode}" (allowed: ${SSL_MODES.join(", ")})`);
  }
  if (sslmode === "verify-ca" && !urlParam(url, "sslrootcert")) {
    // pg-connection-string would throw a "SECURITY WARNING" text; say what to do instead.
    throw new Error("database URL: sslmode=verify-ca needs sslrootcert=<CA file>; or use sslmode=verify-full");
  }
  const config = toClientConfig(parse(url, { useLibpqCompat: true }));
  if (sslmode === "allow") config.ssl = false;
  if (sslmode === "no-verify") config.ssl = { ...(typeof config.ssl === "object" ? config.ssl : {}), rejectUnauthorized: false };
  return config;
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
    // Sent as a startup parameter, which a transaction pooler (PgBouncer, Neon) refuses.
    statement_timeout: (db.transactionPooler && url === db.url) || !db.statementTimeoutMs ? undefined : db.statementTimeoutMs,
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

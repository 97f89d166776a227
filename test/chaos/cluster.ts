/**
 * The chaos run's infrastructure: its own embedded PostgreSQL (fresh data
 * folder in the OS temp dir, free port, restartable), the built server
 * instances it spawns, and a pool for reading the database directly. Every
 * process started here is tracked by PID so it can be killed on any exit.
 */
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { pino } from "pino";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../../server/db/embedded.js";
import { clientConfigFromUrl } from "../../server/db/pool.js";
import { spawnServer, type ServerProcess } from "../helpers/spawnServer.js";
import { freePort, waitForStatus } from "../fixtures/process.js";

export interface Database {
  url: string;
  port: number;
  dataDir: string;
  pool: pg.Pool;
  /** Fast shutdown (open connections are cut), then start again on the same folder and port. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops it for good and removes its folder; kills the postmaster by PID if a stop hangs. */
  destroy(): Promise<void>;
}

const quietLog = pino({ level: "silent" });

/** The postmaster's PID from its pid file, if it is running. */
function postmasterPid(dataDir: string): number | null {
  const file = path.join(dataDir, "postmaster.pid");
  if (!existsSync(file)) return null;
  const pid = Number(readFileSync(file, "utf8").split("\n")[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export async function startDatabase(): Promise<Database> {
  // A folder of its own: the run restarts this server, so it must be no other test's.
  const root = await mkdtemp(path.join(os.tmpdir(), "esa-chaos-"));
  await chmod(root, 0o755); // the postgres user (when we are root) must traverse it
  const dataDir = path.join(root, "postgres");
  const port = await freePort();
  let server: EmbeddedPostgres = await withTimeout(startEmbeddedPostgres({ dataDir, port, log: quietLog }), 90_000, "starting PostgreSQL");
  const pool = new pg.Pool({ ...clientConfigFromUrl(server.url), max: 4, connectionTimeoutMillis: 3000 });
  pool.on("error", () => undefined);
  pool.on("connect", (c) => c.on("error", () => undefined));
  let destroyed = false;
  return {
    url: server.url,
    port,
    dataDir: server.dataDir,
    pool,
    async stop() {
      await withTimeout(server.stop({ force: true }), 30_000, "stopping PostgreSQL");
    },
    async start() {
      server = await withTimeout(startEmbeddedPostgres({ dataDir, port, log: quietLog }), 60_000, "restarting PostgreSQL");
    },
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      await pool.end().catch(() => undefined);
      try {
        await withTimeout(server.stop({ force: true }), 15_000, "stopping PostgreSQL");
      } catch {
        const pid = postmasterPid(server.dataDir);
        if (pid) {
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            /* already gone */
          }
        }
      }
      await rm(root, { recursive: true, force: true }).catch(() => undefined);
    },
  };
}

export interface Instance {
  proc: ServerProcess;
  name: string;
  port: number;
  startedAt: number;
  readyAt: number;
  /** Exit as observed: code or signal. */
  exit: { code: number | null; signal: NodeJS.Signals | null } | null;
}

export function isAlive(i: Instance): boolean {
  return i.proc.child.exitCode === null && i.proc.child.signalCode === null;
}

/** Spawns `node dist/index.js` with `env` and waits for /ready 200. */
export async function spawnInstance(name: string, env: Record<string, string>): Promise<Instance> {
  const startedAt = Date.now();
  const proc = await spawnServer({ env });
  const inst: Instance = { proc, name, port: proc.port, startedAt, readyAt: 0, exit: null };
  void proc.exited.then((e) => (inst.exit = e));
  try {
    await waitForStatus(`${proc.baseUrl}/ready`, 200, 60_000, 100);
  } catch (err) {
    await proc.stop();
    throw new Error(`instance ${name} (pid ${proc.pid}) was not ready within 60 s: ${String(err)}\n${proc.stdout().slice(-2000)}\n${proc.stderr().slice(-1000)}`, { cause: err });
  }
  inst.readyAt = Date.now();
  return inst;
}

/** `<hostname>-<pid>-<random>` (services.ts) → pid. */
export const pidOfInstanceId = (id: string | null): number | null => {
  const m = /-(\d+)-[0-9a-f]+$/.exec(id ?? "");
  return m ? Number(m[1]) : null;
};

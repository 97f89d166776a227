/**
 * Several built server processes (`node dist/index.js`) on one test database
 * and one fake LLM, for the multi-process queue tests (test/cluster-*.test.ts).
 * Run state is read from the database, not through the API, so polling never
 * meets the API rate limit. Only processes spawned here are signalled, by PID.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chown, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { clientConfigFromUrl } from "../../server/db/pool.js";
import type { TestDatabase } from "./db.js";
import type { FakeLlm, FakeReply } from "./fakeLlm.js";
import { spawnServer, waitFor, type ServerProcess } from "./spawnServer.js";
import { Client, TEST_JWT_SECRET, TEST_SESSION_SECRET } from "./dataApi.js";
import { freePort, waitForStatus } from "../fixtures/process.js";

export type Env = Record<string, string | undefined>;

export interface RunRow {
  id: string;
  status: string;
  attempt: number;
  failures: number;
  instance_id: string | null;
  error_code: string | null;
}

export interface EventRow {
  seq: number;
  attempt: number;
  type: string;
  data: Record<string, unknown>;
}

/**
 * Replies chosen by the message they answer: the nth request whose last user
 * turn is `content` gets `replies[n]` (the last one repeats). Anything else
 * gets a short text. Lets a test make a run's first attempt slow and its
 * retry quick whichever process makes the request.
 */
export function scriptByContent(llm: FakeLlm) {
  const plans = new Map<string, FakeReply[]>();
  const seen = new Map<string, number>();
  llm.setDefault((body) => {
    const user = [...(body.messages ?? [])].reverse().find((m) => m.role === "user")?.content ?? "";
    const plan = plans.get(user);
    if (!plan) return { text: "A short answer." };
    const n = seen.get(user) ?? 0;
    seen.set(user, n + 1);
    return plan[Math.min(n, plan.length - 1)] as FakeReply;
  });
  return {
    plan(content: string, ...replies: FakeReply[]) {
      plans.set(content, replies);
    },
    /** How many requests answered `content` so far. */
    requests: (content: string) => seen.get(content) ?? 0,
  };
}

/** A reply streaming `seconds` of text: one 4-character chunk every 100 ms. */
export const slowReply = (seconds: number, word = "slow"): FakeReply => ({
  text: `${word} `.repeat(Math.ceil((seconds * 10 * 4) / (word.length + 1))).slice(0, seconds * 10 * 4),
  chunkSize: 4,
  delayMs: 100,
});

export const quickReply = (text = "The quick answer."): FakeReply => ({ text, chunkSize: 8 });

export interface Cluster {
  servers: ServerProcess[];
  /** Spawns one more instance and waits for /ready. */
  spawn(env?: Env): Promise<ServerProcess>;
  /** Live instances (spawned here, not exited). */
  live(): ServerProcess[];
  /** A user session (cookie) valid on every instance, since they share SESSION_SECRET. */
  client(server: ServerProcess): Promise<Client>;
  /** A new conversation with one message; returns the run id. */
  ask(client: Client, content: string, agent?: string): Promise<{ runId: string; conversationId: string }>;
  run(runId: string): Promise<RunRow>;
  waitForRun(runId: string, pred: (r: RunRow) => boolean, timeoutMs: number): Promise<RunRow>;
  /** The instance process whose instance id the run carries (the one executing it). */
  runnerOf(runId: string): Promise<ServerProcess>;
  events(runId: string): Promise<EventRow[]>;
  assistantMessages(runId: string): Promise<{ id: string; content: string }[]>;
  /** SIGKILLs whatever is still running. */
  stopAll(): Promise<void>;
}

export function createCluster(opts: { db: TestDatabase; llm: FakeLlm; env?: Env }): Cluster {
  const { db } = opts;
  const servers: ServerProcess[] = [];
  const base: Env = {
    DATABASE_URL: db.url,
    SESSION_SECRET: TEST_SESSION_SECRET,
    JWT_SECRET: TEST_JWT_SECRET,
    RATE_LIMIT_MAX: "1000000",
    OPENAI_API_KEY: "sk-fake-cluster-test",
    OPENAI_BASE_URL: opts.llm.url,
    OPENAI_RATE_LIMIT_MAX: "100000",
    HEARTBEAT_MS: "500",
    RECOVERY_AFTER_MS: "3000",
    LOG_LEVEL: "info",
    ...opts.env,
  };
  const isLive = (s: ServerProcess) => s.child.exitCode === null && s.child.signalCode === null;

  const cluster: Cluster = {
    servers,
    async spawn(env = {}) {
      const s = await spawnServer({ env: { ...base, ...env } });
      servers.push(s);
      await waitForStatus(`${s.baseUrl}/ready`, 200, 30_000);
      return s;
    },
    live: () => servers.filter(isLive),
    async client(server) {
      const c = new Client(server.baseUrl);
      await c.userId();
      return c;
    },
    async ask(client, content, agent = "assistant") {
      const conv = await client.post("/api/conversations", { title: "cluster test" });
      if (conv.status !== 201) throw new Error(`conversation: ${conv.status} ${conv.text}`);
      const conversationId = (conv.body as { id: string }).id;
      const m = await client.post(`/api/conversations/${conversationId}/messages`, { content, agent });
      if (m.status !== 202) throw new Error(`message: ${m.status} ${m.text}`);
      return { runId: (m.body as { run: { id: string } }).run.id, conversationId };
    },
    async run(runId) {
      const r = await db.pool.query<RunRow>("select id, status, attempt, failures, instance_id, error_code from runs where id = $1", [runId]);
      const row = r.rows[0];
      if (!row) throw new Error(`no run ${runId}`);
      return row;
    },
    async waitForRun(runId, pred, timeoutMs) {
      let last: RunRow | undefined;
      try {
        return await waitFor(async () => {
          const row = await cluster.run(runId);
          last = row;
          return pred(row) ? row : null;
        }, timeoutMs, 50) as RunRow;
      } catch (err) {
        throw new Error(`run ${runId} did not reach the expected state within ${timeoutMs} ms; last: ${JSON.stringify(last)}`, { cause: err });
      }
    },
    async runnerOf(runId) {
      const r = await db.pool.query<{ instance_id: string | null }>("select instance_id from runs where id = $1", [runId]);
      const instanceId = r.rows[0]?.instance_id ?? "";
      // `<hostname>-<pid>-<random>` (services.ts).
      const pid = Number(/-(\d+)-[0-9a-f]+$/.exec(instanceId)?.[1]);
      const s = servers.find((x) => x.pid === pid);
      if (!s) throw new Error(`run ${runId} is on no instance spawned here (instance ${JSON.stringify(instanceId)})`);
      return s;
    },
    async events(runId) {
      const r = await db.pool.query<EventRow>("select seq, attempt, type, data from run_events where run_id = $1 order by seq", [runId]);
      return r.rows;
    },
    async assistantMessages(runId) {
      const r = await db.pool.query<{ id: string; content: string }>(
        "select id, content from messages where run_id = $1 and role = 'assistant'",
        [runId],
      );
      return r.rows;
    },
    async stopAll() {
      await Promise.all(servers.map((s) => s.stop()));
    },
  };
  return cluster;
}

/** Describes a process's output for an assertion message (last lines of its log). */
export function tail(s: ServerProcess, chars = 3000): string {
  return `pid ${s.pid} stdout: ${s.stdout().slice(-chars)}\nstderr: ${s.stderr().slice(-1000)}`;
}

/** Where Debian puts the binary (sbin is not on every PATH). */
const PGBOUNCER_PATHS = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer"];

function findPgbouncer(): string | undefined {
  const onPath = spawnSync("sh", ["-c", "command -v pgbouncer"], { encoding: "utf8" }).stdout.trim();
  return onPath || PGBOUNCER_PATHS.find((p) => existsSync(p));
}

/**
 * The pgbouncer binary, installed from Debian (`apt-get install pgbouncer`)
 * when it is missing. Throws when it cannot be had: the test must not skip.
 */
export function ensurePgbouncer(): string {
  const found = findPgbouncer();
  if (found) return found;
  if (process.getuid?.() !== 0) throw new Error("pgbouncer is not installed and this is not root: apt-get install -y pgbouncer");
  const r = spawnSync("sh", ["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer"], {
    encoding: "utf8",
    timeout: 240_000,
  });
  const installed = findPgbouncer();
  if (!installed) throw new Error(`apt-get install pgbouncer failed (${r.status ?? r.signal}): ${r.stderr.slice(-2000)}`);
  return installed;
}

export interface Pgbouncer {
  /** `url` with host and port replaced by pgbouncer's. */
  url: string;
  port: number;
  pid: number;
  version: string;
  /** pgbouncer's log so far. */
  log(): string;
  /** SIGTERM by PID, SIGKILL after 5 s; removes the config folder. */
  stop(): Promise<void>;
}

/**
 * PgBouncer in transaction mode on a free loopback port in front of the
 * database of `url`, with md5 auth from a userlist matching its user and
 * password and no prepared statement support (1.21+: max_prepared_statements
 * = 0; older versions have none). As root it runs as `postgres`: pgbouncer
 * refuses to run as root.
 */
export async function startPgbouncer(url: string): Promise<Pgbouncer> {
  const bin = ensurePgbouncer();
  const version = /PgBouncer (\d+\.\d+(?:\.\d+)?)/.exec(spawnSync(bin, ["--version"], { encoding: "utf8" }).stdout)?.[1] ?? "0.0";
  const [major = 0, minor = 0] = version.split(".").map(Number);
  const u = new URL(url);
  const user = decodeURIComponent(u.username);
  const password = decodeURIComponent(u.password);
  const port = await freePort();
  const dir = await mkdtemp(path.join(os.tmpdir(), "esa-pgbouncer-"));
  const quote = (s: string) => `"${s.replace(/"/g, '""')}"`;
  await writeFile(path.join(dir, "userlist.txt"), `${quote(user)} ${quote(password)}\n`, { mode: 0o600 });
  const ini = [
    "[databases]",
    `* = host=${u.hostname} port=${u.port || 5432}`,
    "[pgbouncer]",
    "listen_addr = 127.0.0.1",
    `listen_port = ${port}`,
    "unix_socket_dir =",
    "auth_type = md5",
    `auth_file = ${path.join(dir, "userlist.txt")}`,
    "pool_mode = transaction",
    ...(major > 1 || minor >= 21 ? ["max_prepared_statements = 0"] : []),
    "max_client_conn = 1000",
    "default_pool_size = 40",
    // ignore_startup_parameters stays at its default (none): a pooler one
    // cannot configure (a Neon -pooler host) refuses what it does not know.
    "log_connections = 0",
    "log_disconnections = 0",
    "",
  ].join("\n");
  await writeFile(path.join(dir, "pgbouncer.ini"), ini, { mode: 0o600 });
  let ids: { uid: number; gid: number } | undefined;
  if (process.getuid?.() === 0) {
    const uid = spawnSync("id", ["-u", "postgres"], { encoding: "utf8" }).stdout.trim();
    const gid = spawnSync("id", ["-g", "postgres"], { encoding: "utf8" }).stdout.trim();
    if (!/^\d+$/.test(uid) || !/^\d+$/.test(gid)) throw new Error("pgbouncer refuses root and there is no postgres user to run it as");
    ids = { uid: Number(uid), gid: Number(gid) };
    for (const f of ["", "userlist.txt", "pgbouncer.ini"]) await chown(path.join(dir, f), ids.uid, ids.gid);
  }
  const child = spawn(bin, [path.join(dir, "pgbouncer.ini")], { cwd: dir, stdio: ["ignore", "pipe", "pipe"], ...ids });
  let log = "";
  child.stdout.setEncoding("utf8").on("data", (c: string) => (log += c));
  child.stderr.setEncoding("utf8").on("data", (c: string) => (log += c));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
    }
    await rm(dir, { recursive: true, force: true });
  };
  const proxied = new URL(url);
  proxied.hostname = "127.0.0.1";
  proxied.port = String(port);
  try {
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`pgbouncer exited (${child.exitCode}): ${log}`);
      const c = new pg.Client(clientConfigFromUrl(proxied.toString()));
      c.on("error", () => undefined);
      try {
        await c.connect();
        await c.query("select 1");
        return true;
      } finally {
        await c.end().catch(() => undefined);
      }
    }, 10_000, 100);
  } catch (err) {
    await stop();
    throw new Error(`pgbouncer did not come up: ${String(err)}\n${log}`, { cause: err });
  }
  return { url: proxied.toString(), port, pid: child.pid ?? -1, version, log: () => log, stop };
}

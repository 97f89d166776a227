/**
 * `npm run test:cluster` (issue 8, point 1): the failure model of DESIGN.md
 * in one repeatable run. Three built server instances on one PostgreSQL of
 * its own, behind a round-robin TCP proxy on loopback, the assistant agent on
 * the fake OpenAI-compatible provider; 30 simulated clients chat over the API
 * and WebSockets (some runs long, some retried, some failing, some
 * cancelled) while the run SIGTERMs one instance, SIGKILLs another (each
 * replaced), restarts PostgreSQL once and drops every client's socket. Then
 * it checks the database directly and exits non-zero on any breach.
 *
 * Not a vitest file: run it with `npx tsx test/chaos/run.ts`.
 * CHAOS_SEED (default 8) picks the traffic; CHAOS_TIME_LIMIT_MS (default
 * 270000) bounds the whole run, after which it fails and kills what it started.
 * On failure (always, when CHAOS_LOG_DIR is set) the instances' output and the
 * HTTP log go to a folder under CHAOS_LOG_DIR, else the OS temp dir.
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { randomUUID } from "node:crypto";
import { startFakeLlm, type FakeLlm } from "../helpers/fakeLlm.js";
import { scriptByContent } from "../helpers/cluster.js";
import { seededRandom, textOf } from "../helpers/ws.js";
import { TEST_JWT_SECRET, TEST_SESSION_SECRET } from "../helpers/dataApi.js";
import { DIST_ENTRY, ROOT } from "../helpers/paths.js";
import { createJwt } from "../../server/auth/jwt.js";
import { startProxy, type Proxy } from "./proxy.js";
import { ChaosClient, type HttpLogEntry, type TrackedRun } from "./client.js";
import { startDatabase, spawnInstance, isAlive, pidOfInstanceId, type Database, type Instance } from "./cluster.js";
import { EXPECTED_STATUS, pickKind, planFor, type RunKind } from "./scenario.js";

const SEED = Number(process.env.CHAOS_SEED ?? 8);
const TIME_LIMIT_MS = Number(process.env.CHAOS_TIME_LIMIT_MS ?? 270_000);
const CLIENTS = 30;
const HEARTBEAT_MS = 300;
const RECOVERY_AFTER_MS = 2000;
const SHUTDOWN_DELAY_MS = 600;
const SHUTDOWN_TIMEOUT_MS = 6000;
const RETRY_ATTEMPTS = 3;

/** The schedule, in ms after the clients start. */
const AT = { sigterm: 5_000, sigkill: 14_000, dbRestart: 24_000, dropsFrom: 2_000, dropsUntil: 32_000, lastRunStart: 34_000 };
/** Bounds of the waits (generous: a loaded two-core CI machine). */
const LIMITS = { runTerminal: 120_000, recovery: 60_000, dbReady: 60_000, settle: 90_000 };

const t0 = Date.now();
let clientsStart = 0;
const since = (t: number) => ((t - (clientsStart || t0)) / 1000).toFixed(1);
const log = (msg: string) => process.stdout.write(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a value other than undefined/false, or throws after `timeoutMs`. */
async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs: number, everyMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------- state

const breaches: string[] = [];
const httpLog: HttpLogEntry[] = [];
const instances: Instance[] = [];
const clients: ChaosClient[] = [];
const kinds = new Map<string, { kind: RunKind; text: string; client: number }>();
const timings: Record<string, number> = {};
let db: Database | undefined;
let llm: FakeLlm | undefined;
let proxy: Proxy | undefined;
let cleaningUp: Promise<void> | undefined;

function cleanup(): Promise<void> {
  cleaningUp ??= (async () => {
    for (const c of clients) c.stop();
    for (const i of instances) if (isAlive(i)) i.proc.child.kill("SIGKILL");
    await Promise.all(instances.map((i) => i.proc.exited));
    await proxy?.close().catch(() => undefined);
    await llm?.close().catch(() => undefined);
    await db?.destroy().catch(() => undefined);
  })();
  return cleaningUp;
}

/** Every instance's output and the HTTP log (each response's status, times, client and route) into a folder. */
async function dumpLogs(under = process.env.CHAOS_LOG_DIR ?? os.tmpdir()): Promise<string> {
  const dir = path.join(under, `esa-chaos-logs-${new Date().toISOString().replace(/[:.]/g, "-")}`);
  await mkdir(dir, { recursive: true });
  for (const i of instances) await writeFile(path.join(dir, `${i.name}-${i.proc.pid}.log`), `${i.proc.stdout()}\n--- stderr\n${i.proc.stderr()}`);
  await writeFile(path.join(dir, "http.json"), JSON.stringify(httpLog));
  return dir;
}

// ---------------------------------------------------------------- cluster

function instanceEnv(database: Database, fake: FakeLlm): Record<string, string> {
  return {
    DATABASE_URL: database.url,
    SESSION_SECRET: TEST_SESSION_SECRET,
    JWT_SECRET: TEST_JWT_SECRET,
    OPENAI_API_KEY: "sk-fake-chaos",
    OPENAI_BASE_URL: fake.url,
    OPENAI_RATE_LIMIT_MAX: "100000",
    RATE_LIMIT_MAX: "10000000",
    HEARTBEAT_MS: String(HEARTBEAT_MS),
    RECOVERY_AFTER_MS: String(RECOVERY_AFTER_MS),
    SHUTDOWN_DELAY_MS: String(SHUTDOWN_DELAY_MS),
    SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
    RETRY_ATTEMPTS: String(RETRY_ATTEMPTS),
    MAX_CONCURRENT_JOBS: "15",
    DB_CONNECT_TIMEOUT_MS: "2000",
    LOG_LEVEL: "info",
  };
}

let spawned = 0;
/** PIDs this run signalled on purpose: any other exit is a crash. */
const signalled = new Set<number>();
const crashes: string[] = [];
/** Crashed instances replaced, like a supervisor would, so the run goes on and shows what else breaks. */
const MAX_CRASH_REPLACEMENTS = 6;

async function addInstance(env: Record<string, string>): Promise<Instance> {
  const name = `i${++spawned}`;
  // Once more after a failed start: on a shared machine dist/ may be rebuilt under a spawn (a missing chunk).
  const inst = await spawnInstance(name, env).catch(async (err: unknown) => {
    log(`instance ${name} did not start (${String(err).split("\n")[0]?.slice(0, 200)}); trying once more`);
    await sleep(3000);
    return spawnInstance(name, env);
  });
  instances.push(inst);
  proxy?.add(inst.port);
  void inst.proc.exited.then((exit) => {
    proxy?.remove(inst.port);
    if (signalled.has(inst.proc.pid) || cleaningUp) return;
    const fatal = [...inst.proc.logs].reverse().find((l) => Number(l.level) >= 60);
    const err = fatal?.err as { message?: string; stack?: string } | undefined;
    // The frames that say where it came from: ours and graphile-worker's, not node's or pg's.
    const frames = (err?.stack ?? "").split("\n").filter((x) => /graphile-worker|dist\/chunks|dist\/index/.test(x)).map((x) => x.trim().replace(`${ROOT}/`, ""));
    const why = fatal ? `${String(fatal.msg)}: ${err?.message ?? ""} (${frames.slice(0, 3).join(" | ") || "no stack"})` : inst.proc.stderr().slice(-300);
    const line = `instance ${inst.name} pid ${inst.proc.pid} exited by itself (${exit.code ?? exit.signal}) at t=${since(Date.now())}s: ${why}`;
    crashes.push(line);
    breaches.push(line);
    log(line);
    if (crashes.length <= MAX_CRASH_REPLACEMENTS) {
      addInstance(env).catch((e: unknown) => void breaches.push(`replacing crashed ${inst.name}: ${String(e)}`));
    }
  });
  log(`instance ${inst.name} pid ${inst.proc.pid} ready on port ${inst.port} (${inst.readyAt - inst.startedAt} ms)`);
  return inst;
}

/** Running runs per live instance, busiest first. */
async function busiest(): Promise<{ inst: Instance; running: string[] }[]> {
  const r = await db!.pool.query<{ id: string; instance_id: string | null }>("select id, instance_id from runs where status = 'running'");
  const out = instances.filter(isAlive).map((inst) => ({ inst, running: r.rows.filter((x) => pidOfInstanceId(x.instance_id) === inst.proc.pid).map((x) => x.id) }));
  return out.sort((a, b) => b.running.length - a.running.length);
}

// ---------------------------------------------------------------- chaos

async function sigtermOne(env: Record<string, string>) {
  const target = await until("an instance with running runs", async () => (await busiest()).find((b) => b.running.length > 0), 20_000);
  const { inst, running } = target;
  const at = Date.now();
  log(`SIGTERM ${inst.name} pid ${inst.proc.pid} at t=${since(at)}s (${running.length} runs running on it); starting a replacement`);
  signalled.add(inst.proc.pid);
  inst.proc.kill("SIGTERM");
  const replacement = addInstance(env);
  const taken = recovered("SIGTERM", running, at, inst.proc.pid).then((ms) => (timings.sigtermRecoverMs = ms));
  const exit = await Promise.race([inst.proc.exited, sleep(SHUTDOWN_TIMEOUT_MS + 5000).then(() => null)]);
  timings.sigtermExitMs = Date.now() - at;
  if (!exit) breaches.push(`SIGTERMed instance ${inst.name} did not exit within ${SHUTDOWN_TIMEOUT_MS + 5000} ms`);
  else if (exit.code !== 0) breaches.push(`SIGTERMed instance ${inst.name} exited with ${JSON.stringify(exit)}, not 0`);
  await Promise.all([replacement, taken]);
}

async function sigkillOne(env: Record<string, string>) {
  // The busiest instance with a long run under way.
  const target = await until(
    "an instance with running runs",
    async () => (await busiest()).find((b) => b.running.some((id) => kinds.get(id)?.kind === "long" || kinds.get(id)?.kind === "cancel") || b.running.length >= 2),
    20_000,
  );
  const { inst, running } = target;
  const at = Date.now();
  log(`SIGKILL ${inst.name} pid ${inst.proc.pid} at t=${since(at)}s (${running.length} runs running on it); starting a replacement`);
  signalled.add(inst.proc.pid);
  inst.proc.kill("SIGKILL");
  const replacement = addInstance(env);
  const taken = recovered("SIGKILL", running, at, inst.proc.pid).then((ms) => (timings.killRecoverMs = ms));
  await inst.proc.exited;
  await Promise.all([replacement, taken]);
}

/** Time until every run that was running on `pid` is terminal or has a newer attempt elsewhere. */
async function recovered(what: string, runIds: string[], at: number, pid: number): Promise<number> {
  if (runIds.length === 0) return 0;
  try {
    await until(
      `the runs of the ${what} instance to be taken up elsewhere`,
      async () => {
        const r = await db!.pool.query<{ id: string; status: string; instance_id: string | null }>("select id, status, instance_id from runs where id = any($1::uuid[])", [runIds]);
        return r.rows.every((x) => ["succeeded", "failed", "cancelled"].includes(x.status) || (x.status === "running" && pidOfInstanceId(x.instance_id) !== pid));
      },
      LIMITS.recovery,
    );
  } catch (err) {
    breaches.push(`after ${what}: ${String(err)}`);
  }
  const ms = Date.now() - at;
  log(`after ${what}: its ${runIds.length} runs taken up elsewhere or finished within ${ms} ms`);
  return ms;
}

async function restartDatabase() {
  await until("a run in progress", async () => (await busiest()).some((b) => b.running.length > 0), 20_000).catch(() => undefined);
  timings.dbStopAt = Date.now();
  log(`PostgreSQL: stopping (fast) at t=${since(timings.dbStopAt)}s`);
  await db!.stop();
  timings.dbDownAt = Date.now();
  await db!.start();
  timings.dbUpAt = Date.now();
  log(`PostgreSQL: back after ${timings.dbUpAt - timings.dbStopAt} ms`);
  try {
    await until(
      "every live instance to be ready again",
      async () => {
        const live = instances.filter(isAlive);
        if (live.length < 3) return false; // a crashed one is being replaced
        const ok = await Promise.all(live.map((i) => fetch(`${i.proc.baseUrl}/ready`, { signal: AbortSignal.timeout(2000) }).then((r) => r.status === 200, () => false)));
        return ok.every(Boolean);
      },
      LIMITS.dbReady,
    );
  } catch (err) {
    breaches.push(`after the database restart: ${String(err)}`);
  }
  timings.dbReadyAt = Date.now();
  log(`after the database restart: all instances ready ${timings.dbReadyAt - timings.dbUpAt} ms after PostgreSQL was back`);
}

/** Drops each client's socket once, spread over the window; retried until it lands on an open socket. */
async function dropSockets(rand: () => number) {
  const order = clients.map((c) => ({ c, at: AT.dropsFrom + rand() * (AT.dropsUntil - AT.dropsFrom) })).sort((a, b) => a.at - b.at);
  for (const { c, at } of order) {
    const wait = clientsStart + at - Date.now();
    if (wait > 0) await sleep(wait);
    await until(`client ${c.index}'s socket to be open for a drop`, async () => c.drop(), 30_000, 50).catch((err: unknown) => breaches.push(String(err)));
  }
  log(`dropped every client's socket (${clients.reduce((n, c) => n + c.stats.drops, 0)} drops)`);
}

// ---------------------------------------------------------------- clients

async function makeClient(index: number, baseUrl: string, wsUrl: string): Promise<ChaosClient> {
  const auth: { bearer?: string } = {};
  if (index % 2 === 1) auth.bearer = await createJwt(TEST_JWT_SECRET).sign(randomUUID(), 3600);
  const c = new ChaosClient({ index, baseUrl, wsUrl, auth, httpLog, breaches });
  const s = await c.request("GET", "/api/session");
  if (s.status !== 200) throw new Error(`client ${index}: session ${s.status} ${s.text}`);
  await c.connect();
  return c;
}

async function chat(c: ChaosClient, rand: () => number, script: ReturnType<typeof scriptByContent>) {
  for (let n = 0; Date.now() < clientsStart + AT.lastRunStart || n < 2; n++) {
    const kind = pickKind(rand);
    const plan = planFor(kind, rand);
    const content = `chaos ${SEED} client ${c.index} message ${n} (${kind})`;
    script.plan(content, ...plan.replies);
    const conv = await c.request("POST", "/api/conversations", { title: `chaos ${c.index}/${n}` });
    if (conv.status !== 201) throw new Error(`client ${c.index}: conversation ${conv.status} ${conv.text.slice(0, 200)}`);
    const conversationId = (conv.body as { id: string }).id;
    const posted = await c.request("POST", `/api/conversations/${conversationId}/messages`, { content, agent: "assistant" });
    if (posted.status !== 202) throw new Error(`client ${c.index}: message ${posted.status} ${posted.text.slice(0, 200)}`);
    const runId = (posted.body as { run: { id: string } }).run.id;
    kinds.set(runId, { kind, text: plan.text, client: c.index });
    const run = c.track({ runId, conversationId, kind, content, postedAt: Date.now() });
    if (kind === "cancel") {
      await c.waitRun(run, (r) => r.events.some((e) => e.event === "text.delta") || r.terminal !== null, 30_000);
      await c.cancel(run, n % 2 === 0 ? "ws" : "http");
      // A socket frame can be lost with its socket: confirm over HTTP (idempotent) if nothing came back.
      if (!(await c.waitRun(run, (r) => r.terminal !== null, 5_000))) await c.cancel(run, "http");
    }
    if (!(await c.waitRun(run, (r) => r.terminal !== null, LIMITS.runTerminal))) {
      breaches.push(`client ${c.index}: run ${runId} (${kind}) streamed no terminal event within ${LIMITS.runTerminal} ms (last seq ${run.lastSeq})`);
    } else {
      await readBack(c, run);
    }
    await sleep(100 + rand() * 400);
  }
}

/** What the API says once the stream has ended: the run's status, and the answer shown in the conversation. */
async function readBack(c: ChaosClient, run: TrackedRun) {
  const r = await c.request("GET", `/api/runs/${run.runId}`);
  const status = (r.body as { status?: string } | undefined)?.status;
  const want = { done: "succeeded", failed: "failed", cancelled: "cancelled" }[run.terminal ?? ""] ?? "?";
  if (r.status !== 200 || status !== want) breaches.push(`client ${c.index}: GET /api/runs/${run.runId} answered ${r.status} status ${status ?? "none"} after the stream's "${run.terminal}"`);
  const m = await c.request("GET", `/api/conversations/${run.conversationId}/messages`);
  const items = (m.body as { items?: { role: string; content: string; runId: string | null }[] } | undefined)?.items ?? [];
  const answers = items.filter((x) => x.role === "assistant" && x.runId === run.runId);
  const expected = run.terminal === "done" ? [textOf(run.events)] : [];
  if (m.status !== 200 || JSON.stringify(answers.map((x) => x.content)) !== JSON.stringify(expected)) {
    breaches.push(`client ${c.index}: the conversation of run ${run.runId} shows ${answers.length} answers (${m.status}); expected ${expected.length}, equal to the streamed text`);
  }
}

// ---------------------------------------------------------------- checks

/** What the database holds about a stranded run: its row, its events, its graphile-worker jobs, the instances. */
async function diagnose(runId: string): Promise<string> {
  const q = async (sql: string, params: unknown[] = []) => JSON.stringify((await db!.pool.query(sql, params)).rows);
  try {
    return [
      `row ${await q("select status, attempt, failures, instance_id, error_code, cancel_requested_at, updated_at from runs where id = $1", [runId])}`,
      `events ${await q("select seq, attempt, type, data, created_at from run_events where run_id = $1 order by seq", [runId])}`,
      `jobs ${await q("select id, key, run_at, locked_at, locked_by, attempts, max_attempts, last_error, created_at from graphile_worker._private_jobs where key = $1 or payload->>'runId' = $1", [runId])}`,
      `instances ${await q("select id, dead_at, heartbeat_at, worker_ids from instances order by started_at")}`,
    ].join("; ");
  } catch (err) {
    return `(diagnosis failed: ${String(err)})`;
  }
}

/** "<count>x <status> <code> <method> <route>" of every 5xx, for the summary. */
let fivexxByRoute: string[] = [];

interface RunRow {
  id: string;
  status: string;
  attempt: number;
  failures: number;
  error_code: string | null;
  messages: number;
  content: string | null;
}

async function check(): Promise<Record<string, string | number>> {
  const pool = db!.pool;
  const rows = (
    await pool.query<RunRow>(
      `select r.id, r.status, r.attempt, r.failures, r.error_code,
         (select count(*)::int from messages m where m.run_id = r.id and m.role = 'assistant') as messages,
         (select m.content from messages m where m.run_id = r.id and m.role = 'assistant' limit 1) as content
       from runs r`,
    )
  ).rows;
  const byId = new Map(rows.map((r) => [r.id, r]));
  const terminal = new Set(["succeeded", "failed", "cancelled"]);

  for (const r of rows) {
    if (!terminal.has(r.status)) breaches.push(`run ${r.id} ended the test ${r.status}, not in a terminal state; ${await diagnose(r.id)}`);
    if (r.status === "succeeded" && r.messages !== 1) breaches.push(`succeeded run ${r.id} has ${r.messages} assistant messages, not 1`);
    if (r.status !== "succeeded" && r.messages !== 0) breaches.push(`${r.status} run ${r.id} has ${r.messages} assistant messages`);
  }

  const eventsOf = async (runId: string) =>
    (await pool.query<{ seq: number; type: string }>("select seq, type from run_events where run_id = $1 order by seq", [runId])).rows;
  const terminalFor: Record<string, string> = { done: "succeeded", failed: "failed", cancelled: "cancelled" };
  let tracked = 0;
  for (const c of clients) {
    for (const run of c.runs.values()) {
      tracked++;
      const row = byId.get(run.runId);
      const planned = kinds.get(run.runId);
      if (!row) {
        breaches.push(`run lost: ${run.runId} (client ${c.index}, ${run.kind}) was accepted with 202 but is not in the database`);
        continue;
      }
      if (run.terminal && terminalFor[run.terminal] !== row.status) {
        breaches.push(`run ${run.runId}: the client saw "${run.terminal}" but the database says ${row.status}`);
      }
      if (planned && row.status !== EXPECTED_STATUS[planned.kind]) {
        breaches.push(`run ${run.runId} (${planned.kind}) ended ${row.status} (${row.error_code ?? "no error"}, attempt ${row.attempt}, failures ${row.failures}), expected ${EXPECTED_STATUS[planned.kind]}`);
      }
      if (row.status === "succeeded") {
        const streamed = textOf(run.events);
        if (row.content !== null && Buffer.compare(Buffer.from(streamed, "utf8"), Buffer.from(row.content, "utf8")) !== 0) {
          breaches.push(`run ${run.runId}: client ${c.index} streamed ${JSON.stringify(streamed.slice(0, 80))}… (${streamed.length} chars), the stored message is ${JSON.stringify(row.content.slice(0, 80))}… (${row.content.length} chars)`);
        }
        if (planned && row.content !== planned.text) {
          breaches.push(`run ${run.runId}: the stored message is not the provider's answer (${row.content?.length ?? 0} chars stored, ${planned.text.length} sent)`);
        }
      }
      // The client showed every stored event once, in order.
      const stored = await eventsOf(run.runId);
      const shown = run.events.map((e) => `${e.seq}:${e.event}`).join(",");
      const want = stored.map((e) => `${e.seq}:${e.type}`).join(",");
      if (shown !== want) breaches.push(`run ${run.runId}: the client's events differ from run_events (client ${shown.slice(-120)} / stored ${want.slice(-120)})`);
    }
  }

  // 5xx: allowed only while the database restarts.
  const windowStart = timings.dbStopAt ?? Infinity;
  const windowEnd = (timings.dbReadyAt ?? -Infinity) + 1000;
  const inWindow = (e: HttpLogEntry) => e.end >= windowStart && e.start <= windowEnd;
  const fivexx = httpLog.filter((e) => e.status >= 500);
  const outside = fivexx.filter((e) => !inWindow(e));
  for (const e of outside) breaches.push(`${e.status} ${e.code ?? ""} outside the database-restart window: client ${e.client} ${e.method} ${e.route} at t=${since(e.start)}s..${since(e.end)}s`);

  for (const c of clients) if (c.stats.drops < 1) breaches.push(`client ${c.index}'s socket was never dropped`);

  // Provider failures each kind is scripted to cause; more means something else was counted as one.
  const planned = { normal: 0, long: 0, cancel: 0, retry429: 1, retry500: 1, dropped: 1, fail: RETRY_ATTEMPTS + 1 } satisfies Record<RunKind, number>;
  const unplanned = rows
    .filter((r) => { const k = kinds.get(r.id); return k !== undefined && r.failures > planned[k.kind]; })
    .map((r) => `${r.id.slice(0, 8)} ${kinds.get(r.id)?.kind ?? "?"} ${r.failures}x ${r.error_code ?? ""}`);
  const byRoute = new Map<string, number>();
  for (const e of fivexx) {
    const key = `${e.status} ${e.code ?? "-"} ${e.method} ${e.route}`;
    byRoute.set(key, (byRoute.get(key) ?? 0) + 1);
  }
  const count = (s: string) => rows.filter((r) => r.status === s).length;
  const sum = (f: (c: ChaosClient) => number) => clients.reduce((n, c) => n + f(c), 0);
  const ms = (v: number | undefined) => (v === undefined ? "n/a" : `${(v / 1000).toFixed(1)} s`);
  fivexxByRoute = [...byRoute].map(([k, n]) => `${n}x ${k}`);
  return {
    "runs (in the database / started by clients)": `${rows.length} / ${tracked}`,
    succeeded: count("succeeded"),
    failed: count("failed"),
    cancelled: count("cancelled"),
    "retries (provider failures counted)": rows.reduce((n, r) => n + r.failures, 0),
    "failures beyond the plan (a lost database counted?)": unplanned.length ? `${unplanned.length}: ${unplanned.slice(0, 4).join(", ")}` : 0,
    // An attempt that neither failed nor ended the run was interrupted (shutdown, crash, database) and run again.
    "recoveries (interrupted attempts run again)": rows.reduce((n, r) => n + Math.max(0, r.attempt - r.failures - (r.status === "failed" || r.attempt === 0 ? 0 : 1)), 0),
    "resumes (resubscribed with after > 0)": sum((c) => c.stats.resumes),
    "socket drops / closes / reconnects": `${sum((c) => c.stats.drops)} / ${sum((c) => c.stats.closes)} / ${sum((c) => c.stats.reconnects)}`,
    "duplicate events dropped by clients": sum((c) => c.stats.duplicates),
    "stream watchdog resubscribes": sum((c) => c.stats.watchdogResubscribes),
    "SIGTERM: exit / runs taken up": `${ms(timings.sigtermExitMs)} / ${ms(timings.sigtermRecoverMs)}`,
    "SIGKILL: time to recover": ms(timings.killRecoverMs),
    "DB restart: down / instances ready after": `${ms(timings.dbUpAt !== undefined && timings.dbStopAt !== undefined ? timings.dbUpAt - timings.dbStopAt : undefined)} / ${ms(timings.dbReadyAt !== undefined && timings.dbUpAt !== undefined ? timings.dbReadyAt - timings.dbUpAt : undefined)}`,
    "instances that exited by themselves": crashes.length,
    "HTTP responses (no answer)": `${httpLog.length} (${httpLog.filter((e) => e.status === 0).length})`,
    "5xx in window / outside": `${fivexx.length - outside.length} / ${outside.length}`,
  };
}

function printTable(rows: Record<string, string | number>) {
  const w = Math.max(...Object.keys(rows).map((k) => k.length));
  const v = Math.max(...Object.values(rows).map((x) => String(x).length));
  process.stdout.write(`\n| ${"measure".padEnd(w)} | ${"value".padEnd(v)} |\n|${"-".repeat(w + 2)}|${"-".repeat(v + 2)}|\n`);
  for (const [k, x] of Object.entries(rows)) process.stdout.write(`| ${k.padEnd(w)} | ${String(x).padEnd(v)} |\n`);
}

// ---------------------------------------------------------------- main

async function main() {
  if (!existsSync(DIST_ENTRY)) {
    log("dist/ is missing: npm run build");
    execFileSync("npm", ["run", "build"], { cwd: ROOT, stdio: "inherit" });
  }
  const rand = seededRandom(SEED);
  [db, llm, proxy] = await Promise.all([startDatabase(), startFakeLlm(), startProxy()]);
  log(`PostgreSQL on port ${db.port} (${db.dataDir}); proxy on ${proxy.url}; fake provider on ${llm.url}; seed ${SEED}`);
  const script = scriptByContent(llm);
  const env = instanceEnv(db, llm);
  // The first one migrates; the others start together.
  await addInstance(env);
  await Promise.all([addInstance(env), addInstance(env)]);

  const wsUrl = `${proxy.url.replace(/^http/, "ws")}/ws`;
  for (let i = 0; i < CLIENTS; i++) clients.push(await makeClient(i, proxy.url, wsUrl));
  clientsStart = Date.now();
  log(`${CLIENTS} clients connected; chatting`);

  const chats = clients.map((c) => {
    const r = seededRandom(SEED * 1000 + c.index);
    return chat(c, r, script).catch((err: unknown) => void breaches.push(`client ${c.index} stopped: ${String(err)}`));
  });
  const chaos = (async () => {
    await sleep(Math.max(0, clientsStart + AT.sigterm - Date.now()));
    await sigtermOne(env);
    await sleep(Math.max(0, clientsStart + AT.sigkill - Date.now()));
    await sigkillOne(env);
    await sleep(Math.max(0, clientsStart + AT.dbRestart - Date.now()));
    await restartDatabase();
  })().catch((err: unknown) => void breaches.push(`chaos schedule: ${String(err)}`));
  const drops = dropSockets(rand);

  await Promise.all([chaos, drops, ...chats]);
  log(`clients done; waiting for every run to settle`);
  await until(
    "every run to reach a terminal state",
    async () => (await db!.pool.query<{ n: number }>("select count(*)::int as n from runs where status not in ('succeeded', 'failed', 'cancelled')")).rows[0]?.n === 0,
    LIMITS.settle,
    200,
  ).catch((err: unknown) => void breaches.push(String(err)));

  const table = await check();
  printTable({ ...table, "wall time": `${((Date.now() - t0) / 1000).toFixed(1)} s` });
  process.stdout.write("\n");
  if (fivexxByRoute.length) process.stdout.write(`5xx answers: ${fivexxByRoute.join("; ")}\n`);
}

const limit = setTimeout(() => {
  breaches.push(`global time limit of ${TIME_LIMIT_MS} ms reached`);
  void finish(1);
}, TIME_LIMIT_MS);
limit.unref();

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    breaches.push(`interrupted by ${sig}`);
    void finish(130);
  });
}

let finishing = false;
async function finish(code: number) {
  if (finishing) return;
  finishing = true;
  const failed = code !== 0 || breaches.length > 0;
  if (process.env.CHAOS_LOG_DIR && !failed) {
    const dir = await dumpLogs(process.env.CHAOS_LOG_DIR).catch(() => "(could not write logs)");
    process.stdout.write(`instance logs and the HTTP log: ${dir}\n`);
  }
  if (failed) {
    const dir = await dumpLogs().catch(() => "(could not write logs)");
    process.stdout.write(`\nFAIL: ${breaches.length} breach(es)\n${breaches.map((b) => `  - ${b}`).join("\n")}\ninstance logs and the HTTP log: ${dir}\n`);
  } else {
    process.stdout.write("PASS: every check held\n");
  }
  await Promise.race([cleanup(), sleep(30_000)]);
  process.exit(failed ? 1 : 0);
}

main().then(
  () => finish(0),
  (err: unknown) => {
    breaches.push(`the run itself failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    return finish(1);
  },
);

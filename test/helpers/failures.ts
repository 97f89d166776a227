/**
 * Shared pieces of the failure-list tests (test/failures-*.test.ts): reading
 * one value off a Prometheus text page, the LISTEN backends of a database,
 * evaluating code inside a spawned server through the Node inspector, and
 * the database and fake LLM that the built servers of a file run on.
 */
import WebSocket from "ws";
import type pg from "pg";
import { afterEach } from "vitest";
import { spawnServer, type ServerProcess } from "./spawnServer.js";
import { waitForStatus } from "../fixtures/process.js";
import { createTestDatabase, type TestDatabase } from "./db.js";
import { startFakeLlm, type FakeLlm } from "./fakeLlm.js";
import { spawnInstance, type Instance } from "./ws.js";
import { useOnce } from "./queue.js";

/** What useServerFixture gives a test: read its fields inside tests and hooks, once its beforeAll has run. */
export interface ServerFixture {
  readonly db: TestDatabase;
  /** The fake LLM, with the API key spawnInstance gives the servers. */
  readonly llm: FakeLlm;
  /** A built server on `db` and `llm` (spawnInstance), stopped by the fixture's afterAll. */
  spawn(env?: Record<string, string | undefined>): Promise<Instance>;
}

/**
 * A migrated test database and a fake LLM, opened in a beforeAll and closed
 * in an afterAll of the calling scope, after the servers `spawn` started are
 * stopped.
 */
export function useServerFixture(): ServerFixture {
  const get = useOnce(async (release) => {
    const [db, llm] = await Promise.all([createTestDatabase({ migrate: true }), startFakeLlm({ apiKey: "sk-realtime-test" })]);
    release(() => db.drop());
    release(() => llm.close());
    const spawned: Instance[] = [];
    release(async () => {
      await Promise.all(spawned.map((i) => i.proc.stop()));
    });
    return { db, llm, spawned };
  });
  return {
    get db() {
      return get().db;
    },
    get llm() {
      return get().llm;
    },
    async spawn(env = {}) {
      const { db, llm, spawned } = get();
      const inst = await spawnInstance(db, llm.url, env);
      spawned.push(inst);
      return inst;
    },
  };
}

/**
 * The value of one sample on a Prometheus text page: `name` with exactly
 * these labels (none: the bare series). NaN when absent.
 */
export function sampleValue(text: string, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort()
    .join(",");
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = (m[2] ?? "")
      .split(/,(?=[A-Za-z_]\w*=")/)
      .filter((s) => s !== "")
      .sort()
      .join(",");
    if (got === want) return Number(m[3]);
  }
  return NaN;
}

/** One server backend holding a LISTEN, as pg_stat_activity shows it. */
export interface ListenBackend {
  pid: number;
  application_name: string;
  query: string;
}

/**
 * The backends of `database` whose last statement was a LISTEN: the
 * server's realtime listener (application_name esa-agents-listen) and
 * graphile-worker's own. `pool` is the test's pool, whose backends never LISTEN.
 */
export async function listenBackends(pool: pg.Pool, database: string): Promise<ListenBackend[]> {
  const r = await pool.query<ListenBackend>(
    "select pid, application_name, query from pg_stat_activity where datname = $1 and query ilike 'listen%' and pid <> pg_backend_pid() order by pid",
    [database],
  );
  return r.rows;
}

/**
 * The inspector of a server spawned with `--inspect=127.0.0.1:0`: its
 * WebSocket URL, printed by Node on stderr.
 */
export function inspectorUrl(srv: ServerProcess): string {
  const m = /Debugger listening on (ws:\/\/\S+)/.exec(srv.stderr());
  if (!m?.[1]) throw new Error(`no inspector URL on stderr: ${srv.stderr().slice(0, 500)}`);
  return m[1];
}

/**
 * Opens the inspector session and returns `evaluate`, which runs an
 * expression on the server's main thread (Runtime.evaluate) and resolves
 * once the inspector answers, that is once the expression has returned.
 */
export async function openInspector(url: string): Promise<{ evaluate(expression: string): Promise<unknown>; close(): void }> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  ws.on("error", () => undefined);
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
  let nextId = 1;
  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  ws.on("message", (data: Buffer) => {
    const msg = JSON.parse(data.toString("utf8")) as { id?: number; result?: { result?: { value?: unknown }; exceptionDetails?: unknown }; error?: unknown };
    if (msg.id === undefined) return;
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    if (msg.error || msg.result?.exceptionDetails) p.reject(new Error(`inspector: ${JSON.stringify(msg.error ?? msg.result?.exceptionDetails)}`));
    else p.resolve(msg.result?.result?.value);
  });
  return {
    evaluate(expression: string) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        ws.send(JSON.stringify({ id, method: "Runtime.evaluate", params: { expression, returnByValue: true } }));
      });
    },
    close() {
      ws.close();
    },
  };
}

/**
 * A migrated database for the file and `start()`: a built server on it, run
 * with Node's own `--inspect=127.0.0.1:0` (see openInspector), once /ready
 * says 200. Servers are stopped after each test, the database after the file.
 */
export function useInspectableServer(): { start(): Promise<ServerProcess> } {
  const get = useOnce(async (release) => {
    const db = await createTestDatabase({ migrate: true });
    release(() => db.drop());
    return db;
  });
  const servers: ServerProcess[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.stop()));
  });
  return {
    async start() {
      const srv = await spawnServer({ env: { DATABASE_URL: get().url }, nodeArgs: ["--inspect=127.0.0.1:0"] });
      servers.push(srv);
      await waitForStatus(`${srv.baseUrl}/ready`, 200, 30_000);
      return srv;
    },
  };
}

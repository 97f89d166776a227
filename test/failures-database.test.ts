/**
 * Issue 8, point 2, on the built server and a PostgreSQL of its own (so
 * stopping it disturbs no other test): "database restarted under idle
 * pooled connections" and, beside the probes of process-probes.test.ts,
 * "database down" as an API client sees it.
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from "vitest";
import path from "node:path";
import pg from "pg";
import { pino } from "pino";
import { spawnServer, type ServerProcess } from "./helpers/spawnServer.js";
import { Client, TEST_JWT_SECRET, TEST_SESSION_SECRET, type Res } from "./helpers/dataApi.js";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../server/db/embedded.js";
import { clientConfigFromUrl } from "../server/db/pool.js";
import { freePort, getJson, makeTempDir, waitForStatus } from "./fixtures/process.js";
import { waitFor } from "./helpers/queue.js";

let tmp: Awaited<ReturnType<typeof makeTempDir>>;
let port: number;
let pgServer: EmbeddedPostgres | undefined;
const startPg = () => startEmbeddedPostgres({ dataDir: path.join(tmp.dir, "postgres"), port, log: pino({ level: "silent" }) });
const servers: ServerProcess[] = [];

beforeAll(async () => {
  tmp = await makeTempDir("esa-failures-pg-", { traversable: true });
  port = await freePort();
  pgServer = await startPg();
}, 120_000);
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});
afterAll(async () => {
  await pgServer?.stop({ force: true });
  await tmp?.remove();
});

/** One query on a connection of the test's own, ended after. */
async function query<R extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<R[]> {
  if (!pgServer) throw new Error("PostgreSQL is not running");
  const c = new pg.Client(clientConfigFromUrl(pgServer.url));
  c.on("error", () => undefined);
  await c.connect();
  try {
    return (await c.query<R>(sql, params)).rows;
  } finally {
    await c.end().catch(() => undefined);
  }
}

async function startServer() {
  if (!pgServer) throw new Error("PostgreSQL is not running");
  const srv = await spawnServer({
    env: { DATABASE_URL: pgServer.url, SESSION_SECRET: TEST_SESSION_SECRET, JWT_SECRET: TEST_JWT_SECRET, RATE_LIMIT_MAX: "100000", HEARTBEAT_MS: "500" },
  });
  servers.push(srv);
  await waitForStatus(`${srv.baseUrl}/ready`, 200, 30_000);
  return srv;
}

const idlePooled = async () =>
  (await query<{ n: number }>("select count(*)::int as n from pg_stat_activity where application_name = 'esa-agents' and state = 'idle' and query not ilike 'listen%'"))[0]?.n ?? 0;

/** Waits until a run reaches a terminal status; returns it. */
const finished = (runId: string) =>
  waitFor(
    `run ${runId} to finish`,
    async () => (await query<{ status: string }>("select status from runs where id = $1 and status in ('succeeded', 'failed', 'cancelled')", [runId]))[0],
    30_000,
    100,
  );

async function postMessage(c: Client, content: string) {
  const conv = await c.post("/api/conversations", {});
  expect(conv.status).toBe(201);
  return c.post(`/api/conversations/${conv.body.id as string}/messages`, { content, agent: "math" });
}

describe("database restarted under idle pooled connections", () => {
  it("the process lives on, and the first API requests after the restart succeed on fresh connections", async () => {
    const srv = await startServer();
    const c = new Client(srv.baseUrl);
    await c.userId();
    // Parallel requests leave several connections idle in the pool (idle timeout 10 s).
    const warm = await Promise.all(Array.from({ length: 8 }, () => c.get("/api/conversations")));
    expect(warm.map((r) => r.status)).toEqual(warm.map(() => 200));
    const idleBefore = await idlePooled();
    expect(idleBefore).toBeGreaterThanOrEqual(3);

    // Restart PostgreSQL: every pooled connection dies at once.
    await pgServer?.stop({ force: true });
    pgServer = undefined;
    pgServer = await startPg();

    // Straight away, without waiting for /ready: more requests than there were idle connections.
    const after = await Promise.all(Array.from({ length: 12 }, () => c.get("/api/conversations")));
    expect(after.map((r) => `${r.status} ${r.status === 200 ? "" : r.text}`)).toEqual(after.map(() => "200 "));
    // The dead connections were dropped by their error listeners, not handed out.
    await srv.waitForLog((l) => l.msg === "database connection failed", 5000);

    // The same process, ready again, and its queue runs a new message.
    expect((await waitForStatus(`${srv.baseUrl}/ready`, 200, 10_000)).status).toBe(200);
    const posted = await postMessage(c, "what is 6 * 7");
    expect(posted.status).toBe(202);
    expect((await finished(posted.body.run.id as string)).status).toBe("succeeded");
    expect(srv.child.exitCode).toBeNull();
    expect(srv.logs.filter((l) => l.msg === "listening")).toHaveLength(1);
    expect(srv.logs.some((l) => Number(l.level) >= 60)).toBe(false);
  });
});

describe("database down", () => {
  /** Stops PostgreSQL, runs `during` against the server, starts PostgreSQL again (whatever happened). */
  async function whileDown(srv: ServerProcess, during: () => Promise<void>) {
    await pgServer?.stop({ force: true });
    pgServer = undefined;
    try {
      await waitForStatus(`${srv.baseUrl}/ready`, 503, 10_000);
      await during();
    } finally {
      pgServer ??= await startPg();
    }
  }

  const expectCleanError = (r: Res) => {
    expect(r.headers["content-type"]).toMatch(/^application\/json/);
    expect(Object.keys(r.body as object)).toEqual(["error"]);
    expect(Object.keys((r.body as { error: object }).error).sort()).toEqual(["code", "message"]);
    expect(r.text).not.toMatch(/\bat .*:\d+:\d+|ECONNREFUSED|node_modules/);
  };

  it("API requests get a JSON error without details (never a hang or a crash), nothing is half-stored, and all works again once it is back", async () => {
    const srv = await startServer();
    const c = new Client(srv.baseUrl);
    await c.userId();
    const countBefore = (await query<{ n: number }>("select count(*)::int as n from messages"))[0]?.n ?? 0;

    await whileDown(srv, async () => {
      const reads = await c.get("/api/conversations");
      const writes = await c.post("/api/conversations", {});
      for (const r of [reads, writes]) {
        expect(r.status, r.text).toBeGreaterThanOrEqual(500);
        expectCleanError(r);
      }
      // /live stays up meanwhile.
      expect((await getJson(`${srv.baseUrl}/live`)).status).toBe(200);
    });

    await waitForStatus(`${srv.baseUrl}/ready`, 200, 15_000);
    expect((await query<{ n: number }>("select count(*)::int as n from messages"))[0]?.n).toBe(countBefore);
    const posted = await postMessage(c, "what is 2 + 2");
    expect(posted.status).toBe(202);
    expect((await finished(posted.body.run.id as string)).status).toBe("succeeded");
    expect(srv.child.exitCode).toBeNull();
  });

  it("that error is a 503 (unavailable, try again), as the WebSocket upgrade answers, not a 500 internal error", async () => {
    const srv = await startServer();
    const c = new Client(srv.baseUrl);
    await c.userId();
    await whileDown(srv, async () => {
      const answers = [await c.get("/api/conversations"), await c.post("/api/conversations", {})];
      expect(answers.map((r) => `${r.status} ${r.text}`)).toEqual(answers.map(() => expect.stringMatching(/^503 /)));
      for (const r of answers) {
        expectCleanError(r);
        expect((r.body as { error: { code: string } }).error.code).not.toBe("internal");
      }
    });
  });
});

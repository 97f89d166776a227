/**
 * Issue 2, points 3 and 4 (listen first, probes) and the pg_terminate_backend
 * part of point 11, on the built server as a child process.
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from "vitest";
import { readFileSync } from "node:fs";
import path from "node:path";
import { pino } from "pino";
import { spawnServer, waitFor, type ServerProcess } from "./helpers/spawnServer.js";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { ROOT } from "./helpers/paths.js";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../server/db/embedded.js";
import { freePort, getJson, keysOf, makeTempDir, waitForStatus, type JsonResponse } from "./fixtures/process.js";

const servers: ServerProcess[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

const isIsoTime = (v: unknown) => typeof v === "string" && !Number.isNaN(Date.parse(v)) && new Date(v).toISOString() === v;

/** DESIGN.md: `/live` is {alive, timestamp, pid, uptime} and never touches the database. */
function expectLive(r: JsonResponse, pid: number) {
  expect(r.status).toBe(200);
  expect(keysOf(r.body)).toEqual(["alive", "pid", "timestamp", "uptime"]);
  expect(r.body.alive).toBe(true);
  expect(r.body.pid).toBe(pid);
  expect(isIsoTime(r.body.timestamp)).toBe(true);
  expect(typeof r.body.uptime).toBe("number");
}

/** `/ready`: {ready, timestamp} or 503 {ready:false, error, timestamp}. */
function expectReady(r: JsonResponse, ready: boolean, error?: RegExp) {
  if (ready) {
    expect(r.status).toBe(200);
    expect(keysOf(r.body)).toEqual(["ready", "timestamp"]);
    expect(r.body.ready).toBe(true);
  } else {
    expect(r.status).toBe(503);
    expect(keysOf(r.body)).toEqual(["error", "ready", "timestamp"]);
    expect(r.body.ready).toBe(false);
    if (error) expect(r.body.error).toMatch(error);
  }
  expect(isIsoTime(r.body.timestamp)).toBe(true);
}

/** `/health`: 200 {status:"healthy", checks} or 503 {status:"unhealthy", error, checks}. */
function expectHealth(r: JsonResponse, healthy: boolean, error?: RegExp) {
  const checks = r.body.checks as Record<string, { status: string }>;
  if (healthy) {
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(keysOf(r.body)).toEqual(["checks", "status"]);
    expect(r.body.status).toBe("healthy");
    expect(checks.database?.status).toBe("up");
  } else {
    expect(r.status).toBe(503);
    expect(keysOf(r.body)).toEqual(["checks", "error", "status"]);
    expect(r.body.status).toBe("unhealthy");
    if (error) expect(r.body.error).toMatch(error);
  }
  expect(checks.memory?.status).toBe("up");
  expect(checks.uptime?.status).toBe("up");
}

describe("listen first", () => {
  it("serves / and /live within 1 s of process start while the database is unreachable; /ready and /health are 503 naming the database", async () => {
    const srv = await spawnServer({ env: { DATABASE_URL: "postgres://u:p@127.0.0.1:1/x" } });
    servers.push(srv);
    const home = await fetch(`${srv.baseUrl}/`, { headers: { accept: "text/html" } });
    const html = await home.text();
    const live = await getJson(`${srv.baseUrl}/live`);

    expect(home.status).toBe(200);
    expect(html).toBe(readFileSync(path.join(ROOT, "dist", "public", "index.html"), "utf8"));
    expectLive(live, srv.pid);
    // "Within 1 s of process start" on the server's own clock: /live's uptime
    // (process.uptime(), from the process's start) taken after `/` and /live
    // have both answered. The test runner's own scheduling delays on a busy
    // machine are not the server's.
    expect(live.body.uptime).toBeLessThan(1);

    expectReady(await getJson(`${srv.baseUrl}/ready`), false, /database/i);
    // Once the first attempt has failed, both say why: the connection is refused.
    const health = (await waitFor(async () => {
      const r = await getJson(`${srv.baseUrl}/health`);
      return /ECONNREFUSED/.test(String(r.body.error)) ? r : null;
    }, 5000)) as JsonResponse;
    expectHealth(health, false, /^database/);
    expect((health.body.checks as Record<string, { status: string }>).database?.status).toBe("down");
    expectReady(await getJson(`${srv.baseUrl}/ready`), false, /^database.*ECONNREFUSED/);

    // It keeps retrying rather than exiting.
    expect(srv.child.exitCode).toBeNull();
    expect(srv.logs.some((l) => l.msg === "database connection failed; retrying")).toBe(true);
  });
});

describe("a database that goes away and comes back", () => {
  let tmp: Awaited<ReturnType<typeof makeTempDir>>;
  let port: number;
  let pg: EmbeddedPostgres | undefined;
  const start = () => startEmbeddedPostgres({ dataDir: path.join(tmp.dir, "postgres"), port, log: pino({ level: "silent" }) });

  beforeAll(async () => {
    // Its own PostgreSQL, so stopping it disturbs no other test.
    tmp = await makeTempDir("esa-probe-pg-", { traversable: true });
    port = await freePort();
    pg = await start();
  });
  afterAll(async () => {
    await pg?.stop({ force: true });
    await tmp?.remove();
  });

  it("turns /ready and /health 503 naming the database while /live stays 200, and 200 again within 5 s of its return, without a restart", async () => {
    if (!pg) throw new Error("embedded PostgreSQL did not start");
    const srv = await spawnServer({ env: { DATABASE_URL: pg.url } });
    servers.push(srv);
    expectReady(await waitForStatus(`${srv.baseUrl}/ready`, 200, 30_000), true);
    expectHealth(await getJson(`${srv.baseUrl}/health`), true);
    expectLive(await getJson(`${srv.baseUrl}/live`), srv.pid);

    // force: the server is connected, and that is the point.
    await pg.stop({ force: true });
    pg = undefined;
    expectReady(await waitForStatus(`${srv.baseUrl}/ready`, 503, 5000), false, /database/i);
    expectHealth(await getJson(`${srv.baseUrl}/health`), false, /database/i);
    expectLive(await getJson(`${srv.baseUrl}/live`), srv.pid);
    // Still down a little later, still alive.
    await new Promise((r) => setTimeout(r, 1500));
    expectReady(await getJson(`${srv.baseUrl}/ready`), false, /database/i);
    expectLive(await getJson(`${srv.baseUrl}/live`), srv.pid);

    pg = await start();
    const back = performance.now();
    expectReady(await waitForStatus(`${srv.baseUrl}/ready`, 200, 5000), true);
    expectHealth(await waitForStatus(`${srv.baseUrl}/health`, 200, Math.max(100, 5000 - (performance.now() - back))), true);
    expect(performance.now() - back).toBeLessThan(5000);

    // The same process all along.
    expectLive(await getJson(`${srv.baseUrl}/live`), srv.pid);
    expect(srv.child.exitCode).toBeNull();
    expect(srv.logs.filter((l) => l.msg === "listening")).toHaveLength(1);
  });
});

describe("pg_terminate_backend on the server's pooled connections", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase({ migrate: true });
  });
  afterAll(async () => {
    await db?.drop();
  });

  it("does not crash the process, and the next request needing the database succeeds", async () => {
    const srv = await spawnServer({ env: { DATABASE_URL: db.url } });
    servers.push(srv);
    await waitForStatus(`${srv.baseUrl}/ready`, 200, 30_000);
    // Several deep checks at once leave several idle connections in the pool.
    await Promise.all(Array.from({ length: 6 }, () => getJson(`${srv.baseUrl}/health`)));

    const killed = await db.pool.query(
      "select pg_terminate_backend(pid) as ok from pg_stat_activity where application_name = 'esa-agents' and datname = $1",
      [db.name],
    );
    expect(killed.rowCount).toBeGreaterThanOrEqual(2);
    expect(killed.rows.every((r: { ok: boolean }) => r.ok)).toBe(true);

    // Each dead connection is noticed (and logged) by its error listener...
    await srv.waitForLog(
      () => srv.logs.filter((l) => l.msg === "database connection failed").length >= (killed.rowCount ?? 0),
      5000,
    );
    // ...and the next request that needs the database gets a fresh one.
    expectHealth(await getJson(`${srv.baseUrl}/health`), true);
    expectReady(await getJson(`${srv.baseUrl}/ready`), true);
    expect(srv.child.exitCode).toBeNull();
    expect(srv.logs.some((l) => Number(l.level) >= 60)).toBe(false);
    const after = await db.pool.query("select count(*)::int as n from pg_stat_activity where application_name = 'esa-agents' and datname = $1", [db.name]);
    expect(after.rows[0].n).toBeGreaterThanOrEqual(1);
  });
});

describe("a job worker that stops by itself", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase({ migrate: true });
  });
  afterAll(async () => {
    await db?.drop();
  });

  it("turns /ready and /health 503 naming the queue (graphile-worker leaves on a breaking worker:migrate notification)", async () => {
    const srv = await spawnServer({ env: { DATABASE_URL: db.url } });
    servers.push(srv);
    expectReady(await waitForStatus(`${srv.baseUrl}/ready`, 200, 30_000), true);

    // What a newer graphile-worker sends when it installs a breaking schema
    // revision: every older worker shuts itself down.
    await db.pool.query(`select pg_notify('worker:migrate', '{"migrationNumber": 999999, "breaking": true}')`);

    const ready = await waitForStatus(`${srv.baseUrl}/ready`, 503, 10_000);
    expect(ready.body).toMatchObject({ ready: false });
    expect(String((ready.body as { error?: unknown }).error)).toMatch(/queue/);
    const health = await getJson(`${srv.baseUrl}/health`);
    expect(health.status).toBe(503);
    expect(health.body).toMatchObject({ status: "unhealthy", checks: { queue: { status: "down" } } });
    // The process itself lives on (/live), so the platform's readiness check is what replaces it.
    expectLive(await getJson(`${srv.baseUrl}/live`), srv.pid);
    expect(srv.child.exitCode).toBeNull();
  });
});

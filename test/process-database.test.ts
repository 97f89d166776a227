/**
 * Issue 2, point 11 (database), on the built server as a child process: the
 * embedded PostgreSQL (created, reused, stopped), the Replit boot error,
 * MIGRATE_ON_START=false with `node dist/migrate.js`, and sslmode in the URL.
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from "vitest";
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import path from "node:path";
import { promisify } from "node:util";
import { randomUUID } from "node:crypto";
import pg from "pg";
import { spawnServer, type ServerProcess } from "./helpers/spawnServer.js";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { ROOT } from "./helpers/paths.js";
import { embeddedUrl } from "../server/db/embedded.js";
import { clientConfigFromUrl } from "../server/db/pool.js";
import { freePort, getJson, isPortOpen, makeTempDir, sleep, waitForStatus } from "./fixtures/process.js";

const run = promisify(execFile);

const servers: ServerProcess[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

const dbs: TestDatabase[] = [];
afterAll(async () => {
  await Promise.all(dbs.splice(0).map((d) => d.drop()));
});

async function query<T extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client(clientConfigFromUrl(url));
  client.on("error", () => undefined);
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

describe("embedded PostgreSQL (no DATABASE_URL)", () => {
  let tmp: Awaited<ReturnType<typeof makeTempDir>>;
  let port: number;
  let dataDir: string;

  beforeAll(async () => {
    tmp = await makeTempDir("esa-embedded-", { traversable: true });
    dataDir = path.join(tmp.dir, "postgres");
    port = await freePort();
  });
  afterAll(async () => {
    // If a failed test left the server's postgres behind (its parent was
    // SIGKILLed), stop it: it was started by a process this file spawned.
    for (const dir of [dataDir, path.join(tmp.dir, "interrupted")]) {
      const pidFile = path.join(dir, "postmaster.pid");
      if (!existsSync(pidFile)) continue;
      const pid = Number(readFileSync(pidFile, "utf8").split("\n")[0]);
      try {
        if (pid > 0) process.kill(pid, "SIGINT");
        for (let i = 0; i < 50 && (await isPortOpen(port, 200)); i++) await sleep(100);
      } catch {
        /* already gone */
      }
    }
    await tmp?.remove();
  });

  const start = (dir = dataDir) =>
    spawnServer({ env: { DATABASE_URL: undefined, EMBEDDED_PG_DIR: dir, EMBEDDED_PG_PORT: String(port) } });

  it("creates the database on first start, becomes ready, and stops it on SIGTERM", async () => {
    expect(await isPortOpen(port)).toBe(false);
    const srv = await start();
    servers.push(srv);
    await waitForStatus(`${srv.baseUrl}/ready`, 200, 90_000);
    expect(srv.logs.some((l) => l.msg === "initialising the embedded PostgreSQL data folder")).toBe(true);
    expect(srv.logs.find((l) => l.msg === "embedded PostgreSQL started")).toMatchObject({ dataDir, port });
    expect(existsSync(path.join(dataDir, "PG_VERSION"))).toBe(true);

    // Data written now must be there on the next start; migrations ran too.
    const marker = randomUUID();
    await query(embeddedUrl(port), "create table test_marker (value text not null)");
    await query(embeddedUrl(port), "insert into test_marker values ($1)", [marker]);
    expect(await query(embeddedUrl(port), "select to_regclass('public.runs')::text as t")).toEqual([{ t: "runs" }]);

    srv.kill("SIGTERM");
    expect(await srv.exited).toEqual({ code: 0, signal: null });
    expect(await isPortOpen(port)).toBe(false);
    expect(existsSync(path.join(dataDir, "postmaster.pid"))).toBe(false);

    // Second start: the folder is reused, not initialised again, and holds the data.
    const again = await start();
    servers.push(again);
    await waitForStatus(`${again.baseUrl}/ready`, 200, 30_000);
    expect(again.logs.some((l) => l.msg === "embedded PostgreSQL started")).toBe(true);
    expect(again.logs.some((l) => l.msg === "initialising the embedded PostgreSQL data folder")).toBe(false);
    expect(await query(embeddedUrl(port), "select value from test_marker")).toEqual([{ value: marker }]);

    again.kill("SIGTERM");
    expect(await again.exited).toEqual({ code: 0, signal: null });
    expect(await isPortOpen(port)).toBe(false);
  });

  it("is left running on SIGTERM while another process uses it (a sibling instance, another test run)", async () => {
    const srv = await start();
    servers.push(srv);
    await waitForStatus(`${srv.baseUrl}/ready`, 200, 30_000);
    const other = new pg.Client(clientConfigFromUrl(embeddedUrl(port)));
    other.on("error", () => undefined);
    await other.connect();
    try {
      srv.kill("SIGTERM");
      expect(await srv.exited).toEqual({ code: 0, signal: null });
      expect(srv.logs.some((l) => l.msg === "embedded PostgreSQL left running: other processes are connected to it")).toBe(true);
      expect((await other.query("select 1 as one")).rows).toEqual([{ one: 1 }]);
    } finally {
      await other.end();
    }
    // The next start reuses it; stopping it is then up to whoever owns it: here, this test.
    const pidFile = path.join(dataDir, "postmaster.pid");
    const pid = Number(readFileSync(pidFile, "utf8").split("\n")[0]);
    process.kill(pid, "SIGINT");
    for (let i = 0; i < 100 && existsSync(pidFile); i++) await sleep(100);
    expect(await isPortOpen(port)).toBe(false);
  });

  it("a SIGTERM while the database is being created still stops it: nothing is left running", async () => {
    const dir = path.join(tmp.dir, "interrupted");
    const srv = await start(dir);
    servers.push(srv);
    await srv.waitForLog((l) => l.msg === "initialising the embedded PostgreSQL data folder", 30_000);
    srv.kill("SIGTERM");
    expect(await srv.exited).toEqual({ code: 0, signal: null });
    // The start that was under way finished, and was stopped before the exit.
    expect(srv.logs.some((l) => l.msg === "embedded PostgreSQL started")).toBe(true);
    expect(await isPortOpen(port)).toBe(false);
    expect(existsSync(path.join(dir, "postmaster.pid"))).toBe(false);
  });
});

describe("boot errors and migrations", () => {
  it("REPLIT_DEPLOYMENT=1 without DATABASE_URL exits non-zero with one stderr line naming DATABASE_URL", async () => {
    const srv = await spawnServer({ env: { REPLIT_DEPLOYMENT: "1", DATABASE_URL: undefined, SESSION_SECRET: "s".repeat(32) }, waitListening: false });
    servers.push(srv);
    const exit = await Promise.race([srv.exited, sleep(10_000).then(() => null)]);
    expect(exit?.code).not.toBe(0);
    expect(exit?.code).not.toBeNull();
    const lines = srv.stderr().split("\n").filter((l) => l.trim() !== "");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/DATABASE_URL/);
    expect(lines[0]).not.toMatch(/\n\s+at /);
    expect(srv.logs.some((l) => l.msg === "listening")).toBe(false);
  });

  it("MIGRATE_ON_START=false on an empty database: /ready 503 naming migrations until `node dist/migrate.js` runs, then 200 without a restart", async () => {
    const db = await createTestDatabase();
    dbs.push(db);
    const srv = await spawnServer({ env: { DATABASE_URL: db.url, MIGRATE_ON_START: "false" } });
    servers.push(srv);
    // Wait for the check itself (not the initial "starting"): it found them pending.
    await srv.waitForLog((l) => l.msg === "migration check failed; retrying", 10_000);
    const pending = await getJson(`${srv.baseUrl}/ready`);
    expect(pending.status).toBe(503);
    expect(pending.body.error).toMatch(/migrations pending/);
    const health = await getJson(`${srv.baseUrl}/health`);
    expect(health.status).toBe(503);
    expect(health.body.error).toMatch(/migrations/);
    // The server did not migrate on its own.
    expect(await query(db.url, "select to_regclass('public.runs')::text as t")).toEqual([{ t: null }]);

    const { stdout } = await run(process.execPath, [path.join(ROOT, "dist", "migrate.js")], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", NODE_ENV: "production", DATABASE_URL: db.url },
      timeout: 60_000,
    });
    expect(stdout).toMatch(/migrations applied/);
    expect(await query(db.url, "select to_regclass('public.runs')::text as t")).toEqual([{ t: "runs" }]);

    // The retry backoff is capped at 5 s.
    await waitForStatus(`${srv.baseUrl}/ready`, 200, 8000);
    expect((await getJson(`${srv.baseUrl}/health`)).status).toBe(200);
    expect((await getJson(`${srv.baseUrl}/live`)).body.pid).toBe(srv.pid);
    expect(srv.logs.filter((l) => l.msg === "listening")).toHaveLength(1);
  });
});

describe("sslmode in DATABASE_URL", () => {
  const noSslWarning = (srv: ServerProcess) => {
    expect(srv.stderr()).not.toMatch(/SECURITY WARNING|DeprecationWarning|sslmode/i);
    expect(srv.stdout()).not.toMatch(/SECURITY WARNING/);
  };

  it("sslmode=disable connects in plaintext", async () => {
    const db = await createTestDatabase();
    dbs.push(db);
    const url = new URL(db.url);
    url.searchParams.set("sslmode", "disable");
    const srv = await spawnServer({ env: { DATABASE_URL: url.toString() } });
    servers.push(srv);
    await waitForStatus(`${srv.baseUrl}/ready`, 200, 30_000);
    noSslWarning(srv);
  });

  describe("against a server without SSL", () => {
    // What a PostgreSQL server without SSL does with a client's SSLRequest:
    // answers the single byte "N". A stand-in, so the test does not depend on
    // whether the run's PostgreSQL (TEST_DATABASE_URL) has SSL on.
    let fake: Server;
    let port: number;
    const sockets = new Set<Socket>();
    beforeAll(async () => {
      fake = createServer((socket) => {
        sockets.add(socket);
        socket.on("error", () => undefined);
        socket.once("data", () => socket.write("N"));
        socket.on("close", () => sockets.delete(socket));
      });
      await new Promise<void>((r) => fake.listen(0, "127.0.0.1", r));
      const addr = fake.address();
      port = typeof addr === "object" && addr ? addr.port : 0;
    });
    afterAll(async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => fake.close(() => r()));
    });

    it("sslmode=require is a connection error, and pg's sslmode warning never appears", async () => {
      const srv = await spawnServer({ env: { DATABASE_URL: `postgres://u:p@127.0.0.1:${port}/x?sslmode=require` } });
      servers.push(srv);
      await srv.waitForLog((l) => l.msg === "database connection failed; retrying", 10_000);
      const ready = await getJson(`${srv.baseUrl}/ready`);
      expect(ready.status).toBe(503);
      expect(ready.body.error).toMatch(/^database connection: .*does not support SSL/);
      // Let it retry a few times: a warning would be printed on the first parse.
      await sleep(500);
      noSslWarning(srv);
      expect(srv.child.exitCode).toBeNull();
    });
  });
});

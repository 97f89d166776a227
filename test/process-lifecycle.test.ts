/**
 * Issue 2, point 10 (lifecycle), on the built server as a child process:
 * DESIGN.md's shutdown order under SIGTERM, a second signal, uncaughtException
 * and SIGUSR2. Only processes spawned here are signalled, by PID.
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from "vitest";
import { connect, type Socket } from "node:net";
import { open, readdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import { spawnServer, waitFor, type ServerProcess } from "./helpers/spawnServer.js";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { ROOT } from "./helpers/paths.js";
import { getJson, makeTempDir, sleep } from "./fixtures/process.js";

/** Nothing listens on port 1: the database is unreachable, which these tests do not need. */
const NO_DATABASE = "postgres://u:p@127.0.0.1:1/x";

const servers: ServerProcess[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase({ migrate: true });
});
afterAll(async () => {
  await db?.drop();
});

interface RawResponse {
  status: number;
  head: string;
  body: string;
  /** performance.now() when the whole response had arrived. */
  at: number;
}

/**
 * A raw HTTP/1.1 connection: writes `request`, resolves with the first
 * complete response (by Content-Length), and keeps the socket open, as an
 * idle keep-alive connection of a browser or load balancer would.
 */
function rawConnection(port: number) {
  const socket: Socket = connect({ host: "127.0.0.1", port });
  socket.setEncoding("utf8");
  socket.on("error", () => undefined);
  let buf = "";
  let pending: ((r: RawResponse) => void) | null = null;
  const closed = new Promise<number>((resolve) => socket.once("close", () => resolve(performance.now())));
  socket.on("data", (chunk: string) => {
    buf += chunk;
    const end = buf.indexOf("\r\n\r\n");
    if (end === -1 || !pending) return;
    const head = buf.slice(0, end);
    const len = Number(/content-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
    if (Buffer.byteLength(buf.slice(end + 4)) < len) return;
    const body = buf.slice(end + 4, end + 4 + len);
    buf = buf.slice(end + 4 + len);
    const resolve = pending;
    pending = null;
    resolve({ status: Number(head.split(" ")[1]), head, body, at: performance.now() });
  });
  return {
    socket,
    closed,
    isClosed: () => socket.destroyed || socket.readyState === "closed",
    send(request: string): Promise<RawResponse> {
      const response = new Promise<RawResponse>((resolve) => (pending = resolve));
      socket.write(request);
      return response;
    },
  };
}

const inFlight = async (baseUrl: string) => {
  const text = await (await fetch(`${baseUrl}/metrics`, { headers: { connection: "close" } })).text();
  return Number(/^http_requests_in_flight (\d+)/m.exec(text)?.[1] ?? NaN);
};

describe("SIGTERM", () => {
  it("turns /ready 503 at once, keeps serving for the delay, lets an in-flight request finish, drops idle keep-alive sockets, exits 0 before the deadline", async () => {
    const SHUTDOWN_DELAY_MS = 2000;
    const SHUTDOWN_TIMEOUT_MS = 8000;
    const srv = await spawnServer({
      env: { DATABASE_URL: db.url, SHUTDOWN_DELAY_MS: String(SHUTDOWN_DELAY_MS), SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) },
    });
    servers.push(srv);
    await waitFor(async () => (await getJson(`${srv.baseUrl}/ready`)).status === 200, 20_000);

    // 50 keep-alive connections, each used once and then left idle. The
    // server's keep-alive timeout (65 s) is far beyond the shutdown deadline,
    // so only the shutdown itself can close them.
    const idle = Array.from({ length: 50 }, () => rawConnection(srv.port));
    const answers = await Promise.all(idle.map((c) => c.send("GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")));
    expect(answers.every((a) => a.status === 200 && !/connection: close/i.test(a.head))).toBe(true);

    // The in-flight request. The app has no slow route and a preload cannot add
    // one, so the slowness comes from the client, as with a slow upload: the
    // headers of a JSON POST promise a 10-byte body, half of it is sent now and
    // the rest only after server.close() has run. The server cannot answer
    // before the body is complete (express.json reads it first), so the request
    // is in flight across the whole shutdown. There is no POST /api/meta, so the
    // complete answer is the API's JSON 404: what matters is that it arrives.
    const slow = rawConnection(srv.port);
    const slowResponse = slow.send(
      "POST /api/meta HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n" + '{"a":',
    );
    await waitFor(async () => (await inFlight(srv.baseUrl)) === 1, 5000);

    const t0 = performance.now();
    srv.kill("SIGTERM");
    // /ready: 503 within 100 ms of the signal. A request goes out every 10 ms
    // for 400 ms, each on its own connection, without waiting for the one
    // before (a slow answer must not hide an early flip); every request sent
    // 100 ms or more after the signal must be answered 503.
    const probes: Promise<{ sentAt: number; status: number; body: Record<string, unknown> }>[] = [];
    while (performance.now() - t0 < 400) {
      const sentAt = performance.now() - t0;
      probes.push(getJson(`${srv.baseUrl}/ready`, 5000).then((r) => ({ sentAt, status: r.status, body: r.body })));
      await sleep(10);
    }
    const readyAnswers = await Promise.all(probes);
    const late = readyAnswers.filter((p) => p.sentAt >= 100);
    expect(late.length).toBeGreaterThan(5);
    expect(late.filter((p) => p.status !== 503).map((p) => `${p.sentAt.toFixed(0)} ms: ${p.status}`)).toEqual([]);
    const notReady = late[0]?.body ?? {};
    expect(Object.keys(notReady).sort()).toEqual(["error", "ready", "timestamp"]);
    expect(notReady).toMatchObject({ ready: false, error: "draining" });

    // Still serving during SHUTDOWN_DELAY_MS: /live 200, the idle sockets untouched.
    expect(performance.now() - t0).toBeLessThan(SHUTDOWN_DELAY_MS);
    const live = await getJson(`${srv.baseUrl}/live`);
    expect(live.status).toBe(200);
    expect(live.body.pid).toBe(srv.pid);
    expect(idle.filter((c) => c.isClosed())).toHaveLength(0);

    // After the delay the server stops listening and closes the idle sockets;
    // the slow request is still waiting for its body.
    await sleep(SHUTDOWN_DELAY_MS + 500 - (performance.now() - t0));
    const closedAt = await Promise.race([Promise.all(idle.map((c) => c.closed)), sleep(3000).then(() => null)]);
    expect(closedAt, "idle keep-alive sockets were not closed").not.toBeNull();
    expect(slow.isClosed()).toBe(false);
    await expect(fetch(`${srv.baseUrl}/live`, { signal: AbortSignal.timeout(1000) })).rejects.toThrow();

    const bodySentAt = performance.now();
    slow.socket.write("1234}");
    const res = await slowResponse;
    expect(res.status).toBe(404);
    expect(JSON.parse(res.body)).toMatchObject({ error: { code: "not_found" } });
    expect(res.at).toBeGreaterThanOrEqual(bodySentAt);

    const exit = await Promise.race([srv.exited, sleep(SHUTDOWN_TIMEOUT_MS).then(() => null)]);
    const exitedAfter = performance.now() - t0;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(exitedAfter).toBeLessThan(SHUTDOWN_TIMEOUT_MS);
    expect(srv.logs.some((l) => l.msg === "shutdown complete")).toBe(true);
    expect(srv.logs.some((l) => l.msg === "shutdown timed out; exiting")).toBe(false);
  });

  it("a second signal exits 1 at once", async () => {
    const srv = await spawnServer({ env: { DATABASE_URL: NO_DATABASE, SHUTDOWN_DELAY_MS: "5000" } });
    servers.push(srv);
    srv.kill("SIGTERM");
    await srv.waitForLog((l) => l.msg === "shutting down", 5000);
    const t0 = performance.now();
    srv.kill("SIGINT");
    const exit = await Promise.race([srv.exited, sleep(2000).then(() => null)]);
    expect(exit).toEqual({ code: 1, signal: null });
    expect(performance.now() - t0).toBeLessThan(1000);
  });
});

describe("crashes and diagnostics", () => {
  it("logs an uncaught exception at level 60 and exits 1", async () => {
    // The preload throws from a timer after boot; the server's own handler does the rest.
    const srv = await spawnServer({
      env: { DATABASE_URL: NO_DATABASE },
      nodeArgs: ["--import", path.join(ROOT, "test", "fixtures", "throw-later.mjs")],
      waitListening: false,
    });
    servers.push(srv);
    const exit = await Promise.race([srv.exited, sleep(10_000).then(() => null)]);
    expect(exit).toEqual({ code: 1, signal: null });
    expect(srv.logs.some((l) => l.msg === "listening")).toBe(true);
    const fatal = srv.logs.find((l) => l.level === 60);
    expect(fatal, `stdout: ${srv.stdout().slice(-1000)}`).toBeDefined();
    expect(fatal).toMatchObject({ msg: "uncaught exception; exiting", err: { message: "boom from the throw-later fixture" } });
  });

  it("SIGUSR2 logs memory usage and writes a heap snapshot to the OS temp dir, and keeps running", async () => {
    const tmp = await makeTempDir("esa-heap-");
    try {
      const srv = await spawnServer({ env: { DATABASE_URL: NO_DATABASE, TMPDIR: tmp.dir } });
      servers.push(srv);
      srv.kill("SIGUSR2");
      const written = await srv.waitForLog((l) => l.msg === "heap snapshot written", 30_000);
      const memory = srv.logs.find((l) => l.msg === "memory usage (SIGUSR2)")?.memory as Record<string, number> | undefined;
      expect(memory?.rss).toBeGreaterThan(0);
      expect(memory?.heapUsed).toBeGreaterThan(0);

      const files = (await readdir(tmp.dir)).filter((f) => f.includes(String(srv.pid)) && f.endsWith(".heapsnapshot"));
      expect(files).toHaveLength(1);
      const file = path.join(tmp.dir, files[0] ?? "");
      expect(written.file).toBe(file);
      expect((await stat(file)).size).toBeGreaterThan(1000);
      const fh = await open(file);
      const { buffer } = await fh.read(Buffer.alloc(12), 0, 12, 0);
      await fh.close();
      expect(buffer.toString("utf8")).toBe('{"snapshot":');
      await rm(file);

      expect((await getJson(`${srv.baseUrl}/live`)).status).toBe(200);
      srv.kill("SIGTERM");
      expect(await srv.exited).toEqual({ code: 0, signal: null });
    } finally {
      await tmp.remove();
    }
  });
});

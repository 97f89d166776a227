/**
 * Logging: a request id per request, credentials redacted from every line, and
 * in production JSON lines at LOG_LEVEL (warn by default).
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from "vitest";
import { createServer } from "node:net";
import { Writable } from "node:stream";
import { Router } from "express";
import { loadConfig } from "../server/config.js";
import { createLogger } from "../server/ops/logger.js";
import { startTestApp, type TestApp } from "./helpers/app.js";
import { spawnServer, waitFor, type ServerProcess } from "./helpers/spawnServer.js";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;


/** A loopback port nothing listens on (just released). */
async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address() as { port: number };
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

const SECRETS = {
  bearer: "Bearer s3cr3t-bearer-9f81",
  cookie: "esa_sid=s3cr3t-cookie-77aa; theme=dark",
  setCookie: "esa_sid=s3cr3t-set-cookie-c0de; Path=/; HttpOnly",
  proxy: "Basic s3cr3t-proxy-4242",
};
const SECRET_WORDS = /s3cr3t/;

/** Routes that log requests and responses the ways code tends to. */
function loggingRouter(): Router {
  const r = Router();
  r.get("/log-probe", (req, res) => {
    req.log.info({ req: { headers: req.headers } }, "x");
    req.log.info({ headers: req.headers });
    req.log.info({ req: { method: req.method, url: req.originalUrl, headers: { ...req.headers } }, upstream: { headers: { Authorization: req.headers.authorization } } }, "outgoing");
    res.setHeader("set-cookie", SECRETS.setCookie);
    req.log.info({ res: { statusCode: 200, headers: res.getHeaders() } }, "response headers");
    req.log.info({ headers: res.getHeaders() }, "response headers, flat");
    req.log.child({ headers: req.headers }).info("child bound to the headers");
    res.json({ ok: true });
  });
  r.get("/log-probe/fail", (req) => {
    throw Object.assign(new Error("upstream refused"), { headers: req.headers, config: { headers: { Authorization: req.headers.authorization, Cookie: req.headers.cookie } } });
  });
  return r;
}

describe("request ids and redaction (in process)", () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await startTestApp({ apiRouters: [loggingRouter()] });
  });
  afterAll(async () => {
    await app.close();
  });

  const accessLine = (reqId: string) =>
    waitFor(() => app.logLines.find((l) => l.msg === "request completed" && l.reqId === reqId), 5000);

  it("keeps and echoes an incoming x-request-id, and logs under it", async () => {
    const res = await fetch(`${app.baseUrl}/api/meta`, { headers: { "x-request-id": "edge-7f3a.42:retry=1" } });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toBe("edge-7f3a.42:retry=1");
    const line = await accessLine("edge-7f3a.42:retry=1");
    expect(line).toMatchObject({ level: 30, method: "GET", url: "/api/meta", status: 200 });
  });

  it("gives each request without one a fresh UUID", async () => {
    const a = await fetch(`${app.baseUrl}/api/meta`);
    const b = await fetch(`${app.baseUrl}/api/meta`);
    const ida = a.headers.get("x-request-id") ?? "";
    const idb = b.headers.get("x-request-id") ?? "";
    expect(ida).toMatch(UUID);
    expect(idb).toMatch(UUID);
    expect(ida).not.toBe(idb);
    await accessLine(ida);
    await accessLine(idb);
  });

  it("replaces an id that is too long or has odd characters", async () => {
    for (const bad of ["x".repeat(200), "two words", "<script>"]) {
      const res = await fetch(`${app.baseUrl}/api/meta`, { headers: { "x-request-id": bad } });
      expect(res.headers.get("x-request-id")).toMatch(UUID);
    }
  });

  it("redacts authorization, cookie and set-cookie wherever request and response headers are logged", async () => {
    const res = await fetch(`${app.baseUrl}/api/log-probe`, {
      headers: {
        authorization: SECRETS.bearer,
        cookie: SECRETS.cookie,
        "proxy-authorization": SECRETS.proxy,
        "x-request-id": "redact-1",
        "x-probe": "visible",
      },
    });
    expect(res.status).toBe(200);
    await accessLine("redact-1");
    const lines = app.logLines.filter((l) => l.reqId === "redact-1");
    // Each shape was logged (so the test is not vacuous) and other headers stay readable.
    expect(lines.length).toBeGreaterThanOrEqual(7);
    const x = lines.find((l) => l.msg === "x") as { req: { headers: Record<string, unknown> } };
    expect(x.req.headers).toMatchObject({ authorization: "[redacted]", cookie: "[redacted]", "x-probe": "visible" });
    const flat = lines.find((l) => l.headers && !l.msg) as { headers: Record<string, unknown> } | undefined;
    expect(flat?.headers).toMatchObject({ authorization: "[redacted]", cookie: "[redacted]", "x-probe": "visible" });
    const resLine = lines.find((l) => l.msg === "response headers") as { res: { headers: Record<string, unknown> } };
    expect(resLine.res.headers["set-cookie"]).toBe("[redacted]");
    for (const line of lines) expect(JSON.stringify(line)).not.toMatch(SECRET_WORDS);
    expect(JSON.stringify(app.logLines)).not.toMatch(SECRET_WORDS);
  });

  it("redacts them from the error line of a failed request too", async () => {
    const res = await fetch(`${app.baseUrl}/api/log-probe/fail`, {
      headers: { authorization: SECRETS.bearer, cookie: SECRETS.cookie, "x-request-id": "redact-2" },
    });
    expect(res.status).toBe(500);
    expect(await res.text()).not.toMatch(SECRET_WORDS);
    const err = (await waitFor(() => app.logLines.find((l) => l.reqId === "redact-2" && l.msg === "request failed"), 5000)) as {
      level: number;
      err: { message: string; headers: Record<string, unknown> };
    };
    expect(err.level).toBe(50);
    expect(err.err.message).toBe("upstream refused");
    expect(err.err.headers.authorization).toBe("[redacted]");
    await accessLine("redact-2");
    expect(JSON.stringify(app.logLines)).not.toMatch(SECRET_WORDS);
  });
});

describe("createLogger levels", () => {
  function capture(env: Record<string, string>) {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString("utf8").split("\n")) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    });
    return { log: createLogger(loadConfig(env), sink), lines };
  }

  it("production defaults to warn: info is dropped, warn is written as a JSON line with a level number", () => {
    const { log, lines } = capture({ NODE_ENV: "production" });
    log.info({ a: 1 }, "quiet");
    log.warn({ a: 2 }, "loud");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 40, msg: "loud", a: 2, pid: process.pid });
    expect(typeof lines[0]?.time).toBe("string");
  });

  it("outside production the default is info", () => {
    const { log, lines } = capture({ NODE_ENV: "test" });
    log.debug("hidden");
    log.info("shown");
    expect(lines.map((l) => l.msg)).toEqual(["shown"]);
  });
});

describe("the built server in production", () => {
  let server: ServerProcess | undefined;
  let db: TestDatabase | undefined;
  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });
  afterAll(async () => {
    await db?.drop();
  });

  /** Every stdout line is one JSON object with a numeric pino level. */
  function jsonLines(out: string) {
    const lines = out.split("\n").filter((l) => l !== "");
    return lines.map((l) => {
      expect(l.includes("\u001b[")).toBe(false); // no colours: not pretty-printed
      const o = JSON.parse(l) as Record<string, unknown>;
      expect([10, 20, 30, 40, 50, 60]).toContain(o.level);
      expect(typeof o.msg).toBe("string");
      return o;
    });
  }

  async function stopGracefully(s: ServerProcess) {
    s.kill("SIGTERM");
    const done = await Promise.race([s.exited, sleep(15_000).then(() => null)]);
    if (!done) await s.stop();
  }

  it("with no LOG_LEVEL logs warn and above only, as JSON lines (no access log)", async () => {
    const port = await freePort();
    const deadDb = await freePort();
    server = await spawnServer({
      env: { PORT: String(port), LOG_LEVEL: undefined, DATABASE_URL: `postgres://esa:esa@127.0.0.1:${deadDb}/esa?sslmode=disable` },
      waitListening: false,
    });
    const s = server;
    const base = `http://127.0.0.1:${port}`;
    await waitFor(async () => (await fetch(`${base}/live`)).status === 200, 15_000);
    const res = await fetch(`${base}/api/meta`, { headers: { "x-request-id": "prod-warn-1", authorization: SECRETS.bearer } });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toBe("prod-warn-1");
    expect((await fetch(`${base}/no/such/thing`, { headers: { accept: "application/json" } })).status).toBe(404);
    // The database is unreachable, so the boot retries with a warn line each
    // time. A warn line written after the requests proves that anything they
    // logged has been flushed before it.
    const seen = s.logs.length;
    await s.waitForLog((l) => s.logs.indexOf(l) >= seen && l.level === 40, 15_000);
    await stopGracefully(s);

    const lines = jsonLines(s.stdout());
    expect(lines.some((l) => l.level === 40 && /database/.test(String(l.msg)))).toBe(true);
    expect(lines.filter((l) => (l.level as number) < 40)).toEqual([]);
    expect(s.stdout()).not.toContain("prod-warn-1");
    expect(s.stdout()).not.toMatch(SECRET_WORDS);
  });

  it("with LOG_LEVEL=info writes the access log as JSON lines with level numbers", async () => {
    db = await createTestDatabase();
    server = await spawnServer({ env: { LOG_LEVEL: "info", DATABASE_URL: db.url } });
    const s = server;
    const res = await fetch(`${s.baseUrl}/api/meta`, {
      headers: { "x-request-id": "prod-info-1", authorization: SECRETS.bearer, cookie: SECRETS.cookie },
    });
    expect(res.status).toBe(200);
    const access = await s.waitForLog((l) => l.msg === "request completed" && l.reqId === "prod-info-1", 10_000);
    expect(access).toMatchObject({ level: 30, method: "GET", url: "/api/meta", status: 200 });
    expect(typeof access.ms).toBe("number");
    await stopGracefully(s);

    const lines = jsonLines(s.stdout());
    expect(lines.find((l) => l.msg === "listening")).toMatchObject({ level: 30 });
    expect(s.stdout()).not.toMatch(SECRET_WORDS);
  });
});

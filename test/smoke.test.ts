/**
 * Issue 8 point 4: `npm run smoke -- <url>` (scripts/smoke.ts) run as a child
 * process against the built server, which passes every check, and against
 * broken targets (the built server with metrics and WebSockets off; a small
 * local server that answers everything wrongly; one that never answers), where
 * the specific checks fail with their reasons and the exit code is non-zero.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { Socket } from "node:net";
import path from "node:path";
import { WebSocketServer } from "ws";
import { spawnServer, type ServerProcess } from "./helpers/spawnServer.js";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { TEST_JWT_SECRET, TEST_SESSION_SECRET } from "./helpers/dataApi.js";
import { ROOT } from "./helpers/paths.js";
import { waitForStatus } from "./fixtures/process.js";
import type { Reply } from "../scripts/smoke/http.js";
import { assetsOf, securityProblems } from "../scripts/smoke/web.js";
import { checkPrometheusText, EXPECTED_METRICS } from "../scripts/smoke/probes.js";

const TSX = path.join(ROOT, "node_modules", "tsx", "dist", "cli.mjs");
const CHECK_NAMES = ["live", "ready", "health", "security-headers", "index-not-cached", "assets", "ws-own-origin", "ws-other-origin", "math-run", "metrics"];
const METRICS_TOKEN = "smoke-test-metrics-token-0123456789";

interface SmokeRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** check name → {status, detail} from the "pass|fail|skip  name  detail" lines. */
  lines: Map<string, { status: string; detail: string }>;
  summary: string;
}

/** Runs `tsx scripts/smoke.ts ...args` and parses its lines. */
function runSmoke(args: string[], env: Record<string, string> = {}, killAfterMs = 120_000): Promise<SmokeRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [TSX, "scripts/smoke.ts", ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    const killer = setTimeout(() => child.kill("SIGKILL"), killAfterMs);
    child.on("error", reject);
    child.on("exit", (code) => {
      clearTimeout(killer);
      const lines = new Map<string, { status: string; detail: string }>();
      for (const line of stdout.split("\n")) {
        const m = /^(pass|fail|skip)\s+(\S+)\s+(.*)$/.exec(line);
        if (m) lines.set(m[2] ?? "", { status: m[1] ?? "", detail: m[3] ?? "" });
      }
      resolve({ code, stdout, stderr, lines, summary: stdout.split("\n").find((l) => l.startsWith("summary:")) ?? "" });
    });
  });
}

const statusOf = (r: SmokeRun, name: string) => r.lines.get(name)?.status;
const detailOf = (r: SmokeRun, name: string) => r.lines.get(name)?.detail ?? "";

describe("against the built server", () => {
  let db: TestDatabase;
  let srv: ServerProcess;
  beforeAll(async () => {
    db = await createTestDatabase({ migrate: true });
    srv = await spawnServer({
      env: { DATABASE_URL: db.url, SESSION_SECRET: TEST_SESSION_SECRET, JWT_SECRET: TEST_JWT_SECRET, METRICS_TOKEN, RATE_LIMIT_MAX: "100000" },
    });
    await waitForStatus(`${srv.baseUrl}/ready`, 200, 30_000);
  });
  afterAll(async () => {
    await srv?.stop();
    await db?.drop();
  });

  it("passes all ten checks with --metrics-token, one line each plus a PASS summary, and exits 0", async () => {
    const r = await runSmoke([srv.baseUrl, "--metrics-token", METRICS_TOKEN]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect([...r.lines.keys()]).toEqual(CHECK_NAMES);
    for (const name of CHECK_NAMES) expect(statusOf(r, name), `${name}: ${detailOf(r, name)}`).toBe("pass");
    expect(r.summary).toMatch(/^summary: PASS, 10 passed, 0 failed, 0 skipped of 10 checks/);
    expect(detailOf(r, "math-run")).toMatch(/succeeded \(agent math, followed by WebSocket\).*18446744073709551616/);
    expect(detailOf(r, "assets")).toMatch(/index-[\w-]+\.js br \d+ B of \d+ B/);
    // The run check deletes its conversation: nothing left behind.
    const left = await db.pool.query("select count(*)::int as n from conversations where title = 'smoke check'");
    expect(left.rows[0].n).toBe(0);
    const runs = await db.pool.query("select count(*)::int as n from runs");
    expect(runs.rows[0].n).toBe(0);
  });

  it("takes the token from METRICS_TOKEN in the environment", async () => {
    const r = await runSmoke([srv.baseUrl], { METRICS_TOKEN });
    expect(r.code, r.stdout).toBe(0);
    expect(statusOf(r, "metrics")).toBe("pass");
    expect(detailOf(r, "metrics")).toMatch(/with token/);
  });

  it("without a token reports metrics as 'skipped: 401 and no token given' and exits 1; a wrong token is a fail", async () => {
    const r = await runSmoke([srv.baseUrl]);
    expect(r.code).toBe(1);
    expect(statusOf(r, "metrics")).toBe("skip");
    expect(detailOf(r, "metrics")).toMatch(/^skipped: 401 and no token given/);
    for (const name of CHECK_NAMES.filter((n) => n !== "metrics")) expect(statusOf(r, name), `${name}: ${detailOf(r, name)}`).toBe("pass");
    expect(r.summary).toMatch(/^summary: FAIL, 9 passed, 0 failed, 1 skipped/);

    const wrong = await runSmoke([srv.baseUrl, "--metrics-token=not-the-token"]);
    expect(wrong.code).toBe(1);
    expect(statusOf(wrong, "metrics")).toBe("fail");
    expect(detailOf(wrong, "metrics")).toMatch(/401: the token given was refused/);
  });

  it("refuses bad usage with exit 2 and the usage text", async () => {
    for (const args of [[], ["not a url"], [`${srv.baseUrl}/some/path`], [srv.baseUrl, "--timeout", "abc"], [srv.baseUrl, "--bogus"]]) {
      const r = await runSmoke(args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr).toMatch(/^smoke: .+\nusage: npm run smoke -- <url>/);
      expect(r.lines.size).toBe(0);
    }
  });
});

describe("against the built server with ENABLE_METRICS=false and ENABLE_WEBSOCKETS=false", () => {
  let db: TestDatabase;
  let srv: ServerProcess;
  beforeAll(async () => {
    db = await createTestDatabase({ migrate: true });
    srv = await spawnServer({
      env: { DATABASE_URL: db.url, SESSION_SECRET: TEST_SESSION_SECRET, ENABLE_METRICS: "false", ENABLE_WEBSOCKETS: "false", RATE_LIMIT_MAX: "100000" },
    });
    await waitForStatus(`${srv.baseUrl}/ready`, 200, 30_000);
  });
  afterAll(async () => {
    await srv?.stop();
    await db?.drop();
  });

  it("fails metrics (404) and both WebSocket checks, still follows the run by polling, and exits 1", async () => {
    const r = await runSmoke([srv.baseUrl]);
    expect(r.code).toBe(1);
    expect(statusOf(r, "metrics")).toBe("fail");
    expect(detailOf(r, "metrics")).toMatch(/\/metrics 404: not served here \(ENABLE_METRICS=false/);
    expect(statusOf(r, "ws-own-origin")).toBe("fail");
    expect(detailOf(r, "ws-own-origin")).toMatch(/refused: 404 .*WebSockets are disabled/);
    expect(statusOf(r, "ws-other-origin")).toBe("fail");
    expect(detailOf(r, "ws-other-origin")).toMatch(/expected 403, got 404/);
    expect(statusOf(r, "math-run")).toBe("pass");
    expect(detailOf(r, "math-run")).toMatch(/followed by polling \(WebSocket refused \(404\)\)/);
    for (const name of ["live", "ready", "health", "security-headers", "index-not-cached", "assets"]) expect(statusOf(r, name), detailOf(r, name)).toBe("pass");
    expect(r.summary).toMatch(/^summary: FAIL, 7 passed, 3 failed, 0 skipped/);
  });
});

/** A server that gets nearly every checklist item wrong, each in its own way (it accepts any WebSocket upgrade). */
function startBrokenServer(): Promise<{ url: string; close(): Promise<void> }> {
  const js = "console.log('app');".repeat(200);
  const server: Server = createServer((req, res) => {
    const url = (req.url ?? "/").split("?")[0];
    const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
      res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store", ...headers }).end(JSON.stringify(body));
    switch (url) {
      case "/live":
        return json(200, { alive: true, timestamp: new Date().toISOString() });
      case "/ready":
        return json(503, { ready: false, error: "draining", timestamp: new Date().toISOString() });
      case "/health":
        return json(200, { status: "ok", checks: {} });
      case "/api/session":
        return json(200, { userId: "00000000-0000-4000-8000-000000000000" }, { "set-cookie": "sid=broken; Path=/; HttpOnly" });
      case "/metrics":
        return res.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end("# TYPE process_cpu_user_seconds_total counter\nprocess_cpu_user_seconds_total 1\n");
      case "/":
      case "/index.html":
        return res
          .writeHead(200, { "content-type": "text/html", "cache-control": "public, max-age=3600", "x-powered-by": "Express" })
          .end('<!doctype html><script type="module" src="/assets/index-AbCdEf12.js"></script>');
      case "/assets/index-AbCdEf12.js":
        return res.writeHead(200, { "content-type": "text/javascript", "cache-control": "public, max-age=3600" }).end(js);
      default:
        return json(404, { error: { code: "not_found", message: "nothing here" } });
    }
  });
  // Accepts every upgrade, whatever its origin.
  const wss = new WebSocketServer({ server });
  wss.on("connection", (ws) => ws.on("error", () => undefined));
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => {
      const addr = server.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      resolve({
        url: `http://127.0.0.1:${port}`,
        close: () =>
          new Promise<void>((r) => {
            for (const c of wss.clients) c.terminate();
            server.closeAllConnections();
            server.close(() => r());
          }),
      });
    }),
  );
}

describe("against a broken target", () => {
  it("fails each check it gets wrong with the specific reason and exits 1", async () => {
    const broken = await startBrokenServer();
    try {
      const r = await runSmoke([broken.url, "--metrics-token", "t"]);
      expect(r.code).toBe(1);
      const expected: Record<string, RegExp> = {
        live: /\/live body \{alive, timestamp\}, expected \{alive, pid, timestamp, uptime\}/,
        ready: /\/ready 503, not ready: draining/,
        health: /\/health body|\/health 200 with status "ok"|checks missing/,
        "security-headers": /no Content-Security-Policy.*X-Content-Type-Options "", expected nosniff.*X-Powered-By "Express" is sent/,
        "index-not-cached": /GET \/ cache-control "public, max-age=3600", expected no-cache or no-store/,
        assets: /\/assets\/index-AbCdEf12\.js cache-control "public, max-age=3600", expected immutable, max-age=31536000/,
        "ws-other-origin": /upgrade from https:\/\/smoke-foreign-origin\.invalid was accepted/,
        "math-run": /POST \/api\/conversations answered 404, expected 201/,
        metrics: /missing or mistyped: .*http_request_duration_seconds \(histogram\)/,
      };
      for (const [name, reason] of Object.entries(expected)) {
        expect(statusOf(r, name), `${name}: ${detailOf(r, name)}`).toBe("fail");
        expect(detailOf(r, name)).toMatch(reason);
      }
      // The one thing it gets right: an upgrade from its own origin opens.
      expect(statusOf(r, "ws-own-origin")).toBe("pass");
      expect(r.summary).toMatch(/^summary: FAIL, 1 passed, 9 failed, 0 skipped/);
    } finally {
      await broken.close();
    }
  });

  it("bounds the time: a target that never answers fails each check on its timeout, then the rest on the global one", async () => {
    const sockets = new Set<Socket>();
    const silent = createServer(() => undefined);
    silent.on("connection", (s) => sockets.add(s));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", () => r()));
    const addr = silent.address();
    const url = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
    try {
      const t0 = Date.now();
      const r = await runSmoke([url, "--check-timeout", "400", "--timeout", "1000"]);
      const took = Date.now() - t0;
      expect(r.code).toBe(1);
      expect(detailOf(r, "live")).toBe("timed out after 400 ms (per-check timeout)");
      expect(detailOf(r, "ready")).toBe("timed out after 400 ms (per-check timeout)");
      expect(detailOf(r, "health")).toMatch(/^timed out after \d+ ms \(global timeout\)$/);
      for (const name of CHECK_NAMES.slice(3)) expect(detailOf(r, name)).toBe("not run: the global timeout of 1000 ms was reached");
      expect([...r.lines.values()].every((l) => l.status === "fail")).toBe(true);
      // Not a speed assertion: the run ends by itself (the child is killed at 120 s otherwise).
      expect(took).toBeLessThan(60_000);
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });
});

describe("the header and text checks, on their own", () => {
  const reply = (headers: Record<string, string>): Reply => ({
    status: 200,
    headers,
    body: Buffer.alloc(0),
    text: () => "",
    json: () => null,
    header: (n: string) => headers[n.toLowerCase()] ?? "",
  });
  const good = {
    "content-security-policy": "default-src 'self';script-src 'self';object-src 'none';frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "SAMEORIGIN",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
  };

  it("requires HSTS of at least 180 days over https only, and flags an unsafe script-src", () => {
    expect(securityProblems(reply(good), false)).toEqual([]);
    expect(securityProblems(reply(good), true)).toEqual(["no Strict-Transport-Security over https"]);
    expect(securityProblems(reply({ ...good, "strict-transport-security": "max-age=3600" }), true)).toEqual([
      'Strict-Transport-Security "max-age=3600" max-age under 180 days',
    ]);
    expect(securityProblems(reply({ ...good, "strict-transport-security": "max-age=31536000; includeSubDomains" }), true)).toEqual([]);
    const unsafe = { ...good, "content-security-policy": "default-src 'self';script-src 'self' 'unsafe-inline';object-src 'none'" };
    expect(securityProblems(reply(unsafe), false)).toEqual(["CSP script-src allows 'self' 'unsafe-inline'"]);
  });

  it("finds the hashed assets index.html loads, and reads Prometheus text by family and type", () => {
    const html = readFileSync(path.join(ROOT, "dist", "public", "index.html"), "utf8");
    const assets = assetsOf(html);
    expect(assets.some((a) => /^\/assets\/index-[\w-]+\.js$/.test(a))).toBe(true);
    expect(assetsOf('<link rel="icon" href="/favicon.svg"><script src="https://cdn.example/x.js"></script>')).toEqual([]);

    const all = Object.entries(EXPECTED_METRICS).map(([n, t]) => `# TYPE ${n} ${t}\n`).join("");
    expect(checkPrometheusText(all).error).toBeNull();
    expect(checkPrometheusText(all.replace("# TYPE ws_connections gauge", "# TYPE ws_connections counter")).error).toMatch(/ws_connections \(gauge, got counter\)/);
    const raw = `${all}http_request_duration_seconds_count{method="GET",route="/api/runs/0b6f6f2e-8d3a-4c55-9a43-3f1f7a9e2b10",status_code="200"} 1\n`;
    expect(checkPrometheusText(raw).error).toMatch(/a route label holds a raw URL/);
  });
});

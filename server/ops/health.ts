import type { IncomingMessage, ServerResponse } from "node:http";
import { timingSafeEqual, createHash } from "node:crypto";
import { getHeapStatistics } from "node:v8";
import type { Lifecycle } from "./lifecycle.js";
import type { Metrics } from "./metrics.js";

/** One part of the deep /health check. */
export interface HealthCheck {
  name: string;
  /** A failing required check makes /health 503. */
  required: boolean;
  run(): Promise<CheckResult>;
}

export interface CheckResult {
  status: "up" | "down";
  error?: string;
  [detail: string]: unknown;
}

export interface ProbeDeps {
  lifecycle: Lifecycle;
  /** Absent until the boot has built the registry; /metrics answers 503 until then. */
  metrics: () => Metrics | undefined;
  version: string;
  /** Checks added by the boot as components come up (database, queue, agents …). */
  checks: () => readonly HealthCheck[];
  /** Null: /metrics is not served by this handler (disabled, or on its own port). */
  metricsRoute: { enabled: boolean; token: string | undefined } | null;
  /** How long one deep check may take, ms. */
  checkTimeoutMs?: number;
}

export const PROBE_PATHS = new Set(["/live", "/ready", "/health", "/metrics"]);

function send(res: ServerResponse, status: number, body: unknown, head: boolean) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "cache-control": "no-store",
    "content-length": Buffer.byteLength(text),
  });
  res.end(head ? undefined : text);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} check timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

const sha = (s: string) => createHash("sha256").update(s).digest();

/** Constant-time comparison of a bearer header with the expected token. */
export function isBearer(header: string | undefined, token: string): boolean {
  if (!header?.startsWith("Bearer ")) return false;
  return timingSafeEqual(sha(header.slice(7)), sha(token));
}

export function memoryCheck(): CheckResult {
  const m = process.memoryUsage();
  const limit = getHeapStatistics().heap_size_limit;
  const ratio = m.heapUsed / limit;
  return {
    status: ratio < 0.95 ? "up" : "down",
    ...(ratio >= 0.95 ? { error: "heap nearly exhausted" } : {}),
    rssBytes: m.rss,
    heapUsedBytes: m.heapUsed,
    heapLimitBytes: limit,
  };
}

/**
 * Answers /live, /ready, /health and /metrics straight from the http server,
 * ahead of Express: no helmet, compression, logging or rate limit on them.
 * Returns false for any other request.
 */
export function createProbeHandler(deps: ProbeDeps) {
  const { lifecycle } = deps;
  const timeoutMs = deps.checkTimeoutMs ?? 2000;

  async function health(res: ServerResponse, head: boolean) {
    const checks: Record<string, CheckResult> = {};
    let failed: string | null = null;
    await Promise.all(
      deps.checks().map(async (c) => {
        let r: CheckResult;
        try {
          r = await withTimeout(c.run(), timeoutMs, c.name);
        } catch (err) {
          r = { status: "down", error: err instanceof Error ? err.message : String(err) };
        }
        checks[c.name] = r;
        if (r.status === "down" && c.required && !failed) failed = `${c.name}: ${r.error ?? "down"}`;
      }),
    );
    checks.memory = memoryCheck();
    if (checks.memory.status === "down" && !failed) failed = `memory: ${checks.memory.error}`;
    // The body is exactly DESIGN.md's: {status, checks} or {status, error, checks};
    // when and which build answered are details of the uptime check.
    checks.uptime = {
      status: "up",
      seconds: (Date.now() - lifecycle.startedAt) / 1000,
      version: deps.version,
      timestamp: new Date().toISOString(),
    };
    const reason = failed ?? lifecycle.notReadyReason();
    if (reason) send(res, 503, { status: "unhealthy", error: reason, checks }, head);
    else send(res, 200, { status: "healthy", checks }, head);
  }

  async function metrics(req: IncomingMessage, res: ServerResponse, head: boolean) {
    const route = deps.metricsRoute;
    if (!route?.enabled) return false;
    if (route.token && !isBearer(req.headers.authorization, route.token)) {
      res.setHeader("www-authenticate", 'Bearer realm="metrics"');
      send(res, 401, { error: { code: "unauthorized", message: "Bearer token required for /metrics" } }, head);
      return true;
    }
    const m = deps.metrics();
    if (!m) {
      send(res, 503, { error: { code: "not_ready", message: "metrics not initialised yet" } }, head);
      return true;
    }
    const text = await m.registry.metrics();
    res.writeHead(200, { "content-type": m.registry.contentType, "cache-control": "no-store" });
    res.end(head ? undefined : text);
    return true;
  }

  return function handleProbe(req: IncomingMessage, res: ServerResponse): boolean {
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const path = q === -1 ? url : url.slice(0, q);
    if (!PROBE_PATHS.has(path)) return false;
    const head = req.method === "HEAD";
    switch (path) {
      case "/live":
        send(res, 200, { alive: true, timestamp: new Date().toISOString(), pid: process.pid, uptime: process.uptime() }, head);
        return true;
      case "/ready": {
        const reason = lifecycle.notReadyReason();
        if (reason) send(res, 503, { ready: false, error: reason, timestamp: new Date().toISOString() }, head);
        else send(res, 200, { ready: true, timestamp: new Date().toISOString() }, head);
        return true;
      }
      case "/health":
        health(res, head).catch((err: unknown) => {
          if (!res.headersSent) send(res, 503, { status: "unhealthy", error: String(err), checks: {} }, head);
        });
        return true;
      case "/metrics":
        if (!deps.metricsRoute?.enabled) return false;
        metrics(req, res, head).catch((err: unknown) => {
          if (!res.headersSent) send(res, 500, { error: { code: "internal", message: "metrics unavailable" } }, head);
          deps.metrics()?.backgroundErrors.inc({ loop: "metrics" });
          void err;
        });
        return true;
      default:
        return false;
    }
  };
}

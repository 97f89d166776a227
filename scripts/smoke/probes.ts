/**
 * /live, /ready, /health and /metrics as DESIGN.md "Probes" and the README
 * specify them: exact JSON shapes, `Cache-Control: no-store`, Prometheus text
 * with the metric names the README lists.
 */
import { request, excerpt, isIsoTime, keysOf, type Reply } from "./http.js";
import { fail, pass, skip, type Check, type Outcome } from "./runner.js";

type Json = Record<string, unknown>;

const same = (a: readonly string[] | null, b: readonly string[]) => a !== null && a.length === b.length && a.every((k, i) => k === b[i]);
const fmtKeys = (k: string[] | null) => (k ? `{${k.join(", ")}}` : "not a JSON object");

/** Status, JSON content type and no-store shared by the three JSON probes; the parsed body. */
function probeBody(r: Reply, path: string): Json {
  if (!r.header("content-type").startsWith("application/json")) throw new Error(`${path} ${r.status}: content-type ${r.header("content-type") || "missing"}, expected application/json`);
  if (!/\bno-store\b/.test(r.header("cache-control"))) throw new Error(`${path} ${r.status}: cache-control "${r.header("cache-control")}", expected no-store`);
  return r.json() as Json;
}

export const liveCheck: Check = {
  name: "live",
  async run(ctx, signal) {
    const r = await ctx.http("/live", { signal });
    if (r.status !== 200) return fail(`/live answered ${r.status}, expected 200: ${excerpt(r.text())}`);
    const b = probeBody(r, "/live");
    const keys = keysOf(b);
    if (!same(keys, ["alive", "pid", "timestamp", "uptime"])) return fail(`/live body ${fmtKeys(keys)}, expected {alive, pid, timestamp, uptime}`);
    if (b.alive !== true) return fail(`/live alive is ${JSON.stringify(b.alive)}, expected true`);
    if (!Number.isInteger(b.pid) || (b.pid as number) <= 0) return fail(`/live pid ${JSON.stringify(b.pid)} is not a process id`);
    if (!isIsoTime(b.timestamp)) return fail(`/live timestamp ${JSON.stringify(b.timestamp)} is not an ISO time`);
    if (typeof b.uptime !== "number" || b.uptime < 0) return fail(`/live uptime ${JSON.stringify(b.uptime)} is not a number of seconds`);
    return pass(`200 {alive: true, pid ${b.pid}, uptime ${b.uptime.toFixed(1)} s}`);
  },
};

export const readyCheck: Check = {
  name: "ready",
  async run(ctx, signal) {
    const r = await ctx.http("/ready", { signal });
    if (r.status !== 200 && r.status !== 503) return fail(`/ready answered ${r.status}, expected 200: ${excerpt(r.text())}`);
    const b = probeBody(r, "/ready");
    const keys = keysOf(b);
    if (r.status === 503) {
      if (!same(keys, ["error", "ready", "timestamp"])) return fail(`/ready 503 body ${fmtKeys(keys)}, expected {ready, error, timestamp}`);
      return fail(`/ready 503, not ready: ${String(b.error)}`);
    }
    if (!same(keys, ["ready", "timestamp"])) return fail(`/ready body ${fmtKeys(keys)}, expected {ready, timestamp}`);
    if (b.ready !== true) return fail(`/ready 200 with ready ${JSON.stringify(b.ready)}, expected true`);
    if (!isIsoTime(b.timestamp)) return fail(`/ready timestamp ${JSON.stringify(b.timestamp)} is not an ISO time`);
    return pass("200 {ready: true}");
  },
};

/**
 * The parts of `checks` the README names. `streams` is left out: a server with
 * ENABLE_WEBSOCKETS=false registers no streams check (SSE still works).
 */
export const HEALTH_CHECKS = ["database", "migrations", "queue", "agents", "autoscale", "memory", "uptime"] as const;

export const healthCheck: Check = {
  name: "health",
  async run(ctx, signal) {
    const r = await ctx.http("/health", { signal });
    if (r.status !== 200 && r.status !== 503) return fail(`/health answered ${r.status}, expected 200: ${excerpt(r.text())}`);
    const b = probeBody(r, "/health");
    const keys = keysOf(b);
    if (r.status === 503) {
      if (!same(keys, ["checks", "error", "status"]) || b.status !== "unhealthy") return fail(`/health 503 body ${fmtKeys(keys)}, expected {status: "unhealthy", error, checks}`);
      return fail(`/health 503 unhealthy: ${String(b.error)}`);
    }
    if (!same(keys, ["checks", "status"])) return fail(`/health body ${fmtKeys(keys)}, expected {status, checks}`);
    if (b.status !== "healthy") return fail(`/health 200 with status ${JSON.stringify(b.status)}, expected "healthy"`);
    const checks = b.checks as Record<string, { status?: unknown; error?: unknown } | undefined>;
    if (keysOf(checks) === null) return fail("/health checks is not an object");
    const missing = HEALTH_CHECKS.filter((n) => !checks[n]);
    if (missing.length) return fail(`/health checks missing: ${missing.join(", ")}`);
    const bad = Object.entries(checks).filter(([, c]) => c?.status !== "up" && c?.status !== "down");
    if (bad.length) return fail(`/health checks without status up/down: ${bad.map(([n]) => n).join(", ")}`);
    if (checks.database?.status !== "up") return fail(`/health 200 but database ${String(checks.database?.status)}`);
    const down = Object.entries(checks).filter(([, c]) => c?.status === "down");
    const note = down.length ? `; optional checks down: ${down.map(([n, c]) => `${n} (${String(c?.error ?? "down")})`).join(", ")}` : "";
    return pass(`200 healthy, ${Object.keys(checks).length} checks (${Object.keys(checks).join(", ")})${note}`);
  },
};

/** Metric families (name → type) the README promises on /metrics. */
export const EXPECTED_METRICS: Readonly<Record<string, string>> = {
  process_cpu_user_seconds_total: "counter",
  process_resident_memory_bytes: "gauge",
  nodejs_eventloop_lag_seconds: "gauge",
  http_request_duration_seconds: "histogram",
  http_requests_in_flight: "gauge",
  background_errors_total: "counter",
  agent_runs_queued: "gauge",
  agent_runs_running: "gauge",
  agent_run_oldest_queued_seconds: "gauge",
  agent_run_duration_seconds: "histogram",
  agent_run_retries_total: "counter",
  agent_run_failures_total: "counter",
  autoscale_recommended_instances: "gauge",
  ws_connections: "gauge",
  ws_messages_sent_total: "counter",
  run_event_delivery_seconds: "histogram",
};

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i;

/** Checks the Prometheus text; the reason for a failure, or null. */
export function checkPrometheusText(text: string): { error: string | null; families: number } {
  const types = new Map<string, string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) types.set(m[1] ?? "", m[2] ?? "");
  const missing = Object.entries(EXPECTED_METRICS).filter(([n, t]) => types.get(n) !== t);
  if (missing.length) {
    return { error: `missing or mistyped: ${missing.map(([n, t]) => `${n} (${t}${types.has(n) ? `, got ${types.get(n)}` : ""})`).join(", ")}`, families: types.size };
  }
  // Route labels are templates: after the run check's /api/conversations/<uuid>/… requests a raw URL would show a UUID.
  const raw = text.match(/^http_request_duration_seconds\S*\{[^}]*route="([^"]*)"/gm)?.find((l) => UUID.test(l));
  if (raw) return { error: `a route label holds a raw URL: ${excerpt(raw, 120)}`, families: types.size };
  return { error: null, families: types.size };
}

export const metricsCheck: Check = {
  name: "metrics",
  async run(ctx, signal): Promise<Outcome> {
    const headers: Record<string, string> = { accept: "text/plain" };
    if (ctx.metricsToken) headers.authorization = `Bearer ${ctx.metricsToken}`;
    const r = await request(ctx.metricsUrl, { signal, headers });
    const where = ctx.metricsUrl.pathname;
    if (r.status === 401) {
      if (ctx.metricsToken) return fail(`${where} 401: the token given was refused`);
      if (!/^Bearer\b/i.test(r.header("www-authenticate"))) return fail(`${where} 401 without "WWW-Authenticate: Bearer"`);
      return skip("skipped: 401 and no token given (protected as expected; pass --metrics-token or METRICS_TOKEN to check its content)");
    }
    if (r.status === 404) return fail(`${where} 404: not served here (ENABLE_METRICS=false, or on METRICS_PORT: pass --metrics-url)`);
    if (r.status !== 200) return fail(`${where} answered ${r.status}, expected 200: ${excerpt(r.text())}`);
    const type = r.header("content-type");
    if (!/^text\/plain\b/.test(type) || !/version=0\.0\.4/.test(type)) return fail(`${where} content-type "${type}", expected Prometheus text (text/plain; version=0.0.4)`);
    const { error, families } = checkPrometheusText(r.text());
    if (error) return fail(`${where} ${error}`);
    return pass(`200 Prometheus text, ${families} families, all ${Object.keys(EXPECTED_METRICS).length} expected present, route labels are templates${ctx.metricsToken ? " (with token)" : ""}`);
  },
};

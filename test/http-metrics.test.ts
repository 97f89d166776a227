/**
 * Issue 2, point 5: metrics. Route labels are templates, never raw URLs, so
 * random paths add no label values; the in-flight gauge follows slow requests;
 * /metrics can be disabled or put behind a bearer token.
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from "vitest";
import { mkdtemp, mkdir, writeFile, rm } from "node:fs/promises";
import { Agent, request } from "node:http";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import path from "node:path";
import { Router } from "express";
import { AppError } from "../server/http/errors.js";
import { createStaticHandlers } from "../server/static.js";
import { startTestApp, type TestApp } from "./helpers/app.js";
import { waitFor } from "./helpers/spawnServer.js";

interface Series {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

/** The `_count` series of the duration histogram: one per (method, route, status_code). */
async function durationCounts(t: TestApp): Promise<Series[]> {
  const m = await t.metrics.httpDuration.get();
  return (m.values as Series[]).filter((v) => v.metricName === "http_request_duration_seconds_count");
}

const routeValues = async (t: TestApp) => new Set((await durationCounts(t)).map((s) => String(s.labels.route)));
const seriesKeys = async (t: TestApp) =>
  new Set((await durationCounts(t)).map((s) => `${s.labels.method} ${s.labels.route} ${s.labels.status_code}`));

let release: (() => void) | undefined;
let slowStarted: (() => void) | undefined;

function itemsRouter() {
  const r = Router();
  r.get("/items/:id", (req, res) => {
    res.json({ id: req.params.id });
  });
  r.delete("/items/:id", (req) => {
    throw new AppError("conflict", 409, `item ${req.params.id} is locked`);
  });
  r.get("/items/:id/fail", () => {
    throw new Error("boom");
  });
  r.get("/slow", async (_req, res) => {
    slowStarted?.();
    await new Promise<void>((resolve) => (release = resolve));
    res.json({ slow: true });
  });
  return r;
}

let dir: string;
let t: TestApp;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "esa-metrics-"));
  await mkdir(path.join(dir, "assets"));
  await writeFile(path.join(dir, "index.html"), "<!doctype html><title>x</title>");
  await writeFile(path.join(dir, "assets", "app-abc123.js"), "export {}");
  const staticHandlers = await createStaticHandlers(dir, 60);
  t = await startTestApp({
    // Quiet logs and a limit the load below cannot reach: this file is about labels.
    env: { LOG_LEVEL: "warn", RATE_LIMIT_MAX: "1000000" },
    staticHandlers,
    apiRouters: [itemsRouter()],
  });
});
afterAll(async () => {
  release?.();
  await t?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("http_request_duration_seconds", () => {
  it("labels a matched route with its template, not the URL", async () => {
    for (const id of ["1", "2", "abc"]) {
      const res = await fetch(`${t.baseUrl}/api/items/${id}`);
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    }
    const series = await durationCounts(t);
    const get = series.find((s) => s.labels.route === "/api/items/:id" && s.labels.method === "GET" && s.labels.status_code === 200);
    expect(get?.value).toBe(3);
    for (const s of series) expect(String(s.labels.route)).not.toMatch(/\/items\/(1|2|abc)$/);

    const text = await t.metrics.registry.metrics();
    expect(text).toMatch(/http_request_duration_seconds_count\{method="GET",route="\/api\/items\/:id",status_code="200"\} 3/);
  });

  it("labels a route that failed with the same template as when it succeeds", async () => {
    expect((await fetch(`${t.baseUrl}/api/items/7`, { method: "DELETE" })).status).toBe(409);
    expect((await fetch(`${t.baseUrl}/api/items/8/fail`)).status).toBe(500);
    const series = await durationCounts(t);
    const labelOf = (method: string, status: number) =>
      series.filter((s) => s.labels.method === method && s.labels.status_code === status).map((s) => s.labels.route);
    expect(labelOf("DELETE", 409)).toEqual(["/api/items/:id"]);
    expect(labelOf("GET", 500)).toEqual(["/api/items/:id/fail"]);
  });

  it("is also served at GET /metrics in Prometheus text", async () => {
    const res = await fetch(`${t.baseUrl}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
    const text = await res.text();
    expect(text).toContain("# TYPE http_request_duration_seconds histogram");
    expect(text).toContain("# TYPE http_requests_in_flight gauge");
    expect(text).toMatch(/route="\/api\/items\/:id"/);
  });

  it("10,000 requests to random paths add no label values", { timeout: 120_000 }, async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 50 });
    const { port } = new URL(t.baseUrl);
    const send = (method: string, p: string, accept: string) =>
      new Promise<number>((resolve, reject) => {
        const req = request({ host: "127.0.0.1", port, method, path: p, agent, headers: { accept } }, (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode ?? 0));
          res.on("error", reject);
        });
        req.on("error", reject);
        req.end();
      });
    const rand = () => randomBytes(6).toString("hex");
    const html = "text/html,application/xhtml+xml,*/*;q=0.8";
    const json = "application/json";
    /** Every kind of request the load below makes, each with a random part. */
    const kinds: [string, () => string, string][] = [
      ["GET", () => `/api/${rand()}`, json],
      ["GET", () => `/api/${rand()}/${rand()}?q=${rand()}`, html],
      ["POST", () => `/api/${rand()}`, json],
      ["GET", () => `/${rand()}`, html],
      ["GET", () => `/${rand()}/${rand()}`, json],
      ["HEAD", () => `/${rand()}`, html],
      ["GET", () => `/api/items/${rand()}`, json],
      ["GET", () => `/assets/app-abc123.js?v=${rand()}`, "*/*"],
      ["PROPFIND", () => `/${rand()}`, json],
    ];
    const statuses = new Map<number, number>();
    const sendKind = async (i: number) => {
      const [method, makePath, accept] = kinds[i % kinds.length]!;
      const status = await send(method, makePath(), accept);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
    };

    try {
      // One of each first, so every label value the app can produce is present.
      for (let i = 0; i < kinds.length; i++) await sendKind(i);
      const routesBefore = await routeValues(t);
      const seriesBefore = await seriesKeys(t);
      expect([...routesBefore]).toEqual(expect.arrayContaining(["unmatched", "spa", "static", "/api/items/:id"]));

      const TOTAL = 10_000;
      const CONCURRENCY = 50;
      let next = 0;
      const started = Date.now();
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (next < TOTAL) await sendKind(next++);
        }),
      );
      const elapsed = Date.now() - started;

      expect([...statuses.values()].reduce((a, b) => a + b, 0)).toBe(TOTAL + kinds.length);
      // The load really reached the app: SPA shells, statics, 404s and matched routes.
      expect(statuses.get(200)).toBeGreaterThan(TOTAL / 3);
      expect(statuses.get(404)).toBeGreaterThan(TOTAL / 3);

      const routesAfter = await routeValues(t);
      expect([...routesAfter].sort()).toEqual([...routesBefore].sort());
      expect(await seriesKeys(t)).toEqual(seriesBefore);
      for (const r of routesAfter) expect(["unmatched", "spa", "static"].includes(r) || r.startsWith("/api/items/"), r).toBe(true);
      // Every request was counted, under those few series.
      const counted = (await durationCounts(t)).reduce((a, s) => a + s.value, 0);
      expect(counted).toBeGreaterThanOrEqual(TOTAL + kinds.length);
      console.log(`10,000 random requests in ${elapsed} ms; ${seriesBefore.size} series, routes: ${[...routesAfter].join(", ")}`);
    } finally {
      agent.destroy();
    }
  });
});

describe("http_requests_in_flight", () => {
  afterEach(() => release?.());

  it("counts a slow request while it is being served", async () => {
    const gauge = async () => {
      const text = await (await fetch(`${t.baseUrl}/metrics`)).text();
      const m = /^http_requests_in_flight (\d+)$/m.exec(text);
      return m ? Number(m[1]) : NaN;
    };
    expect(await gauge()).toBe(0);
    const started = new Promise<void>((r) => (slowStarted = r));
    const slow = fetch(`${t.baseUrl}/api/slow`);
    await started;
    expect(await gauge()).toBe(1);
    await expect(t.metrics.httpInFlight.get()).resolves.toMatchObject({ values: [{ value: 1 }] });
    release?.();
    const res = await slow;
    expect(await res.json()).toEqual({ slow: true });
    await waitFor(async () => (await gauge()) === 0, 2000, 10);
  });

  it("comes back down when the client goes away mid-request", async () => {
    const started = new Promise<void>((r) => (slowStarted = r));
    const ac = new AbortController();
    const slow = fetch(`${t.baseUrl}/api/slow`, { signal: ac.signal }).catch(() => "aborted");
    await started;
    expect((await t.metrics.httpInFlight.get()).values[0]?.value).toBe(1);
    ac.abort();
    expect(await slow).toBe("aborted");
    await waitFor(async () => (await t.metrics.httpInFlight.get()).values[0]?.value === 0, 2000, 10);
    release?.();
  });
});

describe("/metrics access", () => {
  const extra: TestApp[] = [];
  afterAll(async () => {
    await Promise.all(extra.map((a) => a.close()));
  });

  it("ENABLE_METRICS=false: /metrics is a JSON 404", async () => {
    const off = await startTestApp({ env: { LOG_LEVEL: "warn", ENABLE_METRICS: "false" } });
    extra.push(off);
    const res = await fetch(`${off.baseUrl}/metrics`);
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ error: { code: "not_found" } });
  });

  it("METRICS_TOKEN: 401 without the bearer token, 200 with it", async () => {
    const token = "s3cret-metrics-token";
    const locked = await startTestApp({ env: { LOG_LEVEL: "warn", METRICS_TOKEN: token } });
    extra.push(locked);
    const none = await fetch(`${locked.baseUrl}/metrics`);
    expect(none.status).toBe(401);
    expect(await none.json()).toMatchObject({ error: { code: "unauthorized" } });
    const wrong = await fetch(`${locked.baseUrl}/metrics`, { headers: { authorization: "Bearer nope" } });
    expect(wrong.status).toBe(401);
    await wrong.arrayBuffer();
    const ok = await fetch(`${locked.baseUrl}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain("http_requests_in_flight");
  });
});

/**
 * Issue 7, point 5, the server side: POST /api/client-metrics validates its
 * batch with zod, takes label values only from fixed lists, is rate limited,
 * logs error messages instead of labelling with them, and feeds Prometheus
 * histograms and counters on the app's registry.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { Router } from "express";
import { createClientMetricsRouter } from "../server/http/routes/clientMetrics.js";
import { MAX_CLIENT_REPORTS, type ClientReport } from "../shared/clientMetrics.js";
import { startTestApp, type TestApp } from "./helpers/app.js";

let app: TestApp;
let limited: TestApp;

beforeAll(async () => {
  const a = Router();
  const b = Router();
  [app, limited] = await Promise.all([
    startTestApp({ apiRouters: [a], env: { RATE_LIMIT_MAX: "100000" } }),
    startTestApp({ apiRouters: [b], env: { RATE_LIMIT_MAX: "100000" } }),
  ]);
  a.use(createClientMetricsRouter(app.metrics));
  b.use(createClientMetricsRouter(limited.metrics, { maxBatches: 3, windowMs: 60_000 }));
});

afterAll(async () => {
  await app?.close();
  await limited?.close();
});

function post(t: TestApp, body: unknown, headers: Record<string, string> = { "content-type": "application/json" }) {
  return fetch(`${t.baseUrl}/api/client-metrics`, { method: "POST", headers, body: typeof body === "string" ? body : JSON.stringify(body) });
}

const vital = (name: string, value: number, extra: Partial<Record<string, unknown>> = {}) => ({ type: "vital", name, value, rating: "good", page: "chat", ...extra });

async function series(t: TestApp, name: string) {
  const m = t.metrics.registry.getSingleMetric(name);
  if (!m) return [];
  return (await m.get()).values as { labels: Record<string, string | number>; value: number; metricName?: string }[];
}

describe("POST /api/client-metrics", () => {
  it("turns a batch into histogram observations and error counts", async () => {
    const reports: ClientReport[] = [
      { type: "vital", name: "LCP", value: 1234, rating: "good", page: "chat" },
      { type: "vital", name: "TTFB", value: 80, rating: "good", page: "chat" },
      { type: "vital", name: "INP", value: 350, rating: "needs-improvement", page: "status" },
      { type: "vital", name: "FCP", value: 900, rating: "good", page: "chat" },
      { type: "vital", name: "CLS", value: 0.12, rating: "needs-improvement", page: "chat" },
      { type: "error", kind: "error", page: "chat", message: "TypeError: x is undefined" },
      { type: "error", kind: "unhandledrejection", page: "status", message: "Error: nope" },
    ];
    const res = await post(app, { reports });
    expect(res.status).toBe(204);

    const timings = await series(app, "client_web_vitals_seconds");
    const sumOf = (metric: string) => timings.find((s) => s.metricName === "client_web_vitals_seconds_sum" && s.labels.metric === metric)?.value;
    expect(sumOf("LCP")).toBeCloseTo(1.234);
    expect(sumOf("TTFB")).toBeCloseTo(0.08);
    expect(timings.find((s) => s.metricName === "client_web_vitals_seconds_count" && s.labels.metric === "INP")?.labels).toMatchObject({ page: "status", rating: "needs-improvement" });
    const cls = await series(app, "client_cumulative_layout_shift");
    expect(cls.find((s) => s.metricName === "client_cumulative_layout_shift_sum")?.value).toBeCloseTo(0.12);
    const errors = await series(app, "client_errors_total");
    expect(errors.find((s) => s.labels.kind === "error" && s.labels.page === "chat")?.value).toBe(1);
    expect(errors.find((s) => s.labels.kind === "unhandledrejection" && s.labels.page === "status")?.value).toBe(1);

    // Prometheus text: the names and label values, never the message.
    const text = await app.metrics.registry.metrics();
    expect(text).toContain('client_web_vitals_seconds_bucket{le="2.5",metric="LCP",page="chat",rating="good"} 1');
    expect(text).not.toContain("x is undefined");
    expect(app.logLines.some((l) => (l.client as { message?: string } | undefined)?.message === "TypeError: x is undefined")).toBe(true);
  });

  it("refuses label values outside the fixed lists, unknown fields, bad numbers and oversized batches, adding no series", async () => {
    const before = (await series(app, "client_web_vitals_seconds")).length;
    const bad: unknown[] = [
      { reports: [vital("FOO", 1)] },
      { reports: [vital("LCP", 1, { page: "/c/1234-secret-url" })] },
      { reports: [vital("LCP", 1, { rating: "meh" })] },
      { reports: [vital("LCP", -5)] },
      { reports: [vital("LCP", 1e12)] },
      { reports: [vital("LCP", 1, { extra: "field" })] },
      { reports: [{ type: "error", kind: "console", page: "chat", message: "x" }] },
      { reports: [{ type: "error", kind: "error", page: "chat", message: "x".repeat(5000) }] },
      { reports: [] },
      { reports: Array.from({ length: MAX_CLIENT_REPORTS + 1 }, () => vital("LCP", 1)) },
      { reports: [vital("LCP", 1)], more: true },
      [vital("LCP", 1)],
      "not json",
    ];
    for (const body of bad) {
      const res = await post(app, body);
      expect(res.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toMatch(/validation_failed|bad_request|invalid_json/);
    }
    expect((await series(app, "client_web_vitals_seconds")).length).toBe(before);
    const batches = await series(app, "client_metric_batches_total");
    expect(batches.find((s) => s.labels.outcome === "invalid")?.value).toBeGreaterThanOrEqual(bad.length - 1);
  });

  it("needs a JSON content type", async () => {
    const res = await post(app, JSON.stringify({ reports: [vital("LCP", 1)] }), { "content-type": "text/plain" });
    expect(res.status).toBe(415);
  });

  it("is rate limited per client", async () => {
    for (let i = 0; i < 3; i++) expect((await post(limited, { reports: [vital("TTFB", 10)] })).status).toBe(204);
    const res = await post(limited, { reports: [vital("TTFB", 10)] });
    expect(res.status).toBe(429);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("rate_limited");
    expect(res.headers.get("retry-after")).not.toBeNull();
    const batches = await series(limited, "client_metric_batches_total");
    expect(batches.find((s) => s.labels.outcome === "rate_limited")?.value).toBe(1);
    expect(batches.find((s) => s.labels.outcome === "accepted")?.value).toBe(3);
  });

  it("a second router on the same registry shares the metrics instead of failing to register", () => {
    expect(() => createClientMetricsRouter(app.metrics)).not.toThrow();
  });
});

/**
 * Issue 7, point 5, in real Chromium: a page load reports its web vitals
 * (LCP, INP, CLS, TTFB, FCP) and uncaught errors to POST /api/client-metrics,
 * and they land in the Prometheus histograms and counters.
 *
 * The built client bundle is served by an in-process app (createApp with the
 * production static handlers) with the client-metrics router mounted, so this
 * does not wait for the router to be wired into the server's boot.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import path from "node:path";
import { Router } from "express";
import type { Browser } from "playwright-core";
import { createStaticHandlers } from "../server/static.js";
import { createClientMetricsRouter } from "../server/http/routes/clientMetrics.js";
import { startTestApp, type TestApp } from "./helpers/app.js";
import { launchBrowser, newPage, eventually } from "./helpers/browser.js";
import { ROOT } from "./helpers/paths.js";

let app: TestApp;
let browser: Browser;

beforeAll(async () => {
  const router = Router();
  const staticHandlers = await createStaticHandlers(path.join(ROOT, "dist", "public"), 60);
  [app, browser] = await Promise.all([startTestApp({ staticHandlers, apiRouters: [router], env: { RATE_LIMIT_MAX: "100000" } }), launchBrowser()]);
  router.use(createClientMetricsRouter(app.metrics));
});

afterAll(async () => {
  await browser?.close();
  await app?.close();
});

const metrics = () => app.metrics.registry.metrics();

/** The first sample of `name` whose labels include `labels`, from Prometheus text; NaN when none. */
function metricValue(text: string, name: string, labels: Record<string, string>): number {
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    if (Object.entries(labels).every(([k, v]) => (m[2] ?? "").includes(`${k}="${v}"`))) return Number(m[3]);
  }
  return NaN;
}
const count = (text: string, name: string, labels: Record<string, string>) => {
  const v = metricValue(text, name, labels);
  return Number.isNaN(v) ? 0 : v;
};

describe("client monitoring", () => {
  it("a page load moves the web-vitals histograms; uncaught errors and rejections move the error counter", async () => {
    const before = await metrics();
    const { context, page } = await newPage(browser, app.baseUrl);
    await page.goto("/");
    await page.locator("#root *").first().waitFor();
    // An interaction finalises LCP and gives INP something to measure.
    await page.locator("textarea").click();
    await page.keyboard.type("hi");
    await page.evaluate(() => {
      setTimeout(() => {
        throw new Error("e2e uncaught boom");
      }, 0);
      void Promise.reject(new Error("e2e unhandled rejection"));
    });
    await page.waitForTimeout(300);
    // Leaving the page hides it: the rest is sent with keepalive.
    await page.goto("about:blank");

    await expect
      .poll(async () => {
        const t = await metrics();
        return ["LCP", "TTFB", "FCP", "INP"].map((m) => count(t, "client_web_vitals_seconds_count", { metric: m, page: "chat" }) > 0);
      }, { timeout: 10_000 })
      .toEqual([true, true, true, true]);
    const after = await metrics();
    expect(count(after, "client_cumulative_layout_shift_count", { page: "chat" })).toBeGreaterThan(count(before, "client_cumulative_layout_shift_count", { page: "chat" }));
    expect(count(after, "client_errors_total", { kind: "error", page: "chat" })).toBeGreaterThanOrEqual(1);
    expect(count(after, "client_errors_total", { kind: "unhandledrejection", page: "chat" })).toBeGreaterThanOrEqual(1);
    expect(count(after, "client_metric_batches_total", { outcome: "accepted" })).toBeGreaterThanOrEqual(1);
    // Batched: fewer requests than reports.
    const sum = (text: string, name: string) =>
      text
        .split("\n")
        .filter((l) => l.startsWith(name))
        .reduce((n, l) => n + Number(l.split(" ").at(-1)), 0);
    const reports = ["client_web_vitals_seconds_count", "client_cumulative_layout_shift_count", "client_errors_total"].reduce((n, m) => n + sum(after, m), 0);
    expect(count(after, "client_metric_batches_total", { outcome: "accepted" })).toBeLessThan(reports);
    // The message went to the log, not to a label.
    expect(after).not.toContain("e2e uncaught boom");
    expect(app.logLines.some((l) => JSON.stringify(l).includes("e2e uncaught boom"))).toBe(true);

    // The status page reports under its own label.
    const status = await context.newPage();
    await status.goto("/status");
    await status.getByRole("heading", { name: "System status" }).click();
    await status.goto("about:blank");
    await eventually(async () => count(await metrics(), "client_web_vitals_seconds_count", { metric: "TTFB", page: "status" }), { timeout: 10_000 }).toBeGreaterThan(0);
    await context.close();
  });
});

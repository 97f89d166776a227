/**
 * Issue 7, point 4 (and its screenshots, point 8): `/status` shows the
 * `/health` checks, queue depth, running runs, instances, the autoscale
 * recommendation with its reasons, version and uptime, refreshed live.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import type { Browser } from "playwright-core";
import { launchBrowser, newPage, overflowsHorizontally, screenshot, startE2eServer, type E2eEnv, eventually } from "./helpers/browser.js";

let env: E2eEnv;
let browser: Browser;

beforeAll(async () => {
  [env, browser] = await Promise.all([startE2eServer({ APP_VERSION: "9.8.7-e2e" }), launchBrowser()]);
});

afterAll(async () => {
  await browser?.close();
  await env?.close();
});

describe("status page", () => {
  it("shows the health checks, queue, instances, autoscale advice, version and uptime, refreshed live", async () => {
    const { context, page, errors } = await newPage(browser, env.baseUrl, { viewport: { width: 1280, height: 1000 } });
    await page.goto("/status");
    await page.getByRole("heading", { name: "System status" }).waitFor();
    await page.getByText("All systems healthy").waitFor();
    const stat = (label: string) => page.locator(".stat").filter({ has: page.locator("dt", { hasText: new RegExp(`^${label}$`) }) }).locator("dd");

    expect(await stat("Version").textContent()).toBe("9.8.7-e2e");
    expect(await stat("Uptime").textContent()).toMatch(/^\d+ s$|min/);
    for (const card of ["Queue", "Autoscale", "Instances", "Database", "Agents", "Memory"]) {
      await page.getByRole("heading", { name: card, exact: true }).waitFor();
    }
    expect(await page.getByTestId("queue-queued").textContent()).toBe("0");
    expect(await page.getByTestId("queue-running").textContent()).toBe("0");
    expect(await page.getByTestId("autoscale-recommended").textContent()).toBe("1");
    expect(await page.locator(".reasons li").count()).toBeGreaterThan(0);
    expect(await page.locator(".signals").first().textContent()).toContain("Queue depth");
    expect(await page.getByTestId("live-instances").textContent()).toBe("1");
    expect(await page.locator(".agent-status li").allTextContents()).toEqual(expect.arrayContaining([expect.stringContaining("assistant")]));

    // Live: an answer that hangs shows up as a running run without a reload, and leaves when stopped.
    const firstUpdate = Number(await page.locator(".updated").getAttribute("data-updated-at"));
    const chat = await newPage(browser, env.baseUrl);
    await chat.page.goto("/");
    env.llm.script({ text: "This answer stalls after a few words and never ends", chunkSize: 4, fault: { kind: "stall", afterChunks: 3 } });
    await chat.page.getByLabel("Message", { exact: true }).fill("Start something that takes a while");
    await chat.page.getByLabel("Message", { exact: true }).press("Enter");
    await eventually(() => page.getByTestId("queue-running").textContent(), { timeout: 15_000 }).toBe("1");
    await screenshot(page, "status", { fullPage: true });
    expect(Number(await page.locator(".updated").getAttribute("data-updated-at"))).toBeGreaterThan(firstUpdate);

    await chat.page.getByRole("button", { name: "Stop" }).click();
    await chat.page.locator('article.msg-assistant[data-phase="cancelled"]').waitFor();
    await eventually(() => page.getByTestId("queue-running").textContent(), { timeout: 15_000 }).toBe("0");
    await chat.context.close();

    // Narrow screens.
    await page.setViewportSize({ width: 360, height: 800 });
    expect(await overflowsHorizontally(page)).toBe(false);
    await screenshot(page, "status-360", { fullPage: true });
    expect(errors).toEqual([]);
    await context.close();
  });

  it("says when the server is unhealthy, and keeps the last answer when /health cannot be reached", async () => {
    const { context, page } = await newPage(browser, env.baseUrl);
    let mode: "pass" | "unhealthy" | "down" = "pass";
    await page.route("**/health", async (route) => {
      if (mode === "pass") return route.continue();
      if (mode === "down") return route.abort("connectionrefused");
      const res = await route.fetch();
      const body = (await res.json()) as { checks: Record<string, { status: string; error?: string }> };
      body.checks.database = { status: "down", error: "connect ECONNREFUSED" };
      await route.fulfill({ status: 503, json: { status: "unhealthy", error: "database: connect ECONNREFUSED", checks: body.checks } });
    });
    await page.goto("/status");
    await page.getByText("All systems healthy").waitFor();

    mode = "unhealthy";
    await page.getByText("Unhealthy: database: connect ECONNREFUSED").waitFor({ timeout: 10_000 });
    const dbCard = page.locator("section.card").filter({ has: page.getByRole("heading", { name: "Database" }) });
    expect(await dbCard.locator(".badge").textContent()).toBe("down");
    expect(await dbCard.locator(".card-error").textContent()).toBe("connect ECONNREFUSED");
    await screenshot(page, "status-unhealthy");

    mode = "down";
    await page.getByText(/Last refresh failed/).waitFor({ timeout: 10_000 });
    // The last answer stays on screen.
    expect(await page.getByText("Unhealthy: database: connect ECONNREFUSED").count()).toBe(1);
    await context.close();
  });
});

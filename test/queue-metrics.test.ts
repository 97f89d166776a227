/**
 * Issue 4, point 9: the queue's metrics move as runs happen (read from the
 * registry), and the autoscaler, fed by the queue's onStats samples,
 * recommends more instances when queued runs pass AUTOSCALE_QUEUE_DEPTH.
 */
import { describe, it, expect } from "vitest";
import { expectMetricSettled, metricSample, postRun, scriptOf, useQueueFixture, waitFor, waitForStatus } from "./helpers/queue.js";
import { createMetrics, type Metrics } from "../server/ops/metrics.js";
import { createAutoscaler, RECOMMENDED_GAUGE, type Autoscaler } from "../server/ops/autoscale.js";
import { loadConfig } from "../server/config.js";
import { createLogger } from "../server/ops/logger.js";
import { createPool, type Pool } from "../server/db/pool.js";
import { startAgentQueue } from "../server/queue/index.js";

const ENV = {
  NODE_ENV: "test",
  MAX_CONCURRENT_JOBS: "1",
  RETRY_ATTEMPTS: "1",
  AUTOSCALE_QUEUE_DEPTH: "2",
  AUTOSCALE_UP_AFTER_MS: "0",
};
const FINISHED = ["succeeded", "failed", "cancelled"];

const metrics: Metrics = createMetrics({ defaultMetrics: false });
const autoscaler: Autoscaler = createAutoscaler({ config: loadConfig(ENV).autoscaling, metrics });
const fx = useQueueFixture({
  queue: {
    env: ENV,
    metrics,
    statsIntervalMs: 50,
    // As services.ts feeds it, with the other signals quiet.
    onStats: (s) => autoscaler.observe({ queueDepth: s.queued, p95ResponseMs: null, cpuPercent: 0, memoryPercent: 0, liveInstances: s.liveInstances }),
  },
});

const value = (name: string, labels: Record<string, string> = {}) => metricSample(metrics, name, labels);

const waitForValue = (name: string, labels: Record<string, string>, ok: (v: number) => boolean) =>
  waitFor(`${name}${JSON.stringify(labels)}`, async () => {
    const v = await value(name, labels);
    return ok(v) ? { v } : undefined;
  });

const expectSettled = (name: string, labels: Record<string, string>, expected: number) => expectMetricSettled(metrics, name, labels, expected);

describe("metrics (point 9)", () => {
  it("queued, running and oldest-queued gauges follow the queue; durations are counted by agent and outcome", async () => {
    expect(await value("agent_runs_queued")).toBe(0);
    expect(await value("agent_runs_running")).toBe(0);

    const held = await postRun(fx.client, fx.conv, scriptOf({ gate: "metrics-hold", text: ["held"] }));
    await waitFor("the held run to start", () => fx.agents.callsFor(held.runId).length > 0);
    expect(await value("agent_runs_running")).toBe(1);
    // One job at a time: these wait.
    const waiting = [await postRun(fx.client, fx.conv, scriptOf({ text: ["a"] })), await postRun(fx.client, fx.conv, scriptOf({ text: ["b"] }))];
    await waitForValue("agent_runs_queued", {}, (v) => v === 2);
    await waitForValue("agent_run_oldest_queued_seconds", {}, (v) => v > 0);
    expect(await value("agent_runs_running_all")).toBe(1);

    fx.agents.open("metrics-hold");
    for (const r of [held, ...waiting]) expect((await waitForStatus(fx.db, r.runId, FINISHED)).status).toBe("succeeded");
    await waitForValue("agent_runs_queued", {}, (v) => v === 0);
    await waitForValue("agent_run_oldest_queued_seconds", {}, (v) => v === 0);
    await waitForValue("agent_runs_running", {}, (v) => v === 0);
    await expectSettled("agent_run_duration_seconds_count", { agent: "scripted", outcome: "succeeded" }, 3);
    expect(await value("agent_run_duration_seconds_sum", { agent: "scripted", outcome: "succeeded" })).toBeGreaterThan(0);
  });

  it("retries and failures are counted by agent and error code", async () => {
    const retryable = { code: "provider_unavailable", message: "down", retryable: true };
    const fatal = { code: "bad_input", message: "no", retryable: false };
    const a = await postRun(fx.client, fx.conv, scriptOf({ fail: retryable }));
    const b = await postRun(fx.client, fx.conv, scriptOf({ fail: fatal }));
    expect((await waitForStatus(fx.db, a.runId, FINISHED)).status).toBe("failed");
    expect((await waitForStatus(fx.db, b.runId, FINISHED)).status).toBe("failed");

    await expectSettled("agent_run_retries_total", { agent: "scripted" }, 1);
    await expectSettled("agent_run_failures_total", { agent: "scripted", code: retryable.code }, 1);
    await expectSettled("agent_run_failures_total", { agent: "scripted", code: fatal.code }, 1);
    await expectSettled("agent_run_duration_seconds_count", { agent: "scripted", outcome: "retried" }, 1);
    await expectSettled("agent_run_duration_seconds_count", { agent: "scripted", outcome: "failed" }, 2);
  });

  it("a cancelled run is counted as such", async () => {
    const r = await postRun(fx.client, fx.conv, scriptOf({ hang: true }));
    await waitFor("the run to start", () => fx.agents.callsFor(r.runId).length > 0);
    expect((await fx.client.post(`/api/runs/${r.runId}/cancel`)).status).toBe(200);
    expect((await waitForStatus(fx.db, r.runId, FINISHED)).status).toBe("cancelled");
    await expectSettled("agent_run_duration_seconds_count", { agent: "scripted", outcome: "cancelled" }, 1);
    await waitForValue("agent_runs_running", {}, (v) => v === 0);
  });

});

describe("autoscaler (point 9)", () => {
  it("recommends more instances while queued runs exceed AUTOSCALE_QUEUE_DEPTH, and one again after", async () => {
    await waitForValue(RECOMMENDED_GAUGE, {}, (v) => v === 1);
    expect(autoscaler.current().signals.queueDepth.over).toBe(false);

    const held = await postRun(fx.client, fx.conv, scriptOf({ gate: "scale-hold", text: ["held"] }));
    await waitFor("the held run to start", () => fx.agents.callsFor(held.runId).length > 0);
    const waiting = [];
    for (let i = 0; i < 4; i++) waiting.push(await postRun(fx.client, fx.conv, scriptOf({ text: [`w${i}`] })));

    const decision = await waitFor("a sample of all four queued runs", () => {
      const d = autoscaler.current();
      return d.signals.queueDepth.value === 4 ? d : undefined;
    });
    expect(await value(RECOMMENDED_GAUGE)).toBe(decision.recommended);
    expect(decision.recommended).toBeGreaterThan(1);
    expect(decision.signals.queueDepth).toMatchObject({ value: 4, threshold: 2, over: true });
    expect(decision.reasons.join("; ")).toMatch(/queue depth 4 > 2/);

    fx.agents.open("scale-hold");
    for (const r of [held, ...waiting]) expect((await waitForStatus(fx.db, r.runId, FINISHED)).status).toBe("succeeded");
    await waitForValue(RECOMMENDED_GAUGE, {}, (v) => v === 1);
    expect(autoscaler.current().signals.queueDepth.over).toBe(false);
  });
});

describe("queue start", () => {
  it("a queue start that failed can be retried on the same metrics registry (as services.ts does)", async () => {
    const config = loadConfig(ENV);
    const log = createLogger(loadConfig({ ...ENV, LOG_LEVEL: "silent" }));
    const registry = createMetrics({ defaultMetrics: false });
    const missing = new URL(fx.db.url);
    missing.pathname = "/no_such_database";
    const down = createPool(config.database, missing.toString(), log, { max: 1 });
    const start = (pool: Pool) =>
      startAgentQueue({ config, log, metrics: registry, pool, workerPool: pool, listener: null, orchestrator: fx.agents.orchestrator, instanceId: "retry-test", graceMs: 100 });
    try {
      await expect(start(down)).rejects.toThrow(/no_such_database/);
    } finally {
      await down.end();
    }
    const up = createPool(config.database, fx.db.url, log, { max: 4 });
    try {
      const queue = await start(up);
      expect(queue.running).toBe(true);
      await queue.stop();
    } finally {
      await up.end();
    }
    expect(registry.registry.getSingleMetric("agent_run_duration_seconds")).toBeDefined();
  });
});

/**
 * The autoscaler's advice: from periodic samples of queue depth, p95 response
 * time, CPU and memory, the instance count the production config's policy
 * recommends. It only advises: the number goes to the
 * `autoscale_recommended_instances` gauge and to /health (with its reasons);
 * the platform does the scaling.
 *
 * Policy (config.autoscaling):
 * - A trigger is "over" when queue depth > queueDepthThreshold, p95 >
 *   responseTimeThresholdMs, CPU > targetCpuPercent or memory >
 *   targetMemoryPercent. No p95 (no responses in the window) is not over.
 * - Any trigger continuously over for scaleUpAfterMs: current + 1. For queue
 *   depth, enough instances that depth / instances is at most the threshold,
 *   but at most `maxStepUp` (default 3) more per decision, and never less than +1.
 * - All triggers continuously not over for scaleDownAfterMs: current - 1.
 * - Otherwise current. Always clamped to [minInstances, maxInstances].
 *
 * "current" is the sample's liveInstances (at least 1: the instance computing
 * this is alive). "Continuously" is judged from the samples: a trigger is over
 * from the first sample that saw it over until a sample sees it under. When
 * liveInstances changes, every timer restarts, so each step waits a full
 * window for the previous one to take effect (no cascade of +1s while a new
 * instance is still warming up, nor of -1s after a scale-down).
 */
import os from "node:os";
import { readFileSync } from "node:fs";
import client from "prom-client";
import type { Config } from "../config.js";
import type { Metrics } from "./metrics.js";
import type { HealthCheck, CheckResult } from "./health.js";

export type AutoscaleConfig = Config["autoscaling"];

export interface AutoscaleSample {
  /** Runs waiting in the queue (all instances). */
  queueDepth: number;
  /** p95 of recent response times, ms; null when there were none. */
  p95ResponseMs: number | null;
  /** This process's CPU use, 0–100 % of the cores it may use. */
  cpuPercent: number;
  /** This process's RSS, 0–100 % of its memory limit. */
  memoryPercent: number;
  /** Instances heartbeating right now. */
  liveInstances: number;
}

export type TriggerName = "queueDepth" | "p95ResponseMs" | "cpuPercent" | "memoryPercent";

export interface SignalState {
  value: number | null;
  threshold: number;
  over: boolean;
  /** How long the signal has been in its current state (over or not), ms. */
  forMs: number;
}

export interface AutoscaleDecision {
  recommended: number;
  liveInstances: number;
  reasons: string[];
  signals: Record<TriggerName, SignalState>;
}

export interface Autoscaler {
  /** Feed one sample; returns the decision it leads to. */
  observe(sample: AutoscaleSample): AutoscaleDecision;
  /** Record one response time (ms) for the rolling p95. */
  recordResponse(ms: number): void;
  /** p95 of the recorded response times in the window, null when none. */
  p95ResponseMs(): number | null;
  current(): AutoscaleDecision;
  healthCheck(): HealthCheck;
}

export interface AutoscalerDeps {
  config: AutoscaleConfig;
  metrics: Metrics;
  now?: () => number;
  /** Most instances one queue-depth decision may add (default 3). */
  maxStepUp?: number;
  /** Response-time window: last `size` responses (default 2048) within `windowMs` (default 60 s). */
  responseWindow?: { size?: number; windowMs?: number };
}

const TRIGGERS: readonly TriggerName[] = ["queueDepth", "p95ResponseMs", "cpuPercent", "memoryPercent"];
export const RECOMMENDED_GAUGE = "autoscale_recommended_instances";

const seconds = (ms: number) => `${Math.round(ms / 1000)} s`;
const round = (n: number) => Math.round(n);
const instances = (n: number) => (n === 1 ? "1 instance" : `${n} instances`);

function describe(name: TriggerName, value: number, threshold: number): string {
  switch (name) {
    case "queueDepth":
      return `queue depth ${round(value)} > ${threshold}`;
    case "p95ResponseMs":
      return `p95 response time ${round(value)} ms > ${threshold} ms`;
    case "cpuPercent":
      return `CPU ${round(value)} % > ${threshold} %`;
    case "memoryPercent":
      return `memory ${round(value)} % > ${threshold} %`;
  }
}

const finiteOr = (n: number, fallback: number) => (Number.isFinite(n) ? n : fallback);

export function createAutoscaler(deps: AutoscalerDeps): Autoscaler {
  const { config } = deps;
  const now = deps.now ?? Date.now;
  const maxStepUp = Math.max(1, deps.maxStepUp ?? 3);
  const responses = createResponseWindow({ ...deps.responseWindow, now });
  const clamp = (n: number) => Math.min(config.maxInstances, Math.max(config.minInstances, n));
  const thresholds: Record<TriggerName, number> = {
    queueDepth: config.queueDepthThreshold,
    p95ResponseMs: config.responseTimeThresholdMs,
    cpuPercent: config.targetCpuPercent,
    memoryPercent: config.targetMemoryPercent,
  };

  const registry = deps.metrics.registry;
  const existing = registry.getSingleMetric(RECOMMENDED_GAUGE);
  const gauge =
    existing instanceof client.Gauge
      ? existing
      : new client.Gauge({
          name: RECOMMENDED_GAUGE,
          help: "Instance count the autoscaling policy recommends (queue depth, p95, CPU, memory)",
          registers: [registry],
        });

  /** Per trigger: whether it was over at the last sample, and since when it has been in that state. */
  const state = new Map<TriggerName, { over: boolean; since: number; value: number | null }>();
  let lastLive: number | null = null;
  let decision: AutoscaleDecision = {
    recommended: clamp(1),
    liveInstances: 0,
    reasons: ["no samples yet"],
    signals: Object.fromEntries(TRIGGERS.map((t) => [t, { value: null, threshold: thresholds[t], over: false, forMs: 0 }])) as Record<TriggerName, SignalState>,
  };
  gauge.set(decision.recommended);

  function observe(sample: AutoscaleSample): AutoscaleDecision {
    const t = now();
    const live = Math.max(1, Math.floor(finiteOr(sample.liveInstances, 1)));
    const values: Record<TriggerName, number | null> = {
      queueDepth: Math.max(0, finiteOr(sample.queueDepth, 0)),
      p95ResponseMs: sample.p95ResponseMs === null || !Number.isFinite(sample.p95ResponseMs) ? null : sample.p95ResponseMs,
      cpuPercent: finiteOr(sample.cpuPercent, 0),
      memoryPercent: finiteOr(sample.memoryPercent, 0),
    };
    const reasons: string[] = [];
    const restart = lastLive !== null && live !== lastLive;
    if (restart) reasons.push(`instances ${lastLive} → ${live}: timers restarted`);
    lastLive = live;

    for (const name of TRIGGERS) {
      const v = values[name];
      const over = v !== null && v > thresholds[name];
      const prev = state.get(name);
      if (!prev || prev.over !== over || restart) state.set(name, { over, since: t, value: v });
      else prev.value = v;
    }

    const signals = {} as Record<TriggerName, SignalState>;
    let up = 0;
    let allUnderSince = -Infinity;
    let anyOver = false;
    for (const name of TRIGGERS) {
      const s = state.get(name);
      if (!s) continue;
      const forMs = t - s.since;
      signals[name] = { value: s.value, threshold: thresholds[name], over: s.over, forMs };
      if (!s.over) {
        allUnderSince = Math.max(allUnderSince, s.since);
        continue;
      }
      anyOver = true;
      const v = s.value ?? 0;
      if (forMs >= config.scaleUpAfterMs) {
        reasons.push(`${describe(name, v, thresholds[name])} for ${seconds(forMs)}`);
        let step = 1;
        if (name === "queueDepth") {
          const needed = Math.ceil(v / thresholds.queueDepth);
          step = Math.min(maxStepUp, Math.max(1, needed - live));
        }
        up = Math.max(up, step);
      } else {
        reasons.push(`${describe(name, v, thresholds[name])} for ${seconds(forMs)} (scale up after ${seconds(config.scaleUpAfterMs)})`);
      }
    }

    let target = live;
    if (up > 0) {
      target = live + up;
    } else if (!anyOver) {
      const underFor = t - allUnderSince;
      if (underFor >= config.scaleDownAfterMs) {
        target = live - 1;
        reasons.push(`all signals below targets for ${seconds(underFor)}`);
      } else {
        reasons.push(`all signals below targets for ${seconds(underFor)} (scale down after ${seconds(config.scaleDownAfterMs)})`);
      }
    }
    const recommended = clamp(target);
    if (recommended < target) reasons.push(`capped at max ${instances(config.maxInstances)}`);
    else if (recommended > target) reasons.push(`held at min ${instances(config.minInstances)}`);

    decision = { recommended, liveInstances: live, reasons, signals };
    gauge.set(recommended);
    return decision;
  }

  return {
    observe,
    recordResponse: (ms) => responses.record(ms),
    p95ResponseMs: () => responses.p95(),
    current: () => decision,
    healthCheck: () => ({
      name: "autoscale",
      required: false,
      async run(): Promise<CheckResult> {
        const d = decision;
        return { status: "up", recommended: d.recommended, liveInstances: d.liveInstances, reasons: d.reasons, signals: d.signals };
      },
    }),
  };
}

// ---------------------------------------------------------------------------
// Gatherers. The caller samples these and passes the values to observe().

/**
 * Rolling response times: the last `size` values (ring buffer, fixed memory)
 * that are at most `windowMs` old. p95 by nearest rank.
 */
export function createResponseWindow(opts: { size?: number; windowMs?: number; now?: () => number } = {}) {
  const size = Math.max(1, Math.floor(opts.size ?? 2048));
  const windowMs = opts.windowMs ?? 60_000;
  const now = opts.now ?? Date.now;
  const values = new Float64Array(size);
  const times = new Float64Array(size);
  const scratch = new Float64Array(size);
  let next = 0;
  let count = 0;
  function quantile(q: number): number | null {
    const oldest = now() - windowMs;
    let n = 0;
    for (let i = 0; i < count; i++) {
      if ((times[i] ?? 0) >= oldest) scratch[n++] = values[i] ?? 0;
    }
    if (n === 0) return null;
    const sorted = scratch.subarray(0, n).sort();
    const rank = Math.min(n, Math.max(1, Math.ceil(q * n)));
    return sorted[rank - 1] ?? null;
  }
  return {
    size,
    record(ms: number) {
      if (!Number.isFinite(ms)) return;
      values[next] = Math.max(0, ms);
      times[next] = now();
      next = (next + 1) % size;
      if (count < size) count++;
    },
    /** Values currently held (at most `size`, including ones older than the window). */
    get held() {
      return count;
    },
    quantile,
    /** p95 of the values in the window, null when there are none. */
    p95: () => quantile(0.95),
  };
}

export type ResponseWindow = ReturnType<typeof createResponseWindow>;

/**
 * CPU use of this process since the previous call (the first call: since the
 * sampler was made): user + system CPU time over wall time times the cores the
 * process may use, as 0–100 %.
 */
export function createCpuSampler(
  opts: { cpuUsage?: () => NodeJS.CpuUsage; now?: () => number; cores?: number } = {},
): () => number {
  const cpuUsage = opts.cpuUsage ?? (() => process.cpuUsage());
  const now = opts.now ?? (() => performance.now());
  const cores = Math.max(1, opts.cores ?? os.availableParallelism());
  let prevCpu = cpuUsage();
  let prevAt = now();
  let last = 0;
  return () => {
    const cpu = cpuUsage();
    const at = now();
    const wallMs = at - prevAt;
    if (wallMs <= 0) return last;
    const usedMs = (cpu.user - prevCpu.user + (cpu.system - prevCpu.system)) / 1000;
    prevCpu = cpu;
    prevAt = at;
    last = Math.min(100, Math.max(0, (usedMs / (wallMs * cores)) * 100));
    return last;
  };
}

/** Where the container's memory limit may be: cgroup v2, then v1. */
export const CGROUP_MEMORY_LIMIT_FILES = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] as const;

/** The cgroup memory limit in bytes, or null when there is none ("max", absent, unreadable). */
export function readCgroupMemoryLimit(files: readonly string[] = CGROUP_MEMORY_LIMIT_FILES): number | null {
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, "utf8").trim();
    } catch {
      continue;
    }
    if (!/^\d+$/.test(text)) continue;
    const n = Number(text);
    if (Number.isFinite(n) && n > 0) return n;
  }
  return null;
}

/** The memory this process may use: the cgroup limit when set and below the machine's memory, else the machine's. */
export function memoryLimitBytes(opts: { cgroupLimit?: number | null; totalmem?: number } = {}): number {
  const total = opts.totalmem ?? os.totalmem();
  const cgroup = opts.cgroupLimit === undefined ? readCgroupMemoryLimit() : opts.cgroupLimit;
  return cgroup !== null && cgroup < total ? cgroup : total;
}

/** RSS as 0–100 % of the memory limit (read once, when the sampler is made). */
export function createMemorySampler(opts: { rss?: () => number; limitBytes?: number } = {}): () => number {
  const rss = opts.rss ?? (() => process.memoryUsage.rss());
  const limit = opts.limitBytes ?? memoryLimitBytes();
  return () => (limit > 0 ? Math.min(100, Math.max(0, (rss() / limit) * 100)) : 0);
}

import { describe, it, expect } from "vitest";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createMetrics } from "../server/ops/metrics.js";
import {
  createAutoscaler,
  createResponseWindow,
  createCpuSampler,
  createMemorySampler,
  readCgroupMemoryLimit,
  memoryLimitBytes,
  RECOMMENDED_GAUGE,
  type AutoscaleConfig,
  type AutoscaleSample,
} from "../server/ops/autoscale.js";

const S = 1000;
/** The production config's policy (DESIGN.md): min 1, max 10, CPU 70 %, memory 80 %, up 60 s, down 300 s, queue 50, p95 2 s. */
const PROD: AutoscaleConfig = {
  minInstances: 1,
  maxInstances: 10,
  targetCpuPercent: 70,
  targetMemoryPercent: 80,
  scaleUpAfterMs: 60 * S,
  scaleDownAfterMs: 300 * S,
  queueDepthThreshold: 50,
  responseTimeThresholdMs: 2000,
};

const CALM: AutoscaleSample = { queueDepth: 0, p95ResponseMs: 100, cpuPercent: 10, memoryPercent: 20, liveInstances: 1 };

function setup(config: Partial<AutoscaleConfig> = {}) {
  let t = 1_000_000;
  const metrics = createMetrics({ defaultMetrics: false });
  const scaler = createAutoscaler({ config: { ...PROD, ...config }, metrics, now: () => t });
  const at = (ms: number, sample: Partial<AutoscaleSample> = {}) => {
    t = 1_000_000 + ms;
    return scaler.observe({ ...CALM, ...sample });
  };
  const gauge = async () => {
    const m = metrics.registry.getSingleMetric(RECOMMENDED_GAUGE);
    if (!m) throw new Error("gauge not registered");
    return (await m.get()).values[0]?.value;
  };
  return { scaler, metrics, at, gauge, setNow: (ms: number) => (t = 1_000_000 + ms) };
}

describe("autoscaler: scale up", () => {
  it("queue depth over 50 for 60 s recommends one more instance", async () => {
    const { at, gauge, scaler } = setup();
    expect(at(0, { queueDepth: 73 }).recommended).toBe(1);
    const early = at(30 * S, { queueDepth: 73 });
    expect(early.recommended).toBe(1);
    expect(early.reasons).toEqual(["queue depth 73 > 50 for 30 s (scale up after 60 s)"]);
    expect(await gauge()).toBe(1);

    const d = at(60 * S, { queueDepth: 73 });
    expect(d.recommended).toBe(2);
    expect(d.reasons).toEqual(["queue depth 73 > 50 for 60 s"]);
    expect(d.signals.queueDepth).toEqual({ value: 73, threshold: 50, over: true, forMs: 60 * S });
    expect(await gauge()).toBe(2);
    expect(scaler.current()).toBe(d);
  });

  it("queue depth asks for enough instances to bring depth per instance to the threshold, at most +3 per decision", () => {
    // 120 queued: 3 instances hold 40 each.
    let s = setup();
    s.at(0, { queueDepth: 120 });
    expect(s.at(60 * S, { queueDepth: 120 }).recommended).toBe(3);
    // 300 queued on 2: 6 needed, +3 at most.
    s = setup();
    s.at(0, { queueDepth: 300, liveInstances: 2 });
    expect(s.at(60 * S, { queueDepth: 300, liveInstances: 2 }).recommended).toBe(5);
    // 60 queued on 4 (already enough by depth/instance): still the plain +1.
    s = setup();
    s.at(0, { queueDepth: 60, liveInstances: 4 });
    expect(s.at(60 * S, { queueDepth: 60, liveInstances: 4 }).recommended).toBe(5);
  });

  it("p95 response time over 2 s for 60 s, from recorded responses", async () => {
    const { at, gauge, scaler, setNow } = setup();
    const p95At = (ms: number) => {
      setNow(ms);
      for (let i = 0; i < 20; i++) scaler.recordResponse(i < 18 ? 300 : 2500);
      scaler.recordResponse(2500);
      return scaler.p95ResponseMs();
    };
    // 18 fast, 3 slow per batch of 21: the nearest-rank p95 (20th) is a slow one.
    let p95 = p95At(0);
    expect(p95).toBe(2500);
    expect(at(0, { p95ResponseMs: p95 }).recommended).toBe(1);
    p95 = p95At(60 * S);
    const d = at(60 * S, { p95ResponseMs: p95, liveInstances: 1 });
    expect(d.recommended).toBe(2);
    expect(d.reasons).toEqual(["p95 response time 2500 ms > 2000 ms for 60 s"]);
    expect(await gauge()).toBe(2);
  });

  it("CPU over 70 % for 60 s", async () => {
    const { at, gauge } = setup();
    at(0, { cpuPercent: 85.4, liveInstances: 3 });
    expect(at(59 * S, { cpuPercent: 90, liveInstances: 3 }).recommended).toBe(3);
    const d = at(60 * S, { cpuPercent: 85.4, liveInstances: 3 });
    expect(d.recommended).toBe(4);
    expect(d.reasons).toEqual(["CPU 85 % > 70 % for 60 s"]);
    expect(await gauge()).toBe(4);
  });

  it("memory over 80 % for 60 s", async () => {
    const { at, gauge } = setup();
    at(0, { memoryPercent: 91, liveInstances: 2 });
    const d = at(60 * S, { memoryPercent: 91, liveInstances: 2 });
    expect(d.recommended).toBe(3);
    expect(d.reasons).toEqual(["memory 91 % > 80 % for 60 s"]);
    expect(await gauge()).toBe(3);
  });

  it("a value at the threshold is not over; no p95 (no traffic) is not over", () => {
    const { at } = setup();
    at(0, { queueDepth: 50, cpuPercent: 70, memoryPercent: 80, p95ResponseMs: null, liveInstances: 2 });
    const d = at(60 * S, { queueDepth: 50, cpuPercent: 70, memoryPercent: 80, p95ResponseMs: null, liveInstances: 2 });
    expect(d.recommended).toBe(2);
    expect(Object.values(d.signals).every((s) => !s.over)).toBe(true);
  });

  it("a trigger that dips below before 60 s restarts its timer", () => {
    const { at } = setup();
    at(0, { cpuPercent: 95 });
    at(30 * S, { cpuPercent: 95 });
    at(45 * S, { cpuPercent: 40 }); // dip
    at(50 * S, { cpuPercent: 95 });
    const still = at(100 * S, { cpuPercent: 95 }); // 100 s since the first, 50 s since the dip
    expect(still.recommended).toBe(1);
    expect(still.reasons).toEqual(["CPU 95 % > 70 % for 50 s (scale up after 60 s)"]);
    expect(at(110 * S, { cpuPercent: 95 }).recommended).toBe(2);
  });

  it("several triggers over: every reason listed, the largest step wins", () => {
    const { at } = setup();
    at(0, { queueDepth: 160, cpuPercent: 99, memoryPercent: 85 });
    const d = at(60 * S, { queueDepth: 160, cpuPercent: 99, memoryPercent: 85 });
    expect(d.recommended).toBe(4); // ceil(160 / 50) = 4 instances
    expect(d.reasons).toEqual(["queue depth 160 > 50 for 60 s", "CPU 99 % > 70 % for 60 s", "memory 85 % > 80 % for 60 s"]);
  });

  it("a change in live instances restarts the timers, so each step waits a full window", () => {
    const { at } = setup();
    at(0, { queueDepth: 80 });
    expect(at(60 * S, { queueDepth: 80 }).recommended).toBe(2);
    const after = at(70 * S, { queueDepth: 80, liveInstances: 2 });
    expect(after.recommended).toBe(2);
    expect(after.reasons[0]).toBe("instances 1 → 2: timers restarted");
    expect(at(129 * S, { queueDepth: 80, liveInstances: 2 }).recommended).toBe(2);
    expect(at(130 * S, { queueDepth: 80, liveInstances: 2 }).recommended).toBe(3);
  });
});

describe("autoscaler: scale down", () => {
  it("all signals under their targets for 300 s recommends one fewer", async () => {
    const { at, gauge } = setup();
    at(0, { liveInstances: 3 });
    const early = at(299 * S, { liveInstances: 3 });
    expect(early.recommended).toBe(3);
    expect(early.reasons).toEqual(["all signals below targets for 299 s (scale down after 300 s)"]);
    expect(await gauge()).toBe(3);
    const d = at(300 * S, { liveInstances: 3 });
    expect(d.recommended).toBe(2);
    expect(d.reasons).toEqual(["all signals below targets for 300 s"]);
    expect(await gauge()).toBe(2);
  });

  it("any trigger going over, even briefly, restarts the scale-down timer", () => {
    const { at } = setup();
    at(0, { liveInstances: 3 });
    at(200 * S, { liveInstances: 3, queueDepth: 51 }); // blip
    expect(at(210 * S, { liveInstances: 3 }).recommended).toBe(3);
    expect(at(300 * S, { liveInstances: 3 }).recommended).toBe(3);
    expect(at(509 * S, { liveInstances: 3 }).recommended).toBe(3);
    expect(at(510 * S, { liveInstances: 3 }).recommended).toBe(2);
  });

  it("a trigger over but not yet for 60 s holds the count (neither up nor down)", () => {
    const { at } = setup();
    at(0, { liveInstances: 4 });
    at(299 * S, { liveInstances: 4, memoryPercent: 85 });
    expect(at(301 * S, { liveInstances: 4, memoryPercent: 85 }).recommended).toBe(4);
  });
});

describe("autoscaler: clamping", () => {
  it("never recommends more than maxInstances", async () => {
    const { at, gauge } = setup();
    at(0, { queueDepth: 1000, liveInstances: 9 });
    const d = at(60 * S, { queueDepth: 1000, liveInstances: 9 });
    expect(d.recommended).toBe(10);
    expect(d.reasons).toContain("capped at max 10 instances");
    expect(await gauge()).toBe(10);
    // More live than allowed (a deploy overlap): advise coming back to the max.
    expect(at(61 * S, { liveInstances: 12 }).recommended).toBe(10);
  });

  it("never recommends fewer than minInstances", async () => {
    let s = setup();
    s.at(0, { liveInstances: 1 });
    const d = s.at(300 * S, { liveInstances: 1 });
    expect(d.recommended).toBe(1);
    expect(d.reasons).toEqual(["all signals below targets for 300 s", "held at min 1 instance"]);
    expect(await s.gauge()).toBe(1);

    s = setup({ minInstances: 3 });
    expect(s.at(0, { liveInstances: 1 }).recommended).toBe(3);
    expect(await s.gauge()).toBe(3);
  });

  it("before any sample, the gauge shows the clamped single instance", async () => {
    const s = setup({ minInstances: 2 });
    expect(await s.gauge()).toBe(2);
    expect(s.scaler.current().reasons).toEqual(["no samples yet"]);
  });
});

describe("autoscaler: exposure", () => {
  it("registers autoscale_recommended_instances on the registry", async () => {
    const { at, metrics } = setup();
    at(0, { liveInstances: 4 });
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/^# TYPE autoscale_recommended_instances gauge$/m);
    expect(text).toMatch(/^autoscale_recommended_instances 4$/m);
  });

  it("healthCheck: optional 'autoscale' check with the recommendation, reasons and signals", async () => {
    const { at, scaler } = setup();
    at(0, { queueDepth: 73, liveInstances: 2 });
    at(60 * S, { queueDepth: 73, liveInstances: 2 });
    const check = scaler.healthCheck();
    expect(check.name).toBe("autoscale");
    expect(check.required).toBe(false);
    const r = await check.run();
    expect(r).toMatchObject({ status: "up", recommended: 3, liveInstances: 2, reasons: ["queue depth 73 > 50 for 60 s"] });
    expect(r.signals).toMatchObject({
      queueDepth: { value: 73, threshold: 50, over: true, forMs: 60 * S },
      cpuPercent: { value: 10, threshold: 70, over: false, forMs: 60 * S },
      p95ResponseMs: { value: 100, threshold: 2000, over: false },
      memoryPercent: { value: 20, threshold: 80, over: false },
    });
    // Reflects the latest decision each time it runs.
    at(61 * S, { queueDepth: 0, liveInstances: 3 });
    expect((await check.run()).recommended).toBe(3);
  });
});

describe("response-time window (p95)", () => {
  it("is null when empty and nearest-rank p95 otherwise", () => {
    const w = createResponseWindow();
    expect(w.p95()).toBeNull();
    for (let i = 100; i >= 1; i--) w.record(i); // out of order on purpose
    expect(w.p95()).toBe(95);
    expect(w.quantile(0.5)).toBe(50);
    expect(w.quantile(1)).toBe(100);
  });

  it("keeps only the last `size` values (fixed memory)", () => {
    const w = createResponseWindow({ size: 100 });
    for (let i = 0; i < 1000; i++) w.record(i);
    expect(w.held).toBe(100);
    // Last 100 are 900..999: p95 is 994.
    expect(w.p95()).toBe(994);
    expect(createResponseWindow().size).toBe(2048);
  });

  it("drops values older than the window", () => {
    let t = 0;
    const w = createResponseWindow({ windowMs: 60 * S, now: () => t });
    w.record(5000);
    t = 30 * S;
    w.record(100);
    expect(w.p95()).toBe(5000);
    t = 60 * S + 1;
    expect(w.p95()).toBe(100);
    t = 90 * S + 1;
    expect(w.p95()).toBeNull();
  });

  it("ignores non-finite values and floors negatives at 0", () => {
    const w = createResponseWindow();
    w.record(Number.NaN);
    w.record(Number.POSITIVE_INFINITY);
    expect(w.p95()).toBeNull();
    w.record(-5);
    expect(w.p95()).toBe(0);
  });
});

describe("CPU gatherer", () => {
  it("is CPU time over wall time times cores, bounded to 0–100", () => {
    let cpu = { user: 0, system: 0 };
    let t = 0;
    const sample = createCpuSampler({ cpuUsage: () => cpu, now: () => t, cores: 2 });
    // 1 s of wall time on 2 cores, 0.6 s user + 0.4 s system: 50 %.
    cpu = { user: 600_000, system: 400_000 };
    t = 1000;
    expect(sample()).toBeCloseTo(50);
    // No wall time passed: the last value, no division by zero.
    expect(sample()).toBeCloseTo(50);
    // More CPU than the cores allow (a bad clock, or cores miscounted): 100.
    cpu = { user: 10_600_000, system: 400_000 };
    t = 2000;
    expect(sample()).toBe(100);
    // Idle: 0.
    t = 3000;
    expect(sample()).toBe(0);
  });

  it("the real sampler gives a value within bounds after some work", () => {
    const sample = createCpuSampler();
    const until = performance.now() + 50;
    let x = 0;
    while (performance.now() < until) x += Math.sqrt(x + 1);
    const v = sample();
    expect(x).toBeGreaterThan(0);
    expect(v).toBeGreaterThan(0);
    expect(v).toBeLessThanOrEqual(100);
  });
});

describe("memory gatherer", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "autoscale-cgroup-"));
  const file = (name: string, text: string) => {
    const p = path.join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  it("reads the cgroup limit: v2 'max' means none, a number is the limit, v1 is the fallback", () => {
    const v2max = file("v2-max", "max\n");
    const v2num = file("v2-num", "1073741824\n");
    const v1 = file("v1", "536870912\n");
    const junk = file("junk", "lots\n");
    const missing = path.join(dir, "nope");
    expect(readCgroupMemoryLimit([v2num, v1])).toBe(1073741824);
    expect(readCgroupMemoryLimit([v2max, v1])).toBe(536870912);
    expect(readCgroupMemoryLimit([missing, v2max, junk])).toBeNull();
  });

  it("the limit is the cgroup's when below the machine's memory, else os.totalmem()", () => {
    const G = 1024 ** 3;
    expect(memoryLimitBytes({ cgroupLimit: 1 * G, totalmem: 8 * G })).toBe(1 * G);
    expect(memoryLimitBytes({ cgroupLimit: null, totalmem: 8 * G })).toBe(8 * G);
    // cgroup v1's "unlimited" is a huge number.
    expect(memoryLimitBytes({ cgroupLimit: 9223372036854771712, totalmem: 8 * G })).toBe(8 * G);
    const real = memoryLimitBytes();
    expect(real).toBeGreaterThan(0);
    expect(real).toBeLessThanOrEqual(os.totalmem());
  });

  it("is RSS over the limit, bounded to 0–100", () => {
    let rss = 512 * 1024 ** 2;
    const sample = createMemorySampler({ rss: () => rss, limitBytes: 1024 ** 3 });
    expect(sample()).toBeCloseTo(50);
    rss = 3 * 1024 ** 3;
    expect(sample()).toBe(100);
    const real = createMemorySampler()();
    expect(real).toBeGreaterThan(0);
    expect(real).toBeLessThanOrEqual(100);
  });
});

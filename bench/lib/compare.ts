/**
 * Load on a target and on its baseline, interleaved in rounds (B T, then T B,
 * …) so drift on a shared machine hits both alike; the best round of each
 * (highest req/s) is kept, the others stay in the details.
 */
import type { BenchContext } from "./context.js";
import type { LoadOptions, LoadResult } from "./load.js";
import type { Goal, Measurement } from "./types.js";
import { median } from "./stats.js";

export interface Comparison {
  measured: LoadResult;
  baseline: LoadResult;
  rounds: { measured: LoadResult[]; baseline: LoadResult[] };
}

type Shape = Omit<LoadOptions, "url" | "warmupMs" | "durationMs">;

/** A URL and the pid of the process answering it (its CPU time is sampled). */
export interface Target {
  url: string;
  pid: number;
}

export async function loadAgainstBaseline(
  ctx: BenchContext,
  shape: Shape,
  targets: { measured: Target; baseline: Target },
): Promise<Comparison> {
  const { warmupMs, durationMs, rounds } = ctx.timing;
  const measured: LoadResult[] = [];
  const baseline: LoadResult[] = [];
  for (let i = 0; i < rounds; i++) {
    const order = i % 2 === 0 ? (["baseline", "measured"] as const) : (["measured", "baseline"] as const);
    for (const which of order) {
      const { url, pid } = targets[which];
      const r = await ctx.load({ ...shape, url, warmupMs, durationMs }, { serverPid: pid });
      const cpu = r.serverCpu ? `, server ${r.serverCpu.usPerRequest} µs CPU/req at ${Math.round(r.serverCpu.utilisation * 100)} % of a core` : "";
      const gen = `, load generator at ${Math.round(r.generatorUtilisation * 100)} %`;
      ctx.progress(`${which.padEnd(8)} ${url}: ${Math.round(r.rps)} req/s, p99 ${r.latencyMs.p99} ms${cpu}${gen}`);
      (which === "measured" ? measured : baseline).push(r);
    }
  }
  const best = (rs: LoadResult[]) => rs.reduce((a, b) => (b.rps > a.rps ? b : a));
  return { measured: best(measured), baseline: best(baseline), rounds: { measured, baseline } };
}

/**
 * Server CPU time per request, median over rounds: a contention-proof
 * companion to req/s (another process stealing the core lowers req/s but not
 * the CPU each request costs). Null when not sampled.
 */
export function cpuPerRequest(results: readonly LoadResult[]): number | null {
  const v = results.map((r) => r.serverCpu?.usPerRequest).filter((x): x is number => x !== undefined && Number.isFinite(x));
  if (v.length === 0) return null;
  return median(v);
}

/**
 * The usual lines for a load comparison: req/s (the goal), p99 and the
 * server's CPU per request (info unless goals are given).
 */
export function comparisonMeasurements(opts: {
  /** e.g. "/live" */
  subject: string;
  connections: number;
  baselineLabel: string;
  comparison: Comparison;
  rpsGoal: Goal;
  p99Goal?: Goal;
  details?: Record<string, unknown>;
}): Measurement[] {
  const { comparison: c, subject, connections, baselineLabel: label } = opts;
  const at = `@${connections}c`;
  const notes = contentionNotes(subject, c);
  const out: Measurement[] = [
    {
      name: `${subject} req/s ${at}`,
      measured: { value: c.measured.rps, unit: "req/s" },
      baseline: { value: c.baseline.rps, unit: "req/s", label },
      goal: opts.rpsGoal,
      details: { ...c, ...opts.details },
      ...(notes.length ? { notes } : {}),
    },
    {
      name: `${subject} p99 ${at}`,
      measured: { value: c.measured.latencyMs.p99, unit: "ms" },
      baseline: { value: c.baseline.latencyMs.p99, unit: "ms", label },
      goal: opts.p99Goal ?? { kind: "info" },
    },
  ];
  const cpuMeasured = cpuPerRequest(c.rounds.measured);
  const cpuBaseline = cpuPerRequest(c.rounds.baseline);
  if (cpuMeasured !== null && cpuBaseline !== null) {
    out.push({
      name: `${subject} server CPU/req ${at}`,
      measured: { value: cpuMeasured, unit: "µs" },
      baseline: { value: cpuBaseline, unit: "µs", label },
      goal: { kind: "info" },
    });
  }
  return out;
}

/** Both sides should be CPU-bound when the generator is not; below this, something else had the core. */
const BUSY_ENOUGH = 0.8;
const GENERATOR_SATURATED = 0.95;

/**
 * Signs that a req/s ratio measured something other than the server: a
 * server short of CPU while the generator was not flat out (another process
 * had the core), or a generator flat out on the baseline (the baseline's
 * req/s, hence the ratio's denominator, is capped by the generator).
 */
export function contentionNotes(subject: string, c: Comparison): string[] {
  const notes: string[] = [];
  for (const [side, r] of [
    ["server", c.measured],
    ["baseline", c.baseline],
  ] as const) {
    const u = r.serverCpu?.utilisation;
    if (u !== undefined && u < BUSY_ENOUGH && r.generatorUtilisation < GENERATOR_SATURATED) {
      notes.push(
        `${subject}: the ${side} used only ${Math.round(u * 100)} % of a core (generator ${Math.round(r.generatorUtilisation * 100)} %) in its best round: other processes competed for the CPU, so req/s is noisy; the CPU/req line is the steadier figure`,
      );
    }
  }
  if (c.baseline.generatorUtilisation >= GENERATOR_SATURATED) {
    notes.push(`${subject}: the load generator was flat out on the baseline, so the baseline's req/s is a floor and the ratio flatters the server`);
  }
  return notes;
}

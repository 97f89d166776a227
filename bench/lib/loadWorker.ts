/**
 * The load generator, run as its own process (see load.ts) so it never shares
 * an event loop with the bench or the server. Reads {@link LoadOptions} as JSON
 * from argv[2], runs autocannon for the warm-up and then for the measurement,
 * and prints one JSON {@link LoadResult} line on stdout.
 *
 * Latency percentiles come from autocannon's per-response times (float ms),
 * not its histogram, which keeps whole milliseconds only: too coarse for
 * sub-millisecond loopback answers.
 */
import autocannon from "autocannon";
import type { LoadOptions, LoadResult } from "./load.js";
import { quantileSorted, round } from "./stats.js";

function attack(opts: LoadOptions, durationMs: number, record: boolean): Promise<{ result: autocannon.Result; latencies: Float64Array }> {
  let latencies = new Float64Array(1 << 16);
  let n = 0;
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: opts.url,
        method: opts.method ?? "GET",
        connections: opts.connections,
        pipelining: 1,
        duration: durationMs / 1000,
        timeout: 10,
        ...(opts.headers ? { headers: opts.headers } : {}),
        ...(opts.body !== undefined ? { body: opts.body } : {}),
      },
      (err: unknown, result) => {
        if (err) reject(err instanceof Error ? err : new Error(String(err)));
        else resolve({ result, latencies: latencies.subarray(0, n) });
      },
    );
    if (record) {
      instance.on("response", (_client, status, _bytes, ms) => {
        if (status < 200 || status >= 300) return;
        if (n === latencies.length) {
          const bigger = new Float64Array(latencies.length * 2);
          bigger.set(latencies);
          latencies = bigger;
        }
        latencies[n++] = ms;
      });
    }
  });
}

async function main() {
  const opts = JSON.parse(process.argv[2] ?? "{}") as LoadOptions;
  const warmup = opts.warmupMs > 0 ? (await attack(opts, opts.warmupMs, false)).result : null;
  // Tells the parent the recorded part starts now (it samples the server's CPU time here).
  process.stdout.write(`${JSON.stringify({ phase: "measure" })}\n`);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const { result, latencies } = await attack(opts, opts.durationMs, true);
  const cpu = process.cpuUsage(cpu0);
  const generatorUtilisation = round((cpu.user + cpu.system) / 1000 / (performance.now() - t0), 2);
  const sorted = Float64Array.from(latencies).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  const ok = result["2xx"];
  const statusCodes: Record<string, number> = {};
  for (const [code, v] of Object.entries(result.statusCodeStats ?? {})) statusCodes[code] = (v as { count: number }).count;
  const out: LoadResult = {
    url: opts.url,
    connections: opts.connections,
    durationS: result.duration,
    requests2xx: ok,
    warmupRequests2xx: warmup?.["2xx"] ?? 0,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes,
    rps: round(ok / result.duration, 1),
    generatorUtilisation,
    latencyMs: {
      mean: round(sorted.length ? sum / sorted.length : Number.NaN, 3),
      p50: round(quantileSorted(sorted, 0.5), 3),
      p90: round(quantileSorted(sorted, 0.9), 3),
      p99: round(quantileSorted(sorted, 0.99), 3),
      p999: round(quantileSorted(sorted, 0.999), 3),
      max: round(sorted.length ? (sorted[sorted.length - 1] ?? Number.NaN) : Number.NaN, 3),
    },
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
});

/**
 * HTTP load from a separate process: spawns the compiled load worker
 * (loadWorker.ts, autocannon) against a 127.0.0.1 URL and returns its JSON.
 */
import { spawnArgv } from "./children.js";
import { cpuMs } from "./proc.js";

export interface LoadOptions {
  /** Must be http://127.0.0.1:… (loopback only). */
  url: string;
  connections: number;
  /** Unrecorded load before the measurement, ms. */
  warmupMs: number;
  /** Recorded load, ms. */
  durationMs: number;
  method?: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  headers?: Record<string, string>;
  body?: string;
}

export interface LoadResult {
  url: string;
  connections: number;
  /** Measured seconds (autocannon's own clock). */
  durationS: number;
  requests2xx: number;
  /** 2xx answers during the unrecorded warm-up. */
  warmupRequests2xx: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  /** 2xx responses per second. */
  rps: number;
  /**
   * CPU the load generator used, in cores (1 = one core flat out). Near 1 the
   * generator, not the server, limits req/s.
   */
  generatorUtilisation: number;
  /** Over 2xx responses, float ms. */
  latencyMs: { mean: number; p50: number; p90: number; p99: number; p999: number; max: number };
  /**
   * CPU time (user + system, all threads) the server process spent during the
   * recorded part, when its pid was given; robust to other load on the
   * machine, unlike req/s.
   */
  serverCpu?: { ms: number; usPerRequest: number; utilisation: number };
}

export interface LoadRunner {
  /**
   * Runs one warm-up plus measurement; rejects on non-2xx answers or socket
   * errors. With `serverPid`, also reports that process's CPU time.
   */
  (opts: LoadOptions, watch?: { serverPid?: number }): Promise<LoadResult>;
}

/**
 * @param workerPath compiled loadWorker.mjs
 * @param prefix command prefix, e.g. `["taskset", "-c", "1"]` to pin the load to a core
 */
export function createLoadRunner(workerPath: string, prefix: readonly string[] = []): LoadRunner {
  return async (opts, watch = {}) => {
    const u = new URL(opts.url);
    if (u.hostname !== "127.0.0.1") throw new Error(`load only goes to 127.0.0.1, not ${u.hostname}`);
    const child = spawnArgv([...prefix, process.execPath, workerPath, JSON.stringify(opts)], { env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp" } });
    const limitMs = opts.warmupMs + opts.durationMs + 30_000;
    const timer = setTimeout(() => void child.stop("SIGKILL"), limitMs);
    const { serverPid } = watch;
    let cpuStart: { ms: number; at: number } | undefined;
    if (serverPid !== undefined) {
      child.child.stdout?.on("data", (chunk: string) => {
        if (!cpuStart && chunk.includes('"phase":"measure"')) cpuStart = { ms: cpuMs(serverPid), at: performance.now() };
      });
    }
    try {
      const exit = await child.exited;
      const cpuEnd = serverPid !== undefined && cpuStart ? { ms: cpuMs(serverPid), at: performance.now() } : undefined;
      if (exit.code !== 0) throw new Error(`load worker exited ${exit.code ?? exit.signal}: ${child.stderr().slice(-2000)}`);
      const line = child.stdout().trim().split("\n").pop() ?? "";
      const result = JSON.parse(line) as LoadResult;
      if (result.non2xx > 0 || result.errors > 0 || result.requests2xx === 0) {
        throw new Error(
          `load on ${opts.url} was not clean: ${result.requests2xx} 2xx, ${result.non2xx} non-2xx ${JSON.stringify(result.statusCodes)}, ${result.errors} errors, ${result.timeouts} timeouts`,
        );
      }
      if (cpuStart && cpuEnd) {
        const ms = cpuEnd.ms - cpuStart.ms;
        result.serverCpu = {
          ms,
          usPerRequest: Math.round((ms * 1000 * 100) / result.requests2xx) / 100,
          utilisation: Math.round((ms / (cpuEnd.at - cpuStart.at)) * 100) / 100,
        };
      }
      return result;
    } finally {
      clearTimeout(timer);
      await child.stop("SIGKILL");
    }
  };
}

/**
 * Spawn-to-first-200 timing: the clock starts just before `spawn()` and stops
 * when the first 200 arrives, polling from the bench process every
 * {@link POLL_MS} ms (a refused connection costs well under a millisecond on
 * loopback, so the poll adds at most ~5 ms).
 */
import type { BenchContext } from "./context.js";
import { spawnArgv, type TrackedChild } from "./children.js";
import { pollUntil200 } from "./http.js";
import { median } from "./stats.js";
import type { Quantity } from "./types.js";

export const POLL_MS = 5;

export interface SpawnTimed {
  child: TrackedChild;
  /** ms from spawn() to the first 200. */
  ms: number;
}

/** Spawns `argv` and waits for GET `path` on `port` to answer 200. Kills the child if that fails. */
export async function spawnAndTime(
  argv: readonly string[],
  opts: { port: number; path: string; env: Record<string, string>; cwd: string; timeoutMs?: number },
): Promise<SpawnTimed> {
  const t0 = performance.now();
  const child = spawnArgv(argv, { cwd: opts.cwd, env: opts.env });
  try {
    const t1 = await pollUntil200(opts.port, opts.path, {
      intervalMs: POLL_MS,
      timeoutMs: opts.timeoutMs ?? 30_000,
      abort: () => (child.isRunning() ? undefined : `process exited early; stderr: ${child.stderr().slice(-1500)} stdout: ${child.stdout().slice(-1500)}`),
    });
    return { child, ms: t1 - t0 };
  } catch (err) {
    await child.stop("SIGKILL");
    throw err;
  }
}

const BARE_LISTEN = "require('node:http').createServer((q,s)=>s.end('{}')).listen(+process.env.PORT,'127.0.0.1')";

/**
 * The context baseline for spawn rows: `node -e` with a bare http server,
 * spawn to first 200, median of `n`.
 */
export async function bareSpawnBaseline(ctx: BenchContext, n: number): Promise<Quantity & { label: string; samples: number[] }> {
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const port = await ctx.freePort();
    const { child, ms } = await spawnAndTime([process.execPath, "-e", BARE_LISTEN], {
      port,
      path: "/",
      cwd: ctx.root,
      env: { PATH: process.env.PATH ?? "", PORT: String(port) },
    });
    samples.push(ms);
    await child.stop("SIGKILL");
  }
  return { value: median(samples), unit: "ms", label: "node -e http listen", samples };
}

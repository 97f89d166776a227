/**
 * Issue 2: spawn `node dist/index.js` (production, bench database) to the
 * first `/live` 200, median of 5. Absolute goal; a bare `node -e` http server
 * is measured the same way for context.
 */
import type { BenchRow } from "../lib/types.js";
import { bareSpawnBaseline, spawnAndTime, POLL_MS } from "../lib/spawnTiming.js";
import { median, round } from "../lib/stats.js";

export const spawnLiveRow: BenchRow = {
  name: "spawn-live",
  issue: 2,
  description: `spawn to first /live 200 (poll every ${POLL_MS} ms), median of 5`,
  async run(ctx) {
    const n = ctx.options.quick ? 3 : 5;
    await ctx.database(); // not part of the timing
    const samples: number[] = [];
    for (let i = 0; i < n; i++) {
      const port = await ctx.freePort();
      const env = await ctx.serverEnv(port);
      const { child, ms } = await spawnAndTime([process.execPath, ctx.distEntry], { port, path: "/live", env, cwd: ctx.root });
      samples.push(ms);
      // Stop it the way a platform does; not timed.
      const exit = await child.stop("SIGTERM", 15_000);
      if (exit.code !== 0) throw new Error(`server exited ${exit.code ?? exit.signal} on SIGTERM: ${child.stderr().slice(-500)}`);
    }
    const baseline = await bareSpawnBaseline(ctx, n);
    ctx.progress(`spawn → /live: ${samples.map((s) => s.toFixed(0)).join(", ")} ms; bare: ${baseline.samples.map((s) => s.toFixed(0)).join(", ")} ms`);
    return [
      {
        name: "spawn → /live 200",
        measured: { value: median(samples), unit: "ms" },
        baseline: { value: baseline.value, unit: "ms", label: baseline.label },
        goal: { kind: "under", value: 250, unit: "ms" },
        details: { samplesMs: samples.map((s) => round(s, 1)), baselineSamplesMs: baseline.samples.map((s) => round(s, 1)) },
      },
    ];
  },
};

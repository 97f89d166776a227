/**
 * Issue 2: `/live` through the real built server (probe handler ahead of
 * Express) against a bare node:http server answering the same JSON shape,
 * 50 connections.
 */
import type { BenchRow } from "../lib/types.js";
import { comparisonMeasurements, loadAgainstBaseline } from "../lib/compare.js";
import { assertSameShape } from "../lib/shape.js";

const CONNECTIONS = 50;
/** Throughput ratio goal; p99 gets the same margin the other way (1 / 0.8). */
const GOAL = 0.8;

export const liveRow: BenchRow = {
  name: "live",
  issue: 2,
  description: `/live req/s and p99 at ${CONNECTIONS} connections, vs bare node:http`,
  async run(ctx) {
    const server = await ctx.appServer();
    const bare = await ctx.spawnBaseline("bareHttp");
    try {
      await assertSameShape(server.port, bare.port, "/live");
      const comparison = await loadAgainstBaseline(
        ctx,
        { connections: CONNECTIONS },
        { measured: { url: `${server.baseUrl}/live`, pid: server.pid }, baseline: { url: `${bare.baseUrl}/live`, pid: bare.pid } },
      );
      return comparisonMeasurements({
        subject: "/live",
        connections: CONNECTIONS,
        baselineLabel: "bare node:http",
        comparison,
        rpsGoal: { kind: "ratioAtLeast", ratio: GOAL },
        p99Goal: { kind: "ratioAtMost", ratio: Math.round((1 / GOAL) * 100) / 100 },
      });
    } finally {
      await bare.stop();
    }
  },
};

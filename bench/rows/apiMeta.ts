/**
 * Issue 2: a small `/api` GET (`/api/meta`, no database) through the full
 * stack (observe: request id, metrics; helmet's headers and the CSP; the API
 * gate: no-store, CORS when an Origin is sent, the rate limit, compression
 * decided when the body is known; the router) against bare Express 5
 * answering the same bytes, 50 connections. The bench server runs with
 * RATE_LIMIT_MAX very high so the limiter counts but never answers 429.
 */
import type { BenchRow } from "../lib/types.js";
import { comparisonMeasurements, loadAgainstBaseline } from "../lib/compare.js";
import { get } from "../lib/http.js";

const CONNECTIONS = 50;
const PATH = "/api/meta";

export const apiMetaRow: BenchRow = {
  name: "api-meta",
  issue: 2,
  description: `GET ${PATH} req/s through the full stack at ${CONNECTIONS} connections, vs bare Express 5`,
  async run(ctx) {
    const server = await ctx.appServer();
    const real = await get(server.port, PATH);
    if (real.status !== 200) throw new Error(`${PATH} answered ${real.status}: ${real.body.slice(0, 200)}`);
    const bare = await ctx.spawnBaseline("bareExpress", { ROUTE: PATH, BODY: real.body }, PATH);
    try {
      const check = await get(bare.port, PATH);
      if (check.body !== real.body) throw new Error(`bare Express answers ${check.body}, the server ${real.body}`);
      const comparison = await loadAgainstBaseline(
        ctx,
        { connections: CONNECTIONS },
        { measured: { url: `${server.baseUrl}${PATH}`, pid: server.pid }, baseline: { url: `${bare.baseUrl}${PATH}`, pid: bare.pid } },
      );
      return comparisonMeasurements({
        subject: PATH,
        connections: CONNECTIONS,
        baselineLabel: "bare Express 5",
        comparison,
        rpsGoal: { kind: "ratioAtLeast", ratio: 0.7 },
        details: { responseHeaders: real.headers },
      });
    } finally {
      await bare.stop();
    }
  },
};

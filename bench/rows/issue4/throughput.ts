/**
 * Issue 4: end-to-end runs/s with 10 in flight: N hello messages posted 10 at
 * a time (over 10 conversations of one user), from the first POST until the
 * bench sees all N runs `succeeded` in the database (polled every 5 ms);
 * runs/s = N / elapsed. N (300 to 1000, the same for both sides) is what the
 * server ran in about 4 s in the last batch of its warm-up, so the row stays
 * well under a minute on a fast or a slow machine. The
 * server runs its queue as configured (MAX_CONCURRENT_JOBS 10), with
 * MAX_QUEUE_DEPTH raised so a burst of N is never shed.
 *
 * Baseline: graphile-worker alone draining N no-op jobs (the worker baseline:
 * `run()`, concurrency 10, the server's schema on the same database), added with
 * `addJob` 10 at a time from inside that process, from the first add until
 * the N-th job succeeded.
 *
 * Five rounds interleave (B T, T B, B T, T B, B T) after an unmeasured
 * warm-up of each side: batches of runs until it has run for WARMUP_S (at
 * least two batches). 50 runs were too few: V8 was still compiling the hot
 * paths through the trials (perf showed TurboFan's compiler at about a fifth
 * of the server's CPU), so each side's rounds got faster one after the other
 * and a trial measured the JIT more than the steady state a server spends its
 * life in. The best round of each counts, of five: on a 2-core VM one side's
 * rounds in a single run spread by up to a fifth (baseline 658, 531 and 514
 * jobs/s in one), and the ratio of best rounds moved between 0.48 and 0.58
 * from run to run with three. An info line gives
 * each process's CPU time per run (from /proc, median over rounds): the
 * server's (taking the POSTs and running the runs) against the worker
 * baseline's (adding and running the jobs), steadier than runs/s on a busy
 * machine; another gives PostgreSQL's (the postmaster and all its processes,
 * those that exited included) per run for each side, and one the bench
 * process's own (the load generator: its POSTs and its polling). On a small
 * machine the runs/s of both sides are bound by the CPU of all three
 * together, so these say where a run's cost is.
 */
import type { BenchRow, Measurement } from "../../lib/types.js";
import { median, round } from "../../lib/stats.js";
import { readFileSync } from "node:fs";
import path from "node:path";
import { cpuMs, postgresCpuMs } from "../../lib/proc.js";
import { createConversation, explainFailure, openSession, spawnOwnServer, stopServer } from "../issue3/api.js";
import { connect, submitRuns, waitSucceeded, workerDrain } from "./runs.js";

const INFLIGHT = 10;
const GOAL = 0.5;
/** Runs per warm-up batch, and how long each side warms up, at least. */
const WARMUP_BATCH = 100;
const WARMUP_S = 6;
/** Runs per trial: what the server did in about this many seconds during the warm-up, within [MIN_N, MAX_N]. */
const TRIAL_S = 4;
const MIN_N = 300;
const MAX_N = 1000;
/** A trial that takes longer fails the row (it stays bounded in time). */
const TRIAL_LIMIT_MS = 25_000;

export const throughputRow: BenchRow = {
  name: "issue4-runs",
  issue: 4,
  description: `end-to-end hello runs/s with ${INFLIGHT} in flight, vs graphile-worker alone draining no-op jobs (concurrency 10)`,
  async run(ctx) {
    const rounds = ctx.options.quick ? 1 : 5;
    const { server, databaseUrl } = await spawnOwnServer(ctx, "bench_issue4_runs", { MAX_QUEUE_DEPTH: "100000" });
    const db = await connect(databaseUrl);
    const dataDir = (await db.query<{ d: string }>("select current_setting('data_directory') as d")).rows[0]?.d ?? "";
    const postmaster = Number(readFileSync(path.join(dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
    const pgCpu = () => postgresCpuMs(postmaster);
    const selfCpu = () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    };
    let runs = 0;
    try {
      return await explainFailure(server, async () => {
        const session = await openSession(server.baseUrl);
        const conversations: string[] = [];
        for (let i = 0; i < INFLIGHT; i++) conversations.push((await createConversation(session, `runs ${i + 1}`)).id);
        const bare = await ctx.spawnBaseline("issue4Worker", { DATABASE_URL: databaseUrl, CONCURRENCY: "10" }, "/probe");
        try {
          const serverTrial = async (count: number) => {
            const cpu0 = cpuMs(server.pid);
            const pg0 = pgCpu();
            const self0 = selfCpu();
            const t0 = performance.now();
            const ids = await submitRuns(session, conversations, count, INFLIGHT);
            runs += count;
            const submittedMs = performance.now() - t0;
            // Its own database, and the previous batch finished: every open run is this trial's.
            const doneAt = await waitSucceeded(db, ids, TRIAL_LIMIT_MS, 5, true);
            return {
              ms: doneAt - t0,
              submittedMs,
              cpuMsPerRun: (cpuMs(server.pid) - cpu0) / count,
              pgMsPerRun: (pgCpu() - pg0) / count,
              loadMsPerRun: (selfCpu() - self0) / count,
            };
          };
          const baselineTrial = async (count: number) => {
            const cpu0 = cpuMs(bare.pid);
            const pg0 = pgCpu();
            const t = await workerDrain(bare.baseUrl, count, INFLIGHT);
            return { ms: t.ms, cpuMsPerRun: (cpuMs(bare.pid) - cpu0) / count, pgMsPerRun: (pgCpu() - pg0) / count };
          };
          // Warm-up: connections, prepared statements, JIT. The last batch's rate sizes N so a server trial takes about TRIAL_S.
          const warmUp = async <T extends { ms: number }>(trial: (count: number) => Promise<T>): Promise<T> => {
            let last = await trial(WARMUP_BATCH);
            for (let spent = last.ms, batches = 1; spent < WARMUP_S * 1000 || batches < 2; spent += last.ms, batches++) last = await trial(WARMUP_BATCH);
            return last;
          };
          const warm = await warmUp(serverTrial);
          await warmUp(baselineTrial);
          const n = ctx.options.quick ? 100 : Math.min(MAX_N, Math.max(MIN_N, Math.round(((WARMUP_BATCH * 1000) / warm.ms) * TRIAL_S / 50) * 50));

          const measured: { rps: number; ms: number; submittedMs: number; cpuMsPerRun: number; pgMsPerRun: number; loadMsPerRun: number }[] = [];
          const baseline: { rps: number; ms: number; cpuMsPerRun: number; pgMsPerRun: number }[] = [];
          for (let i = 0; i < rounds; i++) {
            const order = i % 2 === 0 ? (["baseline", "server"] as const) : (["server", "baseline"] as const);
            for (const side of order) {
              if (side === "server") {
                const t = await serverTrial(n);
                measured.push({
                  rps: round((n * 1000) / t.ms, 1),
                  ms: round(t.ms, 1),
                  submittedMs: round(t.submittedMs, 1),
                  cpuMsPerRun: round(t.cpuMsPerRun, 3),
                  pgMsPerRun: round(t.pgMsPerRun, 3),
                  loadMsPerRun: round(t.loadMsPerRun, 3),
                });
                ctx.progress(
                  `server   ${n} hello runs: ${round(t.ms)} ms (all posted after ${round(t.submittedMs)} ms), ${round((n * 1000) / t.ms, 1)} runs/s, ${round(t.cpuMsPerRun, 2)} ms server CPU/run, ${round(t.pgMsPerRun, 2)} ms PostgreSQL CPU/run, ${round(t.loadMsPerRun, 2)} ms load generator CPU/run`,
                );
              } else {
                const t = await baselineTrial(n);
                baseline.push({ rps: round((n * 1000) / t.ms, 1), ms: round(t.ms, 1), cpuMsPerRun: round(t.cpuMsPerRun, 3), pgMsPerRun: round(t.pgMsPerRun, 3) });
                ctx.progress(`baseline ${n} no-op jobs: ${round(t.ms)} ms, ${round((n * 1000) / t.ms, 1)} jobs/s, ${round(t.cpuMsPerRun, 2)} ms CPU/job, ${round(t.pgMsPerRun, 2)} ms PostgreSQL CPU/job`);
              }
            }
          }
          const best = <T extends { rps: number }>(xs: T[]) => xs.reduce((a, b) => (b.rps > a.rps ? b : a));
          const out: Measurement[] = [
            {
              name: `end-to-end runs/s @${INFLIGHT} in flight`,
              measured: { value: best(measured).rps, unit: "runs/s" },
              baseline: { value: best(baseline).rps, unit: "runs/s", label: "graphile-worker alone, no-op jobs" },
              goal: { kind: "ratioAtLeast", ratio: GOAL },
              details: { n, rounds: { measured, baseline } },
            },
            {
              name: `process CPU/run @${INFLIGHT} in flight`,
              measured: { value: round(median(measured.map((m) => m.cpuMsPerRun)) * 1000, 0), unit: "µs" },
              baseline: { value: round(median(baseline.map((m) => m.cpuMsPerRun)) * 1000, 0), unit: "µs", label: "graphile-worker alone, per job" },
              goal: { kind: "info" },
            },
            {
              name: `PostgreSQL CPU/run @${INFLIGHT} in flight`,
              measured: { value: round(median(measured.map((m) => m.pgMsPerRun)) * 1000, 0), unit: "µs" },
              baseline: { value: round(median(baseline.map((m) => m.pgMsPerRun)) * 1000, 0), unit: "µs", label: "graphile-worker alone, per job" },
              goal: { kind: "info" },
            },
            {
              name: `load generator CPU/run @${INFLIGHT} in flight (bench process: POSTs, polling)`,
              measured: { value: round(median(measured.map((m) => m.loadMsPerRun)) * 1000, 0), unit: "µs" },
              goal: { kind: "info" },
            },
          ];
          return out;
        } finally {
          await bare.stop();
        }
      });
    } finally {
      await db.end().catch(() => undefined);
      await stopServer(ctx, server, { label: "server running hello runs, 10 in flight", units: runs });
    }
  },
};

/**
 * Issue 2: spawn to `/ready` 200 on an already-initialised embedded database:
 * the server starts with no DATABASE_URL, EMBEDDED_PG_DIR on a bench folder
 * and its own port, so the time includes starting PostgreSQL, connecting and
 * checking migrations. Each spawn is stopped with SIGTERM, which stops its
 * PostgreSQL too. Median of 3, after one unmeasured start that initialises
 * the folder. The folder is wiped first, every run: the schema must come from
 * today's migrations, not from whatever an earlier run applied.
 */
import path from "node:path";
import os from "node:os";
import { rm } from "node:fs/promises";
import { existsSync, readFileSync } from "node:fs";
import { pino } from "pino";
import { resolveDataDir } from "../../server/db/embedded.js";
import type { BenchRow } from "../lib/types.js";
import type { BenchContext } from "../lib/context.js";
import { bareSpawnBaseline, spawnAndTime, POLL_MS } from "../lib/spawnTiming.js";
import { sleep } from "../lib/http.js";
import { median, round } from "../lib/stats.js";

/** The postmaster pid on `dataDir`, when one is alive. */
function postmasterPid(dataDir: string): number | null {
  const file = path.join(dataDir, "postmaster.pid");
  if (!existsSync(file)) return null;
  const pid = Number(readFileSync(file, "utf8").split("\n")[0]);
  if (!Number.isInteger(pid) || pid <= 0) return null;
  try {
    process.kill(pid, 0);
    return pid;
  } catch {
    return null;
  }
}

/**
 * Waits for the postmaster on the bench folder to be gone. Only bench runs use
 * this folder, so one still alive after its server exited was started by the
 * bench: it gets a fast shutdown (SIGINT) by PID.
 */
async function ensureStopped(ctx: BenchContext, dataDir: string, graceMs: number): Promise<void> {
  const until = Date.now() + graceMs;
  while (postmasterPid(dataDir) !== null && Date.now() < until) await sleep(50);
  const pid = postmasterPid(dataDir);
  if (pid === null) return;
  ctx.progress(`PostgreSQL ${pid} on ${dataDir} outlived its server; stopping it`);
  process.kill(pid, "SIGINT");
  const hard = Date.now() + 10_000;
  while (postmasterPid(dataDir) !== null) {
    if (Date.now() > hard) throw new Error(`PostgreSQL ${pid} on ${dataDir} did not stop`);
    await sleep(50);
  }
}

export const spawnReadyRow: BenchRow = {
  name: "spawn-ready",
  issue: 2,
  description: `spawn to /ready 200 with an initialised embedded database (poll every ${POLL_MS} ms), median of 3`,
  async run(ctx) {
    const n = ctx.options.quick ? 2 : 3;
    const wanted = path.join(ctx.root, ".data", "bench-boot-postgres");
    const dataDir = resolveDataDir(wanted, pino({ level: "silent" }));
    const pgPort = await ctx.freePort();
    await ensureStopped(ctx, dataDir, 0);
    if (dataDir !== wanted && !dataDir.startsWith(os.tmpdir())) throw new Error(`unexpected data folder ${dataDir}`);
    await rm(dataDir, { recursive: true, force: true });

    const once = async (timeoutMs: number) => {
      const port = await ctx.freePort();
      const env = await ctx.serverEnv(port, false);
      env.EMBEDDED_PG_DIR = wanted;
      env.EMBEDDED_PG_PORT = String(pgPort);
      const { child, ms } = await spawnAndTime([process.execPath, ctx.distEntry], { port, path: "/ready", env, cwd: ctx.root, timeoutMs });
      try {
        const exit = await child.stop("SIGTERM", 15_000);
        if (exit.code !== 0) throw new Error(`server exited ${exit.code ?? exit.signal} on SIGTERM: ${child.stderr().slice(-500)}`);
      } finally {
        await ensureStopped(ctx, dataDir, 10_000);
      }
      return ms;
    };

    ctx.progress(`initialising ${dataDir} (a first, unmeasured start)`);
    await once(120_000);
    const samples: number[] = [];
    for (let i = 0; i < n; i++) samples.push(await once(30_000));
    const baseline = await bareSpawnBaseline(ctx, n);
    ctx.progress(`spawn → /ready: ${samples.map((s) => s.toFixed(0)).join(", ")} ms`);
    return [
      {
        name: "spawn → /ready 200 (embedded pg)",
        measured: { value: median(samples), unit: "ms" },
        baseline: { value: baseline.value, unit: "ms", label: baseline.label },
        goal: { kind: "under", value: 1000, unit: "ms" },
        details: { samplesMs: samples.map((s) => round(s, 1)), baselineSamplesMs: baseline.samples.map((s) => round(s, 1)), dataDir },
      },
    ];
  },
};

/**
 * `npm run bench`: runs the rows of bench/rows/index.ts against the built
 * server, each against a baseline measured in the same run, prints a markdown
 * table on stdout and writes JSON to bench/results/<timestamp>.json and
 * bench/results/latest.json. Progress goes to stderr.
 *
 *   --only <substr>   run rows whose name contains it (repeatable, or comma-separated)
 *   --quick           shorter loads, fewer spawns: checks the harness, not the server
 *   --no-pin          do not pin server and load generator to separate cores
 *   --cpu-prof        profile the shared app server (node --cpu-prof) and summarise it
 *   --strict          exit 1 when a goal is missed (errors always exit 1)
 *   --list            list the rows and exit
 */
import path from "node:path";
import os from "node:os";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ROWS } from "./rows/index.js";
import { compilePrograms } from "./lib/compile.js";
import { createContext, type BenchOptions } from "./lib/context.js";
import { evaluate, failed, markdownTable, writeRecord } from "./lib/report.js";
import { formatSummary, summariseProfile } from "./lib/cpuProfile.js";
import type { Evaluated } from "./lib/types.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

function git(args: string[]): string | null {
  try {
    return execFileSync("git", args, { cwd: root, stdio: ["ignore", "pipe", "ignore"] }).toString().trim();
  } catch {
    return null;
  }
}

function gitDirty(): boolean | null {
  const status = git(["status", "--porcelain"]);
  return status === null ? null : status.length > 0;
}

function hasTaskset(): boolean {
  try {
    execFileSync("taskset", ["-p", String(process.pid)], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      only: { type: "string", multiple: true },
      quick: { type: "boolean", default: false },
      "no-pin": { type: "boolean", default: false },
      "cpu-prof": { type: "boolean", default: false },
      strict: { type: "boolean", default: false },
      list: { type: "boolean", default: false },
    },
  });
  const only = (values.only ?? []).flatMap((s) => s.split(",")).map((s) => s.trim()).filter(Boolean);
  const rows = ROWS.filter((r) => only.length === 0 || only.some((o) => r.name.includes(o)));
  if (values.list) {
    for (const r of ROWS) console.log(`${r.name.padEnd(16)} issue ${r.issue}  ${r.description}`);
    return 0;
  }
  if (rows.length === 0) {
    console.error(`no row matches ${only.join(", ")}; rows: ${ROWS.map((r) => r.name).join(", ")}`);
    return 1;
  }
  if (!existsSync(path.join(root, "dist", "index.js"))) {
    console.error("dist/index.js is missing: run `npm run build` (npm run bench does it first)");
    return 1;
  }

  const cpus = os.cpus().length;
  const pin = !values["no-pin"] && cpus >= 2 && hasTaskset();
  const options: BenchOptions = { quick: values.quick, only, pin, cpuProf: values["cpu-prof"] };
  const started = new Date();
  const loadStart = os.loadavg()[0] ?? 0;
  const runId = started.toISOString().replace(/:/g, "-");
  console.error(`bench: ${rows.length} row(s)${options.quick ? ", quick" : ""}${pin ? ", server on cpu 0 and load on cpu 1" : ""}`);

  const programs = await compilePrograms(root);
  const ctx = createContext({ options, root, programs, runId });
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) process.exit(130);
    interrupted = true;
    console.error(`bench: ${sig}; cleaning up (again to force)`);
    void ctx.close().finally(() => process.exit(130));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const results: Evaluated[] = [];
  try {
    for (const row of rows) {
      if (interrupted) break;
      console.error(`▶ ${row.name}: ${row.description}`);
      const t0 = performance.now();
      try {
        const measured = await row.run(ctx);
        for (const m of measured) {
          try {
            results.push(evaluate(row, m));
          } catch (err) {
            results.push(failed(row, err));
          }
        }
      } catch (err) {
        console.error(`  ✗ ${row.name} failed:`, err);
        results.push(failed(row, err));
      }
      console.error(`  (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
      if (!interrupted) await ctx.betweenRows().catch((err: unknown) => console.error("  ✗ between rows:", err));
    }
  } finally {
    await ctx.close();
  }

  const finished = new Date();
  const loadEnd = os.loadavg()[0] ?? 0;
  console.log(markdownTable(results));
  const notes = results.flatMap((r) => r.notes ?? []);
  if (Math.max(loadStart, loadEnd) > cpus) {
    notes.unshift(`the machine was busy: 1-minute load average ${loadStart.toFixed(1)} at the start and ${loadEnd.toFixed(1)} at the end, on ${cpus} CPUs; ratios are noisy`);
  }
  if (notes.length) console.log(`\n${notes.map((n) => `- ${n}`).join("\n")}`);
  const file = await writeRecord(path.join(root, "bench", "results"), {
    startedAt: started.toISOString(),
    finishedAt: finished.toISOString(),
    durationS: Math.round((finished.getTime() - started.getTime()) / 100) / 10,
    git: { commit: git(["rev-parse", "HEAD"]), dirty: gitDirty() },
    host: {
      node: process.version,
      platform: process.platform,
      arch: process.arch,
      cpus,
      cpuModel: os.cpus()[0]?.model ?? "",
      totalMemBytes: os.totalmem(),
      loadAverage1m: { start: loadStart, end: loadEnd },
    },
    options: { ...options, timing: ctx.timing },
    results,
  });
  console.error(`bench: wrote ${path.relative(root, file)} and bench/results/latest.json (${((finished.getTime() - started.getTime()) / 1000).toFixed(0)} s)`);

  if (options.cpuProf && existsSync(ctx.profileDir)) {
    // Node names them CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile; thread 0 is the main one.
    for (const f of readdirSync(ctx.profileDir).filter((f) => f.endsWith(".cpuprofile"))) {
      const [, , , pid, thread] = f.split(".");
      const who = ctx.profiled.get(Number(pid));
      if (!who || thread !== "0") continue;
      const full = path.join(ctx.profileDir, f);
      console.error(formatSummary(`${who.label} (${path.relative(root, full)})`, await summariseProfile(full, { skipMs: who.skipMs }), who.requests));
    }
  }

  const errors = results.filter((r) => r.error).length;
  const misses = results.filter((r) => !r.pass && !r.error).length;
  if (errors || misses) console.error(`bench: ${errors} error(s), ${misses} goal(s) missed`);
  return errors > 0 || (values.strict && misses > 0) ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error("bench failed:", err);
    process.exit(1);
  },
);

/** Judging measurements against their goals, the markdown table and the JSON file. */
import path from "node:path";
import { mkdir, writeFile } from "node:fs/promises";
import type { BenchRow, Evaluated, Goal, Measurement, Quantity } from "./types.js";

export function evaluate(row: BenchRow, m: Measurement): Evaluated {
  const { goal } = m;
  let ratio: number | null;
  let pass = true;
  switch (goal.kind) {
    case "ratioAtLeast":
    case "ratioAtMost": {
      if (!m.baseline) throw new Error(`${m.name}: a ratio goal needs a baseline`);
      if (m.baseline.unit !== m.measured.unit) throw new Error(`${m.name}: baseline unit ${m.baseline.unit} ≠ ${m.measured.unit}`);
      ratio = m.measured.value / m.baseline.value;
      pass = goal.kind === "ratioAtLeast" ? ratio >= goal.ratio : ratio <= goal.ratio;
      break;
    }
    case "under":
    case "over":
      if (goal.unit !== m.measured.unit) throw new Error(`${m.name}: goal unit ${goal.unit} ≠ ${m.measured.unit}`);
      ratio = m.measured.value / goal.value;
      pass = goal.kind === "under" ? m.measured.value <= goal.value : m.measured.value >= goal.value;
      break;
    case "info":
      ratio = m.baseline && m.baseline.unit === m.measured.unit ? m.measured.value / m.baseline.value : null;
      break;
    default: {
      const unreachable: never = goal;
      throw new Error(`unknown goal ${JSON.stringify(unreachable)}`);
    }
  }
  if (ratio !== null && !Number.isFinite(ratio)) pass = false;
  return { ...m, row: row.name, issue: row.issue, ratio, pass };
}

/** A row that threw: one failing line naming the error. */
export function failed(row: BenchRow, err: unknown): Evaluated {
  const message = err instanceof Error ? err.message : String(err);
  return {
    row: row.name,
    issue: row.issue,
    name: row.name,
    measured: { value: Number.NaN, unit: "" },
    goal: { kind: "info" },
    ratio: null,
    pass: false,
    error: message,
  };
}

function formatNumber(n: number): string {
  if (!Number.isFinite(n)) return "—";
  const abs = Math.abs(n);
  const digits = abs >= 1000 ? 0 : abs >= 100 ? 1 : abs >= 10 ? 2 : 3;
  return n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export const formatQuantity = (q: Quantity) => `${formatNumber(q.value)} ${q.unit}`.trim();

export function formatGoal(goal: Goal): string {
  switch (goal.kind) {
    case "ratioAtLeast":
      return `ratio ≥ ${goal.ratio}`;
    case "ratioAtMost":
      return `ratio ≤ ${goal.ratio}`;
    case "under":
      return `≤ ${formatNumber(goal.value)} ${goal.unit}`;
    case "over":
      return `≥ ${formatNumber(goal.value)} ${goal.unit}`;
    case "info":
      return "—";
    default: {
      const unreachable: never = goal;
      return String(unreachable);
    }
  }
}

const cell = (s: string) => s.replace(/\|/g, "\\|").replace(/\n/g, " ");

export function markdownTable(results: readonly Evaluated[]): string {
  const head = ["row", "measured", "baseline", "ratio", "goal", "result"];
  const lines = results.map((r) => [
    r.name,
    r.error ? `error: ${r.error.slice(0, 160)}` : formatQuantity(r.measured),
    r.baseline ? `${formatQuantity(r.baseline)} (${r.baseline.label})` : "—",
    r.ratio === null ? "—" : r.ratio.toFixed(2),
    formatGoal(r.goal),
    r.error ? "**error**" : r.goal.kind === "info" ? "info" : r.pass ? "pass" : "**FAIL**",
  ]);
  const rows = [head, head.map(() => "---"), ...lines].map((cols) => `| ${cols.map(cell).join(" | ")} |`);
  return rows.join("\n");
}

export interface RunRecord {
  startedAt: string;
  finishedAt: string;
  durationS: number;
  git: { commit: string | null; dirty: boolean | null };
  host: {
    node: string;
    platform: string;
    arch: string;
    cpus: number;
    cpuModel: string;
    totalMemBytes: number;
    /** Other work on the machine skews every ratio; kept to judge a run. */
    loadAverage1m: { start: number; end: number };
  };
  options: Record<string, unknown>;
  results: Evaluated[];
}

/** Writes `<dir>/<timestamp>.json` and `<dir>/latest.json`; returns the first path. */
export async function writeRecord(dir: string, record: RunRecord): Promise<string> {
  await mkdir(dir, { recursive: true });
  const text = `${JSON.stringify(record, (_k, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? null : v), 2)}\n`;
  const file = path.join(dir, `${record.startedAt.replace(/:/g, "-")}.json`);
  await writeFile(file, text);
  await writeFile(path.join(dir, "latest.json"), text);
  return file;
}

/**
 * The contract between the bench runner and its rows. A row is a module in
 * `bench/rows/` listed in `bench/rows/index.ts`; it measures something and its
 * baseline in the same run and returns one or more {@link Measurement}s. The
 * runner computes ratios, pass/fail, the table and the JSON.
 */
import type { BenchContext } from "./context.js";

/** A number with its unit, e.g. `{ value: 51234, unit: "req/s" }`. */
export interface Quantity {
  value: number;
  unit: string;
}

/**
 * What a measurement must reach. Ratio goals compare with the baseline measured
 * in the same run (`measured / baseline`); absolute goals compare with a fixed
 * number (the reported ratio is then `measured / goal`, so ≤ 1 passes an
 * `under` goal).
 */
export type Goal =
  /** Higher is better: measured / baseline ≥ ratio (throughput). */
  | { kind: "ratioAtLeast"; ratio: number }
  /** Lower is better: measured / baseline ≤ ratio (latency, memory). */
  | { kind: "ratioAtMost"; ratio: number }
  /** measured ≤ value, in the measurement's unit. */
  | { kind: "under"; value: number; unit: string }
  /** measured ≥ value, in the measurement's unit. */
  | { kind: "over"; value: number; unit: string }
  /** Shown for context only; always passes. */
  | { kind: "info" };

export interface Measurement {
  /** Table label, e.g. `/live req/s @50c`. Unique within the run. */
  name: string;
  measured: Quantity;
  /**
   * Measured in the same run. Ratio goals divide by it (same unit required);
   * for absolute goals it is context only.
   */
  baseline?: Quantity & { label: string };
  goal: Goal;
  /** Anything worth keeping in the JSON (raw load results, samples …). */
  details?: Record<string, unknown>;
  /** Caveats printed under the table, e.g. signs that other processes competed for the CPU. */
  notes?: string[];
}

export interface BenchRow {
  /** Stable id; `--only <substring>` matches it (and the measurement names). */
  name: string;
  /** The issue that asked for it. */
  issue: number;
  /** One line for `--list`. */
  description: string;
  run(ctx: BenchContext): Promise<Measurement[]>;
}

/** A measurement after the runner has judged it. */
export interface Evaluated extends Measurement {
  row: string;
  issue: number;
  /** See {@link Goal}; null when there is nothing to divide by. */
  ratio: number | null;
  pass: boolean;
  /** Set when the row threw instead of measuring. */
  error?: string;
}

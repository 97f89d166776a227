/**
 * The shared LLM request budget: at most `maxRequests` provider requests per
 * sliding `windowMs`, across every instance, kept in PostgreSQL
 * (`llm_requests`, one row per request).
 *
 * A slot is taken by one round trip: a multi-statement simple query runs as
 * one implicit transaction, so the transaction-scoped advisory lock taken by
 * its first statement serialises count + insert across processes, and the
 * second statement (a fresh snapshot under READ COMMITTED) sees every slot
 * committed before the lock was granted. Times come from the database clock,
 * so instances with skewed clocks still agree.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { Pool } from "../db/pool.js";
import type { AgentEvent } from "./types.js";

export interface BudgetLimits {
  /** Requests allowed per window. Default (config) 100. */
  maxRequests: number;
  /** Sliding window length, ms. Default (config) 60 s. */
  windowMs: number;
}

export type BudgetDecision =
  /** The slot is taken; `at` is its database timestamp. */
  | { ok: true; at: Date }
  /** Full: the next slot frees in `waitMs` (at `until`, local clock). */
  | { ok: false; waitMs: number; until: Date };

export interface LlmBudget {
  /** Takes one request slot now, or says how long until one frees. Never waits. */
  tryAcquire(runId?: string | null): Promise<BudgetDecision>;
}

/** Namespaced key for `pg_advisory_xact_lock(int, int)`; no other lock in the app uses it. */
const LOCK_SQL = "select pg_advisory_xact_lock(hashtext('esa-agents'), hashtext('llm_requests'))";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function assertLimits(limits: BudgetLimits) {
  if (!Number.isSafeInteger(limits.maxRequests) || limits.maxRequests < 1) throw new RangeError("maxRequests must be a whole number >= 1");
  if (!Number.isSafeInteger(limits.windowMs) || limits.windowMs < 1) throw new RangeError("windowMs must be a whole number >= 1");
}

/**
 * The SQL of one attempt. Inlined values are validated integers and a
 * validated UUID: the simple query protocol (needed for the one-round-trip
 * transaction) takes no parameters.
 *
 * Timestamps are truncated to the millisecond the column stores, so the
 * check and the stored row agree exactly. A row at `t` occupies the window
 * (t - windowMs, t]; a new slot is free when fewer than `max` rows are newer
 * than `now - windowMs`, otherwise it frees when the max-th newest row leaves.
 */
function acquireSql(limits: BudgetLimits, runId: string | null) {
  const max = limits.maxRequests;
  const window = `(${limits.windowMs} * interval '1 millisecond')`;
  const run = runId && UUID.test(runId) ? `'${runId}'::uuid` : "null";
  return `${LOCK_SQL};
with c as (select date_trunc('milliseconds', clock_timestamp()) as t),
recent as (
  select r.at from llm_requests r, c where r.at > c.t - ${window} order by r.at desc limit ${max}
),
s as (select count(*)::int as n, min(at) as oldest from recent),
ins as (
  insert into llm_requests (at, run_id) select c.t, ${run} from c, s where s.n < ${max} returning at
),
pruned as (delete from llm_requests r using c where r.at <= c.t - ${window})
select (select at from ins) as at,
  case when s.n >= ${max} then extract(epoch from (s.oldest + ${window} - c.t)) * 1000 end::float8 as wait_ms
from c, s`;
}

export function createLlmBudget(pool: Pool, limits: BudgetLimits): LlmBudget {
  assertLimits(limits);
  return {
    async tryAcquire(runId = null) {
      const results = (await pool.query(acquireSql(limits, runId))) as unknown as { rows: { at: Date | null; wait_ms: number | null }[] }[];
      const row = results[results.length - 1]?.rows[0];
      if (!row) throw new Error("llm budget query returned no row");
      if (row.at) return { ok: true, at: row.at };
      // The slot frees at `oldest + window`; +1 ms so the retry lands past the boundary.
      const waitMs = Math.max(1, Math.ceil(row.wait_ms ?? 1) + 1);
      return { ok: false, waitMs, until: new Date(Date.now() + waitMs) };
    },
  };
}

/** A budget that never refuses: for tests and for tools run without a database. */
export const unlimitedBudget: LlmBudget = {
  tryAcquire: async () => ({ ok: true, at: new Date() }),
};

/**
 * Takes a slot, waiting as long as it takes (within `signal`). Before each
 * wait whose end differs from the last one announced it yields
 * `status {waiting, until}`, so the user sees why nothing happens.
 * Throws `signal.reason` when the signal fires first.
 */
export async function* waitForBudget(
  budget: LlmBudget,
  opts: { runId?: string | null; signal: AbortSignal },
): AsyncGenerator<AgentEvent, Date> {
  let announced = 0;
  for (;;) {
    opts.signal.throwIfAborted();
    const d = await budget.tryAcquire(opts.runId ?? null);
    if (d.ok) return d.at;
    // Re-announce only when the expected end moves by more than a second.
    if (Math.abs(d.until.getTime() - announced) > 1000) {
      announced = d.until.getTime();
      yield { type: "status", status: "waiting", until: d.until.toISOString(), reason: "llm_rate_limit" };
    }
    try {
      await sleep(d.waitMs, undefined, { signal: opts.signal });
    } catch (err) {
      if (opts.signal.aborted) throw opts.signal.reason;
      throw err;
    }
  }
}

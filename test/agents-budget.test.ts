/**
 * The shared LLM budget on PostgreSQL: a sliding window that holds across
 * connections and processes, waits instead of failing, and stops waiting
 * when the run's signal fires.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { ROOT } from "./helpers/paths.js";
import { createLlmBudget, waitForBudget, type LlmBudget } from "../server/agents/budget.js";

let db: TestDatabase;
/** Children this file started; killed by PID if a test leaves one behind. */
const children = new Set<ChildProcess>();
beforeAll(async () => {
  db = await createTestDatabase({ migrate: true });
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await db.drop();
});

const reset = () => db.pool.query("delete from llm_requests");
const count = async () => (await db.pool.query<{ n: number }>("select count(*)::int as n from llm_requests")).rows[0]!.n;

/** The most requests any window [t, t + windowMs) holds. */
function busiestWindow(times: number[], windowMs: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let most = 0;
  for (let i = 0, j = 0; i < sorted.length; i++) {
    while (j < sorted.length && sorted[j]! < sorted[i]! + windowMs) j++;
    most = Math.max(most, j - i);
  }
  return most;
}

async function drain(budget: LlmBudget, signal = new AbortController().signal) {
  const it = waitForBudget(budget, { signal });
  const statuses: unknown[] = [];
  for (;;) {
    const r = await it.next();
    if (r.done) return { at: r.value, statuses };
    statuses.push(r.value);
  }
}

describe("shared LLM budget", () => {
  it("takes at most maxRequests per window, and a refusal inserts nothing", async () => {
    await reset();
    const budget = createLlmBudget(db.pool, { maxRequests: 3, windowMs: 60_000 });
    const results = [];
    for (let i = 0; i < 4; i++) results.push(await budget.tryAcquire());
    expect(results.slice(0, 3).every((r) => r.ok)).toBe(true);
    const refused = results[3]!;
    expect(refused.ok).toBe(false);
    if (!refused.ok) {
      expect(refused.waitMs).toBeGreaterThan(0);
      expect(refused.waitMs).toBeLessThanOrEqual(60_001);
      expect(refused.until.getTime()).toBeGreaterThan(Date.now());
    }
    expect(await count()).toBe(3);
  });

  it("concurrent takers on several connections never exceed the limit", async () => {
    await reset();
    const budget = createLlmBudget(db.pool, { maxRequests: 5, windowMs: 60_000 });
    const results = await Promise.all(Array.from({ length: 24 }, () => budget.tryAcquire()));
    expect(results.filter((r) => r.ok)).toHaveLength(5);
    expect(await count()).toBe(5);
  });

  it("waits with a status event, then takes the slot once the oldest request leaves the window", async () => {
    await reset();
    const budget = createLlmBudget(db.pool, { maxRequests: 2, windowMs: 300 });
    const a = await budget.tryAcquire();
    const b = await budget.tryAcquire();
    if (!a.ok || !b.ok) throw new Error("expected two free slots");
    const { at, statuses } = await drain(budget);
    expect(statuses[0]).toMatchObject({ type: "status", status: "waiting", until: expect.any(String), reason: "llm_rate_limit" });
    // Database time: the third request is a full window after the first.
    expect(at.getTime() - a.at.getTime()).toBeGreaterThanOrEqual(300);
    expect(await count()).toBeLessThanOrEqual(2);
  });

  it("records the run and prunes rows that left the window", async () => {
    await reset();
    await db.pool.query("insert into llm_requests (at) select now() - interval '1 hour' from generate_series(1, 5)");
    const budget = createLlmBudget(db.pool, { maxRequests: 2, windowMs: 1000 });
    const runId = "11111111-2222-4333-8444-555555555555";
    expect((await budget.tryAcquire(runId)).ok).toBe(true);
    const rows = await db.pool.query<{ run_id: string }>("select run_id from llm_requests");
    expect(rows.rows).toEqual([{ run_id: runId }]);
  });

  it("stops waiting when the run's signal fires, without taking a slot", async () => {
    await reset();
    const budget = createLlmBudget(db.pool, { maxRequests: 1, windowMs: 60_000 });
    expect((await budget.tryAcquire()).ok).toBe(true);
    const ac = new AbortController();
    const it = waitForBudget(budget, { signal: ac.signal });
    expect((await it.next()).value).toMatchObject({ type: "status", status: "waiting" });
    const pending = it.next();
    const reason = new Error("run cancelled");
    ac.abort(reason);
    await expect(pending).rejects.toBe(reason);
    expect(await count()).toBe(1);
  });

  it("holds across two processes sharing the database", async () => {
    await reset();
    const perProcess = 6;
    const limits = { maxRequests: 4, windowMs: 400 };
    const child = `
      import { once } from "node:events";
      const [budgetPath, url, n, max, windowMs] = process.argv.slice(1);
      const { createLlmBudget, waitForBudget } = await import(budgetPath);
      const { default: pg } = await import("pg");
      const pool = new pg.Pool({ connectionString: url, max: 3 });
      const budget = createLlmBudget(pool, { maxRequests: Number(max), windowMs: Number(windowMs) });
      await pool.query("select 1");
      process.stdout.write(JSON.stringify({ ready: true }) + "\\n");
      await once(process.stdin, "data");
      process.stdin.destroy();
      let left = Number(n);
      const worker = async () => {
        while (left-- > 0) {
          const it = waitForBudget(budget, { signal: new AbortController().signal });
          let waited = 0;
          for (;;) {
            const r = await it.next();
            if (r.done) { process.stdout.write(JSON.stringify({ at: r.value.toISOString(), waited }) + "\\n"); break; }
            waited++;
          }
        }
      };
      await Promise.all([worker(), worker(), worker()]);
      await pool.end();
    `;
    const budgetPath = path.join(ROOT, "server/agents/budget.ts");
    const procs = [0, 1].map(() => {
      const p = spawn(
        process.execPath,
        ["--import", "tsx", "--input-type=module", "-e", child, budgetPath, db.url, String(perProcess), String(limits.maxRequests), String(limits.windowMs)],
        { cwd: ROOT, stdio: ["pipe", "pipe", "pipe"] },
      );
      children.add(p);
      const lines: Record<string, unknown>[] = [];
      let buf = "";
      let err = "";
      const ready = new Promise<void>((resolve) => {
        p.stdout.setEncoding("utf8").on("data", (c: string) => {
          buf += c;
          let nl: number;
          while ((nl = buf.indexOf("\n")) !== -1) {
            const line = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
            buf = buf.slice(nl + 1);
            if (line.ready) resolve();
            else lines.push(line);
          }
        });
      });
      p.stderr.setEncoding("utf8").on("data", (c: string) => (err += c));
      const exited = new Promise<number | null>((resolve) => p.once("exit", (code) => resolve(code)));
      return { p, lines, ready, exited, stderr: () => err };
    });
    await Promise.race([
      Promise.all(procs.map((x) => x.ready)),
      ...procs.map((x) => x.exited.then((code) => Promise.reject(new Error(`child exited ${code}: ${x.stderr()}`)))),
    ]);
    for (const x of procs) x.p.stdin.end("go\n");
    const codes = await Promise.all(procs.map((x) => x.exited));
    expect(codes, procs.map((x) => x.stderr()).join("\n")).toEqual([0, 0]);

    const times = procs.flatMap((x) => x.lines.map((l) => Date.parse(String(l.at))));
    expect(times).toHaveLength(2 * perProcess);
    for (const x of procs) expect(x.lines).toHaveLength(perProcess);
    expect(busiestWindow(times, limits.windowMs)).toBeLessThanOrEqual(limits.maxRequests);
    // 12 requests through a limit of 4: both processes had to wait for each other's slots.
    expect(procs.flatMap((x) => x.lines).some((l) => Number(l.waited) > 0)).toBe(true);
  });
});

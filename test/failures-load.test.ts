/**
 * Issue 8, point 2, "100 runs at concurrency 10", on the built server with
 * the fake LLM: ten clients post 100 messages for the assistant as fast as
 * they are answered (MAX_CONCURRENT_JOBS=10). Every POST is a 202, every run
 * succeeds on its first attempt with exactly one assistant message equal to
 * what the provider streamed, every run's event log is gapless and ends in
 * `done`, and at no moment were more than 10 runs running (the intervals
 * started_at..finished_at, stamped by the database, never overlap more than
 * 10 deep), while 10 were reached.
 */
import { describe, it, expect } from "vitest";
import { Client } from "./helpers/dataApi.js";
import { useServerFixture } from "./helpers/failures.js";
import { waitFor } from "./helpers/queue.js";

const RUNS = 100;
const CLIENTS = 10;

const fx = useServerFixture();

/** The answer the fake LLM streams for message `n`. */
const answerFor = (user: string) => `Answer to «${user}»: ${"tokens ".repeat(20)}done.`;

describe("100 runs at concurrency 10", () => {
  it("all 100 succeed once, each with one answer equal to the stream, never more than 10 running at once", { timeout: 180_000 }, async () => {
    fx.llm.setDefault((body) => {
      const user = [...(body.messages ?? [])].reverse().find((m) => m.role === "user")?.content ?? "";
      // About half a second of streaming per run.
      return { text: answerFor(user), chunkSize: 4, delayMs: 12 };
    });
    const a = await fx.spawn({ MAX_CONCURRENT_JOBS: "10", OPENAI_RATE_LIMIT_MAX: "10000" });

    const posted: { runId: string; content: string }[] = [];
    const statuses: number[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: CLIENTS }, async (_, k) => {
        const c = new Client(a.baseUrl);
        const conv = await c.post("/api/conversations", { title: `client ${k}` });
        expect(conv.status).toBe(201);
        while (next < RUNS) {
          const content = `question ${next++}`;
          const r = await c.post(`/api/conversations/${conv.body.id as string}/messages`, { content, agent: "assistant" });
          statuses.push(r.status);
          if (r.status === 202) posted.push({ runId: r.body.run.id as string, content });
        }
      }),
    );
    expect(statuses.filter((s) => s !== 202)).toEqual([]);
    expect(posted).toHaveLength(RUNS);

    const runIds = posted.map((p) => p.runId);
    const rows = await waitFor(
      "all 100 runs to finish",
      async () => {
        const r = await fx.db.pool.query<{ id: string; status: string; attempt: number; failures: number; started_at: Date; finished_at: Date }>(
          "select id, status, attempt, failures, started_at, finished_at from runs where id = any($1::uuid[])",
          [runIds],
        );
        return r.rows.every((row) => ["succeeded", "failed", "cancelled"].includes(row.status)) ? r.rows : undefined;
      },
      150_000,
      250,
    );
    expect(rows.filter((r) => r.status !== "succeeded" || r.attempt !== 1 || r.failures !== 0)).toEqual([]);

    // Concurrency: the deepest overlap of the running intervals.
    const edges = rows.flatMap((r) => [
      { t: r.started_at.getTime(), d: 1 },
      { t: r.finished_at.getTime(), d: -1 },
    ]);
    // At equal times an end comes before a start: a slot freed and taken in the same millisecond is not an overlap.
    edges.sort((x, y) => x.t - y.t || x.d - y.d);
    let depth = 0;
    let deepest = 0;
    for (const e of edges) deepest = Math.max(deepest, (depth += e.d));
    expect(deepest).toBe(10);

    // Exactly one answer per run, the provider's text.
    const answers = await fx.db.pool.query<{ run_id: string; content: string }>("select run_id, content from messages where role = 'assistant' and run_id = any($1::uuid[])", [runIds]);
    expect(answers.rows).toHaveLength(RUNS);
    const byRun = new Map(answers.rows.map((m) => [m.run_id, m.content]));
    for (const p of posted) expect(byRun.get(p.runId), p.content).toBe(answerFor(p.content));
    expect(fx.llm.requests).toHaveLength(RUNS);

    // Every log gapless, ending in done.
    const logs = await fx.db.pool.query<{ run_id: string; seqs: number[]; last: string }>(
      "select run_id, array_agg(seq order by seq) as seqs, (array_agg(type order by seq desc))[1] as last from run_events where run_id = any($1::uuid[]) group by run_id",
      [runIds],
    );
    expect(logs.rows).toHaveLength(RUNS);
    for (const l of logs.rows) {
      expect(l.seqs).toEqual(l.seqs.map((_, i) => i + 1));
      expect(l.last).toBe("done");
    }
    // Nothing left in the queue, and the process took no harm.
    await waitFor("no jobs left", async () => (await fx.db.pool.query<{ n: number }>("select count(*)::int as n from graphile_worker.jobs")).rows[0]?.n === 0);
    expect(a.proc.logs.filter((l) => Number(l.level) >= 50)).toEqual([]);
  });
});

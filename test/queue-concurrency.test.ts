/**
 * Issue 4, point 7: 40 slow runs on one queue with MAX_CONCURRENT_JOBS=10:
 * never more than 10 agents at once (counted inside the agent), 10 reached,
 * all 40 answered exactly once.
 */
import { it, expect, afterAll } from "vitest";
import { newConversation, postRun, scriptOf, startTestQueue, useQueueFixture, waitFor, type TestQueue } from "./helpers/queue.js";

const fx = useQueueFixture();
let q: TestQueue | undefined;
// Runs before the fixture's afterAll (hooks stack): the queue stops before the API and the database.
afterAll(async () => {
  await q?.stop();
});

it("runs at most MAX_CONCURRENT_JOBS agents at once and completes all 40 runs", async () => {
  const client = fx.api.client();
  const conv = await newConversation(client);
  // All queued before the queue starts, so it has 40 to choose from at once.
  const runIds: string[] = [];
  for (let i = 0; i < 40; i++) runIds.push((await postRun(client, conv, scriptOf({ text: [`answer ${i}`], holdMs: 250 }))).runId);

  const warnings: Error[] = [];
  const onWarning = (w: Error) => warnings.push(w);
  process.on("warning", onWarning);
  q = await startTestQueue(fx.db, fx.agents.orchestrator, { env: { MAX_CONCURRENT_JOBS: "10" } });
  const statuses = await waitFor("all 40 runs to finish", async () => {
    const r = await fx.db.pool.query<{ status: string; n: number }>("select status, count(*)::int as n from runs group by status");
    const byStatus = Object.fromEntries(r.rows.map((row) => [row.status, row.n]));
    return (byStatus.queued ?? 0) + (byStatus.running ?? 0) === 0 ? byStatus : undefined;
  }, 60_000);
  process.off("warning", onWarning);

  expect(statuses).toEqual({ succeeded: 40 });
  expect(fx.agents.maxRunning).toBe(10);
  // Ten runs listening on graphile-worker's shared abort signal is no leak.
  expect(warnings.filter((w) => w.name === "MaxListenersExceededWarning")).toEqual([]);
  expect(fx.agents.calls).toHaveLength(40);
  expect(new Set(fx.agents.calls.map((c) => c.runId))).toEqual(new Set(runIds));
  const answers = await fx.db.pool.query<{ run_id: string; content: string }>("select run_id, content from messages where role = 'assistant'");
  expect(answers.rows).toHaveLength(40);
  for (const [i, runId] of runIds.entries()) {
    expect(answers.rows.filter((m) => m.run_id === runId).map((m) => m.content)).toEqual([`answer ${i}`]);
  }
});

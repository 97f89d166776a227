/**
 * Issue 4, point 7: 40 slow runs on one queue with MAX_CONCURRENT_JOBS=10:
 * never more than 10 agents at once (counted inside the agent), 10 reached,
 * all 40 answered exactly once.
 */
import { it, expect, beforeAll, afterAll } from "vitest";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { startDataApi, type DataApi } from "./helpers/dataApi.js";
import { createScriptedAgents, newConversation, postRun, scriptOf, startTestQueue, waitFor, type TestQueue } from "./helpers/queue.js";

let db: TestDatabase;
let api: DataApi;
let q: TestQueue | undefined;
const agents = createScriptedAgents();

beforeAll(async () => {
  db = await createTestDatabase({ migrate: true });
  api = await startDataApi(db);
});
afterAll(async () => {
  await q?.stop();
  await api?.close();
  await db?.drop();
});

it("runs at most MAX_CONCURRENT_JOBS agents at once and completes all 40 runs", async () => {
  const client = api.client();
  const conv = await newConversation(client);
  // All queued before the queue starts, so it has 40 to choose from at once.
  const runIds: string[] = [];
  for (let i = 0; i < 40; i++) runIds.push((await postRun(client, conv, scriptOf({ text: [`answer ${i}`], holdMs: 250 }))).runId);

  const warnings: Error[] = [];
  const onWarning = (w: Error) => warnings.push(w);
  process.on("warning", onWarning);
  q = await startTestQueue(db, agents.orchestrator, { env: { MAX_CONCURRENT_JOBS: "10" } });
  const statuses = await waitFor("all 40 runs to finish", async () => {
    const r = await db.pool.query<{ status: string; n: number }>("select status, count(*)::int as n from runs group by status");
    const byStatus = Object.fromEntries(r.rows.map((row) => [row.status, row.n]));
    return (byStatus.queued ?? 0) + (byStatus.running ?? 0) === 0 ? byStatus : undefined;
  }, 60_000);
  process.off("warning", onWarning);

  expect(statuses).toEqual({ succeeded: 40 });
  expect(agents.maxRunning).toBe(10);
  // Ten runs listening on graphile-worker's shared abort signal is no leak.
  expect(warnings.filter((w) => w.name === "MaxListenersExceededWarning")).toEqual([]);
  expect(agents.calls).toHaveLength(40);
  expect(new Set(agents.calls.map((c) => c.runId))).toEqual(new Set(runIds));
  const answers = await db.pool.query<{ run_id: string; content: string }>("select run_id, content from messages where role = 'assistant'");
  expect(answers.rows).toHaveLength(40);
  for (const [i, runId] of runIds.entries()) {
    expect(answers.rows.filter((m) => m.run_id === runId).map((m) => m.content)).toEqual([`answer ${i}`]);
  }
});

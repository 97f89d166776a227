/**
 * Issue 4, points 1 and 8: the message POST writes the message, its run and
 * the run's graphile-worker job together or not at all; past
 * agents.maxQueueDepth queued runs it answers 503 `overloaded` with
 * Retry-After and writes nothing. No queue runs here: jobs stay queued.
 */
import { describe, it, expect } from "vitest";
import type { TestDatabase } from "./helpers/db.js";
import { snapshotTables } from "./helpers/dataApi.js";
import { jobsOf, newConversation, postRun, runRow, useQueueFixture } from "./helpers/queue.js";
import { RUN_TASK } from "../server/queue/enqueue.js";

const jobCount = async (db: TestDatabase) =>
  (await db.pool.query<{ n: number }>("select count(*)::int as n from graphile_worker.jobs")).rows[0]?.n;

describe("enqueue (point 1)", () => {
  const fx = useQueueFixture();

  it("a message POST stores the message, a queued run and the run's job keyed by the run id", async () => {
    const client = fx.api.client();
    const conv = await newConversation(client);
    const { runId, messageId, status } = await postRun(client, conv, "hello");
    expect(status).toBe("queued");
    const run = await runRow(fx.db, runId);
    expect(run).toMatchObject({ status: "queued", attempt: 0, failures: 0 });
    const jobs = await fx.db.pool.query<{ task_identifier: string; payload: unknown; locked_at: Date | null }>(
      `select t.identifier as task_identifier, j.payload, j.locked_at
       from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id where j.key = $1`,
      [runId],
    );
    expect(jobs.rows).toEqual([{ task_identifier: RUN_TASK, payload: { runId }, locked_at: null }]);
    const msg = await fx.db.pool.query("select role, content from messages where id = $1", [messageId]);
    expect(msg.rows).toEqual([{ role: "user", content: "hello" }]);
  });

  it("when the job cannot be added, neither the message nor the run is stored", async () => {
    const client = fx.api.client();
    const conv = await newConversation(client);
    await postRun(client, conv, "before");
    const before = await snapshotTables(fx.db);
    const jobsBefore = await jobCount(fx.db);
    await fx.db.pool.query(`
      create function test_reject_job() returns trigger language plpgsql as $$
      begin raise exception 'job insert refused by the test'; end $$;
      create trigger reject_job before insert on graphile_worker._private_jobs
        for each row execute function test_reject_job();`);
    try {
      const res = await client.post(`/api/conversations/${conv}/messages`, { content: "lost" });
      expect(res.status).toBe(500);
      expect(res.body.error.code).toBe("internal");
    } finally {
      await fx.db.pool.query("drop trigger reject_job on graphile_worker._private_jobs; drop function test_reject_job()");
    }
    expect(await snapshotTables(fx.db)).toEqual(before);
    expect(await jobCount(fx.db)).toBe(jobsBefore);
    // And the path works again once the job can be added.
    const { runId } = await postRun(client, conv, "after");
    expect(await jobsOf(fx.db, runId)).toHaveLength(1);
  });
});

describe("load shedding (point 8)", () => {
  const fx = useQueueFixture({ api: { env: { MAX_QUEUE_DEPTH: "3" } } });

  it("past MAX_QUEUE_DEPTH queued runs a POST answers 503 overloaded with Retry-After and stores nothing", async () => {
    const client = fx.api.client();
    const conv = await newConversation(client);
    const runs: string[] = [];
    for (let i = 0; i < 3; i++) runs.push((await postRun(client, conv, `m${i}`)).runId);

    const before = await snapshotTables(fx.db);
    const jobsBefore = await jobCount(fx.db);
    const res = await client.post(`/api/conversations/${conv}/messages`, { content: "one too many" });
    expect(res.status).toBe(503);
    expect(res.body.error).toEqual({ code: "overloaded", message: "Too many runs are waiting; try again shortly" });
    expect(Number(res.headers["retry-after"])).toBeGreaterThan(0);
    expect(await snapshotTables(fx.db)).toEqual(before);
    expect(await jobCount(fx.db)).toBe(jobsBefore);

    // Any user is refused: the depth is the whole queue's.
    const other = fx.api.client();
    const otherConv = await newConversation(other);
    expect((await other.post(`/api/conversations/${otherConv}/messages`, { content: "me too" })).status).toBe(503);

    // Once a queued run leaves the queue, messages are taken again.
    expect((await client.post(`/api/runs/${runs[0]}/cancel`)).status).toBe(200);
    expect((await client.post(`/api/conversations/${conv}/messages`, { content: "now" })).status).toBe(202);
    expect((await client.post(`/api/conversations/${conv}/messages`, { content: "full again" })).status).toBe(503);
  });
});

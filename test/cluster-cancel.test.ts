/**
 * Issue 4, point 4 across instances: a run executes on instance B, the cancel
 * is posted to instance A. B's run must stop within 1 s (the fake provider
 * sees the client go away), end `cancelled` with a `cancelled` event and no
 * assistant message. Two real server processes on one PostgreSQL; only
 * processes spawned here are signalled, by PID.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { startFakeLlm, type FakeLlm } from "./helpers/fakeLlm.js";
import { createCluster, scriptByContent, slowReply, tail, type Cluster } from "./helpers/cluster.js";
import { Client } from "./helpers/dataApi.js";
import { sleep } from "./fixtures/process.js";

let db: TestDatabase;
let llm: FakeLlm;
let cluster: Cluster;
let script: ReturnType<typeof scriptByContent>;

beforeAll(async () => {
  [db, llm] = await Promise.all([createTestDatabase({ migrate: true }), startFakeLlm()]);
  script = scriptByContent(llm);
  cluster = createCluster({ db, llm });
  await Promise.all([cluster.spawn(), cluster.spawn()]);
});
afterAll(async () => {
  await cluster?.stopAll();
  await llm?.close();
  await db?.drop();
});

describe("cancel across instances (point 4)", () => {
  it("a cancel posted to A stops the run executing on B within 1 s: cancelled, no answer", async () => {
    const content = "Recite an endless poem about the sea";
    script.plan(content, slowReply(30));
    const [first] = cluster.servers;
    if (!first) throw new Error("no instance");
    const client = await cluster.client(first);
    const { runId } = await cluster.ask(client, content);
    await cluster.waitForRun(runId, (r) => r.status === "running", 15_000);
    const until = Date.now() + 10_000;
    while (!(await cluster.events(runId)).some((e) => e.type === "text.delta") && Date.now() < until) await sleep(50);
    const index = llm.requests.findIndex((r) => JSON.stringify(r.body.messages).includes(content));
    expect(index).toBeGreaterThanOrEqual(0);

    // B runs it; the cancel goes to A with the same session.
    const b = await cluster.runnerOf(runId);
    const a = cluster.servers.find((s) => s !== b);
    if (!a) throw new Error("no second instance");
    const viaA = new Client(a.baseUrl, { ...(client.cookie ? { cookie: client.cookie } : {}) });
    const t0 = performance.now();
    const res = await viaA.post(`/api/runs/${runId}/cancel`);
    expect(res.status, res.text).toBe(200);
    expect(res.body).toMatchObject({ id: runId });

    const stoppedAfter = await Promise.race([llm.waitForDisconnect(index).then(() => performance.now() - t0), sleep(3000).then(() => Infinity)]);
    expect(stoppedAfter, tail(b)).toBeLessThan(1000);
    expect(llm.requests[index]?.disconnected).toBe(true);

    const done = await cluster.waitForRun(runId, (r) => r.status === "cancelled", 5000);
    expect(done.failures).toBe(0);
    expect(done.attempt).toBe(1);
    await b.waitForLog((l) => l.msg === "run cancelled" && l.runId === runId, 2000);
    expect(await cluster.assistantMessages(runId)).toEqual([]);
    const events = await cluster.events(runId);
    expect(events.at(-1)?.type).toBe("cancelled");
    expect(events.filter((e) => e.type === "cancelled")).toHaveLength(1);
    expect(events.some((e) => e.type === "done" || e.type === "failed")).toBe(false);

    // Idempotent, from either instance; nothing more is written.
    const again = await new Client(b.baseUrl, { ...(client.cookie ? { cookie: client.cookie } : {}) }).post(`/api/runs/${runId}/cancel`);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ id: runId, status: "cancelled" });
    await sleep(600);
    expect(await cluster.events(runId)).toEqual(events);
    expect(script.requests(content)).toBe(1);
  });
});

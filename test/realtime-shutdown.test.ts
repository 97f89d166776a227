/**
 * Issue 6, point 6, on two built server processes: SIGTERM on the instance
 * holding the socket (and running the run) refuses new upgrades with 503
 * while draining, closes its clients with 1012, and a client that reconnects
 * to the other instance resumes without losing or repeating anything, across
 * the run being handed back and started again there. Only processes spawned
 * here are signalled, by PID.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { startFakeLlm, type FakeLlm } from "./helpers/fakeLlm.js";
import { Client } from "./helpers/dataApi.js";
import { WsClient, ask, assertContiguous, assistantText, longText, openSse, rawUpgrade, spawnInstance, textOf, waitUntil, type Instance } from "./helpers/ws.js";
import type { EventFrame } from "../shared/realtime.js";

let db: TestDatabase;
let llm: FakeLlm;
const instances: Instance[] = [];

beforeAll(async () => {
  [db, llm] = await Promise.all([createTestDatabase({ migrate: true }), startFakeLlm({ apiKey: "sk-realtime-test" })]);
});
afterAll(async () => {
  await Promise.all(instances.map((i) => i.proc.stop()));
  await llm?.close();
  await db?.drop();
});

describe("shutdown", () => {
  it("SIGTERM: 503 for new upgrades, 1012 for clients, which resume on another instance without loss", async () => {
    // The first attempt is slow (A is stopped in the middle of it); the retry on B is quick and says something else.
    const first = longText(3000);
    const full = `Second attempt: ${longText(1200)}`;
    llm.script({ text: first, chunkSize: 3, delayMs: 6 });
    llm.setDefault(() => ({ text: full, chunkSize: 5, delayMs: 1 }));
    // A: holds the socket and runs the run; its grace for running runs is short, so the run is handed back.
    const a = await spawnInstance(db, llm.url, { SHUTDOWN_DELAY_MS: "700", SHUTDOWN_TIMEOUT_MS: "4000" });
    instances.push(a);
    const c = new Client(a.baseUrl);
    await c.userId();
    const runId = await ask(c, "keep talking", "assistant");
    const ws = await WsClient.open(a.wsUrl, { cookie: c.cookie });
    ws.send({ type: "subscribe", runId });
    await ws.waitFor((f) => f.type === "event" && f.event === "text.delta", 15_000);
    // B joins only now, so the run is certainly A's.
    const b = await spawnInstance(db, llm.url);
    instances.push(b);
    const runner = (await db.pool.query<{ instance_id: string }>("select instance_id from runs where id = $1", [runId])).rows[0]?.instance_id;
    expect(runner).toContain(`-${a.proc.pid}-`);
    expect((await db.pool.query<{ status: string }>("select status from runs where id = $1", [runId])).rows[0]?.status).toBe("running");

    const sse = openSse(a.baseUrl, `/api/runs/${runId}/events`, { cookie: c.cookie ?? "" });
    await sse.waitFor((e) => e.data !== undefined);

    a.proc.kill("SIGTERM");
    await a.proc.waitForLog((l) => l.msg === "shutting down", 5000);
    const refused = await rawUpgrade(a.wsUrl, { cookie: c.cookie });
    expect(refused.status).toBe(503);
    expect(refused.headers["retry-after"]).toBeDefined();
    const closed = await ws.closed;
    expect(closed.code).toBe(1012);
    const shown: EventFrame[] = ws.events(runId);
    expect(shown.at(-1)?.event).not.toBe("done");
    // SSE streams end at the same stage (EventSource reconnects with Last-Event-ID), before the process exits.
    const sseEnded = await Promise.race([sse.ended.then(() => true), a.proc.exited.then(() => false)]);
    expect(sseEnded).toBe(true);
    expect(sse.frames().at(-1)?.event).not.toBe("done");
    assertContiguous(sse.frames());

    const again = await WsClient.open(b.wsUrl, { cookie: c.cookie });
    again.send({ type: "subscribe", runId, after: shown.at(-1)?.seq ?? 0 });
    await again.finished(runId, 30_000);
    const all = [...shown, ...again.events(runId)];
    assertContiguous(all);
    // A handed the run back; B ran it again from the start.
    expect(all.some((e) => e.event === "status" && (e.data as { reason?: string }).reason === "interrupted")).toBe(true);
    const reset = all.findIndex((e) => e.event === "reset");
    expect(all[reset]?.data).toEqual({ attempt: 2 });
    expect(first.startsWith(textOf(all.slice(0, reset)))).toBe(true);
    expect(all.at(-1)?.event).toBe("done");
    expect(textOf(all)).toBe(full);
    expect(await assistantText(db, runId)).toBe(full);
    expect((await a.proc.exited).code).toBe(0);
    await again.close();
    await waitUntil(() => again.closedNow);
  });
});

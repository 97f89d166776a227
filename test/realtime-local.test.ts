/**
 * Issue 7's first token, on the server: events a run executing on this
 * instance stores reach this instance's subscribers as soon as the write
 * commits (hub.publish), not after PostgreSQL's NOTIFY comes back to the
 * LISTEN connection and the rows are read again. Measured in the first-token
 * bench, that round trip was 17–42 ms on a busy 2-core machine.
 *
 * The hub here has no LISTEN and a 10-minute poll, so the only way an event
 * can reach a subscriber after it subscribed is the write's own publish.
 * Frames are the ones a read from the table makes: a later subscriber
 * replaying from the table sees the same.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { startRealtimeStack, WsClient, text, textOf, type RealtimeStack } from "./helpers/ws.js";
import { appendStoredEvents, createEventWriter, type StoredEventRow } from "../server/queue/runEvents.js";
import { claimRun } from "../server/queue/runStatements.js";

let db: TestDatabase;
let stack: RealtimeStack;

beforeAll(async () => {
  db = await createTestDatabase({ migrate: true });
  stack = await startRealtimeStack(db, { listen: false, hub: { pollMs: 600_000, safetyPollMs: 600_000 } });
});
afterAll(async () => {
  await stack?.close();
  await db?.drop();
});

const seqs = (frames: { seq: number }[]) => frames.map((f) => f.seq);

/** A subscriber of `runId` that has seen `subscribed` (so the feed exists and its first read is done). */
async function subscriber(cookie: string | undefined, runId: string) {
  const ws = await WsClient.open(stack.wsUrl, { cookie });
  ws.send({ type: "subscribe", runId });
  await ws.waitFor((f) => f.type === "subscribed" && f.runId === runId);
  return ws;
}

/** A subscriber that comes after `live` replays the run from the table: it must get the very frames `live` got. Closes both. */
async function expectSameReplay(cookie: string | undefined, runId: string, live: WsClient) {
  const last = live.events(runId).at(-1)?.seq ?? 0;
  const late = await subscriber(cookie, runId);
  await late.waitFor((f) => f.type === "event" && f.seq === last, 3000);
  expect(late.events(runId)).toEqual(live.events(runId));
  await Promise.all([live.close(), late.close()]);
}

/** The executor's writer for attempt 1 of `runId`, publishing to the hub as services.ts wires it. */
async function writerFor(runId: string, onStored: (rows: StoredEventRow[]) => void = (rows) => stack.hub.publish(rows)) {
  await db.pool.query("update runs set attempt = 1 where id = $1", [runId]);
  return createEventWriter(db.pool, runId, 1, { onStored });
}

describe("events stored on this instance", () => {
  it("reach its subscribers when the write commits, with the frames a read of the table makes", async () => {
    const c = await stack.user();
    const run = await stack.newRun(c);
    const ws = await subscriber(c.cookie, run);
    const writer = await writerFor(run);
    writer.event("status", { status: "running", attempt: 1, of: 4 });
    writer.delta("hel");
    await writer.flush();
    writer.delta("lo");
    await writer.flush();
    // No NOTIFY and no poll can bring these: only the writes' publish.
    await ws.waitFor((f) => f.type === "event" && f.seq === 3, 3000);
    expect(seqs(ws.events(run))).toEqual([1, 2, 3]);
    expect(textOf(ws.events(run))).toBe("hello");

    // A subscriber that comes later replays them from the table: the same frames.
    await expectSameReplay(c.cookie, run, ws);
  });

  it("the claim's own events go the same way", async () => {
    const c = await stack.user();
    const run = await stack.newRun(c);
    const ws = await subscriber(c.cookie, run);
    const claim = await claimRun(db.pool, run, stack.instanceId, { maxAttempts: 4, historyLimit: 20, prepared: false });
    expect(claim?.events.map((e) => [e.run_id, e.seq, e.attempt, e.type])).toEqual([[run, 1, 1, "status"]]);
    stack.hub.publish(claim?.events ?? []);
    const ev = await ws.waitFor((f) => f.type === "event" && f.seq === 1, 3000);
    expect(ev).toEqual({ type: "event", runId: run, seq: 1, attempt: 1, event: "status", data: { status: "running", attempt: 1, of: 4 } });
    await expectSameReplay(c.cookie, run, ws);
  });

  it("after a gap the feed reads the table: every event once, in order", async () => {
    const c = await stack.user();
    const run = await stack.newRun(c);
    const ws = await subscriber(c.cookie, run);
    // Stored without a publish (as by another instance, whose NOTIFY this hub does not hear).
    await stack.append(run, [text("a"), text("b")]);
    // The next write follows seq 2, which the feed has not delivered: its publish makes the feed read 1–3.
    const published: StoredEventRow[][] = [];
    const writer = await writerFor(run, (rows) => {
      published.push(rows);
      stack.hub.publish(rows);
    });
    writer.delta("c");
    await writer.flush();
    await ws.waitFor((f) => f.type === "event" && f.seq === 3, 3000);
    // The same rows again (a repeated publish) deliver nothing twice.
    for (const rows of published) stack.hub.publish(rows);
    writer.delta("d");
    await writer.flush();
    await ws.waitFor((f) => f.type === "event" && f.seq === 4, 3000);
    expect(seqs(ws.events(run))).toEqual([1, 2, 3, 4]);
    expect(textOf(ws.events(run))).toBe("abcd");
    await ws.close();
  });

  it("a superseded attempt's write publishes nothing", async () => {
    const c = await stack.user();
    const run = await stack.newRun(c);
    await db.pool.query("update runs set attempt = 2 where id = $1", [run]);
    await expect(appendStoredEvents(db.pool, run, 1, [text("stale")])).rejects.toThrow(/superseded/);
    const rows = await appendStoredEvents(db.pool, run, 2, [text("x"), text("y")]);
    expect(rows.map((r) => [r.seq, r.attempt, r.type, JSON.parse(r.data)])).toEqual([
      [1, 2, "text.delta", { text: "x" }],
      [2, 2, "text.delta", { text: "y" }],
    ]);
  });
});

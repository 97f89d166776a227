/**
 * Issue 6, points 3, 4, 5, 8 and 9, in process: replay then live with no seq
 * twice and none missed (also when an event lands during the replay), the
 * polling fallback and the LISTEN reconnect, slow clients closed with 1013
 * without slowing anyone else, the SSE endpoint, and the delivery metrics.
 * Events are written as the queue writes them (appendEvents).
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { randomUUID } from "node:crypto";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { startRealtimeStack, WsClient, openSse, text, textOf, metricValue, waitUntil, type RealtimeStack } from "./helpers/ws.js";
import type { EventFrame } from "../shared/realtime.js";
import { parseRunNotification } from "../server/realtime/hub.js";

let db: TestDatabase;
let stack: RealtimeStack;

beforeAll(async () => {
  db = await createTestDatabase({ migrate: true });
  stack = await startRealtimeStack(db, { sse: { heartbeatMs: 100 } });
});
afterAll(async () => {
  await stack?.close();
  await db?.drop();
});

const seqs = (events: EventFrame[]) => events.map((e) => e.seq);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe("replay and live", () => {
  it("replays the stored events after `after`, then goes live, then ends after the terminal event", async () => {
    const c = await stack.user();
    const run = await stack.newRun(c);
    await stack.append(run, [{ type: "status", data: { status: "running" } }, text("a"), text("b"), text("c")]);
    const ws = await WsClient.open(stack.wsUrl, { cookie: c.cookie });
    ws.send({ type: "subscribe", runId: run, after: 2 });
    const sub = await ws.waitFor((f) => f.type === "subscribed");
    expect(sub).toEqual({ type: "subscribed", runId: run, after: 2, lastSeq: 4, status: "queued" });
    await ws.waitFor((f) => f.type === "event" && f.seq === 4);
    await stack.append(run, [text("d")]);
    await stack.append(run, [text("e"), { type: "done", data: { messageId: randomUUID() } }]);
    await ws.finished(run);
    expect(seqs(ws.events(run))).toEqual([3, 4, 5, 6, 7]);
    expect(textOf(ws.events(run))).toBe("bcde");
    // The subscription is over: later rows (none should exist) are not sent.
    expect(ws.frames[0]?.type).toBe("subscribed");
    expect(ws.invalid).toEqual([]);
    await ws.close();
  });

  it("sends the frame shape of the protocol", async () => {
    const c = await stack.user();
    const run = await stack.newRun(c);
    await stack.append(run, [{ type: "tool.call", data: { id: "t1", name: "math", args: { expression: "1+1" } } }], 2);
    const ws = await WsClient.open(stack.wsUrl, { cookie: c.cookie });
    ws.send({ type: "subscribe", runId: run });
    const ev = await ws.waitFor((f) => f.type === "event");
    expect(ev).toEqual({ type: "event", runId: run, seq: 1, attempt: 2, event: "tool.call", data: { id: "t1", name: "math", args: { expression: "1+1" } } });
    await ws.close();
  });

  it("subscribing to a finished run replays it and ends; after its last seq it ends at once", async () => {
    const c = await stack.user();
    const run = await stack.newRun(c);
    await stack.append(run, [text("x"), { type: "failed", data: { code: "agent_error", message: "boom" } }]);
    await stack.setStatus(run, "failed");
    const ws = await WsClient.open(stack.wsUrl, { cookie: c.cookie });
    ws.send({ type: "subscribe", runId: run });
    await ws.finished(run);
    expect(seqs(ws.events(run))).toEqual([1, 2]);
    const n = ws.frames.length;
    ws.send({ type: "subscribe", runId: run, after: 2 });
    await ws.waitFor((f) => f.type === "unsubscribed" && f.reason === "finished", 5000, n);
    expect(ws.events(run)).toHaveLength(2);
    await ws.close();
  });

  it("delivers an event stored while the replay is being sent exactly once (live is registered first)", async () => {
    let runId = "";
    let injected = 0;
    const hooked = await startRealtimeStack(db, {
      ws: {
        afterReplayPage: async () => {
          // The watcher's replay is the first call; the subscription under test makes the second.
          if (injected++ !== 1) return;
          // Stored after the replay read, before the stream looks at live events.
          await hooked.append(runId, [text("during-replay")]);
          await new Promise((r) => setTimeout(r, 150));
        },
      },
    });
    try {
      const c = await hooked.user();
      runId = await hooked.newRun(c);
      await hooked.append(runId, [text("one"), text("two")]);
      // Someone already watches the run live: its feed exists and moves on during the replay.
      const watcher = await WsClient.open(hooked.wsUrl, { cookie: c.cookie });
      watcher.send({ type: "subscribe", runId, after: 2 });
      await watcher.waitFor((f) => f.type === "subscribed");
      const ws = await WsClient.open(hooked.wsUrl, { cookie: c.cookie });
      ws.send({ type: "subscribe", runId });
      await ws.waitFor((f) => f.type === "event" && f.seq === 3);
      await hooked.append(runId, [text("four")]);
      await ws.waitFor((f) => f.type === "event" && f.seq === 4);
      await new Promise((r) => setTimeout(r, 100));
      expect(seqs(ws.events(runId))).toEqual([1, 2, 3, 4]);
      expect(textOf(ws.events(runId))).toBe("onetwoduring-replayfour");
      expect(seqs(watcher.events(runId))).toEqual([3, 4]);
      await Promise.all([ws.close(), watcher.close()]);
    } finally {
      await hooked.close();
    }
  });

  it("keeps order and uniqueness with many writers, many subscribers and random resumes", async () => {
    const c = await stack.user();
    const run = await stack.newRun(c);
    const writes = (async () => {
      for (let i = 0; i < 60; i++) {
        await stack.append(run, [text(`${i},`)]);
        if (i % 7 === 0) await new Promise((r) => setTimeout(r, 5));
      }
      await stack.append(run, [{ type: "done", data: { messageId: randomUUID() } }]);
    })();
    const clients = await Promise.all(
      [0, 3, 10, 25].map(async (after) => {
        const ws = await WsClient.open(stack.wsUrl, { cookie: c.cookie });
        ws.send({ type: "subscribe", runId: run, after });
        return { ws, after };
      }),
    );
    await writes;
    for (const { ws, after } of clients) {
      await ws.finished(run);
      const got = seqs(ws.events(run));
      expect(got).toEqual(range(Math.min(after, 61) + 1, 61));
      await ws.close();
    }
  });
});

describe("without LISTEN", () => {
  it("polls run_events and delivers live events", async () => {
    const polled = await startRealtimeStack(db, { listen: false, hub: { pollMs: 50 } });
    try {
      const c = await polled.user();
      const run = await polled.newRun(c);
      const ws = await WsClient.open(polled.wsUrl, { cookie: c.cookie });
      ws.send({ type: "subscribe", runId: run });
      await ws.waitFor((f) => f.type === "subscribed");
      for (const t of ["p", "o", "l", "l"]) await polled.append(run, [text(t)]);
      await polled.append(run, [{ type: "done", data: { messageId: randomUUID() } }]);
      await ws.finished(run, 5000);
      expect(textOf(ws.events(run))).toBe("poll");
      expect(seqs(ws.events(run))).toEqual([1, 2, 3, 4, 5]);
      await ws.close();
    } finally {
      await polled.close();
    }
  });

  it("catches up after the LISTEN connection is lost", async () => {
    // A safety poll far away: only the reconnect catch-up (or the poll while disconnected) can deliver.
    const l = await startRealtimeStack(db, { hub: { safetyPollMs: 60_000, pollMs: 50 } });
    try {
      const c = await l.user();
      const run = await l.newRun(c);
      const ws = await WsClient.open(l.wsUrl, { cookie: c.cookie });
      ws.send({ type: "subscribe", runId: run });
      await ws.waitFor((f) => f.type === "subscribed");
      await l.append(run, [text("before ")]);
      await ws.waitFor((f) => f.type === "event" && f.seq === 1);
      await l.listener?.dropConnection();
      await l.append(run, [text("while down ")]);
      await waitUntil(() => l.listener?.connected === true, 10_000, "LISTEN reconnect");
      await l.append(run, [text("after")]);
      await ws.waitFor((f) => f.type === "event" && f.seq === 3);
      expect(textOf(ws.events(run))).toBe("before while down after");
      await ws.close();
    } finally {
      await l.close();
    }
  });
});

describe("slow clients", () => {
  it("closes a client that stops reading with 1013, without slowing the writer or another client; it resumes with after", async () => {
    const slow = await startRealtimeStack(db, { ws: { maxBufferedBytes: 1024 * 1024, closeTimeoutMs: 20_000 } });
    try {
      const c = await slow.user();
      const run = await slow.newRun(c);
      const reader = await WsClient.open(slow.wsUrl, { cookie: c.cookie });
      const stalled = await WsClient.open(slow.wsUrl, { cookie: c.cookie });
      for (const ws of [reader, stalled]) {
        ws.send({ type: "subscribe", runId: run });
        await ws.waitFor((f) => f.type === "subscribed");
      }
      // The stalled client stops reading its socket: the server's unsent buffer grows.
      stalled.socket.pause();
      const chunk = "x".repeat(16 * 1024);
      const started = performance.now();
      const N = 600; // ~10 MB: more than the kernel buffers on both sides
      for (let i = 0; i < N; i++) await slow.append(run, [text(chunk)]);
      await slow.append(run, [{ type: "done", data: { messageId: randomUUID() } }]);
      const writeMs = performance.now() - started;
      await reader.finished(run, 30_000);
      const readerDoneMs = performance.now() - started;
      expect(seqs(reader.events(run))).toEqual(range(1, N + 1));
      await waitUntil(async () => metricValue(await slow.metricsText(), "ws_closed_slow_total") === 1, 10_000, "slow close");
      // Reading again: what was buffered, then the close frame with 1013.
      stalled.socket.resume();
      const closed = await stalled.closed;
      expect(closed.code).toBe(1013);
      const seen = stalled.events(run);
      expect(seen.length).toBeLessThan(N + 1);
      expect(seqs(seen)).toEqual(range(1, seen.length));
      const resumed = await WsClient.open(slow.wsUrl, { cookie: c.cookie });
      resumed.send({ type: "subscribe", runId: run, after: seen.at(-1)?.seq ?? 0 });
      await resumed.finished(run, 20_000);
      expect(seqs([...seen, ...resumed.events(run)])).toEqual(range(1, N + 1));
      expect(textOf([...seen, ...resumed.events(run)])).toBe(chunk.repeat(N));
      // Nobody waited for the stalled socket: the reader finished right behind the writer.
      expect(readerDoneMs - writeMs).toBeLessThan(2000);
      await Promise.all([reader.close(), resumed.close()]);
    } finally {
      await slow.close();
    }
  });
});

describe("SSE", () => {
  it("serves the events with id = seq, a heartbeat comment, and ends after the terminal event", async () => {
    const c = await stack.user();
    const run = await stack.newRun(c);
    await stack.append(run, [text("s"), text("s")]);
    const sse = openSse(stack.baseUrl, `/api/runs/${run}/events`, { cookie: c.cookie ?? "" });
    await sse.waitFor((e) => e.id === "2");
    expect(sse.status).toBe(200);
    expect(sse.headers["content-type"]).toMatch(/^text\/event-stream/);
    expect(sse.headers["content-encoding"]).toBeUndefined();
    await sse.waitFor((e) => e.comment === "heartbeat");
    await stack.append(run, [text("e"), { type: "done", data: { messageId: randomUUID() } }]);
    await sse.ended;
    const frames = sse.frames();
    expect(frames.map((f) => f.seq)).toEqual([1, 2, 3, 4]);
    expect(sse.events.filter((e) => e.data !== undefined).map((e) => e.id)).toEqual(["1", "2", "3", "4"]);
    expect(frames[0]).toEqual({ type: "event", runId: run, seq: 1, attempt: 1, event: "text.delta", data: { text: "s" } });
    expect(textOf(frames)).toBe("sse");
  });

  it("resumes after Last-Event-ID (or ?after=) and answers 204 when nothing is left of a finished run", async () => {
    const c = await stack.user();
    const run = await stack.newRun(c);
    await stack.append(run, [text("1"), text("2"), text("3"), { type: "done", data: { messageId: randomUUID() } }]);
    await stack.setStatus(run, "succeeded");
    const resumed = openSse(stack.baseUrl, `/api/runs/${run}/events`, { cookie: c.cookie ?? "", "last-event-id": "2" });
    await resumed.ended;
    expect(resumed.frames().map((f) => f.seq)).toEqual([3, 4]);
    const byQuery = openSse(stack.baseUrl, `/api/runs/${run}/events?after=3`, { cookie: c.cookie ?? "" });
    await byQuery.ended;
    expect(byQuery.frames().map((f) => f.seq)).toEqual([4]);
    const done = openSse(stack.baseUrl, `/api/runs/${run}/events`, { cookie: c.cookie ?? "", "last-event-id": "4" });
    await done.ended;
    expect(done.status).toBe(204);
    const bad = openSse(stack.baseUrl, `/api/runs/${run}/events`, { cookie: c.cookie ?? "", "last-event-id": "x1" });
    await bad.ended;
    expect(bad.status).toBe(400);
  });

  it("is scoped to the owner: 404 for another user's run, an unknown id or a bad id", async () => {
    const alice = await stack.user();
    const bob = await stack.user();
    const run = await stack.newRun(alice);
    await stack.append(run, [text("private")]);
    for (const p of [`/api/runs/${run}/events`, `/api/runs/${randomUUID()}/events`, "/api/runs/nope/events"]) {
      const r = await bob.get(p);
      expect(r.status, p).toBe(404);
      expect(r.text).not.toContain("private");
    }
  });
});

describe("metrics", () => {
  it("counts frames sent and observes delivery time, labelled same or other instance", async () => {
    const c = await stack.user();
    const mine = await stack.newRun(c);
    await stack.setStatus(mine, "running", stack.instanceId);
    const theirs = await stack.newRun(c);
    await stack.setStatus(theirs, "running", "another-instance");
    const ws = await WsClient.open(stack.wsUrl, { cookie: c.cookie });
    for (const run of [mine, theirs]) {
      ws.send({ type: "subscribe", runId: run });
      await ws.waitFor((f) => f.type === "subscribed" && f.runId === run);
      // Once a first event is through, the replay is over: what follows is live.
      await stack.append(run, [{ type: "status", data: { status: "running" } }]);
      await ws.waitFor((f) => f.type === "event" && f.runId === run && f.seq === 1);
    }
    const before = await stack.metricsText();
    const sent0 = metricValue(before, "ws_messages_sent_total");
    const frames0 = ws.frames.length;
    const same0 = metricValue(before, "run_event_delivery_seconds_count", { instance: "same" }) || 0;
    const other0 = metricValue(before, "run_event_delivery_seconds_count", { instance: "other" }) || 0;
    const sameFast0 = metricValue(before, "run_event_delivery_seconds_bucket", { instance: "same", le: "1" }) || 0;
    await stack.append(mine, [text("a"), text("b")]);
    await stack.append(theirs, [text("c")]);
    await ws.waitFor((f) => f.type === "event" && f.runId === mine && f.seq === 3);
    await ws.waitFor((f) => f.type === "event" && f.runId === theirs && f.seq === 2);
    const after = await stack.metricsText();
    expect(metricValue(after, "ws_messages_sent_total") - sent0).toBe(ws.frames.length - frames0);
    expect(metricValue(after, "run_event_delivery_seconds_count", { instance: "same" }) - same0).toBe(2);
    expect(metricValue(after, "run_event_delivery_seconds_count", { instance: "other" }) - other0).toBe(1);
    // Stored to sent, here on one machine: well under a second.
    expect(metricValue(after, "run_event_delivery_seconds_bucket", { instance: "same", le: "1" }) - sameFast0).toBe(2);
    expect(after).toMatch(/^# TYPE ws_closed_slow_total counter/m);
    expect(after).toMatch(/^# TYPE ws_connections gauge/m);
    await ws.close();
  });
});

describe("notifications", () => {
  it("parses `<runId>:<seq>` and ignores anything else", () => {
    const id = randomUUID();
    expect(parseRunNotification(`${id}:12`)).toEqual({ runId: id, seq: 12 });
    expect(parseRunNotification(`${id.toUpperCase()}:3:extra`)).toEqual({ runId: id, seq: 3 });
    for (const bad of ["", id, `${id}:`, `${id}:x`, ":5"]) expect(parseRunNotification(bad), bad).toBeNull();
  });
});

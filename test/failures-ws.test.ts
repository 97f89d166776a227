/**
 * Issue 8, point 2, "a 1 MB frame", in process (the realtime stack of
 * realtime-ws.test.ts, which tests the 64 KB limit at its edge). A 1 MB
 * message, sent whole, in binary, or split into 16 KB fragments none of
 * which is over the limit alone, closes its connection with 1009 without an
 * answer frame; a client subscribed on another connection goes on receiving
 * its run, and the connection gauge comes back down.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { randomUUID } from "node:crypto";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { startRealtimeStack, WsClient, metricValue, text, textOf, waitUntil, type RealtimeStack } from "./helpers/ws.js";

const MB = 1024 * 1024;

let db: TestDatabase;
let stack: RealtimeStack;

beforeAll(async () => {
  db = await createTestDatabase({ migrate: true });
  stack = await startRealtimeStack(db);
});
afterAll(async () => {
  await stack?.close();
  await db?.drop();
});

describe("a 1 MB frame", () => {
  it("closes the sender with 1009 (whole, binary or in fragments), answers nothing, and leaves other clients streaming", async () => {
    const c = await stack.user();
    const run = await stack.newRun(c);
    const bystander = await WsClient.open(stack.wsUrl, { cookie: c.cookie });
    bystander.send({ type: "subscribe", runId: run });
    await bystander.waitFor((f) => f.type === "subscribed");
    await stack.append(run, [text("before ")]);
    await bystander.waitFor((f) => f.type === "event" && f.seq === 1);

    // A valid subscribe message padded to 1 MB: only its size is wrong.
    const big = JSON.stringify({ type: "subscribe", runId: run, pad: "x".repeat(MB) });
    const whole = await WsClient.open(stack.wsUrl, { cookie: c.cookie });
    whole.send(big);
    expect((await whole.closed).code).toBe(1009);
    expect(whole.frames).toEqual([]);

    const binary = await WsClient.open(stack.wsUrl, { cookie: c.cookie });
    binary.ws.send(Buffer.alloc(MB, 0x61), { binary: true });
    expect((await binary.closed).code).toBe(1009);
    expect(binary.frames).toEqual([]);

    // 64 fragments of 16 KB: each frame is small, the message is not.
    const fragmented = await WsClient.open(stack.wsUrl, { cookie: c.cookie });
    const piece = 16 * 1024;
    for (let i = 0; i < MB / piece && !fragmented.closedNow; i++) {
      fragmented.ws.send(big.slice(i * piece, (i + 1) * piece), { fin: false }, () => undefined);
    }
    expect((await fragmented.closed).code).toBe(1009);
    expect(fragmented.frames).toEqual([]);

    // The bystander never noticed.
    expect(bystander.closedNow).toBe(false);
    await stack.append(run, [text("after")]);
    await stack.append(run, [{ type: "done", data: { messageId: randomUUID() } }]);
    await bystander.finished(run, 10_000);
    expect(textOf(bystander.events(run))).toBe("before after");
    await waitUntil(async () => metricValue(await stack.metricsText(), "ws_connections") === 1, 5000, "ws_connections back to 1");
    await bystander.close();
    await waitUntil(async () => metricValue(await stack.metricsText(), "ws_connections") === 0, 5000, "ws_connections back to 0");
  });
});

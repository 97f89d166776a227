/**
 * Issue 6, points 1 and 2, in process: the WebSocket upgrade (path, session
 * or bearer, Origin, no user created), frame limits (64 KB, bad frames,
 * rate, subscriptions), the heartbeat, and subscriptions scoped to the
 * caller's own runs.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { randomUUID } from "node:crypto";
import pg from "pg";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { createJwt } from "../server/auth/jwt.js";
import { createSessionCodec } from "../server/auth/session.js";
import { startRealtimeStack, WsClient, rawUpgrade, text, waitUntil, metricValue, TEST_JWT_SECRET, TEST_SESSION_SECRET, type RealtimeStack } from "./helpers/ws.js";

let db: TestDatabase;
let stack: RealtimeStack;
const userCount = async () => Number((await db.pool.query<{ n: string }>("select count(*) as n from users")).rows[0]?.n);

beforeAll(async () => {
  db = await createTestDatabase({ migrate: true });
  stack = await startRealtimeStack(db, {
    env: { CORS_ORIGINS: "https://app.example.com" },
    ws: { maxSubscriptions: 3 },
  });
});
afterAll(async () => {
  await stack?.close();
  await db?.drop();
});

describe("upgrade", () => {
  it("accepts /ws with the session cookie, with permessage-deflate off even when offered", async () => {
    const c = await stack.user();
    const r = await rawUpgrade(stack.wsUrl, { cookie: c.cookie, headers: { "sec-websocket-extensions": "permessage-deflate; client_max_window_bits" } });
    expect(r.status).toBe(101);
    expect(r.headers["sec-websocket-extensions"]).toBeUndefined();
    const ws = await WsClient.open(stack.wsUrl, { cookie: c.cookie, perMessageDeflate: true });
    expect(ws.ws.extensions).toBe("");
    await ws.close();
  });

  it("refuses other paths with 404", async () => {
    const c = await stack.user();
    for (const p of ["/", "/wss", "/ws/x", "/api/ws"]) {
      const r = await rawUpgrade(stack.baseUrl.replace(/^http/, "ws") + p, { cookie: c.cookie });
      expect(r.status, p).toBe(404);
    }
    // The query string does not change the path.
    expect((await rawUpgrade(`${stack.wsUrl}?x=1`, { cookie: c.cookie })).status).toBe(101);
  });

  it("refuses a request without a valid session with 401 before the handshake, and creates no user", async () => {
    const c = await stack.user();
    const before = await userCount();
    const tampered = (c.cookie ?? "").replace(/.$/, (ch) => (ch === "A" ? "B" : "A"));
    // Validly signed, but for a user that does not exist.
    const noUser = `esa_sid=${createSessionCodec(TEST_SESSION_SECRET).sign(randomUUID(), Math.floor(Date.now() / 1000) + 3600)}`;
    for (const opts of [{}, { cookie: tampered }, { cookie: noUser }, { bearer: "not-a-token" }, { headers: { authorization: "Basic eDp5" } }]) {
      const r = await rawUpgrade(stack.wsUrl, opts);
      expect(r.status, JSON.stringify(opts)).toBe(401);
      expect(JSON.parse(r.body)).toMatchObject({ error: { code: "unauthorized" } });
      expect(r.headers["set-cookie"]).toBeUndefined();
    }
    expect(await userCount()).toBe(before);
  });

  it("accepts a bearer token without creating its user", async () => {
    const before = await userCount();
    const token = await createJwt(TEST_JWT_SECRET).sign(randomUUID(), 60);
    const r = await rawUpgrade(stack.wsUrl, { bearer: token });
    expect(r.status).toBe(101);
    const expired = await createJwt(TEST_JWT_SECRET).sign(randomUUID(), -10);
    expect((await rawUpgrade(stack.wsUrl, { bearer: expired })).status).toBe(401);
    const otherKey = await createJwt("another-secret-0123456789abcdefghijklmnopqrstuv").sign(randomUUID(), 60);
    expect((await rawUpgrade(stack.wsUrl, { bearer: otherKey })).status).toBe(401);
    expect(await userCount()).toBe(before);
  });

  it("accepts the own host and CORS_ORIGINS as Origin; refuses a cross-site one with 403 before the handshake", async () => {
    const c = await stack.user();
    const host = new URL(stack.baseUrl).host;
    expect((await rawUpgrade(stack.wsUrl, { cookie: c.cookie, origin: `http://${host}` })).status).toBe(101);
    expect((await rawUpgrade(stack.wsUrl, { cookie: c.cookie, origin: `https://${host}` })).status).toBe(101);
    expect((await rawUpgrade(stack.wsUrl, { cookie: c.cookie, origin: "https://app.example.com" })).status).toBe(101);
    for (const origin of ["https://evil.example.com", "null", `http://${host}.evil.com`, "https://app.example.com:8443"]) {
      const r = await rawUpgrade(stack.wsUrl, { cookie: c.cookie, origin });
      expect(r.status, origin).toBe(403);
      expect(JSON.parse(r.body)).toMatchObject({ error: { code: "forbidden" } });
    }
    // Origin is checked before the session: no session lookup for a cross-site page.
    expect((await rawUpgrade(stack.wsUrl, { origin: "https://evil.example.com" })).status).toBe(403);
  });
});

describe("frames", () => {
  it("closes with 1009 on a frame above 64 KB; 64 KB itself is read (and refused as bad JSON)", async () => {
    const c = await stack.user();
    const ok = await WsClient.open(stack.wsUrl, { cookie: c.cookie });
    ok.send("x".repeat(64 * 1024));
    await ok.waitFor((f) => f.type === "error" && f.code === "bad_request");
    expect(ok.closedNow).toBe(false);
    await ok.close();

    const big = await WsClient.open(stack.wsUrl, { cookie: c.cookie });
    big.send("x".repeat(64 * 1024 + 1));
    expect((await big.closed).code).toBe(1009);
  });

  it("answers malformed and unknown frames with an error frame and closes with 1008 at the tenth", async () => {
    const c = await stack.user();
    const ws = await WsClient.open(stack.wsUrl, { cookie: c.cookie });
    const bad: unknown[] = [
      "not json",
      "[1,2]",
      { type: "hello" },
      { type: "subscribe" },
      { type: "subscribe", runId: "not-a-uuid" },
      { type: "subscribe", runId: randomUUID(), after: -1 },
      { type: "subscribe", runId: randomUUID(), after: 1.5 },
      { type: "unsubscribe", runId: randomUUID(), extra: true },
      "null",
    ];
    for (const [i, m] of bad.entries()) {
      ws.send(m);
      await ws.waitFor((f) => f.type === "error", 5000, i);
    }
    expect(ws.frames.every((f) => f.type === "error" && f.code === "bad_request")).toBe(true);
    expect(ws.closedNow).toBe(false);
    ws.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    expect((await ws.closed).code).toBe(1008);
    expect(ws.frames).toHaveLength(10);
    expect(ws.invalid).toEqual([]);
  });

  it("rate-limits messages per connection", async () => {
    const limited = await startRealtimeStack(db, { ws: { messagesPerSecond: 5, messageBurst: 5 } });
    const c = await limited.user();
    const ws = await WsClient.open(limited.wsUrl, { cookie: c.cookie });
    const id = randomUUID();
    for (let i = 0; i < 8; i++) ws.send({ type: "unsubscribe", runId: id });
    await ws.waitFor(() => ws.frames.length >= 8);
    expect(ws.frames.filter((f) => f.type === "unsubscribed")).toHaveLength(5);
    expect(ws.frames.filter((f) => f.type === "error" && f.code === "rate_limited")).toHaveLength(3);
    // The bucket refills: 5 per second.
    await new Promise((r) => setTimeout(r, 450));
    ws.send({ type: "unsubscribe", runId: id });
    await ws.waitFor((f) => f.type === "unsubscribed", 2000, 8);
    await ws.close();
    // A flood is closed like any other stream of bad frames.
    const flood = await WsClient.open(limited.wsUrl, { cookie: c.cookie });
    for (let i = 0; i < 30; i++) flood.send({ type: "unsubscribe", runId: id });
    expect((await flood.closed).code).toBe(1008);
    await limited.close();
  });

  it("caps the subscriptions of one connection", async () => {
    const c = await stack.user();
    const runs = await Promise.all([1, 2, 3, 4].map(() => stack.newRun(c)));
    const ws = await WsClient.open(stack.wsUrl, { cookie: c.cookie });
    for (const id of runs.slice(0, 3)) {
      ws.send({ type: "subscribe", runId: id });
      await ws.waitFor((f) => f.type === "subscribed" && f.runId === id);
    }
    ws.send({ type: "subscribe", runId: runs[3] });
    await ws.waitFor((f) => f.type === "error" && f.code === "too_many_subscriptions" && f.runId === runs[3]);
    // Subscribing again to one it holds is not a new subscription.
    ws.send({ type: "subscribe", runId: runs[0], after: 0 });
    await ws.waitFor((f) => f.type === "subscribed" && f.runId === runs[0], 5000, 4);
    ws.send({ type: "unsubscribe", runId: runs[1] });
    ws.send({ type: "subscribe", runId: runs[3] });
    await ws.waitFor((f) => f.type === "subscribed" && f.runId === runs[3]);
    await ws.close();
  });
});

describe("heartbeat", () => {
  it("pings every interval and terminates a client after two unanswered pings; one that answers stays", async () => {
    const hb = await startRealtimeStack(db, { ws: { pingIntervalMs: 100 } });
    try {
      const c = await hb.user();
      const deaf = await WsClient.open(hb.wsUrl, { cookie: c.cookie, autoPong: false });
      const live = await WsClient.open(hb.wsUrl, { cookie: c.cookie });
      let pings = 0;
      deaf.ws.on("ping", () => pings++);
      const t0 = Date.now();
      const closed = await deaf.closed;
      // Terminated, not closed: no close frame.
      expect(closed.code).toBe(1006);
      expect(pings).toBe(2);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
      await new Promise((r) => setTimeout(r, 500));
      expect(live.closedNow).toBe(false);
      await live.close();
    } finally {
      await hb.close();
    }
  });
});

describe("subscribe", () => {
  it("reads the run and its first replay page in one statement: the subscriber is live one round trip sooner", async () => {
    const alice = await stack.user();
    const run = await stack.newRun(alice);
    await stack.append(run, [text("one "), text("two")]);
    type QueryFn = (...args: unknown[]) => unknown;
    const proto = pg.Client.prototype as unknown as { query: QueryFn };
    const original = proto.query;
    const texts: string[] = [];
    proto.query = function (this: unknown, ...args: unknown[]) {
      const first = args[0];
      texts.push(typeof first === "string" ? first : ((first as { text?: string } | null)?.text ?? ""));
      return original.apply(this, args);
    };
    const ws = await WsClient.open(stack.wsUrl, { cookie: alice.cookie });
    try {
      ws.send({ type: "subscribe", runId: run, after: 0 });
      await ws.waitFor((f) => f.type === "event" && f.seq === 2);
    } finally {
      proto.query = original;
    }
    expect(ws.events(run).map((e) => e.data)).toEqual([{ text: "one " }, { text: "two" }]);
    // The ownership check and the replay: one statement that reads both tables.
    // The hub's own read for a new feed (unnest of the feeds) is not the subscriber's.
    const subscriberReads = texts.filter((t) => /\bruns\b/.test(t) || /\brun_events\b/.test(t)).filter((t) => !/unnest\(\$1::uuid\[\]/.test(t));
    expect(subscriberReads).toHaveLength(1);
    expect(subscriberReads[0]).toMatch(/from runs r left join lateral/);
    await ws.close();
  });
});

describe("subscriptions are the caller's own", () => {
  it("answers another user's run (and an unknown one) with not_found, and sends none of its events", async () => {
    const alice = await stack.user();
    const bob = await stack.user();
    const run = await stack.newRun(alice);
    await stack.append(run, [text("secret")]);
    const ws = await WsClient.open(stack.wsUrl, { cookie: bob.cookie });
    ws.send({ type: "subscribe", runId: run });
    await ws.waitFor((f) => f.type === "error" && f.code === "not_found" && f.runId === run);
    const unknown = randomUUID();
    ws.send({ type: "subscribe", runId: unknown });
    await ws.waitFor((f) => f.type === "error" && f.code === "not_found" && f.runId === unknown);
    ws.send({ type: "cancel", runId: run });
    await ws.waitFor((f) => f.type === "error" && f.code === "not_found" && f.runId === run, 5000, 2);
    await stack.append(run, [text(" more")]);
    await new Promise((r) => setTimeout(r, 200));
    expect(ws.events()).toEqual([]);
    expect((await db.pool.query("select cancel_requested_at from runs where id = $1", [run])).rows[0]?.cancel_requested_at).toBeNull();

    const own = await WsClient.open(stack.wsUrl, { cookie: alice.cookie });
    own.send({ type: "subscribe", runId: run.toUpperCase() });
    await own.waitFor((f) => f.type === "event" && f.seq === 2);
    expect(own.events(run).map((e) => e.data)).toEqual([{ text: "secret" }, { text: " more" }]);
    // Cancel over the socket: the queued run is cancelled and the stream ends.
    own.send({ type: "cancel", runId: run });
    await own.finished(run);
    expect(own.events(run).at(-1)?.event).toBe("cancelled");
    await Promise.all([ws.close(), own.close()]);
  });

  it("counts open connections in ws_connections", async () => {
    const c = await stack.user();
    const before = stack.realtime.connections;
    const a = await WsClient.open(stack.wsUrl, { cookie: c.cookie });
    const b = await WsClient.open(stack.wsUrl, { cookie: c.cookie });
    await waitUntil(() => stack.realtime.connections === before + 2);
    expect(metricValue(await stack.metricsText(), "ws_connections")).toBe(before + 2);
    await Promise.all([a.close(), b.close()]);
    await waitUntil(() => stack.realtime.connections === before);
    expect(metricValue(await stack.metricsText(), "ws_connections")).toBe(before);
  });
});

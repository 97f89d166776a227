/**
 * Issue 6, points 1 and 2, in process: the WebSocket upgrade (path, session
 * or bearer, Origin, no user created), frame limits (64 KB, bad frames,
 * rate, subscriptions), the heartbeat, and subscriptions scoped to the
 * caller's own runs. Issue 7's first-token goal: `send`, the message POST
 * over the socket with the run's subscription implied, its refusals, and
 * why it exists (the run's first event is live, not replayed).
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { randomUUID } from "node:crypto";
import pg from "pg";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { createJwt } from "../server/auth/jwt.js";
import { createSessionCodec } from "../server/auth/session.js";
import { startRealtimeStack, WsClient, rawUpgrade, text, textOf, waitUntil, metricValue, assertContiguous, TEST_JWT_SECRET, TEST_SESSION_SECRET, type RealtimeStack } from "./helpers/ws.js";
import { snapshotTables, type Client } from "./helpers/dataApi.js";
import { createMessageStore } from "../server/data/messages.js";
import type { ServerMessage } from "../shared/realtime.js";

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

describe("send", () => {
  type Sent = Extract<ServerMessage, { type: "sent" }>;
  type ErrorFrame = Extract<ServerMessage, { type: "error" }>;
  const isSent = (requestId: string) => (f: ServerMessage): f is Sent => f.type === "sent" && f.requestId === requestId;
  const isErrorFor = (requestId: string) => (f: ServerMessage): f is ErrorFrame => f.type === "error" && f.requestId === requestId;
  const newConversation = async (c: Client) => {
    const r = await c.post("/api/conversations", {});
    if (r.status !== 201) throw new Error(`conversation: ${r.status} ${r.text}`);
    return r.body.id as string;
  };
  const jobCount = async () => (await db.pool.query<{ n: number }>("select count(*)::int as n from graphile_worker.jobs")).rows[0]?.n;
  /** Every public table and the job queue: equal means nothing was stored. */
  const stored = async () => ({ tables: await snapshotTables(db), jobs: await jobCount() });
  /** Events sent live (from the hub's feed, not a replay): the delivery histogram's count. */
  const liveDeliveries = async (s: RealtimeStack) => {
    const m = await s.metricsText();
    return (metricValue(m, "run_event_delivery_seconds_count", { instance: "same" }) || 0) + (metricValue(m, "run_event_delivery_seconds_count", { instance: "other" }) || 0);
  };

  it("stores the message and its run once, answers `sent` before any event, then streams the run from seq 1 to its end", async () => {
    const alice = await stack.user();
    const conv = await newConversation(alice);
    const ws = await WsClient.open(stack.wsUrl, { cookie: alice.cookie });
    ws.send({ type: "send", requestId: "r-1", conversationId: conv.toUpperCase(), content: "hello over the socket", agent: "assistant" });
    const sent = await ws.waitFor(isSent("r-1"));
    expect(sent.message).toMatchObject({ conversationId: conv, role: "user", content: "hello over the socket", runId: null, agent: null });
    expect(sent.run).toMatchObject({ conversationId: conv, messageId: sent.message.id, status: "queued", requestedAgent: "assistant" });
    const runId = sent.run.id;
    // The same DTOs the HTTP API gives for them (the POST's 202 body is built the same way).
    expect((await alice.get(`/api/conversations/${conv}/messages`)).body.items).toEqual([sent.message]);
    expect((await alice.get(`/api/runs/${runId}`)).body).toEqual(sent.run);

    await stack.append(runId, [{ type: "status", data: { status: "running" } }, text("Hel")]);
    await ws.waitFor((f) => f.type === "event" && f.seq === 2);
    await stack.append(runId, [text("lo"), { type: "done", data: { messageId: randomUUID() } }]);
    await ws.finished(runId);

    // sent, the events in order (no subscribe was sent, no `subscribed` comes), the end.
    expect(ws.frames.map((f) => f.type)).toEqual(["sent", "event", "event", "event", "event", "unsubscribed"]);
    assertContiguous(ws.events(runId));
    expect(textOf(ws.events(runId))).toBe("Hello");
    expect(ws.invalid).toEqual([]);

    // Stored once: one message, one run, one job.
    expect((await db.pool.query("select id from messages where conversation_id = $1", [conv])).rows).toEqual([{ id: sent.message.id }]);
    const runs = await db.pool.query<{ id: string; message_id: string }>("select id, message_id from runs where conversation_id = $1", [conv]);
    expect(runs.rows).toEqual([{ id: runId, message_id: sent.message.id }]);
    expect((await db.pool.query("select 1 from graphile_worker.jobs where key = $1", [runId])).rowCount).toBe(1);
    await ws.close();
  });

  it("is why `send` exists: the run is live on the socket from the turn the commit is answered, so a first token stored with nothing more from the client is sent live, where POST-then-subscribe replayed it", async () => {
    const messages = createMessageStore(db.pool, { maxQueueDepth: 10_000 });
    let sentRun = "";
    /** Live feeds of the hub in the first check phase after the post was answered, minus those before. */
    let newFeedsByNextTurn: number | null = null;
    /** Set for the one stream under test: runs at its first replay page, as the provider's first chunk would. */
    let atFirstReplayPage: (() => Promise<void>) | null = null;
    const hooked = await startRealtimeStack(db, {
      postMessage: async (...args) => {
        const r = await messages.post(...args);
        if (typeof r === "object") {
          sentRun = r.run.id;
          const feeds = hooked.hub.feeds;
          // After the server's own continuation (microtasks) and before any
          // socket I/O: no client could have read `sent` and subscribed yet.
          setImmediate(() => (newFeedsByNextTurn = hooked.hub.feeds - feeds));
        }
        return r;
      },
      ws: {
        afterReplayPage: async () => {
          const hook = atFirstReplayPage;
          atFirstReplayPage = null;
          await hook?.();
        },
      },
    });
    try {
      const alice = await hooked.user();
      const conv = await newConversation(alice);

      // The old path: POST, the provider's first chunk is stored, then the page subscribes: a replay.
      const posted = await alice.post(`/api/conversations/${conv}/messages`, { content: "via POST" });
      expect(posted.status).toBe(202);
      const postedRun = posted.body.run.id as string;
      await hooked.append(postedRun, [text("early")]);
      const old = await WsClient.open(hooked.wsUrl, { cookie: alice.cookie });
      const live0 = await liveDeliveries(hooked);
      old.send({ type: "subscribe", runId: postedRun });
      await old.waitFor((f) => f.type === "event" && f.seq === 1);
      expect(await liveDeliveries(hooked)).toBe(live0);
      old.send({ type: "unsubscribe", runId: postedRun });
      await old.waitFor((f) => f.type === "unsubscribed");
      expect(hooked.hub.feeds).toBe(0);

      // `send`: the first chunk is stored once the post has committed and the
      // stream has read what the run had (nothing), while this client has sent
      // nothing but `send`. It arrives live: the subscription was there first.
      const ws = await WsClient.open(hooked.wsUrl, { cookie: alice.cookie });
      atFirstReplayPage = async () => {
        expect(sentRun).not.toBe("");
        await hooked.append(sentRun, [text("first")]);
      };
      const live1 = await liveDeliveries(hooked);
      ws.send({ type: "send", requestId: "point", conversationId: conv, content: "via the socket" });
      const sent = await ws.waitFor(isSent("point"));
      expect(sent.run.id).toBe(sentRun);
      // The run's feed was registered in the same turn as the post's answer: no round trip to the client in between.
      expect(newFeedsByNextTurn).toBe(1);
      const first = await ws.waitFor((f) => f.type === "event" && f.runId === sentRun && f.seq === 1);
      expect(first).toMatchObject({ event: "text.delta", data: { text: "first" } });
      expect(atFirstReplayPage).toBeNull();
      await waitUntil(async () => (await liveDeliveries(hooked)) === live1 + 1, 5000, "the first event counted as live");
      await hooked.append(sentRun, [text(" token"), { type: "done", data: { messageId: randomUUID() } }]);
      await ws.finished(sentRun);
      assertContiguous(ws.events(sentRun));
      expect(textOf(ws.events(sentRun))).toBe("first token");
      // Every event of the run went out live, the first one included.
      expect(await liveDeliveries(hooked)).toBe(live1 + 3);
      expect(ws.frames[0]?.type).toBe("sent");
      await Promise.all([ws.close(), old.close()]);
    } finally {
      await hooked.close();
    }
  });

  it("refuses bad content and agents with the POST's own messages, naming the request; nothing is stored and the socket stays", async () => {
    const alice = await stack.user();
    const conv = await newConversation(alice);
    const max = stack.config.security.maxMessageLength;
    const bodies: Record<string, unknown>[] = [
      { content: "" },
      { content: "  \n\t " },
      { content: "x".repeat(max + 1) },
      { content: 42 },
      {},
      { content: "a\u0000b" },
      { content: "hi", agent: "nobody" },
      { content: "hi", agent: 7 },
      { content: "hi", agent: null },
      { content: "hi", agent: "" },
      { content: "hi", agent: "Math" },
    ];
    const ws = await WsClient.open(stack.wsUrl, { cookie: alice.cookie });
    const before = await stored();
    for (const [i, body] of bodies.entries()) {
      const requestId = `bad-${i}`;
      ws.send({ type: "send", requestId, conversationId: conv, ...body });
      const err = await ws.waitFor(isErrorFor(requestId));
      const viaPost = await alice.post(`/api/conversations/${conv}/messages`, body);
      expect(viaPost.status, JSON.stringify(body).slice(0, 60)).toBe(400);
      expect(err, JSON.stringify(body).slice(0, 60)).toEqual({ type: "error", code: "bad_request", message: viaPost.body.error.message, requestId });
    }
    expect(await stored()).toEqual(before);
    // Refused requests are not bad frames: more of them than maxBadFrames and the socket is still open.
    expect(bodies.length).toBeGreaterThan(10);
    expect(ws.closedNow).toBe(false);
    await ws.close();
  });

  it("answers not_found for another user's conversation, an unknown one and an id that is not a UUID; nothing is stored", async () => {
    const alice = await stack.user();
    const bob = await stack.user();
    const bobs = await newConversation(bob);
    const ws = await WsClient.open(stack.wsUrl, { cookie: alice.cookie });
    const before = await stored();
    for (const [i, conversationId] of [bobs, randomUUID(), "not-a-uuid", "", `${bobs}x`].entries()) {
      const requestId = `nf-${i}`;
      ws.send({ type: "send", requestId, conversationId, content: "hello" });
      expect(await ws.waitFor(isErrorFor(requestId))).toEqual({ type: "error", code: "not_found", message: "Conversation not found", requestId });
    }
    expect(await stored()).toEqual(before);
    expect((await bob.get(`/api/conversations/${bobs}/messages`)).body.items).toEqual([]);
    await ws.close();
  });

  it("counts against the subscription cap, checked before anything is stored; sends under way hold their place", async () => {
    const alice = await stack.user();
    const conv = await newConversation(alice);
    const runs = await Promise.all([1, 2, 3].map(() => stack.newRun(alice)));
    const ws = await WsClient.open(stack.wsUrl, { cookie: alice.cookie });
    for (const id of runs) {
      ws.send({ type: "subscribe", runId: id });
      await ws.waitFor((f) => f.type === "subscribed" && f.runId === id);
    }
    const before = await stored();
    ws.send({ type: "send", requestId: "cap", conversationId: conv, content: "one too many" });
    const err = await ws.waitFor(isErrorFor("cap"));
    expect(err.code).toBe("too_many_subscriptions");
    expect(await stored()).toEqual(before);

    // Two places free, three sends at once: the third finds both taken by sends not yet answered.
    ws.send({ type: "unsubscribe", runId: runs[0] });
    ws.send({ type: "unsubscribe", runId: runs[1] });
    await ws.waitFor((f) => f.type === "unsubscribed" && f.runId === runs[1]);
    for (const id of ["a", "b", "c"]) ws.send({ type: "send", requestId: id, conversationId: conv, content: `message ${id}` });
    await ws.waitFor(isSent("a"));
    await ws.waitFor(isSent("b"));
    expect((await ws.waitFor(isErrorFor("c"))).code).toBe("too_many_subscriptions");
    const contents = (await db.pool.query<{ content: string }>("select content from messages where conversation_id = $1 order by created_at", [conv])).rows.map((r) => r.content);
    expect(contents.sort()).toEqual(["message a", "message b"]);
    await ws.close();
  });

  it("answers overloaded (retry in a few seconds) when the queue is full, as the POST's 503; nothing is stored", async () => {
    const alice = await stack.user();
    // At least one queued run (no queue runs here), so a depth of 1 is full.
    await stack.newRun(alice);
    const full = await startRealtimeStack(db, { env: { MAX_QUEUE_DEPTH: "1" } });
    try {
      const c = await full.user();
      const conv = await newConversation(c);
      const ws = await WsClient.open(full.wsUrl, { cookie: c.cookie });
      const before = await stored();
      ws.send({ type: "send", requestId: "busy", conversationId: conv, content: "hello" });
      const err = await ws.waitFor(isErrorFor("busy"));
      expect(err.code).toBe("overloaded");
      expect(err.message).toMatch(/try again in 5 seconds/);
      const viaPost = await c.post(`/api/conversations/${conv}/messages`, { content: "hello" });
      expect(viaPost.status).toBe(503);
      expect(viaPost.headers["retry-after"]).toBe("5");
      expect(await stored()).toEqual(before);
      await ws.close();
    } finally {
      await full.close();
    }
  });

  it("names the request in the error for a malformed send and a rate-limited one, when its requestId is readable", async () => {
    const alice = await stack.user();
    const conv = await newConversation(alice);
    const ws = await WsClient.open(stack.wsUrl, { cookie: alice.cookie });
    const before = await stored();
    ws.send({ type: "send", requestId: "extra", conversationId: conv, content: "hi", extra: true });
    expect(await ws.waitFor(isErrorFor("extra"))).toMatchObject({ code: "bad_request" });
    ws.send({ type: "send", requestId: "no-conversation", content: "hi" });
    expect(await ws.waitFor(isErrorFor("no-conversation"))).toMatchObject({ code: "bad_request", message: expect.stringMatching(/^conversationId: /) });
    // A requestId that is not one (too long, empty) cannot be echoed.
    const n = ws.frames.length;
    ws.send({ type: "send", requestId: "x".repeat(65), conversationId: conv, content: "hi" });
    ws.send({ type: "send", requestId: "", conversationId: conv, content: "hi" });
    await ws.waitFor(() => ws.frames.length >= n + 2);
    expect(ws.frames.slice(n)).toEqual([
      { type: "error", code: "bad_request", message: expect.stringMatching(/^requestId: /) },
      { type: "error", code: "bad_request", message: expect.stringMatching(/^requestId: /) },
    ]);
    await ws.close();
    expect(await stored()).toEqual(before);

    const limited = await startRealtimeStack(db, { ws: { messagesPerSecond: 1, messageBurst: 2 } });
    try {
      const c = await limited.user();
      const lws = await WsClient.open(limited.wsUrl, { cookie: c.cookie });
      for (const id of ["l1", "l2", "l3"]) lws.send({ type: "send", requestId: id, conversationId: randomUUID(), content: "hi" });
      expect((await lws.waitFor(isErrorFor("l1"))).code).toBe("not_found");
      expect((await lws.waitFor(isErrorFor("l2"))).code).toBe("not_found");
      expect((await lws.waitFor(isErrorFor("l3"))).code).toBe("rate_limited");
      await lws.close();
    } finally {
      await limited.close();
    }
  });

  it("ignores a send that arrives once the server is draining: nothing stored, no answer, the socket closes with 1012", async () => {
    const draining = await startRealtimeStack(db);
    try {
      const c = await draining.user();
      const conv = await newConversation(c);
      const ws = await WsClient.open(draining.wsUrl, { cookie: c.cookie });
      const before = await stored();
      // Written before the drain starts, read by the server (same process) only after it: the drain is synchronous up to the close frames.
      ws.send({ type: "send", requestId: "late", conversationId: conv, content: "hello" });
      const drained = draining.realtime.drain();
      expect((await ws.closed).code).toBe(1012);
      await drained;
      expect(ws.frames).toEqual([]);
      expect(await stored()).toEqual(before);
    } finally {
      await draining.close();
    }
  });
});

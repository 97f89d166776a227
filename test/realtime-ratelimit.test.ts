/**
 * The API rate limit over the WebSocket: a `send` stores a message and starts
 * a run as the message POST does, so it counts against RATE_LIMIT_MAX in the
 * same store, under the same key (the client IP as `req.ip` gives it, with
 * TRUST_PROXY), as the client's /api requests. Each test has its own stack,
 * so its own limiter; users and conversations are made in the database, so
 * that no setup request spends the budget under test.
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from "vitest";
import { randomUUID } from "node:crypto";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { startRealtimeStack, WsClient, TEST_SESSION_SECRET, type RealtimeStack } from "./helpers/ws.js";
import { Client, snapshotTables } from "./helpers/dataApi.js";
import { createSessionCodec } from "../server/auth/session.js";
import type { ServerMessage } from "../shared/realtime.js";

type Sent = Extract<ServerMessage, { type: "sent" }>;
type ErrorFrame = Extract<ServerMessage, { type: "error" }>;
type Answer = Sent | ErrorFrame;

let db: TestDatabase;
const stacks: RealtimeStack[] = [];
const sockets: WsClient[] = [];

beforeAll(async () => {
  db = await createTestDatabase({ migrate: true });
});
afterEach(async () => {
  await Promise.all(sockets.splice(0).map((ws) => ws.close()));
  await Promise.all(stacks.splice(0).map((s) => s.close()));
});
afterAll(async () => {
  await db?.drop();
});

async function start(env: Record<string, string>): Promise<RealtimeStack> {
  const s = await startRealtimeStack(db, { env: { LOG_LEVEL: "warn", ...env } });
  stacks.push(s);
  return s;
}

/** A user with one empty conversation, made in the database; its session cookie. */
async function seedUser(): Promise<{ userId: string; conversationId: string; cookie: string }> {
  const userId = randomUUID();
  const conversationId = randomUUID();
  await db.pool.query("insert into users (id) values ($1)", [userId]);
  await db.pool.query("insert into conversations (id, user_id) values ($1, $2)", [conversationId, userId]);
  const cookie = `esa_sid=${createSessionCodec(TEST_SESSION_SECRET).sign(userId, Math.floor(Date.now() / 1000) + 3600)}`;
  return { userId, conversationId, cookie };
}

async function open(s: RealtimeStack, cookie: string, forwardedFor?: string): Promise<WsClient> {
  const ws = await WsClient.open(s.wsUrl, { cookie, ...(forwardedFor ? { headers: { "x-forwarded-for": forwardedFor } } : {}) });
  sockets.push(ws);
  return ws;
}

let nextRequest = 0;
/** Sends one `send` and waits for its answer: `sent` or an `error` naming it. */
async function send(ws: WsClient, conversationId: string): Promise<Answer> {
  const requestId = `req-${++nextRequest}`;
  ws.send({ type: "send", requestId, conversationId, content: `message ${requestId}` });
  const answer = await ws.waitFor((f): f is Answer => (f.type === "sent" || f.type === "error") && f.requestId === requestId);
  if (answer.type === "error" && answer.code !== "rate_limited") throw new Error(`send ${requestId}: ${answer.code} ${answer.message}`);
  return answer;
}

const outcome = (a: Answer) => (a.type === "sent" ? "sent" : a.code);

/** Messages and runs of a conversation, and every table with the job queue: equal means nothing was stored. */
async function stored(conversationId: string) {
  const count = async (table: "messages" | "runs") =>
    (await db.pool.query<{ n: number }>(`select count(*)::int as n from ${table} where conversation_id = $1`, [conversationId])).rows[0]?.n;
  const jobs = (await db.pool.query<{ n: number }>("select count(*)::int as n from graphile_worker.jobs")).rows[0]?.n;
  return { messages: await count("messages"), runs: await count("runs"), tables: await snapshotTables(db), jobs };
}

describe("send and the API rate limit", () => {
  it("refuses sends past RATE_LIMIT_MAX with rate_limited and their requestId, and stores nothing for them", async () => {
    const s = await start({ RATE_LIMIT_MAX: "3" });
    const u = await seedUser();
    const ws = await open(s, u.cookie);
    for (let i = 0; i < 3; i++) expect(outcome(await send(ws, u.conversationId)), `send ${i + 1}`).toBe("sent");
    const before = await stored(u.conversationId);
    expect(before).toMatchObject({ messages: 3, runs: 3 });

    for (let i = 0; i < 2; i++) {
      const requestId = `over-${i}`;
      ws.send({ type: "send", requestId, conversationId: u.conversationId, content: "one too many" });
      const err = await ws.waitFor((f): f is ErrorFrame => f.type === "error" && f.requestId === requestId);
      expect(err).toEqual({ type: "error", code: "rate_limited", requestId, message: expect.stringMatching(/^Too many requests; try again in \d+ seconds$/) });
    }
    expect(await stored(u.conversationId)).toEqual(before);
    // Refused by the API limit, not the socket's own: the socket stays open and usable.
    expect(ws.closedNow).toBe(false);
    expect(ws.invalid).toEqual([]);
  });

  it("shares one budget with the client's HTTP requests: two requests, then the second send is refused", async () => {
    const s = await start({ RATE_LIMIT_MAX: "3" });
    const u = await seedUser();
    const http = new Client(s.baseUrl, { cookie: u.cookie });
    for (let i = 0; i < 2; i++) expect((await http.get(`/api/conversations/${u.conversationId}/messages`)).status).toBe(200);
    const ws = await open(s, u.cookie);
    expect(outcome(await send(ws, u.conversationId))).toBe("sent");
    const before = await stored(u.conversationId);
    expect(outcome(await send(ws, u.conversationId))).toBe("rate_limited");
    expect(await stored(u.conversationId)).toEqual(before);
  });

  it("shares one budget the other way: sends up to the limit, then the message POST gets 429 and stores nothing", async () => {
    const s = await start({ RATE_LIMIT_MAX: "3" });
    const u = await seedUser();
    const ws = await open(s, u.cookie);
    for (let i = 0; i < 3; i++) expect(outcome(await send(ws, u.conversationId))).toBe("sent");
    const before = await stored(u.conversationId);
    const posted = await new Client(s.baseUrl, { cookie: u.cookie }).post(`/api/conversations/${u.conversationId}/messages`, { content: "by POST" });
    expect(posted.status).toBe(429);
    expect(posted.body).toMatchObject({ error: { code: "rate_limited" } });
    expect(posted.headers["retry-after"]).toMatch(/^\d+$/);
    expect(await stored(u.conversationId)).toEqual(before);
  });

  it("behind a trusted proxy, keys a socket on the forwarded client IP, as req.ip: separate budgets per client, one per client across HTTP and socket", async () => {
    const s = await start({ RATE_LIMIT_MAX: "2", TRUST_PROXY: "1" });
    const u = await seedUser();
    // The test is the one trusted proxy: the last X-Forwarded-For entry is the client.
    const a = await open(s, u.cookie, "198.51.100.7");
    expect([outcome(await send(a, u.conversationId)), outcome(await send(a, u.conversationId)), outcome(await send(a, u.conversationId))]).toEqual(["sent", "sent", "rate_limited"]);
    // Another client behind the proxy has its own budget.
    const b = await open(s, u.cookie, "198.51.100.8");
    expect(outcome(await send(b, u.conversationId))).toBe("sent");
    // A client that puts another address in front of its own gets no fresh budget.
    const spoofed = await open(s, u.cookie, "203.0.113.99, 198.51.100.7");
    expect(outcome(await send(spoofed, u.conversationId))).toBe("rate_limited");
    // The socket's key is the HTTP one: client A's HTTP requests find its budget spent, B's has one left.
    const viaHttp = (ip: string) => new Client(s.baseUrl, { cookie: u.cookie, headers: { "x-forwarded-for": ip } }).get("/api/session");
    expect((await viaHttp("198.51.100.7")).status).toBe(429);
    expect((await viaHttp("198.51.100.8")).status).toBe(200);
    expect((await viaHttp("198.51.100.8")).status).toBe(429);

    // IPv6 clients share a budget per /56, over HTTP and the socket alike.
    const v6 = await open(s, u.cookie, "2001:db8:0:1::1");
    expect(outcome(await send(v6, u.conversationId))).toBe("sent");
    expect((await viaHttp("2001:db8:0:2::5")).status).toBe(200);
    expect(outcome(await send(v6, u.conversationId))).toBe("rate_limited");
    const otherV6 = await open(s, u.cookie, "2001:db8:0:100::1");
    expect(outcome(await send(otherV6, u.conversationId))).toBe("sent");
  });

  it("with TRUST_PROXY=0, ignores X-Forwarded-For on the upgrade: every socket from this host spends one budget", async () => {
    const s = await start({ RATE_LIMIT_MAX: "2", TRUST_PROXY: "0" });
    const u = await seedUser();
    const a = await open(s, u.cookie, "198.51.100.7");
    expect(outcome(await send(a, u.conversationId))).toBe("sent");
    const b = await open(s, u.cookie, "198.51.100.8");
    expect(outcome(await send(b, u.conversationId))).toBe("sent");
    const c = await open(s, u.cookie, "198.51.100.9");
    expect(outcome(await send(c, u.conversationId))).toBe("rate_limited");
    // And HTTP from this host, whatever it claims, finds the same budget spent.
    const http = new Client(s.baseUrl, { cookie: u.cookie, headers: { "x-forwarded-for": "198.51.100.10" } });
    expect((await http.get("/api/session")).status).toBe(429);
  });
});

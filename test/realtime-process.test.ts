/**
 * Issue 6, points 1 (ENABLE_WEBSOCKETS), 3, 4 and 7 on built server
 * processes sharing one test database and one fake OpenAI provider: resume
 * across 50 random disconnects of a long run, a socket on one instance and
 * the run on another (LISTEN, and polling where LISTEN is off), and retries
 * in the stream, and sends counted in the API rate limit the built server
 * wires. Only processes spawned here are signalled, by PID.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { startFakeLlm, type FakeLlm } from "./helpers/fakeLlm.js";
import { Client } from "./helpers/dataApi.js";
import { spawnServer } from "./helpers/spawnServer.js";
import {
  WsClient,
  ask,
  assertContiguous,
  assistantText,
  longText,
  metricValue,
  openSse,
  rawUpgrade,
  seededRandom,
  spawnInstance,
  waitUntil,
  textOf,
  type Instance,
} from "./helpers/ws.js";
import type { EventFrame } from "../shared/realtime.js";

let db: TestDatabase;
let llm: FakeLlm;
const instances: Instance[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  [db, llm] = await Promise.all([createTestDatabase({ migrate: true }), startFakeLlm({ apiKey: "sk-realtime-test" })]);
});
afterAll(async () => {
  await Promise.all(instances.map((i) => i.proc.stop()));
  await llm?.close();
  await db?.drop();
});

async function spawn(env: Record<string, string | undefined> = {}) {
  const i = await spawnInstance(db, llm.url, env);
  instances.push(i);
  return i;
}

async function user(i: Instance) {
  const c = new Client(i.baseUrl);
  await c.userId();
  return c;
}

/** Subscribes on a new socket and collects the run's events until its stream ends. */
async function watch(i: Instance, client: Client, runId: string, after = 0) {
  const ws = await WsClient.open(i.wsUrl, { cookie: client.cookie });
  ws.send({ type: "subscribe", runId, after });
  return {
    ws,
    async done(timeoutMs = 30_000) {
      await ws.finished(runId, timeoutMs);
      await ws.close();
      return ws.events(runId);
    },
  };
}

describe("one instance", () => {
  let s: Instance;
  beforeAll(async () => {
    s = await spawn();
  });
  // Later tests choose which instance runs their runs: this one must not take them.
  afterAll(async () => {
    await s?.proc.stop();
  });

  it("starts a hello run where its message was posted, by HTTP or by a WebSocket send: agent_run_local_starts_total counts both", async () => {
    const local = async () => metricValue(await (await fetch(`${s.baseUrl}/metrics`)).text(), "agent_run_local_starts_total", { outcome: "succeeded" }) || 0;
    const before = await local();
    const client = await user(s);
    const posted = await ask(client, "hi there", "hello");
    const ws = await WsClient.open(s.wsUrl, { cookie: client.cookie });
    const conv = await client.post("/api/conversations", {});
    ws.send({ type: "send", requestId: "local", conversationId: conv.body.id as string, content: "hello again", agent: "hello" });
    const sent = await ws.waitFor((f) => (f.type === "sent" || f.type === "error") && f.requestId === "local");
    await ws.close();
    expect(sent).toMatchObject({ type: "sent" });
    const viaWs = (sent as { run: { id: string } }).run.id;
    for (const runId of [posted, viaWs]) {
      const deadline = Date.now() + 10_000;
      while (!(await assistantText(db, runId)) && Date.now() < deadline) await sleep(20);
      expect(await assistantText(db, runId)).toMatch(/hello/i);
      const jobs = await db.pool.query("select 1 from graphile_worker.jobs where key = $1", [runId]);
      expect(jobs.rowCount).toBe(0);
    }
    // Counted just after the answer is stored: wait for both, then no more.
    await waitUntil(async () => (await local()) - before >= 2, 5000, "both local starts counted").catch(() => undefined);
    expect((await local()) - before).toBe(2);
  });

  it("resumes across 50 random disconnects of a long run: every seq once, the provider's text byte for byte", async () => {
    const full = longText(2400);
    llm.setDefault(() => ({ text: full, chunkSize: 3, delayMs: 5 }));
    const c = await user(s);
    const runId = await ask(c, "a long answer, please", "assistant");
    const seed = Date.now() % 1_000_000;
    const rand = seededRandom(seed);
    const shown: EventFrame[] = [];
    const disconnectedAt: number[] = [];
    let finished = false;
    while (!finished) {
      const after = shown.at(-1)?.seq ?? 0;
      const ws = await WsClient.open(s.wsUrl, { cookie: c.cookie });
      ws.send({ type: "subscribe", runId, after });
      const ended = () => ws.frames.some((f) => f.type === "unsubscribed" && f.runId === runId);
      if (disconnectedAt.length < 50) {
        // A random point: after a few events, or after a few milliseconds (maybe mid-replay, maybe before any frame).
        if (rand() < 0.5) {
          const k = 1 + Math.floor(rand() * 4);
          await ws.waitFor((f) => ended() || ws.events(runId).length >= k || f.type === "error", 10_000).catch(() => undefined);
        } else {
          await sleep(Math.floor(rand() * 80));
        }
      } else {
        await ws.finished(runId, 30_000);
      }
      // What the client had shown when the connection went away is all it keeps.
      shown.push(...ws.events(runId));
      finished = ended();
      expect(ws.frames.filter((f) => f.type === "error")).toEqual([]);
      if (!finished) disconnectedAt.push(Date.now());
      if (rand() < 0.5) ws.ws.terminate();
      else ws.ws.close();
    }
    const finishedAt = (await db.pool.query<{ t: Date }>("select finished_at as t from runs where id = $1", [runId])).rows[0]?.t;
    const live = disconnectedAt.filter((t) => finishedAt && t < finishedAt.getTime()).length;
    console.log(`resume test: seed ${seed}, ${disconnectedAt.length} disconnects, ${live} while the run was executing, ${shown.length} events`);
    expect(disconnectedAt.length).toBe(50);
    expect(live).toBeGreaterThanOrEqual(25);
    assertContiguous(shown);
    expect(shown.at(-1)?.event).toBe("done");
    expect(textOf(shown)).toBe(full);
    expect(await assistantText(db, runId)).toBe(full);
  });

  it("retries in the stream: a 500 on the first request, then `reset {attempt: 2}` and the new attempt's text", async () => {
    const full = longText(300);
    llm.setDefault(() => ({ text: full, chunkSize: 5, delayMs: 2 }));
    llm.script({ fault: { kind: "status", status: 500 } });
    const c = await user(s);
    const runId = await ask(c, "retry me", "assistant");
    const events = await (await watch(s, c, runId)).done();
    assertContiguous(events);
    const types = events.map((e) => e.event);
    expect(types).toContain("reset");
    const reset = events.find((e) => e.event === "reset");
    expect(reset?.data).toEqual({ attempt: 2 });
    expect(reset?.attempt).toBe(2);
    const retrying = events.find((e) => e.event === "status" && (e.data as { status?: string }).status === "retrying");
    expect(retrying?.seq).toBeLessThan(reset?.seq ?? 0);
    expect(events.filter((e) => e.seq > (reset?.seq ?? 0)).every((e) => e.attempt === 2)).toBe(true);
    expect(types.at(-1)).toBe("done");
    expect(textOf(events)).toBe(full);
    expect(await assistantText(db, runId)).toBe(full);
  });

  it("retries in the stream: the text of an attempt that failed midway is dropped at `reset`", async () => {
    const full = longText(600);
    llm.setDefault(() => ({ text: full, chunkSize: 3, delayMs: 3 }));
    llm.script({ text: full, chunkSize: 3, delayMs: 3, fault: { kind: "drop", afterChunks: 60 } });
    const c = await user(s);
    const runId = await ask(c, "fail midway", "assistant");
    // SSE this time: the same events, the same rule.
    const sse = openSse(s.baseUrl, `/api/runs/${runId}/events`, { cookie: c.cookie ?? "" });
    const viaWs = await (await watch(s, c, runId)).done();
    await sse.ended;
    const viaSse = sse.frames();
    for (const events of [viaWs, viaSse]) {
      assertContiguous(events);
      const reset = events.findIndex((e) => e.event === "reset");
      expect(reset).toBeGreaterThan(0);
      const before = textOf(events.slice(0, reset));
      expect(before.length).toBeGreaterThan(0);
      expect(full.startsWith(before)).toBe(true);
      expect(textOf(events)).toBe(full);
    }
    expect(viaSse).toEqual(viaWs);
    expect(await assistantText(db, runId)).toBe(full);
  });
});

describe("across instances", () => {
  it("streams a run executing on B to sockets on A (LISTEN/NOTIFY) and on P (no LISTEN: polling)", async () => {
    const [a, p, b] = await Promise.all([
      spawn({ ENABLE_AGENTS: "false" }),
      spawn({ ENABLE_AGENTS: "false", DATABASE_TRANSACTION_POOLER: "true" }),
      spawn(),
    ]);
    // P really has no LISTEN connection; A does.
    expect(p.proc.logs.some((l) => String(l.msg).startsWith("no LISTEN connection"))).toBe(true);
    expect(a.proc.logs.some((l) => String(l.msg).startsWith("no LISTEN connection"))).toBe(false);
    const full = longText(900);
    llm.setDefault(() => ({ text: full, chunkSize: 4, delayMs: 4 }));
    const c = await user(a);
    const runId = await ask(c, "across instances", "assistant");
    const [onA, onP, onB] = await Promise.all([watch(a, c, runId), watch(p, c, runId), watch(b, c, runId)]);
    const [eventsA, eventsP, eventsB] = await Promise.all([onA.done(), onP.done(), onB.done()]);
    for (const events of [eventsA, eventsP, eventsB]) {
      assertContiguous(events);
      expect(events.at(-1)?.event).toBe("done");
      expect(textOf(events)).toBe(full);
    }
    expect(await assistantText(db, runId)).toBe(full);
    const instance = (await db.pool.query<{ instance_id: string }>("select instance_id from runs where id = $1", [runId])).rows[0]?.instance_id;
    expect(instance).toContain(`-${b.proc.pid}-`);

    const metrics = async (i: Instance) => (await fetch(`${i.baseUrl}/metrics`)).text();
    const [ma, mp, mb] = await Promise.all([metrics(a), metrics(p), metrics(b)]);
    for (const m of [ma, mp]) {
      expect(metricValue(m, "run_event_delivery_seconds_count", { instance: "other" })).toBeGreaterThan(0);
      expect(metricValue(m, "run_event_delivery_seconds_count", { instance: "same" }) || 0).toBe(0);
      expect(metricValue(m, "ws_messages_sent_total")).toBeGreaterThan(eventsA.length);
    }
    expect(metricValue(mb, "run_event_delivery_seconds_count", { instance: "same" })).toBeGreaterThan(0);
    expect(metricValue(ma, "ws_connections")).toBe(0);
  });

  it("ENABLE_WEBSOCKETS=false refuses upgrades; the SSE endpoint still serves the stream", async () => {
    const d = await spawn({ ENABLE_WEBSOCKETS: "false", ENABLE_AGENTS: "false" });
    const c = await user(d);
    const r = await rawUpgrade(d.wsUrl, { cookie: c.cookie });
    expect(r.status).toBe(404);
    expect(r.body).toContain("ENABLE_WEBSOCKETS");
    const runId = await ask(c, "hello there", "hello");
    const sse = openSse(d.baseUrl, `/api/runs/${runId}/events`, { cookie: c.cookie ?? "" });
    await sse.waitFor((e) => e.data !== undefined);
    expect(sse.status).toBe(200);
    sse.close();
    // /health still reports the streams, saying the WebSockets are off.
    const health = (await (await fetch(`${d.baseUrl}/health`)).json()) as { checks: Record<string, unknown> };
    expect(health.checks.streams).toMatchObject({ status: "up", websockets: "disabled" });
  });
});

describe("API rate limit", () => {
  it("counts sends over the socket in the built server's one limiter: HTTP requests and sends share RATE_LIMIT_MAX", async () => {
    const r = await spawn({ RATE_LIMIT_MAX: "3", ENABLE_AGENTS: "false" });
    // Two hits: the session, then the conversation.
    const c = await user(r);
    const conv = await c.post("/api/conversations", {});
    expect(conv.status).toBe(201);
    const conversationId = conv.body.id as string;
    const ws = await WsClient.open(r.wsUrl, { cookie: c.cookie });
    const answer = (requestId: string) => {
      ws.send({ type: "send", requestId, conversationId, content: `message ${requestId}` });
      return ws.waitFor((f) => (f.type === "sent" || f.type === "error") && f.requestId === requestId);
    };
    expect(await answer("third")).toMatchObject({ type: "sent" });
    expect(await answer("fourth")).toMatchObject({ type: "error", code: "rate_limited", requestId: "fourth" });
    expect((await c.get(`/api/conversations/${conversationId}/messages`)).status).toBe(429);
    await ws.close();
    const stored = await db.pool.query("select content from messages where conversation_id = $1", [conversationId]);
    expect(stored.rows).toEqual([{ content: "message third" }]);
    await r.proc.stop();
  });
});

describe("before ready", () => {
  it("refuses upgrades with 503 and Retry-After while the server is starting", async () => {
    // Nothing listens on port 1: the database never comes up, so the server stays `starting`.
    const proc = await spawnServer({ env: { DATABASE_URL: "postgres://u:p@127.0.0.1:1/x", SESSION_SECRET: "s".repeat(40) } });
    instances.push({ proc, baseUrl: proc.baseUrl, wsUrl: proc.baseUrl.replace(/^http/, "ws") + "/ws" });
    const r = await rawUpgrade(proc.baseUrl.replace(/^http/, "ws") + "/ws");
    expect(r.status).toBe(503);
    expect(r.headers["retry-after"]).toBe("2");
    expect(JSON.parse(r.body)).toMatchObject({ error: { code: "not_ready" } });
  });
});

/**
 * Issue 3, points 3 and 4: the conversations, messages and runs API with its
 * status codes, bodies and pagination; and per-user isolation on every route.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { randomUUID } from "node:crypto";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { startDataApi, TEST_JWT_SECRET, type Client, type DataApi } from "./helpers/dataApi.js";
import { createJwt } from "../server/auth/jwt.js";

let db: TestDatabase;
let api: DataApi;

beforeAll(async () => {
  db = await createTestDatabase({ migrate: true });
  api = await startDataApi(db);
});
afterAll(async () => {
  await api.close();
  await db.drop();
});

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const q = async <T extends Record<string, unknown>>(text: string, params: unknown[] = []) => (await db.pool.query<T>(text, params)).rows;
const count = async (table: string, where = "true", params: unknown[] = []) =>
  (await q<{ n: number }>(`select count(*)::int as n from ${table} where ${where}`, params))[0]?.n;

async function newUser(): Promise<{ client: Client; id: string }> {
  const client = api.client();
  return { client, id: await client.userId() };
}

/** A user that only exists through a bearer token (for SQL-seeded data). */
async function bearerUser(): Promise<{ client: Client; id: string }> {
  const id = randomUUID();
  const client = api.client({ bearer: await createJwt(TEST_JWT_SECRET).sign(id, 3600) });
  expect(await client.userId()).toBe(id);
  return { client, id };
}

/** Follows nextCursor to the end; returns every page. */
async function walk(client: Client, path: string, limit: number) {
  const pages: { items: { id: string }[]; nextCursor: string | null }[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < 1000; i++) {
    const sep = path.includes("?") ? "&" : "?";
    const res = await client.get(`${path}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    expect(res.status).toBe(200);
    pages.push(res.body);
    cursor = res.body.nextCursor;
    if (!cursor) break;
  }
  return pages;
}

describe("conversations", () => {
  it("POST creates one (201) with a title or the default, and stores it for the caller", async () => {
    const { client, id: userId } = await newUser();
    const res = await client.post("/api/conversations", { title: "  Trip to Lisbon  " });
    expect(res.status).toBe(201);
    expect(res.headers["content-type"]).toMatch(/^application\/json/);
    expect(Object.keys(res.body).sort()).toEqual(["createdAt", "id", "title", "updatedAt"]);
    expect(res.body.title).toBe("Trip to Lisbon");
    expect(res.body.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.body.createdAt).toMatch(ISO);
    expect(res.body.updatedAt).toMatch(ISO);
    const [row] = await q("select user_id, title from conversations where id = $1", [res.body.id]);
    expect(row).toEqual({ user_id: userId, title: "Trip to Lisbon" });

    const untitled = await client.post("/api/conversations", {});
    expect(untitled.status).toBe(201);
    expect(untitled.body.title).toBe("New conversation");
  });

  it("GET /:id returns it; an unknown id is 404 JSON", async () => {
    const { client } = await newUser();
    const created = (await client.post("/api/conversations", { title: "one" })).body;
    const res = await client.get(`/api/conversations/${created.id}`);
    expect(res.status).toBe(200);
    expect(res.body).toEqual(created);
    const missing = await client.get(`/api/conversations/${randomUUID()}`);
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe("not_found");
  });

  it("PATCH sets the title and bumps updatedAt; the change is stored", async () => {
    const { client } = await newUser();
    const created = (await client.post("/api/conversations", { title: "before" })).body;
    await new Promise((r) => setTimeout(r, 5));
    const res = await client.patch(`/api/conversations/${created.id}`, { title: "after" });
    expect(res.status).toBe(200);
    expect(res.body.id).toBe(created.id);
    expect(res.body.title).toBe("after");
    expect(res.body.createdAt).toBe(created.createdAt);
    expect(Date.parse(res.body.updatedAt)).toBeGreaterThan(Date.parse(created.updatedAt));
    expect((await client.get(`/api/conversations/${created.id}`)).body.title).toBe("after");
    expect((await client.patch(`/api/conversations/${randomUUID()}`, { title: "x" })).status).toBe(404);
  });

  it("DELETE answers 204 and removes the conversation with its messages and runs, nothing else", async () => {
    const { client } = await newUser();
    const doomed = (await client.post("/api/conversations", { title: "doomed" })).body;
    const kept = (await client.post("/api/conversations", { title: "kept" })).body;
    const runIds: string[] = [];
    for (const c of [doomed, kept]) {
      for (let i = 0; i < 3; i++) {
        const posted = await client.post(`/api/conversations/${c.id}/messages`, { content: `hello ${i}` });
        expect(posted.status).toBe(202);
        if (c === doomed) runIds.push(posted.body.run.id);
      }
    }
    // An assistant message tied to a run, as the queue will write it.
    await q("insert into messages (conversation_id, user_id, role, content, run_id) select conversation_id, user_id, 'assistant', 'hi', id from runs where id = $1", [runIds[0]]);
    await q("insert into run_events (run_id, seq, attempt, type) values ($1, 1, 1, 'status')", [runIds[0]]);
    expect(await count("messages", "conversation_id = $1", [doomed.id])).toBe(4);
    expect(await count("runs", "conversation_id = $1", [doomed.id])).toBe(3);

    const res = await client.delete(`/api/conversations/${doomed.id}`);
    expect(res.status).toBe(204);
    expect(res.text).toBe("");
    expect(await count("conversations", "id = $1", [doomed.id])).toBe(0);
    expect(await count("messages", "conversation_id = $1", [doomed.id])).toBe(0);
    expect(await count("runs", "conversation_id = $1", [doomed.id])).toBe(0);
    expect(await count("runs", "id = any($1::uuid[])", [runIds])).toBe(0);
    expect(await count("run_events", "run_id = any($1::uuid[])", [runIds])).toBe(0);
    expect(await count("messages", "conversation_id = $1", [kept.id])).toBe(3);
    expect(await count("runs", "conversation_id = $1", [kept.id])).toBe(3);

    expect((await client.get(`/api/conversations/${doomed.id}`)).status).toBe(404);
    expect((await client.get(`/api/runs/${runIds[1]}`)).status).toBe(404);
    const again = await client.delete(`/api/conversations/${doomed.id}`);
    expect(again.status).toBe(404);
    expect(again.body.error.code).toBe("not_found");
  });

  it("GET lists newest first by last activity: 20 per page by default, at most 100, 101 is 400", async () => {
    const { client, id: userId } = await bearerUser();
    // 130 conversations, in groups of 10 sharing one updated_at.
    await q(
      `insert into conversations (user_id, title, updated_at)
       select $1, 'c' || g, timestamptz '2025-01-01' + (g / 10) * interval '1 second' from generate_series(1, 130) g`,
      [userId],
    );
    const expected = (await q<{ id: string }>("select id from conversations where user_id = $1 order by updated_at desc, id desc", [userId])).map((r) => r.id);

    const first = await client.get("/api/conversations");
    expect(first.status).toBe(200);
    expect(first.body.items).toHaveLength(20);
    expect(first.body.items.map((c: { id: string }) => c.id)).toEqual(expected.slice(0, 20));
    expect(typeof first.body.nextCursor).toBe("string");
    const times = first.body.items.map((c: { updatedAt: string }) => Date.parse(c.updatedAt));
    expect(times).toEqual([...times].sort((a, b) => b - a));

    const max = await client.get("/api/conversations?limit=100");
    expect(max.body.items).toHaveLength(100);
    expect(max.body.items.map((c: { id: string }) => c.id)).toEqual(expected.slice(0, 100));

    for (const bad of ["101", "0", "-1", "2.5", "abc", "1e9"]) {
      const res = await client.get(`/api/conversations?limit=${bad}`);
      expect(res.status, bad).toBe(400);
      expect(res.body.error.code).toBe("validation_failed");
      expect(res.body.error.message, bad).toMatch(/limit/);
    }
  });

  it("the cursor walks every page with no duplicates or gaps, ties on updated_at included", async () => {
    const { client, id: userId } = await bearerUser();
    await q(
      `insert into conversations (user_id, title, updated_at)
       select $1, 'c' || g, timestamptz '2025-01-01' + (g / 7) * interval '1 millisecond' from generate_series(1, 61) g`,
      [userId],
    );
    // Plus a few through the API (distinct, newer timestamps).
    for (let i = 0; i < 3; i++) expect((await client.post("/api/conversations", { title: `api ${i}` })).status).toBe(201);
    const expected = (await q<{ id: string }>("select id from conversations where user_id = $1 order by updated_at desc, id desc", [userId])).map((r) => r.id);
    expect(expected).toHaveLength(64);
    for (const limit of [1, 7, 20, 64, 100]) {
      const pages = await walk(client, "/api/conversations", limit);
      const ids = pages.flatMap((p) => p.items.map((c) => c.id));
      expect(ids, `limit ${limit}`).toEqual(expected);
      expect(new Set(ids).size).toBe(ids.length);
      expect(pages.at(-1)?.nextCursor).toBeNull();
      expect(pages.length).toBe(Math.max(1, Math.ceil(64 / limit)));
    }
  });

  it("a new message moves its conversation to the top", async () => {
    const { client } = await newUser();
    const older = (await client.post("/api/conversations", { title: "older" })).body;
    await client.post("/api/conversations", { title: "newer" });
    await new Promise((r) => setTimeout(r, 5));
    expect((await client.post(`/api/conversations/${older.id}/messages`, { content: "bump" })).status).toBe(202);
    const list = await client.get("/api/conversations");
    expect(list.body.items[0].id).toBe(older.id);
  });

  it("an invalid cursor is 400, never 500", async () => {
    const { client } = await newUser();
    const c = (await client.post("/api/conversations", {})).body;
    const b64 = (s: string) => Buffer.from(s).toString("base64url");
    for (const cursor of ["nope", b64("1:abc"), b64(`123:${"-".repeat(36)}`), b64(`999999999999999:${randomUUID()}`), "%%", "x".repeat(201)]) {
      for (const path of ["/api/conversations", `/api/conversations/${c.id}/messages`]) {
        const res = await client.get(`${path}?cursor=${encodeURIComponent(cursor)}`);
        expect(res.status, `${path} ${cursor}`).toBe(400);
        expect(res.body.error.message).toMatch(/cursor/);
      }
    }
  });
});

describe("messages and runs", () => {
  it("POST /conversations/:id/messages stores the message and a queued run, answering 202 {message, run}", async () => {
    const { client, id: userId } = await newUser();
    const conv = (await client.post("/api/conversations", {})).body;
    const res = await client.post(`/api/conversations/${conv.id}/messages`, { content: "What is 2+2?", agent: "math" });
    expect(res.status).toBe(202);
    expect(Object.keys(res.body).sort()).toEqual(["message", "run"]);
    const { message, run } = res.body;
    expect(message).toEqual({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      conversationId: conv.id,
      role: "user",
      content: "What is 2+2?",
      runId: null,
      agent: null,
      createdAt: expect.stringMatching(ISO),
    });
    expect(run).toEqual({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      conversationId: conv.id,
      messageId: message.id,
      status: "queued",
      requestedAgent: "math",
      agent: null,
      routeReason: null,
      attempt: 0,
      failures: 0,
      error: null,
      usage: null,
      createdAt: expect.stringMatching(ISO),
      startedAt: null,
      finishedAt: null,
    });
    const [m] = await q("select user_id, conversation_id, role, content from messages where id = $1", [message.id]);
    expect(m).toEqual({ user_id: userId, conversation_id: conv.id, role: "user", content: "What is 2+2?" });
    const [r] = await q("select user_id, conversation_id, message_id, status, requested_agent from runs where id = $1", [run.id]);
    expect(r).toEqual({ user_id: userId, conversation_id: conv.id, message_id: message.id, status: "queued", requested_agent: "math" });

    // Without an agent the orchestrator routes: requestedAgent null.
    const routed = await client.post(`/api/conversations/${conv.id}/messages`, { content: "hi" });
    expect(routed.status).toBe(202);
    expect(routed.body.run.requestedAgent).toBeNull();
    // Unknown conversation: 404, nothing stored.
    const before = await count("messages");
    expect((await client.post(`/api/conversations/${randomUUID()}/messages`, { content: "hi" })).status).toBe(404);
    expect(await count("messages")).toBe(before);
  });

  it("GET /runs/:id returns the run as POST answered it; an unknown id is 404", async () => {
    const { client } = await newUser();
    const conv = (await client.post("/api/conversations", {})).body;
    const { run } = (await client.post(`/api/conversations/${conv.id}/messages`, { content: "hello", agent: "hello" })).body;
    const res = await client.get(`/api/runs/${run.id}`);
    expect(res.status).toBe(200);
    expect(res.body).toEqual(run);
    // Fields the queue fills in later come through.
    await q("update runs set status = 'failed', agent = 'hello', route_reason = 'asked', attempt = 2, failures = 2, error_code = 'provider_timeout', error_message = 'timed out', prompt_tokens = 12, completion_tokens = 3, started_at = now(), finished_at = now() where id = $1", [run.id]);
    const later = (await client.get(`/api/runs/${run.id.toUpperCase()}`)).body;
    expect(later).toMatchObject({ id: run.id, status: "failed", agent: "hello", routeReason: "asked", attempt: 2, failures: 2, error: { code: "provider_timeout", message: "timed out" }, usage: { promptTokens: 12, completionTokens: 3 } });
    expect(later.startedAt).toMatch(ISO);
    const missing = await client.get(`/api/runs/${randomUUID()}`);
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe("not_found");
  });

  it("GET /conversations/:id/messages lists oldest first with 20 per page, at most 100, walking every page, ties included", async () => {
    const { client, id: userId } = await bearerUser();
    const conv = (await client.post("/api/conversations", {})).body;
    await q(
      `insert into messages (conversation_id, user_id, role, content, created_at)
       select $1, $2, case when g % 2 = 0 then 'user' else 'assistant' end, 'm' || g, timestamptz '2025-01-01' + (g / 9) * interval '1 millisecond'
       from generate_series(1, 140) g`,
      [conv.id, userId],
    );
    for (let i = 0; i < 3; i++) expect((await client.post(`/api/conversations/${conv.id}/messages`, { content: `api ${i}` })).status).toBe(202);
    const expected = (await q<{ id: string }>("select id from messages where conversation_id = $1 order by created_at, id", [conv.id])).map((r) => r.id);
    expect(expected).toHaveLength(143);

    const first = await client.get(`/api/conversations/${conv.id}/messages`);
    expect(first.status).toBe(200);
    expect(first.body.items).toHaveLength(20);
    expect(first.body.items.map((m: { id: string }) => m.id)).toEqual(expected.slice(0, 20));
    const [firstRow] = await q("select content, role from messages where id = $1", [expected[0]]);
    expect(first.body.items[0]).toMatchObject({ conversationId: conv.id, ...firstRow });
    // The API's own messages are the newest: last.
    const all = await walk(client, `/api/conversations/${conv.id}/messages`, 100);
    expect(all).toHaveLength(2);
    expect(all[0]?.items).toHaveLength(100);
    expect(all.at(-1)?.items.at(-1)).toMatchObject({ content: "api 2" });
    expect((await client.get(`/api/conversations/${conv.id}/messages?limit=101`)).status).toBe(400);

    for (const limit of [1, 9, 20, 50]) {
      const ids = (await walk(client, `/api/conversations/${conv.id}/messages`, limit)).flatMap((p) => p.items.map((m) => m.id));
      expect(ids, `limit ${limit}`).toEqual(expected);
    }
    expect((await client.get(`/api/conversations/${randomUUID()}/messages`)).status).toBe(404);
  });
});

describe("isolation", () => {
  /** User A with a conversation, a message and its run. */
  async function seedA() {
    const a = await newUser();
    const conv = (await a.client.post("/api/conversations", { title: "A's secret" })).body;
    const posted = (await a.client.post(`/api/conversations/${conv.id}/messages`, { content: "A's message" })).body;
    return { ...a, conv, message: posted.message, run: posted.run };
  }

  it("user B (cookie or bearer) gets 404 for A's ids on every route, the same answer as for an unknown id, and changes nothing", async () => {
    const a = await seedA();
    const bCookie = (await newUser()).client;
    const bBearer = (await bearerUser()).client;
    const before = await q("select (select md5(string_agg(c::text, ',' order by c.id)) from conversations c) as c, (select md5(string_agg(m::text, ',' order by m.id)) from messages m) as m, (select md5(string_agg(r::text, ',' order by r.id)) from runs r) as r");

    const routes = (conv: string, run: string): [string, string, unknown?][] => [
      ["GET", `/api/conversations/${conv}`],
      ["PATCH", `/api/conversations/${conv}`, { title: "pwned" }],
      ["DELETE", `/api/conversations/${conv}`],
      ["GET", `/api/conversations/${conv}/messages`],
      ["POST", `/api/conversations/${conv}/messages`, { content: "intruder" }],
      ["GET", `/api/runs/${run}`],
    ];
    for (const b of [bCookie, bBearer]) {
      const unknown = routes(randomUUID(), randomUUID());
      const theirs = routes(a.conv.id, a.run.id);
      // A's message id is not a conversation or run id either.
      const byMessageId = routes(a.message.id, a.message.id);
      for (const [i, [method, path, json]] of theirs.entries()) {
        const opts = json === undefined ? { headers: { "content-type": "application/json" } } : { json };
        const res = await b.req(method, path, opts);
        expect(res.status, `${method} ${path}`).toBe(404);
        expect(res.body.error.code).toBe("not_found");
        expect(JSON.stringify(res.body)).not.toContain("A's");
        const [um, up, uj] = unknown[i] as [string, string, unknown?];
        const ref = await b.req(um, up, uj === undefined ? { headers: { "content-type": "application/json" } } : { json: uj });
        expect(res.body, `${method} ${path}`).toEqual(ref.body);
        const [mm, mp, mj] = byMessageId[i] as [string, string, unknown?];
        expect((await b.req(mm, mp, mj === undefined ? { headers: { "content-type": "application/json" } } : { json: mj })).status).toBe(404);
      }
    }
    const after = await q("select (select md5(string_agg(c::text, ',' order by c.id)) from conversations c) as c, (select md5(string_agg(m::text, ',' order by m.id)) from messages m) as m, (select md5(string_agg(r::text, ',' order by r.id)) from runs r) as r");
    expect(after).toEqual(before);

    // A still has everything.
    expect((await a.client.get(`/api/conversations/${a.conv.id}`)).body.title).toBe("A's secret");
    expect((await a.client.get(`/api/conversations/${a.conv.id}/messages`)).body.items.map((m: { content: string }) => m.content)).toEqual(["A's message"]);
    expect((await a.client.get(`/api/runs/${a.run.id}`)).body.status).toBe("queued");
  });

  it("lists never include another user's rows, even with that user's cursor", async () => {
    const a = await seedA();
    for (let i = 0; i < 4; i++) await a.client.post("/api/conversations", { title: `A ${i}` });
    const b = await newUser();
    const bConv = (await b.client.post("/api/conversations", { title: "B's" })).body;
    await b.client.post(`/api/conversations/${bConv.id}/messages`, { content: "B's message" });

    const aIds = new Set((await q<{ id: string }>("select id from conversations where user_id = $1", [a.id])).map((r) => r.id));
    expect(aIds.size).toBe(5);
    const bList = (await b.client.get("/api/conversations?limit=100")).body;
    expect(bList.items.map((c: { id: string }) => c.id)).toEqual([bConv.id]);

    const aPage = (await a.client.get("/api/conversations?limit=2")).body;
    expect(aPage.nextCursor).toEqual(expect.any(String));
    const withACursor = await b.client.get(`/api/conversations?limit=100&cursor=${encodeURIComponent(aPage.nextCursor)}`);
    expect(withACursor.status).toBe(200);
    for (const c of withACursor.body.items) expect(aIds.has(c.id)).toBe(false);

    const bMessages = (await b.client.get(`/api/conversations/${bConv.id}/messages`)).body.items;
    expect(bMessages.map((m: { content: string }) => m.content)).toEqual(["B's message"]);
    // And a fresh user sees nothing at all.
    const c = await newUser();
    expect((await c.client.get("/api/conversations")).body).toEqual({ items: [], nextCursor: null });
  });
});

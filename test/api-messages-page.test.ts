/**
 * Issue 3, the message list's hot path: `GET /api/conversations/:id/messages`
 * answers from ONE statement that checks the conversation is the caller's and
 * reads the page (a 404 is told from an empty page by the statement's rows),
 * prepared by name except behind a transaction-mode pooler.
 */
import { describe, it, expect, beforeAll, afterAll, vi } from "vitest";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { startDataApi, type Client, type DataApi } from "./helpers/dataApi.js";

let db: TestDatabase;
let api: DataApi;
let pooled: DataApi;

beforeAll(async () => {
  db = await createTestDatabase({ migrate: true });
  api = await startDataApi(db);
  pooled = await startDataApi(db, { env: { DATABASE_TRANSACTION_POOLER: "true" } });
});
afterAll(async () => {
  await api.close();
  await pooled.close();
  await db.drop();
});

type Sent = { name?: string; text: string; values: unknown[] };

/** The statements a request sent on the pool. */
async function statementsOf(client: Client, path: string): Promise<{ status: number; body: unknown; sent: Sent[] }> {
  const spy = vi.spyOn(db.pool, "query");
  try {
    const res = await client.get(path);
    const sent = spy.mock.calls.map((call) => {
      const [q, values] = call as unknown as [string | { name?: string; text: string; values?: unknown[] }, unknown[] | undefined];
      return typeof q === "string" ? { text: q, values: values ?? [] } : { ...(q.name ? { name: q.name } : {}), text: q.text, values: values ?? q.values ?? [] };
    });
    return { status: res.status, body: res.body as unknown, sent };
  } finally {
    spy.mockRestore();
  }
}

async function conversationWith(client: Client, messages: number): Promise<string> {
  const conv = (await client.post("/api/conversations", {})).body as { id: string };
  for (let i = 0; i < messages; i++) expect((await client.post(`/api/conversations/${conv.id}/messages`, { content: `m${i}` })).status).toBe(202);
  return conv.id;
}

describe("GET /api/conversations/:id/messages", () => {
  it("sends one named statement per page, first page and after a cursor", async () => {
    const a = api.client();
    await a.userId(); // the session's user row exists before the spy starts
    const id = await conversationWith(a, 3);
    const first = await statementsOf(a, `/api/conversations/${id}/messages?limit=2`);
    expect(first.status).toBe(200);
    expect(first.sent).toHaveLength(1);
    expect(first.sent[0]?.name).toBe("messages_page");
    const page = first.body as { items: { content: string }[]; nextCursor: string };
    expect(page.items.map((m) => m.content)).toEqual(["m0", "m1"]);

    const later = await statementsOf(a, `/api/conversations/${id}/messages?limit=2&cursor=${encodeURIComponent(page.nextCursor)}`);
    expect(later.status).toBe(200);
    expect(later.sent).toHaveLength(1);
    expect(later.sent[0]?.name).toBe("messages_page_after");
    expect(later.body).toEqual({ items: [expect.objectContaining({ content: "m2" })], nextCursor: null });
  });

  it("tells an empty page from another user's conversation: 200 with no items vs 404", async () => {
    const a = api.client();
    const empty = await conversationWith(a, 0);
    expect((await a.get(`/api/conversations/${empty}/messages`)).body).toEqual({ items: [], nextCursor: null });

    // Past the last message: an empty page of an existing conversation, still 200.
    const one = await conversationWith(a, 1);
    const full = (await a.get(`/api/conversations/${one}/messages?limit=1`)).body as { items: { id: string; createdAt: string }[] };
    const cursor = Buffer.from(`${Date.parse(full.items[0]?.createdAt ?? "")}:${full.items[0]?.id}`).toString("base64url");
    expect((await a.get(`/api/conversations/${one}/messages?cursor=${cursor}`)).body).toEqual({ items: [], nextCursor: null });

    const b = api.client();
    for (const id of [empty, one]) {
      const res = await statementsOf(b, `/api/conversations/${id}/messages`);
      expect(res.status).toBe(404);
      expect(res.body).toMatchObject({ error: { code: "not_found" } });
    }
  });

  it("sends the statement unnamed behind a transaction-mode pooler (no prepared statements there)", async () => {
    const a = pooled.client();
    await a.userId();
    const id = await conversationWith(a, 2);
    const res = await statementsOf(a, `/api/conversations/${id}/messages`);
    expect(res.status).toBe(200);
    expect((res.body as { items: unknown[] }).items).toHaveLength(2);
    expect(res.sent).toHaveLength(1);
    expect(res.sent[0]?.name).toBeUndefined();
  });
});

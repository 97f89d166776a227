/**
 * Issue 3, point 8: every list query has an index. With 50,000 messages
 * stored, EXPLAIN of the exact SQL the stores send (captured on the pool
 * while the real route runs) for the conversation list and the message list,
 * first page and a page after a cursor, shows an index scan and no Seq Scan.
 */
import { describe, it, expect, beforeAll, afterAll, vi } from "vitest";
import { randomUUID } from "node:crypto";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { startDataApi, TEST_JWT_SECRET, type Client, type DataApi } from "./helpers/dataApi.js";
import { createJwt } from "../server/auth/jwt.js";

let db: TestDatabase;
let api: DataApi;
let client: Client;
let userId: string;
let bigConversation: string;

beforeAll(async () => {
  db = await createTestDatabase({ migrate: true });
  api = await startDataApi(db);
  userId = randomUUID();
  client = api.client({ bearer: await createJwt(TEST_JWT_SECRET).sign(userId, 3600) });
  expect(await client.userId()).toBe(userId);
  // 200 other users with 50 conversations each. Ours has 400 conversations
  // holding 50,000 messages: 10,100 in one, 100 in each of the others; three
  // at a time share a timestamp.
  await db.pool.query(`
    insert into users (id) select gen_random_uuid() from generate_series(1, 200);
    insert into conversations (user_id, title, updated_at)
      select u.id, 'c' || g, now() - g * interval '1 minute' from users u, generate_series(1, 50) g where u.id <> '${userId}';
    insert into conversations (user_id, title, updated_at)
      select '${userId}', 'mine ' || g, now() - g * interval '1 minute' from generate_series(1, 400) g;
    insert into messages (conversation_id, user_id, role, content, created_at)
      select c.id, c.user_id, case when g % 2 = 0 then 'user' else 'assistant' end, 'message ' || g,
             timestamptz '2025-01-01' + (g / 3) * interval '1 second'
      from (select id, user_id, row_number() over (order by id) as n from conversations where user_id = '${userId}') c,
           generate_series(1, 10100) g
      where g <= case when c.n = 1 then 10100 else 100 end;
    analyze;`);
  const r = await db.pool.query<{ id: string }>("select conversation_id as id from messages group by 1 order by count(*) desc limit 1");
  bigConversation = r.rows[0]?.id as string;
}, 120_000);
afterAll(async () => {
  await api.close();
  await db.drop();
});

interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  "Index Name"?: string;
  Plans?: PlanNode[];
}
const nodes = (n: PlanNode): PlanNode[] => [n, ...(n.Plans ?? []).flatMap(nodes)];

/**
 * Runs the request and returns the SQL text and parameters of every query it
 * sent on the pool (drizzle passes `{text}` or a string, then the values).
 */
async function queriesOf(path: string): Promise<{ text: string; values: unknown[] }[]> {
  const spy = vi.spyOn(db.pool, "query");
  try {
    const res = await client.get(path);
    expect(res.status, res.text).toBe(200);
    return spy.mock.calls.map((call) => {
      const [q, values] = call as unknown as [string | { text: string; values?: unknown[] }, unknown[] | undefined];
      return typeof q === "string" ? { text: q, values: values ?? [] } : { text: q.text, values: values ?? q.values ?? [] };
    });
  } finally {
    spy.mockRestore();
  }
}

/** EXPLAIN of the one query on `table` that the request sent; asserts an index scan and no seq scan on it. */
async function explainListQuery(path: string, table: string, index: string) {
  const sent = (await queriesOf(path)).filter((q) => new RegExp(`from "${table}"`, "i").test(q.text) && /order by/i.test(q.text));
  expect(sent, `one list query on ${table}`).toHaveLength(1);
  const { text, values } = sent[0] as { text: string; values: unknown[] };
  const json = await db.pool.query<{ "QUERY PLAN": [{ Plan: PlanNode }] }>(`explain (format json) ${text}`, values);
  const plan = json.rows[0]?.["QUERY PLAN"][0].Plan as PlanNode;
  const onTable = nodes(plan).filter((n) => n["Relation Name"] === table);
  const shown = (await db.pool.query<{ "QUERY PLAN": string }>(`explain ${text}`, values)).rows.map((r) => r["QUERY PLAN"]).join("\n");
  const context = `${text}\n${shown}`;
  expect(onTable.length, context).toBeGreaterThan(0);
  for (const n of onTable) {
    expect(["Index Scan", "Index Only Scan"], context).toContain(n["Node Type"]);
    expect(n["Index Name"], context).toBe(index);
  }
  expect(shown).not.toMatch(/Seq Scan/);
  return { text, shown };
}

describe("indexes for the list queries (50,000 messages)", () => {
  it("holds the data set", async () => {
    const r = await db.pool.query<{ n: number }>("select count(*)::int as n from messages where user_id = $1", [userId]);
    expect(r.rows[0]?.n).toBe(50_000);
  });

  it("the conversation list (first page and after a cursor) is an index scan on conversations_user_updated_idx", async () => {
    const first = await explainListQuery("/api/conversations", "conversations", "conversations_user_updated_idx");
    const page = (await client.get("/api/conversations?limit=10")).body;
    const later = await explainListQuery(`/api/conversations?limit=10&cursor=${encodeURIComponent(page.nextCursor)}`, "conversations", "conversations_user_updated_idx");
    console.log(`conversation list:\n${first.text}\n${first.shown}\n\nafter a cursor:\n${later.shown}`);
  });

  it("the message list (first page and after a cursor) is an index scan on messages_conversation_created_idx", async () => {
    const base = `/api/conversations/${bigConversation}/messages`;
    const first = await explainListQuery(base, "messages", "messages_conversation_created_idx");
    const page = (await client.get(`${base}?limit=100`)).body;
    expect(page.items).toHaveLength(100);
    const later = await explainListQuery(`${base}?limit=100&cursor=${encodeURIComponent(page.nextCursor)}`, "messages", "messages_conversation_created_idx");
    console.log(`message list:\n${first.text}\n${first.shown}\n\nafter a cursor:\n${later.shown}`);
  });

  it("a page after a cursor starts at the cursor in the index: no row before the cursor is read and filtered out", async () => {
    /** EXPLAIN ANALYZE of the list query the request sent. */
    async function analyzed(path: string, table: string) {
      const sent = (await queriesOf(path)).filter((q) => new RegExp(`from "${table}"`).test(q.text) && /order by/i.test(q.text));
      const { text, values } = sent[0] as { text: string; values: unknown[] };
      return (await db.pool.query<{ "QUERY PLAN": string }>(`explain analyze ${text}`, values)).rows.map((row) => row["QUERY PLAN"]).join("\n");
    }
    async function cursorAfter(path: string, rows: number) {
      let cursor: string | null = null;
      for (let i = 0; i < rows / 100; i++) cursor = (await client.get(`${path}?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`)).body.nextCursor;
      expect(cursor).toEqual(expect.any(String));
      return encodeURIComponent(cursor as string);
    }
    const removed = (plan: string) => [...plan.matchAll(/Rows Removed by (Filter|Index Recheck): (\d+)/g)].reduce((n, m) => n + Number(m[2]), 0);
    // The 201st conversation of 400.
    const conv = await analyzed(`/api/conversations?limit=20&cursor=${await cursorAfter("/api/conversations", 200)}`, "conversations");
    expect(conv).toMatch(/Index Cond: .*ROW\(updated_at, id\) < ROW\(/);
    expect(removed(conv), conv).toBe(0);
    expect(conv).not.toMatch(/Seq Scan/);
    // The 5,001st message of 10,100.
    const base = `/api/conversations/${bigConversation}/messages`;
    const msgs = await analyzed(`${base}?limit=20&cursor=${await cursorAfter(base, 5000)}`, "messages");
    expect(msgs).toMatch(/Index Cond: .*ROW\(created_at, id\) > ROW\(/);
    expect(removed(msgs), msgs).toBe(0);
    expect(msgs).toMatch(/actual time=[\d.]+ rows=21(\.00)? loops=1/);
    expect(msgs).not.toMatch(/Seq Scan|Sort/);
  });

  it("a user with few conversations (50) gets the ordered index scan too: no Sort, no Seq Scan", async () => {
    const light = (await db.pool.query<{ user_id: string }>("select user_id from conversations where user_id <> $1 limit 1", [userId])).rows[0]?.user_id as string;
    const lightClient = api.client({ bearer: await createJwt(TEST_JWT_SECRET).sign(light, 3600) });
    const spy = vi.spyOn(db.pool, "query");
    let sent: { text: string; values: unknown[] } | undefined;
    try {
      expect((await lightClient.get("/api/conversations")).body.items).toHaveLength(20);
      const call = spy.mock.calls.map((c) => c as unknown as [{ text: string } | string, unknown[]]).find(([q]) => /from "conversations"/.test(typeof q === "string" ? q : q.text));
      if (call) sent = { text: typeof call[0] === "string" ? call[0] : call[0].text, values: call[1] };
    } finally {
      spy.mockRestore();
    }
    expect(sent).toBeDefined();
    const shown = (await db.pool.query<{ "QUERY PLAN": string }>(`explain ${sent?.text}`, sent?.values)).rows.map((r) => r["QUERY PLAN"]).join("\n");
    expect(shown).toMatch(/Index Scan (Backward )?using conversations_user_updated_idx/);
    expect(shown).not.toMatch(/Sort|Seq Scan/);
  });
});

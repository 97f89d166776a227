/**
 * Issue 3, points 6 and 7: bad input is a 4xx naming the problem and writes
 * nothing (examples, then a fast-check property over every route); and a
 * failed run insert leaves no message behind.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { randomUUID } from "node:crypto";
import fc from "fast-check";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { startDataApi, snapshotTables, TEST_JWT_SECRET, type Client, type DataApi, type Res } from "./helpers/dataApi.js";
import { createJwt } from "../server/auth/jwt.js";
import { AGENT_NAMES } from "../shared/api.js";

let db: TestDatabase;
let api: DataApi;

beforeAll(async () => {
  db = await createTestDatabase({ migrate: true });
  api = await startDataApi(db, { env: { MAX_MESSAGE_LENGTH: "50" } });
});
afterAll(async () => {
  await api.close();
  await db.drop();
});

async function userWithConversation(): Promise<{ client: Client; convId: string; runId: string }> {
  const client = api.client();
  await client.userId();
  const convId = (await client.post("/api/conversations", { title: "t" })).body.id as string;
  const runId = (await client.post(`/api/conversations/${convId}/messages`, { content: "first" })).body.run.id as string;
  return { client, convId, runId };
}

function expect400(res: Res, field: RegExp, what: string) {
  expect(res.status, what).toBe(400);
  expect(res.body.error.code, what).toMatch(/^(validation_failed|invalid_json|bad_request)$/);
  expect(res.body.error.message, what).toMatch(field);
}

describe("bad input", () => {
  it("message content is 1..MAX_MESSAGE_LENGTH characters, else 400 naming content; nothing stored", async () => {
    const { client, convId } = await userWithConversation();
    const path = `/api/conversations/${convId}/messages`;
    const before = await snapshotTables(db);
    const bad: [unknown, string][] = [
      ["x".repeat(51), "51 characters"],
      ["é".repeat(51), "51 non-ASCII characters"],
      ["", "empty"],
      ["   \n\t ", "blank"],
      [undefined, "missing"],
      [null, "null"],
      [42, "a number"],
      [["hi"], "an array"],
      [{ text: "hi" }, "an object"],
      ["a\u0000b", "a NUL character (PostgreSQL text cannot hold it)"],
    ];
    for (const [content, what] of bad) {
      const res = await client.post(path, content === undefined ? {} : { content });
      expect400(res, /content/, what);
      expect(res.body.error.code).toBe("validation_failed");
    }
    expect(await snapshotTables(db)).toEqual(before);
    for (const ok of ["x", "x".repeat(50), "é".repeat(50), "😀".repeat(25)]) {
      const res = await client.post(path, { content: ok });
      expect(res.status, `${ok.length} code units`).toBe(202);
      expect(res.body.message.content).toBe(ok);
    }
  });

  it("the default limit is 10,000 characters", async () => {
    const other = await startDataApi(db);
    try {
      const client = other.client();
      const convId = (await client.post("/api/conversations", {})).body.id;
      expect((await client.post(`/api/conversations/${convId}/messages`, { content: "y".repeat(10_000) })).status).toBe(202);
      expect400(await client.post(`/api/conversations/${convId}/messages`, { content: "y".repeat(10_001) }), /content.*10000/, "10,001");
    } finally {
      await other.close();
    }
  });

  it("an unknown agent is 400 listing the known ones", async () => {
    const { client, convId } = await userWithConversation();
    const before = await snapshotTables(db);
    for (const agent of ["wizard", "", "MATH", 7, null]) {
      const res = await client.post(`/api/conversations/${convId}/messages`, { content: "hi", agent });
      expect400(res, /agent/, String(agent));
      if (typeof agent === "string") for (const name of AGENT_NAMES) expect(res.body.error.message).toContain(name);
    }
    expect(await snapshotTables(db)).toEqual(before);
    for (const agent of AGENT_NAMES) expect((await client.post(`/api/conversations/${convId}/messages`, { content: "hi", agent })).status).toBe(202);
  });

  it("unknown fields are 400 naming them, on every body", async () => {
    const { client, convId } = await userWithConversation();
    const before = await snapshotTables(db);
    expect400(await client.post("/api/conversations", { title: "t", userId: randomUUID() }), /userId/, "POST conversations");
    expect400(await client.patch(`/api/conversations/${convId}`, { title: "t", createdAt: "2020-01-01" }), /createdAt/, "PATCH");
    expect400(await client.post(`/api/conversations/${convId}/messages`, { content: "hi", role: "assistant" }), /role/, "POST messages");
    expect400(await client.get("/api/conversations?limit=5&user_id=x"), /user_id/, "list query");
    expect400(await client.get(`/api/conversations/${convId}/messages?order=desc`), /order/, "messages query");
    expect(await snapshotTables(db)).toEqual(before);
  });

  it("other bad bodies: not an object, bad titles", async () => {
    const { client, convId } = await userWithConversation();
    const before = await snapshotTables(db);
    expect400(await client.post("/api/conversations", [1, 2]), /body/, "array body");
    expect400(await client.post("/api/conversations", { title: 5 }), /title/, "number title");
    expect400(await client.post("/api/conversations", { title: "   " }), /title/, "blank title");
    expect400(await client.post("/api/conversations", { title: "t".repeat(201) }), /title/, "long title");
    expect400(await client.post("/api/conversations", { title: "a\u0000b" }), /title/, "NUL in title");
    expect400(await client.patch(`/api/conversations/${convId}`, {}), /title/, "PATCH without title");
    expect400(await client.post(`/api/conversations/${convId}/messages`, "hello"), /body/, "string body");
    expect(await snapshotTables(db)).toEqual(before);
  });

  it("malformed JSON is 400 invalid_json on every write", async () => {
    const { client, convId } = await userWithConversation();
    const before = await snapshotTables(db);
    for (const raw of ["{", "{'title':'x'}", '{"title": "x",}', "nul", '{"content": "a"} trailing', "\u0000"]) {
      for (const [method, path] of [
        ["POST", "/api/conversations"],
        ["PATCH", `/api/conversations/${convId}`],
        ["POST", `/api/conversations/${convId}/messages`],
        ["DELETE", `/api/conversations/${convId}`],
      ] as const) {
        const res = await client.req(method, path, { raw, headers: { "content-type": "application/json" } });
        expect(res.status, `${method} ${path} ${JSON.stringify(raw)}`).toBe(400);
        expect(res.body.error.code).toBe("invalid_json");
      }
    }
    expect(await snapshotTables(db)).toEqual(before);
  });

  it("a non-UUID id is 404 on every route, never 500", async () => {
    const { client } = await userWithConversation();
    const ids = [
      "abc",
      "1",
      "00000000-0000-0000-0000-00000000000g",
      `${randomUUID()}x`,
      `{${randomUUID()}}`,
      randomUUID().replaceAll("-", ""),
      "' or '1'='1",
      encodeURIComponent("' or 1=1 --"),
      "%20",
      "null",
      "undefined",
      "-1",
      "9".repeat(400),
      encodeURIComponent("😀"),
    ];
    const before = await snapshotTables(db);
    for (const id of ids) {
      for (const [method, path, json] of [
        ["GET", `/api/conversations/${id}`],
        ["PATCH", `/api/conversations/${id}`, { title: "x" }],
        ["DELETE", `/api/conversations/${id}`],
        ["GET", `/api/conversations/${id}/messages`],
        ["POST", `/api/conversations/${id}/messages`, { content: "x" }],
        ["GET", `/api/runs/${id}`],
      ] as const) {
        const res = await client.req(method, path, json ? { json } : { headers: { "content-type": "application/json" } });
        expect(res.status, `${method} ${path}`).toBe(404);
        expect(res.body.error.code).toBe("not_found");
      }
    }
    expect(await snapshotTables(db)).toEqual(before);
  });
});

/** encodeURIComponent throws on a lone surrogate; such a string goes percent-encoded as its UTF-8 replacement. */
const encodeOrRaw = (s: string) => {
  try {
    return encodeURIComponent(s);
  } catch {
    return encodeURIComponent(s.replace(/[\ud800-\udfff]/g, "\ufffd"));
  }
};

describe("property: random requests to every route", () => {
  it("never answer 5xx or a stack trace, and a rejected request changes no stored data", async () => {
    const a = await userWithConversation();
    const b = await userWithConversation(); // another user's ids
    const bearer = api.client({ bearer: await createJwt(TEST_JWT_SECRET).sign(randomUUID(), 3600) });
    await bearer.userId();
    // A's own conversations; one deleted by a random DELETE is replaced.
    const own = [a.convId, (await a.client.post("/api/conversations", {})).body.id as string];
    const ownRuns = [a.runId];

    /** Strings, often with characters that trip databases and parsers. */
    const text = fc.oneof(
      fc.string(),
      fc.string({ unit: "binary" }),
      { weight: 4, arbitrary: fc.tuple(fc.string(), fc.constantFrom("\u0000", "\u0000", "\u0000", "\ud800", "\udfff", "\u2028", "'", "\\")).map(([s, c]) => s + c + s) },
      fc.constantFrom("", " ", "\u0000", "x".repeat(51), "t".repeat(201)),
    );
    const weird = ["", "%", "%ZZ", "..", "%2e%2e", "a%2Fb", "%00", "null", "0", "-0", "1e3", "%E0%A4%A"];
    const idArb: fc.Arbitrary<{ kind?: string; raw?: string }> = fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom("own", "own", "ownRun", "otherConv", "otherRun").map((k) => ({ kind: k })) },
      fc.uuid().map((u) => ({ raw: u })),
      text.map((s) => ({ raw: encodeOrRaw(s) })),
      fc.constantFrom(...weird).map((s) => ({ raw: s })),
    );
    const resolveId = (id: { kind?: string; raw?: string }) => {
      switch (id.kind) {
        case "own":
          return own[0] as string;
        case "ownRun":
          return ownRuns[0] as string;
        case "otherConv":
          return b.convId;
        case "otherRun":
          return b.runId;
        default:
          return id.raw as string;
      }
    };
    const cursorArb = fc.oneof(
      text,
      text.map((s) => Buffer.from(s).toString("base64url")),
      {
        weight: 3,
        arbitrary: fc
          .tuple(
            fc.oneof(fc.integer({ min: 0, max: 2 * Date.now() }).map(String), fc.bigInt({ min: 0n, max: 10n ** 16n }).map(String), fc.constantFrom("253402300800000", "999999999999999")),
            fc.oneof(fc.uuid(), fc.string({ minLength: 36, maxLength: 36, unit: fc.constantFrom("a", "-", "0", "f") })),
          )
          .map(([t, u]) => Buffer.from(`${t}:${u}`).toString("base64url")),
      },
    );
    const limitArb = fc.oneof(
      { weight: 3, arbitrary: fc.integer({ min: 1, max: 100 }).map(String) },
      fc.integer({ min: -5, max: 200 }).map(String),
      text,
      fc.constantFrom("1e2", "0x10", "1.5", " 5", "Infinity", ""),
    );
    const queryArb = fc.oneof(
      fc.constant(""),
      {
        weight: 4,
        arbitrary: fc
          .tuple(fc.option(limitArb, { freq: 3 }), fc.option(cursorArb, { freq: 3 }), fc.oneof({ weight: 5, arbitrary: fc.constant(null) }, fc.tuple(text, text)))
          .map(([limit, cursor, extra]) => {
            const p = new URLSearchParams();
            if (limit !== null) p.set("limit", limit);
            if (cursor !== null) p.set("cursor", cursor);
            if (extra) p.set(extra[0], extra[1]);
            return p.toString();
          }),
      },
      fc.constantFrom("limit=1&limit=2", "cursor=a&cursor=b", "limit[]=1", "limit[a]=1", "%=%", "&&&", "limit", "=1"),
    );
    /** A value for a field: mostly strings, sometimes any JSON. */
    const value = fc.oneof({ weight: 6, arbitrary: text }, fc.jsonValue());
    /** An object shaped like the route's body, now and then with an unknown field. */
    const shaped = (fields: Record<string, fc.Arbitrary<unknown>>) =>
      fc
        .tuple(
          fc.record(fields, { requiredKeys: [] }),
          fc.oneof({ weight: 5, arbitrary: fc.constant(null) }, fc.tuple(text, fc.jsonValue())),
        )
        .map(([o, extra]) => (extra ? { ...o, [extra[0]]: extra[1] } : o));
    const bodyFor = (template: string) => {
      const fields =
        template === "/api/conversations/:id/messages"
          ? shaped({ content: value, agent: fc.oneof(fc.constantFrom(...AGENT_NAMES), value) })
          : template.startsWith("/api/conversations")
            ? shaped({ title: value })
            : fc.jsonValue();
      return fc.oneof(
        fc.constant({ kind: "none" as const }),
        { weight: 5, arbitrary: fields.map((v) => ({ kind: "json" as const, v })) },
        fc.jsonValue().map((v) => ({ kind: "json" as const, v })),
        text.map((s) => ({ kind: "raw" as const, s })),
      );
    };
    const routes = [
      ["GET", "/api/session"],
      ["POST", "/api/conversations"],
      ["GET", "/api/conversations"],
      ["GET", "/api/conversations/:id"],
      ["PATCH", "/api/conversations/:id"],
      ["DELETE", "/api/conversations/:id"],
      ["GET", "/api/conversations/:id/messages"],
      ["POST", "/api/conversations/:id/messages"],
      ["GET", "/api/runs/:id"],
    ] as const;
    const requestArb = fc.constantFrom(...routes).chain(([method, template]) =>
      fc.record({
        method: fc.constant(method),
        template: fc.constant(template),
        id: idArb,
        query: queryArb,
        body: bodyFor(template),
        auth: fc.constantFrom("cookie", "cookie", "cookie", "bearer", "badBearer"),
        ct: fc.constantFrom("application/json", "application/json", "application/json", "application/json", undefined, "text/plain", "application/json; charset=latin1"),
      }),
    );

    let snapshot = await snapshotTables(db);
    let rejected = 0;
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(requestArb, async ({ method, template, id, query, body, auth, ct }) => {
        const path = template.replace(":id", resolveId(id)) + (query ? `?${query}` : "");
        const headers: Record<string, string> = ct ? { "content-type": ct } : {};
        if (auth === "badBearer") headers.authorization = "Bearer e30.e30.e30";
        const client = auth === "bearer" ? bearer : a.client;
        const res = await client.req(method, path, {
          headers,
          ...(body.kind === "json" ? { raw: JSON.stringify(body.v) ?? "null" } : body.kind === "raw" ? { raw: body.s } : {}),
        });
        const what = `${method} ${path} → ${res.status} ${res.text.slice(0, 300)}`;
        expect(res.status, what).toBeLessThan(500);
        expect(res.text, what).not.toContain("    at ");
        expect(res.text, what).not.toMatch(/node_modules|\.ts:\d+/);
        if (res.status >= 400) {
          rejected++;
          expect(res.body?.error?.code, what).toEqual(expect.any(String));
          expect(res.body.error.message, what).toEqual(expect.any(String));
          expect(await snapshotTables(db), what).toEqual(snapshot);
        } else {
          accepted++;
          if (method === "DELETE" && id.kind === "own") {
            own.shift();
            own.push((await a.client.post("/api/conversations", {})).body.id);
          }
          if (method === "POST" && res.body?.run) ownRuns.unshift(res.body.run.id);
          snapshot = await snapshotTables(db);
        }
      }),
      { numRuns: 300 },
    );
    // The generators reach both outcomes.
    expect(rejected).toBeGreaterThan(100);
    expect(accepted).toBeGreaterThan(15);
  });
});

describe("nothing half-written", () => {
  it("a failing run insert leaves neither the message nor the run (and the conversation untouched): 5xx JSON without details", async () => {
    const { client, convId } = await userWithConversation();
    const [conv] = (await db.pool.query("select updated_at from conversations where id = $1", [convId])).rows;
    await db.pool.query(`
      create function test_refuse_runs() returns trigger language plpgsql as $$
      begin raise exception 'run insert refused by test trigger'; end $$;
      create trigger test_refuse_runs before insert on runs for each row execute function test_refuse_runs();`);
    try {
      const before = await snapshotTables(db);
      const res = await client.post(`/api/conversations/${convId}/messages`, { content: "must not be stored" });
      expect(res.status).toBeGreaterThanOrEqual(500);
      expect(res.headers["content-type"]).toMatch(/^application\/json/);
      expect(res.body.error.code).toBe("internal");
      expect(res.text).not.toContain("test trigger");
      expect(res.text).not.toContain("    at ");
      expect(await snapshotTables(db)).toEqual(before);
      const stored = await db.pool.query("select 1 from messages where content = 'must not be stored'");
      expect(stored.rowCount).toBe(0);
      expect((await db.pool.query("select updated_at from conversations where id = $1", [convId])).rows[0]).toEqual(conv);
      expect(api.app.logLines.some((l) => l.level === 50 && String(JSON.stringify(l.err)).includes("test trigger"))).toBe(true);
    } finally {
      await db.pool.query("drop trigger test_refuse_runs on runs; drop function test_refuse_runs();");
    }
    // Control: without the trigger the same request stores both.
    const ok = await client.post(`/api/conversations/${convId}/messages`, { content: "stored" });
    expect(ok.status).toBe(202);
    expect((await db.pool.query("select 1 from runs where message_id = $1", [ok.body.message.id])).rowCount).toBe(1);
  });
});

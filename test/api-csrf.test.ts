/**
 * Issue 3, point 5: CSRF. A cookie-authenticated write needs
 * `Content-Type: application/json` and, when an Origin is sent, an allowed
 * one (own host or CORS_ORIGINS); bearer-token writes are exempt;
 * ENABLE_CSRF=false turns the guard off.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { randomUUID } from "node:crypto";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { startDataApi, snapshotTables, TEST_JWT_SECRET, type Client, type DataApi, type ReqOptions } from "./helpers/dataApi.js";
import { createJwt } from "../server/auth/jwt.js";

const PARTNER = "https://partner.example.com";

let db: TestDatabase;
let api: DataApi;
let noCsrf: DataApi;

beforeAll(async () => {
  db = await createTestDatabase({ migrate: true });
  [api, noCsrf] = await Promise.all([
    startDataApi(db, { env: { CORS_ORIGINS: `${PARTNER}, https://other.example.org` } }),
    startDataApi(db, { env: { ENABLE_CSRF: "false" } }),
  ]);
});
afterAll(async () => {
  await Promise.all([api.close(), noCsrf.close()]);
  await db.drop();
});

/** A cookie user with one conversation. */
async function cookieUser(on: DataApi = api): Promise<{ client: Client; convId: string }> {
  const client = on.client();
  await client.userId();
  const res = await client.post("/api/conversations", { title: "mine" });
  expect(res.status).toBe(201);
  return { client, convId: res.body.id };
}

/** Every write route, with a body where the route takes one. */
const writes = (convId: string): { method: string; path: string; body?: unknown }[] => [
  { method: "POST", path: "/api/conversations", body: { title: "new" } },
  { method: "PATCH", path: `/api/conversations/${convId}`, body: { title: "renamed" } },
  { method: "POST", path: `/api/conversations/${convId}/messages`, body: { content: "hi" } },
  { method: "DELETE", path: `/api/conversations/${convId}` },
];

function expectCsrf(res: { status: number; body: { error?: { code?: string } }; headers: Record<string, unknown> }, what: string) {
  expect(res.status, what).toBe(403);
  expect(String(res.headers["content-type"]), what).toMatch(/^application\/json/);
  expect(res.body.error?.code, what).toBe("csrf_rejected");
}

describe("CSRF guard (ENABLE_CSRF on by default)", () => {
  it("rejects cookie-authenticated bodyless writes without a JSON content type: 403 csrf_rejected, nothing written", async () => {
    const { client, convId } = await cookieUser();
    const before = await snapshotTables(db);
    for (const { method, path } of writes(convId)) {
      expectCsrf(await client.req(method, path), `${method} ${path}`);
      // A content type a cross-site <form> can send is no better.
      expectCsrf(await client.req(method, path, { headers: { "content-type": "application/x-www-form-urlencoded" } }), `${method} ${path} form`);
    }
    expect(await snapshotTables(db)).toEqual(before);
    expect((await client.get(`/api/conversations/${convId}`)).status).toBe(200);
  });

  it("rejects a non-JSON body earlier with 415; either way nothing is written", async () => {
    const { client, convId } = await cookieUser();
    const before = await snapshotTables(db);
    for (const { method, path } of writes(convId)) {
      for (const ct of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]) {
        const res = await client.req(method, path, { raw: "title=x&content=y", headers: { "content-type": ct } });
        expect([403, 415], `${method} ${path} ${ct}`).toContain(res.status);
      }
    }
    expect(await snapshotTables(db)).toEqual(before);
  });

  it("rejects JSON writes from a cross-site Origin with 403, nothing written", async () => {
    const { client, convId } = await cookieUser();
    const before = await snapshotTables(db);
    for (const origin of ["https://evil.example", "null", `${api.baseUrl}.evil.example`, api.baseUrl.replace("http:", "https:"), "http://localhost:1"]) {
      for (const { method, path, body } of writes(convId)) {
        const opts: ReqOptions = { headers: { origin, "content-type": "application/json" }, ...(body === undefined ? {} : { json: body }) };
        expectCsrf(await client.req(method, path, opts), `${method} ${path} from ${origin}`);
      }
    }
    expect(await snapshotTables(db)).toEqual(before);
  });

  it("lets JSON writes through from no Origin, our own origin and CORS_ORIGINS", async () => {
    for (const origin of [undefined, api.baseUrl, PARTNER, "https://other.example.org"]) {
      const { client, convId } = await cookieUser();
      const headers: Record<string, string> = { "content-type": "application/json", ...(origin ? { origin } : {}) };
      const statuses = [];
      for (const { method, path, body } of writes(convId)) {
        statuses.push((await client.req(method, path, { headers, ...(body === undefined ? {} : { json: body }) })).status);
      }
      expect(statuses, String(origin)).toEqual([201, 200, 202, 204]);
    }
    // A charset parameter still counts as JSON.
    const { client } = await cookieUser();
    expect((await client.post("/api/conversations", { title: "x" }, { headers: { "content-type": "application/json; charset=utf-8" } })).status).toBe(201);
  });

  it("behind the trusted proxy (X-Forwarded-Proto: https) our own origin is the https one", async () => {
    const client = api.client({ headers: { "x-forwarded-proto": "https" } });
    await client.userId();
    const own = api.baseUrl.replace("http:", "https:");
    expect((await client.post("/api/conversations", {}, { headers: { origin: own } })).status).toBe(201);
    expectCsrf(await client.post("/api/conversations", {}, { headers: { origin: api.baseUrl } }), "http origin over https");
  });

  it("never applies to reads: GET with a foreign Origin and no content type is answered", async () => {
    const { client, convId } = await cookieUser();
    const res = await client.get(`/api/conversations/${convId}`, { headers: { origin: "https://evil.example" } });
    expect(res.status).toBe(200);
    expect((await client.get("/api/session", { headers: { origin: "https://evil.example" } })).status).toBe(200);
  });

  it("exempts bearer-token writes: no content type, any Origin", async () => {
    const userId = randomUUID();
    const client = api.client({ bearer: await createJwt(TEST_JWT_SECRET).sign(userId, 3600) });
    const created = await client.req("POST", "/api/conversations", { headers: { origin: "https://evil.example" } });
    expect(created.status).toBe(201);
    const convId = created.body.id as string;
    expect((await client.req("POST", `/api/conversations/${convId}/messages`, { json: { content: "hi" }, headers: { origin: "https://evil.example" } })).status).toBe(202);
    expect((await client.req("PATCH", `/api/conversations/${convId}`, { json: { title: "t" }, headers: { origin: "https://evil.example" } })).status).toBe(200);
    expect((await client.req("DELETE", `/api/conversations/${convId}`, { headers: { origin: "https://evil.example" } })).status).toBe(204);
  });

  it("is off with ENABLE_CSRF=false: the same cookie writes pass", async () => {
    const { client, convId } = await cookieUser(noCsrf);
    const origin = { origin: "https://evil.example" };
    expect((await client.req("POST", "/api/conversations")).status).toBe(201);
    expect((await client.req("POST", `/api/conversations/${convId}/messages`, { json: { content: "hi" }, headers: origin })).status).toBe(202);
    expect((await client.req("PATCH", `/api/conversations/${convId}`, { json: { title: "t" }, headers: origin })).status).toBe(200);
    expect((await client.req("DELETE", `/api/conversations/${convId}`, { headers: origin })).status).toBe(204);
  });
});

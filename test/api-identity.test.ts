/**
 * Issue 3, points 1 and 2: anonymous identity behind a signed session cookie,
 * and bearer tokens for programs. Real HTTP on loopback against createDataApi.
 */
import { describe, it, expect, beforeAll, afterAll, onTestFinished } from "vitest";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { randomUUID } from "node:crypto";
import { SignJWT, generateKeyPair, decodeJwt } from "jose";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { ROOT } from "./helpers/paths.js";
import { startDataApi, parseSetCookie, TEST_JWT_SECRET, TEST_SESSION_SECRET, type DataApi, type Res } from "./helpers/dataApi.js";
import { createSessionCodec, SESSION_TTL_SECONDS } from "../server/auth/session.js";
import { createJwt } from "../server/auth/jwt.js";

let db: TestDatabase;
let api: DataApi;
const extra: DataApi[] = [];

beforeAll(async () => {
  db = await createTestDatabase({ migrate: true });
  api = await startDataApi(db);
});
afterAll(async () => {
  await Promise.all([api, ...extra].map((a) => a.close()));
  await db.drop();
});

const now = () => Math.floor(Date.now() / 1000);
const userCount = async () => (await db.pool.query<{ n: number }>("select count(*)::int as n from users")).rows[0]?.n;
const userExists = async (id: string) => Boolean((await db.pool.query("select 1 from users where id = $1", [id])).rowCount);

function sessionCookie(res: Res) {
  const lines = res.setCookie.filter((l) => /^(__Host-)?esa_sid=/.test(l));
  expect(lines).toHaveLength(1);
  return parseSetCookie(lines[0] as string);
}

async function start(env: Record<string, string | undefined>, dataDir?: string) {
  const a = await startDataApi(db, { env, ...(dataDir ? { dataDir } : {}) });
  extra.push(a);
  return a;
}

describe("anonymous identity (session cookie)", () => {
  it("gives a first request a users row and an httpOnly, SameSite=Lax, Path=/ cookie (no Secure over plain HTTP)", async () => {
    const before = await userCount();
    const res = await api.client().get("/api/session");
    expect(res.status).toBe(200);
    expect(Object.keys(res.body)).toEqual(["userId"]);
    const userId = res.body.userId as string;
    expect(userId).toMatch(/^[0-9a-f-]{36}$/);
    expect(await userExists(userId)).toBe(true);
    expect(await userCount()).toBe((before ?? 0) + 1);

    const c = sessionCookie(res);
    expect(c.name).toBe("esa_sid");
    expect(c.attrs.httponly).toBe(true);
    expect(String(c.attrs.samesite).toLowerCase()).toBe("lax");
    expect(c.attrs.path).toBe("/");
    expect(c.attrs.secure).toBeUndefined();
    expect(c.attrs.domain).toBeUndefined();
    expect(Number(c.attrs["max-age"])).toBeGreaterThan(0);
    // Signed: the value names the user and carries a MAC, it is not a bare id.
    expect(c.value).not.toBe(userId);
    expect(createSessionCodec(TEST_SESSION_SECRET).verify(c.value, now())?.userId).toBe(userId);
  });

  it("brings back the same user with the cookie, without a new row or a new cookie", async () => {
    const client = api.client();
    const id = await client.userId();
    const count = await userCount();
    for (let i = 0; i < 3; i++) {
      const res = await client.get("/api/session");
      expect(res.status).toBe(200);
      expect(res.body.userId).toBe(id);
      expect(res.setCookie).toEqual([]);
    }
    expect(await userCount()).toBe(count);
  });

  it("over HTTPS per the trusted proxy (X-Forwarded-Proto) names the cookie __Host-esa_sid with Secure", async () => {
    const client = api.client({ headers: { "x-forwarded-proto": "https" } });
    const res = await client.get("/api/session");
    expect(res.status).toBe(200);
    const c = sessionCookie(res);
    expect(c.name).toBe("__Host-esa_sid");
    expect(c.attrs.secure).toBe(true);
    expect(c.attrs.httponly).toBe(true);
    expect(String(c.attrs.samesite).toLowerCase()).toBe("lax");
    expect(c.attrs.path).toBe("/");
    expect(c.attrs.domain).toBeUndefined(); // required by the __Host- prefix
    // The browser sends it back over HTTPS: same user.
    expect(client.cookie?.startsWith("__Host-esa_sid=")).toBe(true);
    const again = await client.get("/api/session");
    expect(again.body.userId).toBe(res.body.userId);
    expect(again.setCookie).toEqual([]);
  });

  it("ignores X-Forwarded-Proto when no proxy is trusted (TRUST_PROXY=0): plain esa_sid, no Secure", async () => {
    const direct = await start({ TRUST_PROXY: "0" });
    const res = await direct.client({ headers: { "x-forwarded-proto": "https" } }).get("/api/session");
    const c = sessionCookie(res);
    expect(c.name).toBe("esa_sid");
    expect(c.attrs.secure).toBeUndefined();
  });

  it("never lets a tampered signature reach the user: every one-character change of the MAC gets a new user", async () => {
    const owner = api.client();
    const ownerId = await owner.userId();
    const value = (owner.cookie as string).slice("esa_sid=".length);
    const sig = value.split(".")[3] as string;
    const prefix = value.slice(0, value.length - sig.length);
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const seen = new Set<string>();
    for (let i = 0; i < sig.length; i++) {
      const ch = sig[i] as string;
      // The neighbour in the alphabet differs in the low bits: for the last
      // character those are padding bits that decode to the same bytes.
      const swapped = alphabet[(alphabet.indexOf(ch) + 1) % alphabet.length] as string;
      const forged = prefix + sig.slice(0, i) + swapped + sig.slice(i + 1);
      const res = await api.client({ cookie: `esa_sid=${forged}` }).get("/api/session");
      expect(res.status, `signature position ${i}`).toBe(200);
      expect(res.body.userId, `signature position ${i}`).not.toBe(ownerId);
      expect(seen.has(res.body.userId)).toBe(false);
      seen.add(res.body.userId);
      // Treated as a request without a session: a fresh cookie for the new user.
      expect(sessionCookie(res).name).toBe("esa_sid");
    }
  });

  it("never lets a changed user id reach the user it names (the MAC no longer matches)", async () => {
    const a = api.client();
    const b = api.client();
    const aId = await a.userId();
    const bId = await b.userId();
    const [v, , exp, sig] = (a.cookie as string).slice("esa_sid=".length).split(".");
    const forged = [v, bId, exp, sig].join(".");
    const res = await api.client({ cookie: `esa_sid=${forged}` }).get("/api/session");
    expect(res.status).toBe(200);
    expect(res.body.userId).not.toBe(bId);
    expect(res.body.userId).not.toBe(aId);
    // A cookie for B signed with some other secret does not reach B either.
    const other = createSessionCodec("some-other-secret-0123456789abcdefghijkl").sign(bId, now() + 3600);
    const res2 = await api.client({ cookie: `esa_sid=${other}` }).get("/api/session");
    expect(res2.body.userId).not.toBe(bId);
  });

  it("never lets an expired cookie reach the user, though the same user with a live expiry is accepted", async () => {
    const userId = await api.client().userId();
    const codec = createSessionCodec(TEST_SESSION_SECRET);
    const live = await api.client({ cookie: `esa_sid=${codec.sign(userId, now() + 3600)}` }).get("/api/session");
    expect(live.body.userId).toBe(userId);
    for (const exp of [now() - 1, now() - 86_400, 1]) {
      const res = await api.client({ cookie: `esa_sid=${codec.sign(userId, exp)}` }).get("/api/session");
      expect(res.status).toBe(200);
      expect(res.body.userId).not.toBe(userId);
      expect(sessionCookie(res).value).not.toContain(userId);
    }
  });

  it("re-issues the cookie for the same user when less than half its lifetime is left", async () => {
    const userId = await api.client().userId();
    const codec = createSessionCodec(TEST_SESSION_SECRET);
    const res = await api.client({ cookie: `esa_sid=${codec.sign(userId, now() + 3600)}` }).get("/api/session");
    expect(res.body.userId).toBe(userId);
    const c = sessionCookie(res);
    expect(codec.verify(c.value, now())?.expiresAt).toBeGreaterThan(now() + SESSION_TTL_SECONDS - 60);
  });

  it("treats garbage cookies as no session (new user, never 5xx)", async () => {
    for (const v of ["", "x", "v1", "v1.a.b.c", "v2.00000000-0000-0000-0000-000000000000.9999999999.AAAA", "%E0%A4%A", "v1..."]) {
      const res = await api.client({ cookie: `esa_sid=${v}` }).get("/api/session");
      expect(res.status, v).toBe(200);
      expect(res.body.userId).toMatch(/^[0-9a-f-]{36}$/);
    }
  });

  it("signs with SESSION_SECRET when set: a cookie signed with it is accepted, one from another secret is not", async () => {
    const userId = await api.client().userId();
    const mine = createSessionCodec(TEST_SESSION_SECRET).sign(userId, now() + 3600);
    const other = await start({ SESSION_SECRET: "another-session-secret-0123456789abcdef" });
    expect((await api.client({ cookie: `esa_sid=${mine}` }).get("/api/session")).body.userId).toBe(userId);
    expect((await other.client({ cookie: `esa_sid=${mine}` }).get("/api/session")).body.userId).not.toBe(userId);
    // No secret was generated into the data folder.
    expect(() => statSync(path.join(api.dataDir, "session-secret"))).toThrow();
  });

  it("without SESSION_SECRET generates one into the data folder once, warns, and reuses it on the next start", async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), "esa-secret-"));
    onTestFinished(() => rmSync(dataDir, { recursive: true, force: true }));
    const first = await start({ SESSION_SECRET: undefined }, dataDir);
    const warned = first.apiLog.filter((l) => l.level === 40 && String(l.msg).includes("SESSION_SECRET"));
    expect(warned).toHaveLength(1);
    const file = path.join(dataDir, "session-secret");
    const secret = readFileSync(file, "utf8").trim();
    expect(secret.length).toBeGreaterThanOrEqual(32);
    expect(statSync(file).mode & 0o077).toBe(0); // not readable by others

    const client = first.client();
    const userId = await client.userId();
    expect(createSessionCodec(secret).verify((client.cookie as string).slice("esa_sid=".length), now())?.userId).toBe(userId);

    // Next start on the same folder: same secret, so the same cookie is the same user.
    const second = await start({ SESSION_SECRET: undefined }, dataDir);
    expect(second.apiLog.some((l) => l.level === 40 && String(l.msg).includes("SESSION_SECRET"))).toBe(true);
    expect(readFileSync(file, "utf8").trim()).toBe(secret);
    expect((await second.client({ cookie: client.cookie as string }).get("/api/session")).body.userId).toBe(userId);

    // Another machine (another data folder) generates its own: the cookie is not valid there.
    const elsewhere = await start({ SESSION_SECRET: undefined });
    expect((await elsewhere.client({ cookie: client.cookie as string }).get("/api/session")).body.userId).not.toBe(userId);
  });
});

describe("bearer tokens", () => {
  const key = new TextEncoder().encode(TEST_JWT_SECRET);
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");

  async function expect401(token: string, what: string) {
    const before = await userCount();
    const res = await api.client({ bearer: token }).get("/api/session");
    expect(res.status, what).toBe(401);
    expect(res.headers["content-type"], what).toMatch(/^application\/json/);
    expect(res.body.error.code, what).toBe("unauthorized");
    expect(typeof res.body.error.message).toBe("string");
    expect(res.setCookie, what).toEqual([]);
    expect(await userCount(), what).toBe(before);
  }

  it("a token from createJwt(JWT_SECRET) authenticates as its subject, and no cookie is set", async () => {
    const cookieClient = api.client();
    const userId = await cookieClient.userId();
    const created = await cookieClient.post("/api/conversations", { title: "made with the cookie" });
    expect(created.status).toBe(201);

    const token = await createJwt(TEST_JWT_SECRET).sign(userId, 3600);
    const bearer = api.client({ bearer: token });
    const res = await bearer.get("/api/session");
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ userId });
    expect(res.setCookie).toEqual([]);
    const list = await bearer.get("/api/conversations");
    expect(list.body.items.map((c: { id: string }) => c.id)).toEqual([created.body.id]);
    expect(list.setCookie).toEqual([]);
  });

  it("a token for a user the database has not seen yet creates that user", async () => {
    const userId = randomUUID();
    const res = await api.client({ bearer: await createJwt(TEST_JWT_SECRET).sign(userId, 60) }).get("/api/session");
    expect(res.body.userId).toBe(userId);
    expect(await userExists(userId)).toBe(true);
  });

  it("the bearer token wins over a cookie, and a bad one is 401 even with a valid cookie", async () => {
    const a = api.client();
    await a.userId();
    const bId = randomUUID();
    const asB = await a.get("/api/session", { headers: { authorization: `Bearer ${await createJwt(TEST_JWT_SECRET).sign(bId, 60)}` } });
    expect(asB.body.userId).toBe(bId);
    const bad = await a.get("/api/session", { headers: { authorization: "Bearer not.a.token" } });
    expect(bad.status).toBe(401);
  });

  it("refuses a bad signature, a changed payload, expiry, alg none, other algorithms and missing claims with 401 JSON", async () => {
    const userId = (await api.client().userId()) as string;
    const good = await createJwt(TEST_JWT_SECRET).sign(userId, 3600);
    // Control: the good token is accepted.
    expect((await api.client({ bearer: good }).get("/api/session")).body.userId).toBe(userId);

    await expect401(await createJwt("a-different-jwt-secret-0123456789abcdef").sign(userId, 3600), "other secret");
    const [h, , s] = good.split(".");
    await expect401(`${h}.${b64({ sub: randomUUID(), iat: now(), exp: now() + 3600 })}.${s}`, "changed payload");
    await expect401(good.slice(0, -2) + (good.endsWith("AA") ? "BB" : "AA"), "flipped signature");

    const t = now();
    const expired = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject(userId).setIssuedAt(t - 7200).setExpirationTime(t - 3600).sign(key);
    await expect401(expired, "expired");
    const noExp = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject(userId).setIssuedAt(t).sign(key);
    await expect401(noExp, "no exp");
    const noSub = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setIssuedAt(t).setExpirationTime(t + 3600).sign(key);
    await expect401(noSub, "no sub");
    const notUuid = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject("admin").setIssuedAt(t).setExpirationTime(t + 3600).sign(key);
    await expect401(notUuid, "subject not a user id");

    const claims = { sub: userId, iat: t, exp: t + 3600 };
    await expect401(`${b64({ alg: "none", typ: "JWT" })}.${b64(claims)}.`, "alg none");
    await expect401(`${b64({ alg: "none", typ: "JWT" })}.${b64(claims)}.${s}`, "alg none with a signature");
    await expect401(`${b64({ alg: "None" })}.${b64(claims)}.`, "alg None");
    for (const alg of ["HS384", "HS512"]) {
      const other = await new SignJWT({}).setProtectedHeader({ alg }).setSubject(userId).setIssuedAt(t).setExpirationTime(t + 3600).sign(key);
      await expect401(other, alg);
    }
    const { privateKey } = await generateKeyPair("ES256");
    const es = await new SignJWT({}).setProtectedHeader({ alg: "ES256" }).setSubject(userId).setIssuedAt(t).setExpirationTime(t + 3600).sign(privateKey);
    await expect401(es, "ES256");
  });

  it("refuses a malformed Authorization header with 401 JSON", async () => {
    for (const header of ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "bearer x.y.z", "Bearer a.b", "Token abc"]) {
      const res = await api.client().get("/api/session", { headers: { authorization: header } });
      expect(res.status, header).toBe(401);
      expect(res.body.error.code).toBe("unauthorized");
    }
  });

  it("`npm run token -- <uuid> --ttl 1h` prints a token the API accepts", async () => {
    const userId = randomUUID();
    const { stdout } = await promisify(execFile)("npm", ["run", "token", "--", userId, "--ttl", "1h"], {
      cwd: ROOT,
      env: { ...process.env, JWT_SECRET: TEST_JWT_SECRET },
      timeout: 30_000,
    });
    const token = stdout
      .trim()
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => /^[\w-]+\.[\w-]+\.[\w-]+$/.test(l))
      .at(-1) as string;
    expect(token).toBeDefined();
    const claims = decodeJwt(token);
    expect(claims.sub).toBe(userId);
    expect((claims.exp ?? 0) - (claims.iat ?? 0)).toBe(3600);
    const res = await api.client({ bearer: token }).get("/api/session");
    expect(res.status).toBe(200);
    expect(res.body.userId).toBe(userId);
  });
});

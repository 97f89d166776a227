/**
 * Issue 2, point 7: security on the in-process app. helmet (CSP, HSTS in
 * production), CORS only for CORS_ORIGINS, the /api rate limit keyed on the
 * client IP that `trust proxy` yields, body limit, JSON-only bodies, no-store.
 */
import { describe, it, expect, afterEach } from "vitest";
import { randomBytes } from "node:crypto";
import { request } from "node:http";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import express, { Router } from "express";
import helmet from "helmet";
import { startTestApp, type TestApp } from "./helpers/app.js";

const apps: TestApp[] = [];
afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.close()));
});

/** A POST route that echoes its JSON body, and a GET one. */
function echoRouter() {
  const r = Router();
  r.post("/echo", (req, res) => {
    res.json({ got: req.body as unknown });
  });
  r.get("/ping", (_req, res) => {
    res.json({ pong: true });
  });
  return r;
}

async function start(env: Record<string, string> = {}) {
  const t = await startTestApp({ env: { LOG_LEVEL: "warn", ...env }, apiRouters: [echoRouter()] });
  apps.push(t);
  return t;
}

/** Parses a CSP header into directive → sources. */
function parseCsp(header: string | null): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const part of (header ?? "").split(";")) {
    const [name, ...sources] = part.trim().split(/\s+/);
    if (name) out.set(name, sources);
  }
  return out;
}

describe("helmet", () => {
  it("sends a CSP that allows only self, with the page's own ws origin in connect-src", async () => {
    const t = await start();
    const host = new URL(t.baseUrl).host;
    for (const p of ["/api/ping", "/nothing"]) {
      const res = await fetch(t.baseUrl + p);
      const csp = parseCsp(res.headers.get("content-security-policy"));
      expect(csp.get("default-src"), p).toEqual(["'self'"]);
      expect(csp.get("script-src"), p).toEqual(["'self'"]);
      expect(csp.get("connect-src"), p).toEqual(["'self'", `ws://${host}`]);
      expect(csp.get("object-src"), p).toEqual(["'none'"]);
      // Nothing beyond self: no other hosts, no unsafe-inline/eval, no wildcards.
      for (const [name, sources] of csp) {
        for (const s of sources) {
          const ok = s === "'self'" || s === "'none'" || s === "data:" || s === `ws://${host}` || s === "https:" && name === "font-src";
          expect(ok, `${name} ${s}`).toBe(true);
        }
      }
      expect(res.headers.get("x-content-type-options")).toBe("nosniff");
      expect(res.headers.get("x-powered-by")).toBeNull();
    }
  });

  it("relaxes script and style sources only under npm run dev (Vite's inline preamble), and never forces https upgrades", async () => {
    for (const [env, inline] of [["development", true], ["production", false], ["test", false]] as const) {
      const t = await start({ NODE_ENV: env });
      const csp = parseCsp((await fetch(t.baseUrl + "/api/ping")).headers.get("content-security-policy"));
      expect(csp.get("script-src")?.includes("'unsafe-inline'"), env).toBe(inline);
      expect(csp.get("style-src")?.includes("'unsafe-inline'"), env).toBe(inline);
      expect(csp.has("upgrade-insecure-requests"), env).toBe(false);
    }
  });

  it("uses wss when the trusted proxy says the page is https", async () => {
    const t = await start({ TRUST_PROXY: "1" });
    // fetch sets Host itself; node:http lets the test be the proxy that forwards the public host.
    const csp = await new Promise<string>((resolve, reject) => {
      const req = request(
        t.baseUrl + "/api/ping",
        { headers: { host: "chat.example.com", "x-forwarded-proto": "https" }, agent: false },
        (res) => {
          res.resume();
          resolve(String(res.headers["content-security-policy"]));
        },
      );
      req.on("error", reject);
      req.end();
    });
    expect(parseCsp(csp).get("connect-src")).toEqual(["'self'", "wss://chat.example.com"]);
  });

  it("sends HSTS for one year with subdomains in production only", async () => {
    const prod = await start({ NODE_ENV: "production" });
    const res = await fetch(prod.baseUrl + "/api/ping");
    expect(res.headers.get("strict-transport-security")).toBe("max-age=31536000; includeSubDomains");

    const dev = await start({ NODE_ENV: "test" });
    const res2 = await fetch(dev.baseUrl + "/api/ping");
    expect(res2.status).toBe(200);
    expect(res2.headers.get("strict-transport-security")).toBeNull();
  });

  it("sends every header helmet itself sets, with helmet's values (computed once at start, not per request)", async () => {
    for (const env of ["production", "test"]) {
      const t = await start({ NODE_ENV: env });
      // helmet run per request by a bare Express app, with the app's options.
      const bare = express();
      bare.use(
        helmet({
          contentSecurityPolicy: false,
          strictTransportSecurity: env === "production" ? { maxAge: 365 * 24 * 60 * 60, includeSubDomains: true } : false,
          crossOriginEmbedderPolicy: false,
        }),
      );
      bare.get("/api/ping", (_req, res) => {
        res.json({ pong: true });
      });
      const server = bare.listen(0, "127.0.0.1");
      await once(server, "listening");
      try {
        const { port } = server.address() as AddressInfo;
        const expected = (await fetch(`http://127.0.0.1:${port}/api/ping`)).headers;
        const ours = (await fetch(t.baseUrl + "/api/ping")).headers;
        const ignore = new Set(["content-type", "content-length", "date", "connection", "keep-alive", "etag", "x-powered-by"]);
        const names = [...expected.keys()].filter((n) => !ignore.has(n));
        expect(names.length, env).toBeGreaterThanOrEqual(9);
        for (const n of names) expect(ours.get(n), `${env} ${n}`).toBe(expected.get(n));
        expect(ours.get("x-powered-by")).toBeNull();
      } finally {
        server.close();
      }
    }
  });
});

describe("CORS", () => {
  it("allows no cross origin by default; same-origin requests still work", async () => {
    const t = await start();
    const res = await fetch(t.baseUrl + "/api/ping", { headers: { origin: "https://evil.example" } });
    expect(res.status).toBe(200);
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
    const same = await fetch(t.baseUrl + "/api/ping", { headers: { origin: t.baseUrl } });
    expect(same.status).toBe(200);
    expect(await same.json()).toEqual({ pong: true });
  });

  it("allows an origin in CORS_ORIGINS and no other", async () => {
    const t = await start({ CORS_ORIGINS: "https://app.example.com,https://admin.example.com" });
    const ok = await fetch(t.baseUrl + "/api/ping", { headers: { origin: "https://app.example.com" } });
    expect(ok.headers.get("access-control-allow-origin")).toBe("https://app.example.com");
    expect(ok.headers.get("access-control-allow-credentials")).toBe("true");
    expect(ok.headers.get("vary")).toMatch(/origin/i);

    const bad = await fetch(t.baseUrl + "/api/ping", { headers: { origin: "https://evil.example" } });
    expect(bad.headers.get("access-control-allow-origin")).toBeNull();

    const preflight = await fetch(t.baseUrl + "/api/echo", {
      method: "OPTIONS",
      headers: { origin: "https://admin.example.com", "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("https://admin.example.com");
    expect(preflight.headers.get("access-control-allow-methods")).toMatch(/POST/);

    const badPreflight = await fetch(t.baseUrl + "/api/echo", {
      method: "OPTIONS",
      headers: { origin: "https://evil.example", "access-control-request-method": "POST" },
    });
    expect(badPreflight.headers.get("access-control-allow-origin")).toBeNull();
  });
});

describe("rate limit on /api", () => {
  it("answers the request past the limit with 429 JSON and RateLimit headers", async () => {
    const t = await start({ RATE_LIMIT_MAX: "5" });
    for (let i = 0; i < 5; i++) {
      const res = await fetch(t.baseUrl + "/api/ping");
      expect(res.status, `request ${i + 1}`).toBe(200);
      expect(res.headers.get("ratelimit")).toMatch(new RegExp(`remaining=${4 - i}`));
    }
    const res = await fetch(t.baseUrl + "/api/ping");
    expect(res.status).toBe(429);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(res.headers.get("ratelimit")).toMatch(/limit=5, remaining=0/);
    expect(res.headers.get("ratelimit-policy")).toMatch(/^5;w=\d+/);
    expect(res.headers.get("retry-after")).toMatch(/^\d+$/);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("rate_limited");
    expect(typeof body.error.message).toBe("string");
    // Only /api is limited: the rest of the app keeps answering.
    expect((await fetch(t.baseUrl + "/live")).status).toBe(200);
  });

  it("keys on the client IP the trusted proxy appended; a spoofed X-Forwarded-For gets no fresh limit", async () => {
    const t = await start({ RATE_LIMIT_MAX: "5", TRUST_PROXY: "1" });
    // The test is the one trusted proxy: it appends the address it saw (203.0.113.7)
    // to whatever X-Forwarded-For the client sent, here a new random value every time.
    const spoofed = () => `${randomBytes(1)[0]}.${randomBytes(1)[0]}.${randomBytes(1)[0]}.${randomBytes(1)[0]}, 203.0.113.7`;
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) {
      const res = await fetch(t.baseUrl + "/api/ping", { headers: { "x-forwarded-for": spoofed() } });
      statuses.push(res.status);
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429, 429]);
    // Another real client behind the same proxy has its own limit.
    const other = await fetch(t.baseUrl + "/api/ping", { headers: { "x-forwarded-for": "198.51.100.1, 203.0.113.8" } });
    expect(other.status).toBe(200);
  });

  it("ignores X-Forwarded-For entirely with TRUST_PROXY=0", async () => {
    const t = await start({ RATE_LIMIT_MAX: "5", TRUST_PROXY: "0" });
    const statuses: number[] = [];
    for (let i = 0; i < 7; i++) {
      // Every request claims to be a different client, at every position of the header.
      const res = await fetch(t.baseUrl + "/api/ping", { headers: { "x-forwarded-for": `198.51.100.${i + 1}, 203.0.113.${i + 1}` } });
      statuses.push(res.status);
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429]);
  });
});

describe("request bodies", () => {
  it("echoes a JSON body (the route under test works)", async () => {
    const t = await start();
    const res = await fetch(t.baseUrl + "/api/echo", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ a: 1 }) });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ got: { a: 1 } });
  });

  it("answers a body over BODY_LIMIT_BYTES with 413 JSON", async () => {
    const t = await start({ BODY_LIMIT_BYTES: "2048" });
    const body = JSON.stringify({ text: "x".repeat(4096) });
    const res = await fetch(t.baseUrl + "/api/echo", { method: "POST", headers: { "content-type": "application/json" }, body });
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ error: { code: "payload_too_large" } });
    // Just under the limit is accepted.
    const fits = JSON.stringify({ text: "x".repeat(1900) });
    const ok = await fetch(t.baseUrl + "/api/echo", { method: "POST", headers: { "content-type": "application/json" }, body: fits });
    expect(ok.status).toBe(200);
  });

  it("answers a text/plain body on a JSON route with 415 JSON", async () => {
    const t = await start();
    const res = await fetch(t.baseUrl + "/api/echo", { method: "POST", headers: { "content-type": "text/plain" }, body: '{"a":1}' });
    expect(res.status).toBe(415);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(await res.json()).toMatchObject({ error: { code: "unsupported_media_type" } });
    const form = await fetch(t.baseUrl + "/api/echo", { method: "POST", body: new URLSearchParams({ a: "1" }) });
    expect(form.status).toBe(415);
  });

  it("answers malformed JSON with 400 invalid_json", async () => {
    const t = await start();
    const res = await fetch(t.baseUrl + "/api/echo", { method: "POST", headers: { "content-type": "application/json" }, body: '{"a":' });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("invalid_json");
    expect(body.error.message).not.toMatch(/\bat\b.*\(/);
  });
});

describe("caching of /api", () => {
  it("sends Cache-Control: no-store on /api answers, errors included", async () => {
    const t = await start();
    for (const [p, status] of [["/api/ping", 200], ["/api/meta", 200], ["/api/does-not-exist", 404]] as const) {
      const res = await fetch(t.baseUrl + p);
      expect(res.status, p).toBe(status);
      expect(res.headers.get("cache-control"), p).toBe("no-store");
    }
  });
});

/**
 * Issue 2, point 6: static serving on the in-process app. Hashed assets are
 * immutable and served from the precompressed copy the client accepts;
 * index.html is never cached; other files get CACHE_TTL; unknown HTML GETs get
 * the SPA shell; /api and the probes never do; API JSON over 1 KB is compressed.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { mkdtemp, mkdir, writeFile, rm } from "node:fs/promises";
import { request, type IncomingHttpHeaders } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { brotliCompressSync, brotliDecompressSync, gzipSync, gunzipSync } from "node:zlib";
import { Router } from "express";
import { createStaticHandlers, type StaticHandlers } from "../server/static.js";
import { startTestApp, type TestApp } from "./helpers/app.js";
import { badRequest } from "../server/http/errors.js";

const CACHE_TTL = 1234;
const INDEX_HTML = "<!doctype html><html><head><title>ESA Agents</title></head><body><div id=root></div></body></html>\n";
// Repetitive enough to compress, big enough that the compressed copies differ clearly from it.
const APP_JS = Array.from({ length: 200 }, (_, i) => `export const value${i} = ${JSON.stringify("x".repeat(i % 17))};`).join("\n");
const ROBOTS = "User-agent: *\nAllow: /\n";
const CSS = "body { margin: 0; }\n".repeat(40);
const SVG = `<svg xmlns="http://www.w3.org/2000/svg">${"<g></g>".repeat(40)}</svg>`;

interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** node:http so that Accept-Encoding is exactly what we send and the body is left as sent. */
function raw(baseUrl: string, urlPath: string, headers: Record<string, string> = {}, method = "GET"): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(urlPath, baseUrl), { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

function decode(r: RawResponse): Buffer {
  const enc = r.headers["content-encoding"];
  if (enc === "br") return brotliDecompressSync(r.body);
  if (enc === "gzip") return gunzipSync(r.body);
  if (enc === undefined) return r.body;
  throw new Error(`unexpected content-encoding ${enc}`);
}

let dir: string;
let handlers: StaticHandlers;
let t: TestApp;
const bigPayload = { items: Array.from({ length: 60 }, (_, i) => ({ id: i, name: `item number ${i}`, done: i % 2 === 0 })) };

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "esa-static-"));
  await mkdir(path.join(dir, "assets"));
  const js = Buffer.from(APP_JS);
  await writeFile(path.join(dir, "index.html"), INDEX_HTML);
  await writeFile(path.join(dir, "assets", "app-abc123.js"), js);
  await writeFile(path.join(dir, "assets", "app-abc123.js.br"), brotliCompressSync(js));
  await writeFile(path.join(dir, "assets", "app-abc123.js.gz"), gzipSync(js));
  await writeFile(path.join(dir, "robots.txt"), ROBOTS);
  // Copies the build did not write (too small to gain): only some encodings exist.
  await writeFile(path.join(dir, "assets", "only-gz-def456.css"), CSS);
  await writeFile(path.join(dir, "assets", "only-gz-def456.css.gz"), gzipSync(CSS));
  await writeFile(path.join(dir, "assets", "only-br-0f0f0f.svg"), SVG);
  await writeFile(path.join(dir, "assets", "only-br-0f0f0f.svg.br"), brotliCompressSync(SVG));
  handlers = await createStaticHandlers(dir, CACHE_TTL);

  const api = Router();
  api.get("/big", (_req, res) => {
    res.json(bigPayload);
  });
  // 400 characters, 1,200 bytes of UTF-8: over 1 KB by bytes, not by characters.
  api.get("/wide", (_req, res) => {
    res.json({ text: "€".repeat(400) });
  });
  api.get("/big-error", () => {
    throw badRequest(`bad: ${"x".repeat(2000)}`);
  });
  api.get("/small", (_req, res) => {
    res.json({ ok: true });
  });
  t = await startTestApp({ env: { ENABLE_METRICS: "false", CACHE_TTL: String(CACHE_TTL) }, staticHandlers: handlers, apiRouters: [api] });
});

afterAll(async () => {
  await t?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("hashed assets", () => {
  const asset = "/assets/app-abc123.js";

  it("are immutable for a year and vary on Accept-Encoding", async () => {
    const r = await raw(t.baseUrl, asset, { "accept-encoding": "gzip, deflate, br" });
    expect(r.status).toBe(200);
    expect(r.headers["cache-control"]).toBe("public, max-age=31536000, immutable");
    expect(r.headers.vary).toMatch(/accept-encoding/i);
    expect(r.headers["content-type"]).toMatch(/^text\/javascript/);
  });

  it("are served as brotli when br is accepted", async () => {
    const r = await raw(t.baseUrl, asset, { "accept-encoding": "gzip, deflate, br" });
    expect(r.headers["content-encoding"]).toBe("br");
    expect(Number(r.headers["content-length"])).toBe(r.body.length);
    expect(r.body.length).toBeLessThan(APP_JS.length);
    expect(decode(r).toString("utf8")).toBe(APP_JS);
  });

  it("are served as gzip when only gzip is accepted", async () => {
    const r = await raw(t.baseUrl, asset, { "accept-encoding": "gzip" });
    expect(r.headers["content-encoding"]).toBe("gzip");
    expect(gunzipSync(r.body).toString("utf8")).toBe(APP_JS);
  });

  it("are served as identity when no encoding, or only refused ones, are accepted", async () => {
    const cases: Record<string, string>[] = [{}, { "accept-encoding": "br;q=0, gzip;q=0" }, { "accept-encoding": "identity" }];
    for (const headers of cases) {
      const r = await raw(t.baseUrl, asset, headers);
      expect(r.status, JSON.stringify(headers)).toBe(200);
      expect(r.headers["content-encoding"], JSON.stringify(headers)).toBeUndefined();
      expect(r.body.toString("utf8")).toBe(APP_JS);
      expect(r.headers.vary).toMatch(/accept-encoding/i);
    }
  });

  it("are never sent in an encoding the client did not accept, when only some copies exist", async () => {
    const cases: [string, string, string | undefined, string][] = [
      ["/assets/only-gz-def456.css", "br", undefined, CSS],
      ["/assets/only-gz-def456.css", "gzip, deflate, br", "gzip", CSS],
      ["/assets/only-br-0f0f0f.svg", "gzip", undefined, SVG],
      ["/assets/only-br-0f0f0f.svg", "gzip, br", "br", SVG],
    ];
    for (const [p, accept, encoding, original] of cases) {
      const r = await raw(t.baseUrl, p, { "accept-encoding": accept });
      expect(r.status, `${p} ${accept}`).toBe(200);
      expect(r.headers["content-encoding"], `${p} ${accept}`).toBe(encoding);
      expect(decode(r).toString("utf8"), `${p} ${accept}`).toBe(original);
      expect(r.headers.vary, `${p} ${accept}`).toMatch(/accept-encoding/i);
    }
  });

  it("answer 304 to a matching If-None-Match", async () => {
    const first = await raw(t.baseUrl, asset, { "accept-encoding": "br" });
    const etag = first.headers.etag;
    expect(etag).toBeTruthy();
    const again = await raw(t.baseUrl, asset, { "accept-encoding": "br", "if-none-match": String(etag) });
    expect(again.status).toBe(304);
    expect(again.body.length).toBe(0);
    expect(again.headers["cache-control"]).toBe("public, max-age=31536000, immutable");
    const stale = await raw(t.baseUrl, asset, { "accept-encoding": "br", "if-none-match": '"something-else"' });
    expect(stale.status).toBe(200);
    // Weak comparison, as a proxy that re-encoded the body would send it, and a list.
    const weak = await raw(t.baseUrl, asset, { "if-none-match": `"older", W/${String(etag)}` });
    expect(weak.status).toBe(304);
    const index = await raw(t.baseUrl, "/", { accept: "text/html" });
    const revalidated = await raw(t.baseUrl, "/", { accept: "text/html", "if-none-match": String(index.headers.etag) });
    expect(revalidated.status).toBe(304);
    expect(revalidated.headers["cache-control"]).toBe("no-cache");
  });

  it("answer HEAD with the headers and no body", async () => {
    const get = await raw(t.baseUrl, asset, { "accept-encoding": "gzip" });
    const head = await raw(t.baseUrl, asset, { "accept-encoding": "gzip" }, "HEAD");
    expect(head.status).toBe(200);
    expect(head.body.length).toBe(0);
    expect(head.headers["content-encoding"]).toBe("gzip");
    expect(head.headers["content-length"]).toBe(String(get.body.length));
    expect(head.headers["cache-control"]).toBe("public, max-age=31536000, immutable");
  });
});

describe("index.html and other files", () => {
  it("serves index.html at / with no-cache", async () => {
    const r = await raw(t.baseUrl, "/", { accept: "text/html" });
    expect(r.status).toBe(200);
    expect(r.headers["cache-control"]).toBe("no-cache");
    expect(r.headers["content-type"]).toMatch(/^text\/html/);
    expect(r.body.toString("utf8")).toBe(INDEX_HTML);
  });

  it("serves an unhashed file with max-age=CACHE_TTL", async () => {
    const r = await raw(t.baseUrl, "/robots.txt");
    expect(r.status).toBe(200);
    expect(r.headers["cache-control"]).toBe(`public, max-age=${CACHE_TTL}`);
    expect(r.body.toString("utf8")).toBe(ROBOTS);
  });
});

describe("SPA fallback", () => {
  it("answers an unknown GET path that accepts HTML with index.html (no-cache)", async () => {
    for (const p of ["/conversations/123", "/settings", "/a/b/c?x=1"]) {
      const r = await raw(t.baseUrl, p, { accept: "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8" });
      expect(r.status, p).toBe(200);
      expect(r.headers["content-type"], p).toMatch(/^text\/html/);
      expect(r.headers["cache-control"], p).toBe("no-cache");
      expect(r.body.toString("utf8"), p).toBe(INDEX_HTML);
    }
  });

  it("answers HEAD on an unknown HTML path with the shell's headers and no body", async () => {
    const r = await raw(t.baseUrl, "/somewhere", { accept: "text/html" }, "HEAD");
    expect(r.status).toBe(200);
    expect(r.headers["content-type"]).toMatch(/^text\/html/);
    expect(r.headers["content-length"]).toBe(String(Buffer.byteLength(INDEX_HTML)));
    expect(r.body.length).toBe(0);
  });

  it("answers an unknown path that wants JSON with a JSON 404", async () => {
    const r = await raw(t.baseUrl, "/settings", { accept: "application/json" });
    expect(r.status).toBe(404);
    expect(JSON.parse(r.body.toString("utf8"))).toMatchObject({ error: { code: "not_found" } });
  });

  it("never answers an unknown /api path with the shell, even when HTML is accepted", async () => {
    for (const p of ["/api/x", "/api", "/api/nothing/here"]) {
      const r = await raw(t.baseUrl, p, { accept: "text/html" });
      expect(r.status, p).toBe(404);
      expect(r.headers["content-type"], p).toMatch(/^application\/json/);
      const body = JSON.parse(r.body.toString("utf8")) as { error: { code: string; message: string } };
      expect(body.error.code, p).toBe("not_found");
      expect(typeof body.error.message, p).toBe("string");
    }
  });

  it("never answers the probe paths with the shell", async () => {
    for (const p of ["/live", "/ready", "/health"]) {
      const r = await raw(t.baseUrl, p, { accept: "text/html" });
      expect(r.headers["content-type"], p).toMatch(/^application\/json/);
      expect(r.body.toString("utf8"), p).not.toContain("<!doctype html>");
    }
    // Metrics are disabled here, so the probe handler passes /metrics on and Express must not fall back.
    const m = await raw(t.baseUrl, "/metrics", { accept: "text/html" });
    expect(m.status).toBe(404);
    expect(m.headers["content-type"]).toMatch(/^application\/json/);
    expect(JSON.parse(m.body.toString("utf8"))).toMatchObject({ error: { code: "not_found" } });
  });
});

describe("API compression", () => {
  it("compresses JSON over 1 KB when the client accepts gzip", async () => {
    const r = await raw(t.baseUrl, "/api/big", { "accept-encoding": "gzip" });
    expect(r.status).toBe(200);
    expect(r.headers["content-encoding"]).toBe("gzip");
    const text = decode(r).toString("utf8");
    expect(text.length).toBeGreaterThan(1024);
    expect(JSON.parse(text)).toEqual(bigPayload);
    expect(r.body.length).toBeLessThan(text.length);
  });

  it("does not compress when x-no-compression is sent", async () => {
    const r = await raw(t.baseUrl, "/api/big", { "accept-encoding": "gzip", "x-no-compression": "1" });
    expect(r.status).toBe(200);
    expect(r.headers["content-encoding"]).toBeUndefined();
    expect(JSON.parse(r.body.toString("utf8"))).toEqual(bigPayload);
  });

  it("sends JSON over 1 KB as is, with Vary: Accept-Encoding, to a client that accepts no encoding", async () => {
    const r = await raw(t.baseUrl, "/api/big");
    expect(r.status).toBe(200);
    expect(r.headers["content-encoding"]).toBeUndefined();
    expect(r.headers.vary).toMatch(/accept-encoding/i);
    expect(JSON.parse(r.body.toString("utf8"))).toEqual(bigPayload);
  });

  it("counts the threshold in bytes: 400 three-byte characters are compressed", async () => {
    const r = await raw(t.baseUrl, "/api/wide", { "accept-encoding": "gzip" });
    expect(r.status).toBe(200);
    expect(r.headers["content-encoding"]).toBe("gzip");
    expect(JSON.parse(decode(r).toString("utf8"))).toEqual({ text: "€".repeat(400) });
  });

  it("compresses an error body over 1 KB too", async () => {
    const r = await raw(t.baseUrl, "/api/big-error", { "accept-encoding": "gzip" });
    expect(r.status).toBe(400);
    expect(r.headers["content-encoding"]).toBe("gzip");
    expect(JSON.parse(decode(r).toString("utf8"))).toMatchObject({ error: { code: "bad_request" } });
  });

  it("does not compress a small JSON response", async () => {
    const r = await raw(t.baseUrl, "/api/small", { "accept-encoding": "gzip, br" });
    expect(r.status).toBe(200);
    expect(r.headers["content-encoding"]).toBeUndefined();
    expect(JSON.parse(r.body.toString("utf8"))).toEqual({ ok: true });
  });
});

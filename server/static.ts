import { readdir, readFile, stat } from "node:fs/promises";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import path from "node:path";
import type { Server } from "node:http";
import type { Request, Response, RequestHandler } from "express";
import { PROBE_PATHS } from "./ops/health.js";

/**
 * Static serving. Production: files of `dist/public` indexed at boot and held
 * in memory (the bundle is small), hashed assets immutable for a year from the
 * precompressed copy the client accepts, index.html never cached. Dev: Vite's
 * middleware, imported only then, so production needs no dev dependency.
 */
export interface StaticHandlers {
  /** Serves files that exist (GET/HEAD only). */
  files: RequestHandler;
  /** index.html for an unknown GET path that accepts HTML (not /api, not probes). */
  spaFallback: RequestHandler;
  close?: () => Promise<void>;
}

interface Entry {
  type: string;
  cacheControl: string;
  etag: string;
  raw: Buffer | null;
  /** On-disk path for files too big to hold. */
  file: string;
  size: number;
  br?: Buffer;
  gz?: Buffer;
}

const MAX_IN_MEMORY = 2 * 1024 * 1024;
const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".webmanifest": "application/manifest+json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".ico": "image/x-icon",
  ".txt": "text/plain; charset=utf-8",
  ".xml": "application/xml; charset=utf-8",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
};

async function walk(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for (const d of await readdir(dir, { withFileTypes: true })) {
    const rel = prefix + "/" + d.name;
    if (d.isDirectory()) out.push(...(await walk(path.join(dir, d.name), rel)));
    else if (d.isFile()) out.push(rel);
  }
  return out;
}

/**
 * br when accepted and a copy exists, then gzip likewise, else identity;
 * honours q=0. `available` defaults to both.
 */
export function pickEncoding(
  header: string | undefined,
  available: { br: boolean; gzip: boolean } = { br: true, gzip: true },
): "br" | "gzip" | null {
  if (!header) return null;
  const q = new Map<string, number>();
  for (const part of header.toLowerCase().split(",")) {
    const [name, ...params] = part.trim().split(";");
    if (!name) continue;
    const qp = params.map((p) => p.trim()).find((p) => p.startsWith("q="));
    q.set(name, qp ? Number(qp.slice(2)) || 0 : 1);
  }
  const ok = (e: string) => (q.get(e) ?? q.get("*") ?? 0) > 0;
  if (available.br && ok("br")) return "br";
  if (available.gzip && ok("gzip")) return "gzip";
  return null;
}

/**
 * If-None-Match uses the weak comparison (RFC 9110 13.1.2): `W/` is ignored and
 * the header may list several tags, as proxies that re-encode send them.
 */
function etagMatches(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  if (header === etag) return true;
  for (const part of header.split(",")) {
    const tag = part.trim();
    if (tag === "*" || tag === etag || (tag.startsWith("W/") && tag.slice(2) === etag)) return true;
  }
  return false;
}

/** Builds the production handlers from a built `dist/public`. */
export async function createStaticHandlers(publicDir: string, cacheTtlSeconds: number): Promise<StaticHandlers> {
  const entries = new Map<string, Entry>();
  const all = await walk(publicDir);
  const names = new Set(all);
  for (const rel of all) {
    if (rel.endsWith(".br") || rel.endsWith(".gz")) continue;
    const file = path.join(publicDir, rel);
    const size = (await stat(file)).size;
    const raw = size <= MAX_IN_MEMORY ? await readFile(file) : null;
    const hashed = rel.startsWith("/assets/");
    const entry: Entry = {
      type: TYPES[path.extname(rel).toLowerCase()] ?? "application/octet-stream",
      cacheControl:
        rel === "/index.html" ? "no-cache" : hashed ? "public, max-age=31536000, immutable" : `public, max-age=${cacheTtlSeconds}`,
      etag: `"${createHash("sha1").update(raw ?? `${rel}:${size}`).digest("base64url").slice(0, 27)}"`,
      raw,
      file,
      size,
    };
    if (raw && names.has(rel + ".br")) entry.br = await readFile(file + ".br");
    if (raw && names.has(rel + ".gz")) entry.gz = await readFile(file + ".gz");
    entries.set(rel, entry);
  }
  const index = entries.get("/index.html");

  function serve(req: Request, res: Response, entry: Entry, label = "static") {
    res.locals.routeLabel = label;
    res.setHeader("cache-control", entry.cacheControl);
    res.setHeader("etag", entry.etag);
    res.setHeader("content-type", entry.type);
    if (entry.br || entry.gz) res.setHeader("vary", "Accept-Encoding");
    if (etagMatches(req.headers["if-none-match"], entry.etag)) {
      res.status(304).end();
      return;
    }
    const enc = entry.br || entry.gz ? pickEncoding(req.headers["accept-encoding"], { br: !!entry.br, gzip: !!entry.gz }) : null;
    const body = enc === "br" ? entry.br : enc === "gzip" ? entry.gz : entry.raw;
    if (enc) res.setHeader("content-encoding", enc);
    res.setHeader("content-length", String(body ? body.length : entry.size));
    if (req.method === "HEAD") {
      res.end();
      return;
    }
    if (body) res.end(body);
    else createReadStream(entry.file).on("error", () => res.destroy()).pipe(res);
  }

  return {
    files(req, res, next) {
      if (req.method !== "GET" && req.method !== "HEAD") return next();
      const p = req.path === "/" ? "/index.html" : req.path;
      const entry = entries.get(p);
      if (!entry) return next();
      serve(req, res, entry);
    },
    spaFallback(req, res, next) {
      if (!index || (req.method !== "GET" && req.method !== "HEAD")) return next();
      if (req.path.startsWith("/api/") || req.path === "/api" || PROBE_PATHS.has(req.path)) return next();
      if (!req.accepts("html") || req.accepts(["json", "html"]) === "json") return next();
      serve(req, res, index, "spa");
    },
  };
}

/** Dev: Vite in middleware mode with HMR on the same HTTP server. */
export async function createDevHandlers(root: string, server: Server): Promise<StaticHandlers> {
  const { createServer } = await import("vite");
  const vite = await createServer({
    configFile: path.join(root, "vite.config.ts"),
    server: { middlewareMode: true, hmr: { server } },
    appType: "custom",
  });
  const indexFile = path.join(root, "client", "index.html");
  return {
    files: vite.middlewares as unknown as RequestHandler,
    async spaFallback(req, res, next) {
      if (req.method !== "GET" || req.path.startsWith("/api/") || PROBE_PATHS.has(req.path) || !req.accepts("html")) return next();
      res.locals.routeLabel = "spa";
      const html = await vite.transformIndexHtml(req.originalUrl, await readFile(indexFile, "utf8"));
      res.status(200).setHeader("content-type", "text/html; charset=utf-8").setHeader("cache-control", "no-cache").end(html);
    },
    close: () => vite.close(),
  };
}


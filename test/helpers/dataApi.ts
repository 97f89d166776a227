/**
 * The user-data API (createDataApi) on a test database, served by
 * startTestApp on loopback, and a small raw HTTP client (node:http, so no
 * header is added behind the test's back: fetch would add a text/plain
 * content type to string bodies).
 */
import { request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { loadConfig, type Config, type Env } from "../../server/config.js";
import { createDataApi } from "../../server/http/routes/api.js";
import { messageStoreFor } from "../../server/data/messages.js";
import type { LocalStarts } from "../../server/queue/localStart.js";
import { startTestApp, type TestApp } from "./app.js";
import type { TestDatabase } from "./db.js";
import { createCapturedLogger } from "./logs.js";

export const TEST_SESSION_SECRET = "test-session-secret-0123456789abcdefghijklmnop";
export const TEST_JWT_SECRET = "test-jwt-secret-0123456789abcdefghijklmnopqrstu";

export interface DataApi {
  app: TestApp;
  baseUrl: string;
  config: Config;
  /** Lines logged by createDataApi and its routes, parsed. */
  apiLog: Record<string, unknown>[];
  dataDir: string;
  client(opts?: ClientOptions): Client;
  close(): Promise<void>;
}

/**
 * Serves createDataApi on `db`. Defaults: fixed SESSION_SECRET and JWT_SECRET
 * and a rate limit no test reaches; `env` entries set to undefined are removed.
 * `localStarts`: the message store's (localStart.ts); none by default, so
 * every run goes through the queue.
 */
export async function startDataApi(db: TestDatabase, opts: { env?: Env; dataDir?: string; localStarts?: LocalStarts } = {}): Promise<DataApi> {
  const env: Env = {
    NODE_ENV: "test",
    LOG_LEVEL: "info",
    RATE_LIMIT_MAX: "1000000",
    SESSION_SECRET: TEST_SESSION_SECRET,
    JWT_SECRET: TEST_JWT_SECRET,
  };
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  const config = loadConfig(env);
  const { log, lines: apiLog } = createCapturedLogger(config);
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(tmpdir(), "esa-api-"));
  // With `localStarts`, runs may start where they are posted, as services.ts wires it.
  const messages = opts.localStarts ? { messages: messageStoreFor(config, db.pool, opts.localStarts) } : {};
  const router = createDataApi({ config, log, pool: db.pool, dataDir, ...messages });
  const app = await startTestApp({ env, apiRouters: [router] });
  return {
    app,
    baseUrl: app.baseUrl,
    config,
    apiLog,
    dataDir,
    client: (o) => new Client(app.baseUrl, o),
    async close() {
      await app.close();
      if (!opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface Res {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- response bodies are checked field by field
  body: any;
  /** The Set-Cookie lines. */
  setCookie: string[];
}

export interface ReqOptions {
  headers?: Record<string, string>;
  /** Sent as JSON with `Content-Type: application/json` (unless headers say otherwise). */
  json?: unknown;
  /** Sent as is; no content type added. */
  raw?: string | Buffer;
}

/** One HTTP request on loopback; nothing added but Host and Content-Length. */
export function send(baseUrl: string, method: string, urlPath: string, opts: ReqOptions = {}): Promise<Res> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  let payload: Buffer | undefined;
  if (opts.json !== undefined) {
    payload = Buffer.from(JSON.stringify(opts.json));
    if (!Object.keys(headers).some((h) => h.toLowerCase() === "content-type")) headers["content-type"] = "application/json";
  } else if (opts.raw !== undefined) {
    payload = Buffer.isBuffer(opts.raw) ? opts.raw : Buffer.from(opts.raw);
  }
  if (payload) headers["content-length"] = String(payload.length);
  const url = new URL(urlPath, baseUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: url.hostname, port: url.port, method, path: url.pathname + url.search, headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let body: unknown = undefined;
          if (/json/.test(String(res.headers["content-type"] ?? "")) && text) body = JSON.parse(text);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body, setCookie: res.headers["set-cookie"] ?? [] });
        });
      },
    );
    req.on("error", reject);
    req.end(payload);
  });
}

export interface ClientOptions {
  /** Cookie header value to start with, e.g. `esa_sid=...`. */
  cookie?: string;
  bearer?: string;
  /** Extra headers on every request. */
  headers?: Record<string, string>;
}

/** A caller: keeps the session cookie it is given, like a browser would. */
export class Client {
  cookie: string | undefined;
  bearer: string | undefined;
  readonly headers: Record<string, string>;

  constructor(
    readonly baseUrl: string,
    opts: ClientOptions = {},
  ) {
    this.cookie = opts.cookie;
    this.bearer = opts.bearer;
    this.headers = opts.headers ?? {};
  }

  async req(method: string, urlPath: string, opts: ReqOptions = {}): Promise<Res> {
    const headers: Record<string, string> = { ...this.headers };
    if (this.cookie) headers.cookie = this.cookie;
    if (this.bearer) headers.authorization = `Bearer ${this.bearer}`;
    Object.assign(headers, opts.headers ?? {});
    const res = await send(this.baseUrl, method, urlPath, { ...opts, headers });
    for (const line of res.setCookie) {
      const pair = line.split(";")[0] ?? "";
      if (/^(__Host-)?esa_sid=/.test(pair)) this.cookie = pair;
    }
    return res;
  }

  get = (p: string, o?: ReqOptions) => this.req("GET", p, o);
  post = (p: string, json?: unknown, o: ReqOptions = {}) => this.req("POST", p, { json: json ?? {}, ...o });
  patch = (p: string, json: unknown, o: ReqOptions = {}) => this.req("PATCH", p, { json, ...o });
  /** Bodyless, but with `Content-Type: application/json` as a browser client sends it (the CSRF guard wants it). */
  delete = (p: string, o: ReqOptions = {}) => this.req("DELETE", p, { ...o, headers: { "content-type": "application/json", ...o.headers } });

  /** GET /api/session: the caller's user id (creating the identity on first call). */
  async userId(): Promise<string> {
    const r = await this.get("/api/session");
    if (r.status !== 200) throw new Error(`session: ${r.status} ${r.text}`);
    return (r.body as { userId: string }).userId;
  }
}

/** Parses one Set-Cookie line into its name, value and attributes (lower-cased keys). */
export function parseSetCookie(line: string): { name: string; value: string; attrs: Record<string, string | true> } {
  const [pair = "", ...rest] = line.split(";");
  const eq = pair.indexOf("=");
  const attrs: Record<string, string | true> = {};
  for (const a of rest) {
    const i = a.indexOf("=");
    if (i === -1) attrs[a.trim().toLowerCase()] = true;
    else attrs[a.slice(0, i).trim().toLowerCase()] = a.slice(i + 1).trim();
  }
  return { name: pair.slice(0, eq).trim(), value: pair.slice(eq + 1).trim(), attrs };
}

/** Row count and md5 of every row of every table in `public`: equal snapshots mean nothing was written. */
export async function snapshotTables(db: TestDatabase): Promise<Record<string, string>> {
  const tables = (
    await db.pool.query<{ t: string }>("select table_name as t from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE' order by 1")
  ).rows.map((r) => r.t);
  const sql = tables
    .map((t) => `select '${t}' as t, count(*)::text || ':' || coalesce(md5(string_agg(x::text, ',' order by x::text)), '') as s from "${t}" x`)
    .join(" union all ");
  const r = await db.pool.query<{ t: string; s: string }>(sql);
  return Object.fromEntries(r.rows.map((row) => [row.t, row.s]));
}

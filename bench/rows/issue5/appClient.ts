/**
 * Just enough of the app's HTTP API for the streaming rows (issues 5 and 6):
 * an anonymous session cookie, a conversation with one message (a queued
 * run), cancel. Plain node:http on loopback, no agent.
 */
import { request } from "node:http";

export interface ApiResponse {
  status: number;
  body: unknown;
  setCookie: string[];
}

export function callApi(baseUrl: string, method: string, path: string, opts: { cookie?: string; json?: unknown } = {}): Promise<ApiResponse> {
  const url = new URL(path, baseUrl);
  const payload = opts.json === undefined ? undefined : Buffer.from(JSON.stringify(opts.json));
  const headers: Record<string, string> = {};
  if (opts.cookie) headers.cookie = opts.cookie;
  // The CSRF guard wants cookie-authenticated writes as JSON.
  if (method !== "GET") headers["content-type"] = "application/json";
  if (payload) headers["content-length"] = String(payload.length);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, method, path: url.pathname + url.search, headers, agent: false, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let body: unknown = text;
        try {
          body = text ? JSON.parse(text) : undefined;
        } catch {
          // not JSON: keep the text
        }
        resolve({ status: res.statusCode ?? 0, body, setCookie: res.headers["set-cookie"] ?? [] });
      });
    });
    req.on("timeout", () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on("error", reject);
    req.end(payload);
  });
}

/** GET /api/session: a new anonymous user; its `Cookie` header value. */
export async function newSession(baseUrl: string): Promise<string> {
  const r = await callApi(baseUrl, "GET", "/api/session");
  const cookie = r.setCookie.map((l) => l.split(";")[0] ?? "").find((p) => /^(__Host-)?esa_sid=/.test(p));
  if (r.status !== 200 || !cookie) throw new Error(`GET /api/session: ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`);
  return cookie;
}

/** A new conversation with one message; the queued run's id. */
export async function startRun(baseUrl: string, cookie: string, content: string, agent?: string): Promise<string> {
  const conv = await callApi(baseUrl, "POST", "/api/conversations", { cookie, json: {} });
  const convId = (conv.body as { id?: string } | undefined)?.id;
  if (conv.status !== 201 || !convId) throw new Error(`POST /api/conversations: ${conv.status} ${JSON.stringify(conv.body).slice(0, 300)}`);
  const posted = await callApi(baseUrl, "POST", `/api/conversations/${convId}/messages`, { cookie, json: { content, ...(agent ? { agent } : {}) } });
  const runId = (posted.body as { run?: { id?: string } } | undefined)?.run?.id;
  if (posted.status !== 202 || !runId) throw new Error(`POST messages: ${posted.status} ${JSON.stringify(posted.body).slice(0, 300)}`);
  return runId;
}

export async function cancelRun(baseUrl: string, cookie: string, runId: string): Promise<void> {
  await callApi(baseUrl, "POST", `/api/runs/${runId}/cancel`, { cookie, json: {} }).catch(() => undefined);
}

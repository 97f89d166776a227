/**
 * The smoke check's HTTP client: node:http/https, one fresh connection per
 * request (what a load balancer's probe or a first visitor does), no automatic
 * decompression (so Content-Encoding can be checked) and a size cap.
 */
import { request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { request as httpsRequest } from "node:https";

/** Bodies above this are cut off with an error: nothing the smoke reads is larger. */
const MAX_BODY_BYTES = 16 * 1024 * 1024;

export interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  /** The body as sent (still compressed when Content-Encoding says so). */
  body: Buffer;
  text(): string;
  /** The body parsed as JSON; throws a readable error when it is not. */
  json(): unknown;
  /** One header as a string ("" when absent; repeated headers joined by ", "). */
  header(name: string): string;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  signal: AbortSignal;
}

export function request(url: URL, opts: RequestOptions): Promise<Reply> {
  const send = url.protocol === "https:" ? httpsRequest : httpRequest;
  const headers: Record<string, string> = { connection: "close", "user-agent": "esa-agents-smoke", ...opts.headers };
  if (opts.body !== undefined) headers["content-length"] = String(Buffer.byteLength(opts.body));
  return new Promise<Reply>((resolve, reject) => {
    const req = send(url, { method: opts.method ?? "GET", headers, agent: false, signal: opts.signal }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY_BYTES) {
          req.destroy(new Error(`body larger than ${MAX_BODY_BYTES} bytes`));
          return;
        }
        chunks.push(c);
      });
      res.on("error", reject);
      res.on("end", () => {
        const body = Buffer.concat(chunks);
        const status = res.statusCode ?? 0;
        resolve({
          status,
          headers: res.headers,
          body,
          text: () => body.toString("utf8"),
          json() {
            try {
              return JSON.parse(body.toString("utf8")) as unknown;
            } catch {
              throw new Error(`${status} body is not JSON: ${JSON.stringify(body.toString("utf8").slice(0, 120))}`);
            }
          },
          header(name) {
            const v = res.headers[name.toLowerCase()];
            return Array.isArray(v) ? v.join(", ") : (v ?? "");
          },
        });
      });
    });
    req.on("error", reject);
    req.end(opts.body);
  });
}

/** A minimal cookie jar: name=value pairs from Set-Cookie, sent back as one Cookie header. */
export class CookieJar {
  private readonly cookies = new Map<string, string>();

  take(reply: Reply): void {
    const set = reply.headers["set-cookie"] ?? [];
    for (const line of set) {
      const pair = line.split(";", 1)[0] ?? "";
      const eq = pair.indexOf("=");
      if (eq > 0) this.cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
  }

  get size(): number {
    return this.cookies.size;
  }

  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; ");
  }
}

/** `{a, b}` keys of a JSON object, sorted; null when it is not a plain object. */
export function keysOf(v: unknown): string[] | null {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return null;
  return Object.keys(v).sort();
}

export const isIsoTime = (v: unknown): boolean => typeof v === "string" && !Number.isNaN(Date.parse(v)) && new Date(v).toISOString() === v;

/** A short, one-line excerpt of a body for a failure reason. */
export function excerpt(s: string, max = 160): string {
  const one = s.replace(/\s+/g, " ").trim();
  return one.length > max ? one.slice(0, max) + "…" : one;
}

/** Minimal loopback HTTP helpers for the bench process (no keep-alive, no agent). */
import { request } from "node:http";
import { createServer } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

export { sleep };

export interface SimpleResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One GET to 127.0.0.1; rejects on connection errors and after `timeoutMs`. */
export function get(port: number, path: string, timeoutMs = 2000): Promise<SimpleResponse> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, method: "GET", agent: false, timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${path} timed out after ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end();
  });
}

export interface PollOptions {
  /** Pause between attempts, ms. */
  intervalMs: number;
  timeoutMs: number;
  /** Gives up early (e.g. the process exited); return a reason to stop. */
  abort?: () => string | undefined;
}

/**
 * GETs `path` until it answers 200; resolves with the time of that answer
 * (`performance.now()`, taken as the response head arrives).
 */
export async function pollUntil200(port: number, path: string, opts: PollOptions): Promise<number> {
  const until = performance.now() + opts.timeoutMs;
  let last = "no attempt";
  for (;;) {
    const reason = opts.abort?.();
    if (reason) throw new Error(`${reason} (waiting for ${path} 200; last: ${last})`);
    try {
      const r = await get(port, path, 1000);
      const at = performance.now();
      if (r.status === 200) return at;
      last = `status ${r.status} ${r.body.slice(0, 200)}`;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    if (performance.now() > until) throw new Error(`${path} not 200 within ${opts.timeoutMs} ms (last: ${last})`);
    await sleep(opts.intervalMs);
  }
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

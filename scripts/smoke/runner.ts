/**
 * Runs the smoke checks one after another, each under its own timeout and all
 * under a global deadline, and prints one line per check.
 */
import { CookieJar, request, type Reply, type RequestOptions } from "./http.js";

export type Status = "pass" | "fail" | "skip";

export interface Outcome {
  status: Status;
  detail: string;
}

export interface SmokeContext {
  /** The deployment's base URL (origin plus an optional path prefix, no trailing slash). */
  base: URL;
  /** Where /metrics is read (the main port unless --metrics-url). */
  metricsUrl: URL;
  metricsToken: string | undefined;
  /** Shared by the WebSocket and run checks: the anonymous session. */
  jar: CookieJar;
  /** GET `path` (or another method) under the base URL with the session cookie. */
  http(path: string, opts: Omit<RequestOptions, "signal"> & { signal: AbortSignal }): Promise<Reply>;
  /** The session cookie, fetched once from /api/session. */
  session(signal: AbortSignal): Promise<string>;
}

export interface Check {
  name: string;
  run(ctx: SmokeContext, signal: AbortSignal): Promise<Outcome>;
}

export interface RunOptions {
  base: URL;
  metricsUrl?: URL;
  metricsToken?: string;
  /** Per check, ms. */
  checkTimeoutMs: number;
  /** Whole run, ms. */
  globalTimeoutMs: number;
  write(line: string): void;
}

export interface Summary {
  results: { name: string; status: Status; detail: string; ms: number }[];
  ok: boolean;
}

export const pass = (detail: string): Outcome => ({ status: "pass", detail });
export const fail = (detail: string): Outcome => ({ status: "fail", detail });
export const skip = (detail: string): Outcome => ({ status: "skip", detail });

export function createContext(opts: Pick<RunOptions, "base" | "metricsUrl" | "metricsToken">): SmokeContext {
  const jar = new CookieJar();
  const prefix = opts.base.pathname.replace(/\/+$/, "");
  const urlOf = (path: string) => new URL(prefix + path, opts.base);
  let session: string | undefined;
  const ctx: SmokeContext = {
    base: opts.base,
    metricsUrl: opts.metricsUrl ?? urlOf("/metrics"),
    metricsToken: opts.metricsToken,
    jar,
    async http(path, o) {
      const headers = { ...o.headers };
      if (jar.size > 0) headers.cookie = jar.header();
      const reply = await request(urlOf(path), { ...o, headers });
      jar.take(reply);
      return reply;
    },
    async session(signal) {
      if (session) return session;
      const r = await ctx.http("/api/session", { signal, headers: { accept: "application/json" } });
      const body = r.status === 200 ? (r.json() as { userId?: unknown }) : null;
      if (!body || typeof body.userId !== "string") throw new Error(`GET /api/session answered ${r.status}, not {userId}`);
      if (jar.size === 0) throw new Error("GET /api/session set no cookie");
      session = jar.header();
      return session;
    },
  };
  return ctx;
}

const reasonOf = (err: unknown): string => {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
};

/** One check under `ms`: a thrown error or the timeout is a fail with its reason. */
async function runOne(check: Check, ctx: SmokeContext, ms: number, why: string): Promise<Outcome> {
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<Outcome>((resolve) => {
    timer = setTimeout(() => {
      ac.abort(new Error(`timed out after ${ms} ms`));
      resolve(fail(`timed out after ${ms} ms (${why})`));
    }, ms);
  });
  try {
    return await Promise.race([check.run(ctx, ac.signal).catch((err: unknown) => fail(reasonOf(err))), timeout]);
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
}

export function formatLine(status: Status, name: string, detail: string): string {
  return `${status.padEnd(4)}  ${name.padEnd(20)} ${detail}`;
}

export async function runChecks(checks: readonly Check[], opts: RunOptions): Promise<Summary> {
  const ctx = createContext(opts);
  const started = performance.now();
  const deadline = started + opts.globalTimeoutMs;
  const results: Summary["results"] = [];
  for (const check of checks) {
    const left = Math.floor(deadline - performance.now());
    const t0 = performance.now();
    let outcome: Outcome;
    if (left <= 0) outcome = fail(`not run: the global timeout of ${opts.globalTimeoutMs} ms was reached`);
    else if (left < opts.checkTimeoutMs) outcome = await runOne(check, ctx, left, "global timeout");
    else outcome = await runOne(check, ctx, opts.checkTimeoutMs, "per-check timeout");
    const ms = performance.now() - t0;
    results.push({ name: check.name, status: outcome.status, detail: outcome.detail, ms });
    opts.write(formatLine(outcome.status, check.name, outcome.detail));
  }
  const n = (s: Status) => results.filter((r) => r.status === s).length;
  // A skipped check was not verified: the run is not a pass (see README "Smoke check").
  const ok = n("fail") === 0 && n("skip") === 0;
  const secs = ((performance.now() - started) / 1000).toFixed(1);
  opts.write(
    `summary: ${ok ? "PASS" : "FAIL"}, ${n("pass")} passed, ${n("fail")} failed, ${n("skip")} skipped of ${results.length} checks in ${secs} s against ${opts.base.href}`,
  );
  return { results, ok };
}

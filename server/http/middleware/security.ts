import helmet from "helmet";
import cors from "cors";
import { rateLimit, ipKeyGenerator, MemoryStore } from "express-rate-limit";
import type { Request, Response, RequestHandler } from "express";
import type { Config } from "../../config.js";
import { AppError } from "../errors.js";

const HOST = /^[a-z0-9.-]+(:\d{1,5})?$|^\[[0-9a-f:.]+\](:\d{1,5})?$/i;

/**
 * helmet's headers, and a CSP allowing only self whose connect-src adds the
 * page's own ws/wss origin (older Safari does not count ws: as 'self'). The
 * policy is built once per host and scheme, not per request. HSTS one year
 * with subdomains in production only.
 */
export function securityHeaders(config: Config): (req: Request, res: Response) => void {
  const dev = config.env === "development";
  const directives = [
    "default-src 'self'",
    "base-uri 'self'",
    "font-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "img-src 'self' data:",
    "object-src 'none'",
    // Dev only: Vite's React preamble is an inline script and its CSS arrives as <style>.
    dev ? "script-src 'self' 'unsafe-inline'" : "script-src 'self'",
    "script-src-attr 'none'",
    dev ? "style-src 'self' 'unsafe-inline'" : "style-src 'self'",
    // No upgrade-insecure-requests: it would break `npm start` on plain http at a LAN address; HSTS covers HTTPS.
  ].join(";");
  // The policy per Host header, one map per scheme: a hit builds no string.
  // A Host that is not a plain host[:port] gets no ws origin (nothing from it reaches the header).
  const byHost = { http: new Map<string, string>(), https: new Map<string, string>() };
  const policyFor = (req: Request): string => {
    const host = req.headers.host ?? "";
    const scheme = req.protocol === "https" ? "https" : "http";
    const cache = byHost[scheme];
    let policy = cache.get(host);
    if (policy === undefined) {
      const wsOrigin = HOST.test(host) ? `${scheme === "https" ? "wss" : "ws"}://${host}` : "";
      policy = `${directives};connect-src 'self'${wsOrigin ? " " + wsOrigin : ""}`;
      if (cache.size >= 256) cache.clear();
      cache.set(host, policy);
    }
    return policy;
  };
  const others = fixedHeadersOf(
    helmet({
      contentSecurityPolicy: false,
      strictTransportSecurity: config.production ? { maxAge: 365 * 24 * 60 * 60, includeSubDomains: true } : false,
      crossOriginEmbedderPolicy: false,
    }),
  );
  return function setSecurityHeaders(req, res) {
    res.setHeader("content-security-policy", policyFor(req));
    for (const [name, value] of others) res.setHeader(name, value);
  };
}

/**
 * The headers a request-independent middleware sets, found by running it once
 * on a recording response: helmet's headers (all but the CSP) depend on its
 * options only, so each request gets the same list without running helmet's
 * chain of eleven middlewares. A middleware that reads the request, removes a
 * header other than X-Powered-By (which the app never sets) or does not call
 * next at once is refused, so a helmet upgrade that changes this fails at boot.
 */
export function fixedHeadersOf(middleware: RequestHandler): [string, string][] {
  const headers = new Map<string, string>();
  const req = new Proxy(
    {},
    {
      get(_t, key) {
        throw new Error(`the fixed-header middleware reads req.${String(key)}`);
      },
    },
  );
  const res = {
    setHeader(name: string, value: string | number | readonly string[]) {
      headers.set(name.toLowerCase(), Array.isArray(value) ? value.join(", ") : String(value));
      return res;
    },
    removeHeader(name: string) {
      if (name.toLowerCase() !== "x-powered-by") throw new Error(`the fixed-header middleware removes ${name}`);
    },
  };
  let called = false;
  // The recording response has only the two methods helmet uses; the Proxy throws on any other use of the request.
  void middleware(req as Request, res as unknown as Response, (err?: unknown) => {
    if (err) throw err instanceof Error ? err : new Error(String(err));
    called = true;
  });
  if (!called) throw new Error("the fixed-header middleware did not call next synchronously");
  return [...headers];
}

/**
 * CORS only for CORS_ORIGINS (none by default); same-origin needs no CORS.
 * Answers an allowed preflight itself (204).
 */
export function corsFor(config: Config): RequestHandler {
  const allowed = new Set(config.security.corsOrigins);
  return cors({
    origin: (origin, cb) => cb(null, origin !== undefined && allowed.has(origin)),
    credentials: true,
    maxAge: 600,
  });
}

/** One hit counted by `ApiRateLimiter.consume`. */
export interface RateLimitVerdict {
  /** True when this hit is past RATE_LIMIT_MAX for its window: refuse it. */
  limited: boolean;
  /** Seconds until the client's window ends and its count starts again (0 once it has ended), as the 429's Retry-After. */
  retryAfterSeconds: number;
}

/**
 * The API rate limit, one per process, shared by every way in that creates
 * work: the /api middleware and the WebSocket `send` count hits in one store
 * under one key per client, so a client has one budget whichever it uses.
 */
export interface ApiRateLimiter {
  /** The /api middleware: counts each request; past the limit, 429 JSON with RateLimit and Retry-After headers. */
  readonly middleware: RequestHandler;
  /**
   * Counts one hit for a client IP (as `req.ip` would give it) in the
   * middleware's store, under the middleware's key: a request that does not
   * pass through Express (a WebSocket `send`).
   */
  consume(ip: string): Promise<RateLimitVerdict>;
}

/**
 * The rate limit's key for a client IP: IPv6 clients share a limit per /56
 * (ipKeyGenerator, as the library's default does); an IPv4 address, which has
 * no colon, is its own key, without the library's IPv6 regex.
 */
export function rateLimitKey(ip: string): string {
  return ip.includes(":") ? ipKeyGenerator(ip) : ip;
}

/** Seconds until `resetTime`, rounded up, as express-rate-limit computes Retry-After. */
function secondsUntil(resetTime: Date | undefined, windowMs: number): number {
  if (!resetTime) return Math.ceil(windowMs / 1000);
  return Math.max(0, Math.ceil((resetTime.getTime() - Date.now()) / 1000));
}

/**
 * RATE_LIMIT_MAX (default 100) hits per RATE_LIMIT_WINDOW_MS (default 15 min)
 * per client IP; `req.ip` honours the trusted hop count. The key is computed
 * synchronously (the library's default key generator is async and re-runs
 * its configuration checks on every request). The store is a MemoryStore made
 * here, so that `consume` can count in it too: per process, as before.
 */
export function createApiRateLimiter(config: Config): ApiRateLimiter {
  const { max, windowMs } = config.security.rateLimit;
  const store = new MemoryStore();
  const middleware = rateLimit({
    windowMs,
    limit: max,
    store,
    standardHeaders: "draft-7",
    legacyHeaders: false,
    keyGenerator: (req) => rateLimitKey(req.ip ?? req.socket.remoteAddress ?? ""),
    // That check reads the key generator's source for `req.ip` without
    // `ipKeyGenerator`; rateLimitKey applies it, out of the check's sight.
    validate: { keyGeneratorIpFallback: false },
    // The library sets RateLimit and Retry-After headers before calling this.
    handler: (_req, res) => {
      const err = new AppError("rate_limited", 429, "Too many requests; try again later");
      res.status(429).json(err.toBody());
    },
  });
  return {
    middleware,
    async consume(ip) {
      // What the middleware does with a request, past the key: one increment,
      // limited once the count passes the limit (express-rate-limit's `totalHits > limit`).
      const { totalHits, resetTime } = await store.increment(rateLimitKey(ip));
      return { limited: totalHits > max, retryAfterSeconds: secondsUntil(resetTime, windowMs) };
    },
  };
}

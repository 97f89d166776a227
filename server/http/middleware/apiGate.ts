import express, { type Request, type Response, type NextFunction, type RequestHandler } from "express";
import compression from "compression";
import type { Config } from "../../config.js";
import { AppError } from "../errors.js";
import { createApiRateLimiter, corsFor, type ApiRateLimiter } from "./security.js";

/** API JSON bodies from this size on are compressed (when the client accepts it). */
export const COMPRESS_THRESHOLD_BYTES = 1024;

const BODY_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** A request that carries a body must say it is JSON: 415 otherwise. */
function assertJsonBody(req: Request) {
  const len = req.headers["content-length"];
  const hasBody = req.headers["transfer-encoding"] !== undefined || (len !== undefined && len !== "0");
  if (hasBody && !req.is("application/json")) {
    throw new AppError("unsupported_media_type", 415, "Request body must be application/json");
  }
}

/** True when a `res.send` body is at least `COMPRESS_THRESHOLD_BYTES` long, without encoding short strings. */
function isLarge(body: unknown): boolean {
  if (typeof body === "string") {
    if (body.length >= COMPRESS_THRESHOLD_BYTES) return true;
    // A UTF-16 unit is at most 3 UTF-8 bytes: shorter strings cannot reach the threshold.
    return body.length * 3 >= COMPRESS_THRESHOLD_BYTES && Buffer.byteLength(body) >= COMPRESS_THRESHOLD_BYTES;
  }
  return Buffer.isBuffer(body) && body.length >= COMPRESS_THRESHOLD_BYTES;
}

/**
 * Everything every /api request goes through, as one middleware (one router
 * layer instead of six), in this order:
 *
 * 1. `Cache-Control: no-store`: API responses are per-user.
 * 2. CORS for CORS_ORIGINS (the `cors` package, only when an `Origin` header
 *    is sent: without one it sets nothing); an allowed preflight ends here.
 * 3. The rate limit (express-rate-limit): 429 JSON past it. `rateLimiter` is
 *    the process's one limiter, which WebSocket sends count against too; a
 *    gate given none makes its own (an app without a socket server).
 * 4. On POST/PUT/PATCH/DELETE: a body must be `application/json` (415), then
 *    it is parsed (`express.json`, BODY_LIMIT_BYTES → 413, malformed → 400).
 * 5. Compression, decided when the body is known (`installApiCompression`,
 *    on the app's response prototype, so no per-request step): `res.send` of
 *    an /api body of 1 KB or more sets up the `compression` middleware for that response,
 *    unless `x-no-compression` was sent (a request without Accept-Encoding
 *    only gets the `Vary: Accept-Encoding` compression would add). Most API
 *    answers are small JSON, and setting compression up on each of them (it
 *    wraps write/end/on and writes the headers apart from the body) cost
 *    more than the route.
 *    Streams written with `res.write` (SSE) are never compressed.
 */
export function createApiGate(config: Config, rateLimiter: ApiRateLimiter = createApiRateLimiter(config)): RequestHandler {
  const cors = corsFor(config);
  const limit = rateLimiter.middleware;
  const parseJson = express.json({ limit: config.server.bodyLimitBytes, strict: true });
  function afterLimit(req: Request, res: Response, next: NextFunction) {
    if (!BODY_METHODS.has(req.method)) return next();
    assertJsonBody(req);
    parseJson(req, res, next);
  }
  return function apiGate(req, res, next) {
    res.setHeader("cache-control", "no-store");
    const limited = () =>
      limit(req, res, (err?: unknown) => {
        if (err) return next(err);
        try {
          afterLimit(req, res, next);
        } catch (e) {
          next(e);
        }
      });
    if (req.headers.origin === undefined) return limited();
    // cors calls next unless it answered a preflight.
    return cors(req, res, (err?: unknown) => (err ? next(err) : limited()));
  };
}

/** An /api path (`/api` or under `/api/`), from the URL as it arrived. */
function isApiUrl(url: string): boolean {
  return url.startsWith("/api") && (url.length === 4 || url[4] === "/" || url[4] === "?");
}

/**
 * Point 5 of the gate: `res.send` on the app's own response prototype (one
 * assignment at startup instead of one per request) compresses /api bodies of
 * `COMPRESS_THRESHOLD_BYTES` or more.
 */
export function installApiCompression(response: Response): void {
  const compress = compression({ threshold: COMPRESS_THRESHOLD_BYTES });
  const send = response.send;
  function sendMaybeCompressed(this: Response, body: unknown): Response {
    if (isLarge(body) && isApiUrl(this.req.originalUrl) && this.req.headers["x-no-compression"] === undefined && !this.headersSent) {
      // No Accept-Encoding: compression could only answer identity; all it
      // would add is the Vary header, so add that alone.
      if (this.req.headers["accept-encoding"] === undefined) this.vary("Accept-Encoding");
      // compression sets itself up synchronously, then calls next.
      else void compress(this.req, this, () => undefined);
    }
    return send.call(this, body);
  }
  (response as { send: unknown }).send = sendMaybeCompressed;
}

import express, { type Express, type Request, type Response, type NextFunction, type Router } from "express";
import type { Config } from "./config.js";
import type { Logger } from "./ops/logger.js";
import type { Metrics } from "./ops/metrics.js";
import type { Lifecycle } from "./ops/lifecycle.js";
import type { StaticHandlers } from "./static.js";
import { compileTrustProxy } from "./http/clientIp.js";
import { installObserve } from "./http/middleware/observe.js";
import { securityHeaders, type ApiRateLimiter } from "./http/middleware/security.js";
import { createApiGate, installApiCompression } from "./http/middleware/apiGate.js";
import { AppError, coerceError, notFound } from "./http/errors.js";
import { createMetaHandler } from "./http/routes/meta.js";

export interface AppDeps {
  config: Config;
  log: Logger;
  metrics: Metrics;
  lifecycle: Lifecycle;
  /** Static bundle (production) or Vite (dev); absent in API-only tests. */
  staticHandlers?: StaticHandlers;
  /** Routers mounted under /api, after the built-in ones. */
  apiRouters?: Router[];
  /**
   * Routers mounted at the root, outside /api (no API middleware: no CSRF,
   * rate limit or JSON body rule of the browser API), ahead of the SPA
   * fallback: the A2A cards and endpoints.
   */
  rootRouters?: Router[];
  /**
   * The API rate limit, shared with the WebSocket server's `send` (one budget
   * per client). Absent: the app makes its own, for apps without a socket.
   */
  apiRateLimiter?: ApiRateLimiter;
  /** Told every response's duration, ms (the autoscaler's p95). */
  onResponse?: (ms: number) => void;
}

/**
 * The Express application: middleware, routers, 404 and errors. Never
 * listens; the composition root hands it to the http server.
 */
export function createApp(deps: AppDeps): Express {
  const { config, log, metrics } = deps;
  const app = express();
  app.disable("x-powered-by");
  // The compiled function, not the hop count: the WebSocket upgrade computes
  // its client IP with the same one (http/clientIp.ts), for the rate limit.
  app.set("trust proxy", compileTrustProxy(config.server.trustProxy));
  app.set("etag", false);

  // What every response gets, in one router layer: request id, metrics and
  // access log, then helmet's headers and the CSP.
  const observe = installObserve(app, log, metrics, deps.onResponse);
  const setSecurityHeaders = securityHeaders(config);
  app.use(function front(req: Request, res: Response, next: NextFunction) {
    observe(req, res);
    setSecurityHeaders(req, res);
    next();
  });

  // /api ahead of the static files: no file is served under /api (its own
  // 404 ends every /api path), so API requests skip the file lookup.
  installApiCompression(app.response);
  const api = express.Router();
  api.use(createApiGate(config, deps.apiRateLimiter));
  api.get("/meta", createMetaHandler(deps));
  for (const r of deps.apiRouters ?? []) api.use(r);
  api.use((req: Request) => {
    throw notFound(`No API route for ${req.method} ${req.path}`);
  });
  app.use("/api", api);
  if (deps.staticHandlers) app.use(deps.staticHandlers.files);
  for (const r of deps.rootRouters ?? []) app.use(r);

  if (deps.staticHandlers) app.use(deps.staticHandlers.spaFallback);
  app.use((req: Request) => {
    throw notFound(`Nothing at ${req.method} ${req.path}`);
  });

  // One error middleware: every error leaves as {error:{code,message}}.
  const debug = log.isLevelEnabled("debug");
  app.use((raw: unknown, req: Request, res: Response, _next: NextFunction) => {
    const err = coerceError(raw);
    // A failure is logged once, as an error; a deliberate answer (4xx, or an
    // exposed 5xx such as not_ready or overloaded) is not: under load or while
    // starting there may be thousands of those.
    if (err.status >= 500 && !err.expose) req.log.error({ err: raw, code: err.code }, "request failed");
    else if (debug) req.log.debug({ code: err.code, status: err.status }, "request rejected");
    if (res.headersSent) {
      // Too late for an error body: cut the response so the client sees it is
      // incomplete. Not next(raw): Express's final handler would log it again
      // (console.error, outside pino, without the request id) in production.
      if (!res.writableEnded) res.destroy();
      return;
    }
    if (err.headers) res.set(err.headers);
    res.status(err.status).json(err.toBody());
  });
  return app;
}

export { AppError };

import { randomUUID } from "node:crypto";
import type { Request, Response, Express } from "express";
import type { Logger } from "../../ops/logger.js";
import { methodLabel, UNMATCHED_ROUTE, type Metrics } from "../../ops/metrics.js";

declare module "express-serve-static-core" {
  interface Request {
    /** The request id: an incoming `x-request-id` when sane, else a new UUID. */
    id: string;
    /** A child logger bound to the request id, made on first use. */
    readonly log: Logger;
  }
  interface Locals {
    /** Route label for metrics when no Express route matched (static, spa). */
    routeLabel?: string;
  }
}

const SAFE_ID = /^[\w.:@/+=-]{1,128}$/;

const MATCHED = Symbol("matchedRoute");
/** The route the router assigned and its full template, in one property (one shape change per request, not two). */
interface Matched {
  route: unknown;
  template: string | undefined;
}
type TracedRequest = Request & { [MATCHED]?: Matched };

/** The route template a request matched, never the raw URL. */
function routeLabel(req: TracedRequest, res: Response): string {
  return res.locals.routeLabel ?? req[MATCHED]?.template ?? UNMATCHED_ROUTE;
}

/**
 * Records `baseUrl + route.path` at the moment the router assigns `req.route`.
 * Reading them at `finish` is too late: when a handler throws, the error
 * leaves the mounted routers and each one restores `req.baseUrl`, so a failed
 * `/api/items/:id` would be labelled `/items/:id`. Routers must be mounted at
 * fixed paths: a parameter in a mount path would put raw values in `baseUrl`.
 */
function traceRouteTemplate(proto: Request) {
  Object.defineProperty(proto, "route", {
    configurable: true,
    enumerable: true,
    get(this: TracedRequest) {
      return this[MATCHED]?.route;
    },
    set(this: TracedRequest, route: unknown) {
      const matched = this[MATCHED];
      // The router sets it, then the route's dispatch sets the same again.
      if (matched !== undefined && matched.route === route && route !== undefined) return;
      const p = (route as { path?: unknown } | undefined)?.path;
      this[MATCHED] = { route, template: typeof p === "string" ? this.baseUrl + p : undefined };
    },
  });
}

/**
 * Request id, per-request child logger (lazy), in-flight gauge, duration
 * histogram and the access log line, in one step so the hot path pays for one
 * `close` listener. Not a middleware itself: app.ts runs it with the security
 * headers in the first router layer (a layer costs more than these calls).
 */
export function installObserve(app: Express, log: Logger, metrics: Metrics, onResponse?: (ms: number) => void) {
  Object.defineProperty(app.request, "log", {
    configurable: true,
    get(this: Request & { _log?: Logger }) {
      return (this._log ??= log.child({ reqId: this.id }));
    },
  });
  traceRouteTemplate(app.request);
  const logRequests = log.isLevelEnabled("info");

  return function observe(req: Request, res: Response): void {
    const start = performance.now();
    const incoming = req.headers["x-request-id"];
    req.id = typeof incoming === "string" && SAFE_ID.test(incoming) ? incoming : randomUUID();
    res.setHeader("x-request-id", req.id);
    metrics.httpInFlight.inc();
    // One listener: a response emits `close` once, after `finish` when it
    // completed and alone when the connection went first.
    res.on("close", () => {
      metrics.httpInFlight.dec();
      const seconds = (performance.now() - start) / 1000;
      const status = res.headersSent ? res.statusCode : 499;
      metrics.httpDuration.observe({ method: methodLabel(req.method), route: routeLabel(req, res), status_code: status }, seconds);
      // Long-lived streams are not response times.
      if (onResponse && !String(res.getHeader("content-type") ?? "").startsWith("text/event-stream")) onResponse(seconds * 1000);
      if (logRequests) {
        req.log.info({ method: req.method, url: req.originalUrl, status, ms: Math.round(seconds * 1e4) / 10 }, "request completed");
      }
    });
  };
}

import { randomUUID } from "node:crypto";
import type { Request, Response, NextFunction, Express } from "express";
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

/** The route template a request matched, never the raw URL. */
function routeLabel(req: Request, res: Response): string {
  if (res.locals.routeLabel) return res.locals.routeLabel;
  const route = req.route as { path?: unknown } | undefined;
  if (route && typeof route.path === "string") return req.baseUrl + route.path;
  return UNMATCHED_ROUTE;
}

/**
 * Request id, per-request child logger (lazy), in-flight gauge, duration
 * histogram and the access log line, in one middleware so the hot path pays
 * for one `finish` listener.
 */
export function installObserve(app: Express, log: Logger, metrics: Metrics) {
  Object.defineProperty(app.request, "log", {
    configurable: true,
    get(this: Request & { _log?: Logger }) {
      return (this._log ??= log.child({ reqId: this.id }));
    },
  });
  const logRequests = log.isLevelEnabled("info");

  return function observe(req: Request, res: Response, next: NextFunction) {
    const start = process.hrtime.bigint();
    const incoming = req.headers["x-request-id"];
    req.id = typeof incoming === "string" && SAFE_ID.test(incoming) ? incoming : randomUUID();
    res.setHeader("x-request-id", req.id);
    metrics.httpInFlight.inc();
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      metrics.httpInFlight.dec();
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      const status = res.headersSent ? res.statusCode : 499;
      metrics.httpDuration.observe({ method: methodLabel(req.method), route: routeLabel(req, res), status_code: status }, seconds);
      if (logRequests) {
        req.log.info({ method: req.method, url: req.originalUrl, status, ms: Math.round(seconds * 1e4) / 10 }, "request completed");
      }
    };
    res.once("finish", finish);
    res.once("close", finish);
    next();
  };
}

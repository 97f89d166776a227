import helmet from "helmet";
import cors from "cors";
import { rateLimit } from "express-rate-limit";
import type { Request, Response, NextFunction, RequestHandler } from "express";
import type { Config } from "../../config.js";
import { AppError } from "../errors.js";

const HOST = /^[a-z0-9.-]+(:\d{1,5})?$|^\[[0-9a-f:.]+\](:\d{1,5})?$/i;

/**
 * helmet's headers, and a CSP allowing only self whose connect-src adds the
 * page's own ws/wss origin (older Safari does not count ws: as 'self'). The
 * policy is built once per host and scheme, not per request. HSTS one year
 * with subdomains in production only.
 */
export function securityHeaders(config: Config): RequestHandler {
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
  const byOrigin = new Map<string, string>();
  const policyFor = (req: Request): string => {
    const host = req.headers.host;
    const wsOrigin = host && HOST.test(host) ? `${req.protocol === "https" ? "wss" : "ws"}://${host}` : "";
    let policy = byOrigin.get(wsOrigin);
    if (policy === undefined) {
      policy = `${directives};connect-src 'self'${wsOrigin ? " " + wsOrigin : ""}`;
      if (byOrigin.size >= 256) byOrigin.clear();
      byOrigin.set(wsOrigin, policy);
    }
    return policy;
  };
  const others = helmet({
    contentSecurityPolicy: false,
    strictTransportSecurity: config.production ? { maxAge: 365 * 24 * 60 * 60, includeSubDomains: true } : false,
    crossOriginEmbedderPolicy: false,
  });
  return function securityHeaders(req, res, next) {
    res.setHeader("content-security-policy", policyFor(req));
    others(req, res, next);
  };
}

/** CORS only for CORS_ORIGINS (none by default); same-origin needs no CORS. */
export function corsFor(config: Config): RequestHandler {
  const allowed = new Set(config.security.corsOrigins);
  return cors({
    origin: (origin, cb) => cb(null, origin !== undefined && allowed.has(origin)),
    credentials: true,
    maxAge: 600,
  });
}

/** 100 requests per 15 min per client IP by default; `req.ip` honours the trusted hop count. */
export function apiRateLimit(config: Config): RequestHandler {
  const { max, windowMs } = config.security.rateLimit;
  return rateLimit({
    windowMs,
    limit: max,
    standardHeaders: "draft-7",
    legacyHeaders: false,
    // The library sets RateLimit and Retry-After headers before calling this.
    handler: (_req, res) => {
      const err = new AppError("rate_limited", 429, "Too many requests; try again later");
      res.status(429).json(err.toBody());
    },
  });
}

const BODY_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** A request that carries a body on a JSON route must say it is JSON: 415 otherwise. */
export function requireJsonBody(req: Request, _res: Response, next: NextFunction) {
  if (!BODY_METHODS.has(req.method)) return next();
  const len = req.headers["content-length"];
  const hasBody = req.headers["transfer-encoding"] !== undefined || (len !== undefined && len !== "0");
  if (hasBody && !req.is("application/json")) {
    return next(new AppError("unsupported_media_type", 415, "Request body must be application/json"));
  }
  next();
}

/** API responses are per-user and never stored by caches. */
export function noStore(_req: Request, res: Response, next: NextFunction) {
  res.setHeader("cache-control", "no-store");
  next();
}

import helmet from "helmet";
import cors from "cors";
import { rateLimit } from "express-rate-limit";
import type { Request, Response, NextFunction, RequestHandler } from "express";
import type { Config } from "../../config.js";
import { AppError } from "../errors.js";

const HOST = /^[a-z0-9.-]+(:\d{1,5})?$|^\[[0-9a-f:.]+\](:\d{1,5})?$/i;

/**
 * helmet with a CSP allowing only self; connect-src adds the page's own
 * ws/wss origin (older Safari does not count ws: as 'self'). HSTS one year
 * with subdomains in production only.
 */
export function securityHeaders(config: Config): RequestHandler {
  return helmet({
    contentSecurityPolicy: {
      useDefaults: true,
      directives: {
        defaultSrc: ["'self'"],
        // Dev only: Vite's React preamble is an inline script and its CSS arrives as <style>.
        scriptSrc: config.env === "development" ? ["'self'", "'unsafe-inline'"] : ["'self'"],
        styleSrc: config.env === "development" ? ["'self'", "'unsafe-inline'"] : ["'self'"],
        imgSrc: ["'self'", "data:"],
        fontSrc: ["'self'"],
        objectSrc: ["'none'"],
        frameAncestors: ["'none'"],
        baseUri: ["'self'"],
        formAction: ["'self'"],
        connectSrc: [
          "'self'",
          (req) => {
            const r = req as Request;
            const host = r.headers.host;
            if (!host || !HOST.test(host)) return "'self'";
            return `${r.protocol === "https" ? "wss" : "ws"}://${host}`;
          },
        ],
        // Not set: it would break `npm start` served over plain http on a LAN address; HSTS covers HTTPS deployments.
        upgradeInsecureRequests: null,
      },
    },
    strictTransportSecurity: config.production ? { maxAge: 365 * 24 * 60 * 60, includeSubDomains: true } : false,
    crossOriginEmbedderPolicy: false,
  });
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

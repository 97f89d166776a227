import { Router, type RequestHandler } from "express";
import { AppError } from "../errors.js";

/**
 * Routes that need the database exist from the first request but answer 503
 * (with Retry-After) until the boot has connected and migrated; then the real
 * router takes over. Only the given path prefixes are claimed, so unknown
 * /api paths still get their 404. The real router sees the paths unchanged
 * (it is written as if mounted where this one is), hence no `router.use(prefixes)`,
 * which would strip the prefix.
 */
export function createDeferredRouter(prefixes: string[]) {
  let target: RequestHandler | null = null;
  // Case-insensitive, like Express's own path matching.
  const lowered = prefixes.map((p) => p.toLowerCase());
  const claims = (path: string) => {
    const p = path.toLowerCase();
    return lowered.some((prefix) => p === prefix || p.startsWith(prefix + "/"));
  };
  const router = Router();
  router.use((req, res, next) => {
    if (!claims(req.path)) return next();
    if (target) return target(req, res, next);
    next(new AppError("not_ready", 503, "The server is starting; try again shortly", { expose: true, headers: { "retry-after": "2" } }));
  });
  return {
    router,
    /** Hands the prefixes to the real router. */
    set(handler: RequestHandler) {
      target = handler;
    },
  };
}

/** /api prefixes served only once the database is ready. */
export const DB_ROUTE_PREFIXES = ["/session", "/conversations", "/runs", "/agents"];

/** Root prefixes served only once the database is ready: the A2A cards and endpoints. */
export const A2A_ROUTE_PREFIXES = ["/.well-known/agent-card.json", "/a2a"];

import { Router, type RequestHandler } from "express";
import { AppError } from "../errors.js";

/**
 * Routes that need the database exist from the first request but answer 503
 * (with Retry-After) until the boot has connected and migrated; then the real
 * router takes over. Only the given path prefixes are claimed, so unknown
 * /api paths still get their 404.
 */
export function createDeferredRouter(prefixes: string[]) {
  let target: RequestHandler | null = null;
  const router = Router();
  router.use(prefixes, (req, res, next) => {
    if (target) return target(req, res, next);
    next(new AppError("not_ready", 503, "The server is starting; try again shortly", { headers: { "retry-after": "2" } }));
  });
  return {
    router,
    /** Hands the prefixes to the real router. */
    set(handler: RequestHandler) {
      target = handler;
    },
  };
}

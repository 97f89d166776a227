import path from "node:path";
import { Router, type RequestHandler } from "express";
import type { Config } from "../../config.js";
import type { Logger } from "../../ops/logger.js";
import type { Pool } from "../../db/pool.js";
import { createIdentity, type Identity } from "../../auth/identity.js";
import { createDb } from "../../data/db.js";
import { createConversationStore } from "../../data/conversations.js";
import { messageStoreFor, type MessageStore } from "../../data/messages.js";
import { createRunStore } from "../../data/runs.js";
import { createChatRouter } from "./chat.js";
import { requestCancel } from "../../queue/cancel.js";

/** The /api prefixes served by the user-data router. */
export const DATA_PREFIXES = ["/session", "/conversations", "/runs"];

export interface DataApiDeps {
  config: Config;
  log: Logger;
  pool: Pool;
  /** Where generated secrets are kept when not configured (`<root>/.data`). */
  dataDir: string;
  /** Shared with the WebSocket upgrade (default: a new one). */
  identity?: Identity;
  /** The agent names a message may ask for (default: the built-in list). */
  agentNames?: readonly string[];
  /** Shared with the WebSocket `send` and A2A (default: a new one). */
  messages?: MessageStore;
  /** `GET /runs/:id/events`, the run's stream as SSE (realtime/sse.ts); absent, the route is not served. */
  runEvents?: RequestHandler;
}

/** Identity, CSRF and the user-data routes, on the database pool. */
export function createDataApi(deps: DataApiDeps): Router {
  const { config, log, pool } = deps;
  const identity = deps.identity ?? createIdentity({ config, log, pool, dataDir: deps.dataDir });
  const db = createDb(pool);
  const router = Router();
  // One layer, no mount path: a mounted `use` would rewrite and restore
  // req.url for each of its handlers on every request.
  // Case-insensitive, like Express's own path matching.
  const identityPaths = new RegExp(`^(${DATA_PREFIXES.map((p) => p.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")).join("|")})(/|$)`, "i");
  const needsIdentity = (path: string) => identityPaths.test(path);
  router.use(function identify(req, res, next) {
    if (!needsIdentity(req.path)) return next();
    // csrfGuard throws its 403; inside authenticate's next, that rejects authenticate's promise, which the router turns into next(err).
    return identity.authenticate(req, res, (err?: unknown) => (err ? next(err) : identity.csrfGuard(req, res, next)));
  });
  if (deps.runEvents) router.get("/runs/:id/events", deps.runEvents);
  router.use(
    createChatRouter({
      config,
      conversations: createConversationStore(db),
      messages: deps.messages ?? messageStoreFor(config, pool),
      runs: createRunStore(db),
      cancelRun: (userId, runId) => requestCancel(pool, userId, runId),
      ...(deps.agentNames ? { agentNames: deps.agentNames } : {}),
    }),
  );
  return router;
}

export const defaultDataDir = (rootDir: string) => path.join(rootDir, ".data");

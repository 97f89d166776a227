import path from "node:path";
import { Router } from "express";
import type { Config } from "../../config.js";
import type { Logger } from "../../ops/logger.js";
import type { Pool } from "../../db/pool.js";
import { resolveSecret } from "../../auth/secrets.js";
import { createSessionCodec } from "../../auth/session.js";
import { createJwt } from "../../auth/jwt.js";
import { createAuthenticate, createCsrfGuard } from "../../auth/middleware.js";
import { createDb } from "../../data/db.js";
import { createConversationStore } from "../../data/conversations.js";
import { createMessageStore } from "../../data/messages.js";
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
  /** The registry's agent names (default: the built-in list). */
  agentNames?: readonly string[];
}

/** Identity, CSRF and the user-data routes, on the database pool. */
export function createDataApi(deps: DataApiDeps): Router {
  const { config, log, pool } = deps;
  const sessionSecret = resolveSecret({
    name: "session-secret",
    envName: "SESSION_SECRET",
    configured: config.security.sessionSecret,
    dataDir: deps.dataDir,
    log,
  });
  // Instances of a deployment must share the JWT secret; a per-machine
  // generated one would only work on one of them, so there it is off.
  const jwtSecret =
    config.security.jwtSecret ??
    (config.replitDeployment
      ? undefined
      : resolveSecret({ name: "jwt-secret", envName: "JWT_SECRET", configured: undefined, dataDir: deps.dataDir, log }));
  if (!jwtSecret) log.warn("JWT_SECRET is not set; bearer tokens are refused");
  const db = createDb(pool);
  const router = Router();
  router.use(DATA_PREFIXES, createAuthenticate({ pool, codec: createSessionCodec(sessionSecret), jwt: jwtSecret ? createJwt(jwtSecret) : undefined, config }), createCsrfGuard(config));
  router.use(
    createChatRouter({
      config,
      conversations: createConversationStore(db),
      messages: createMessageStore(db, pool, { maxQueueDepth: config.agents.maxQueueDepth }),
      runs: createRunStore(db),
      cancelRun: (userId, runId) => requestCancel(pool, userId, runId),
      ...(deps.agentNames ? { agentNames: deps.agentNames } : {}),
    }),
  );
  return router;
}

export const defaultDataDir = (rootDir: string) => path.join(rootDir, ".data");

import type { IncomingMessage } from "node:http";
import type { RequestHandler } from "express";
import type { Config } from "../config.js";
import type { Logger } from "../ops/logger.js";
import type { Pool } from "../db/pool.js";
import { resolveSecret } from "./secrets.js";
import { createSessionCodec } from "./session.js";
import { createJwt } from "./jwt.js";
import { createAuthenticate, createCsrfGuard, createUserDirectory, sessionCookie, type Caller } from "./middleware.js";

export interface IdentityDeps {
  config: Config;
  log: Logger;
  pool: Pool;
  /** Where generated secrets are kept when not configured (`<root>/.data`). */
  dataDir: string;
}

/**
 * Who is calling, for HTTP routes and WebSocket upgrades alike: one session
 * codec, one JWT key and one cache of known users, built once per process.
 */
export function createIdentity(deps: IdentityDeps) {
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
  const codec = createSessionCodec(sessionSecret);
  const jwt = jwtSecret ? createJwt(jwtSecret) : undefined;
  const users = createUserDirectory(pool);

  const authenticate: RequestHandler = createAuthenticate({ pool, codec, jwt, config, users });
  const csrfGuard: RequestHandler = createCsrfGuard(config);

  /**
   * The caller of a raw request (a WebSocket upgrade), or null. Unlike
   * `authenticate` it never creates a user: no valid bearer token and no
   * valid session of an existing user means no caller.
   */
  async function identify(req: IncomingMessage): Promise<Caller | null> {
    const auth = req.headers.authorization;
    if (auth !== undefined) {
      if (!auth.startsWith("Bearer ") || !jwt) return null;
      const result = await jwt.verify(auth.slice(7).trim());
      return "error" in result ? null : { id: result.userId, via: "bearer" };
    }
    // Either cookie name: the `__Host-` one can only have been set over HTTPS.
    const raw = sessionCookie(req.headers.cookie, true);
    const session = raw ? codec.verify(raw, Math.floor(Date.now() / 1000)) : null;
    if (!session || !(await users.exists(session.userId))) return null;
    return { id: session.userId, via: "cookie" };
  }

  return { authenticate, csrfGuard, identify };
}

export type Identity = ReturnType<typeof createIdentity>;

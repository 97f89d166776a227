import type { Request, Response, NextFunction, RequestHandler } from "express";
import type { Pool } from "../db/pool.js";
import type { Config } from "../config.js";
import { AppError } from "../http/errors.js";
import { COOKIE_NAME, SECURE_COOKIE_NAME, SESSION_TTL_SECONDS, readCookie, type SessionCodec } from "./session.js";
import type { Jwt } from "./jwt.js";

export interface Caller {
  id: string;
  via: "cookie" | "bearer";
}

declare module "express-serve-static-core" {
  interface Request {
    /** Set by `authenticate` on every route that needs a user. */
    user?: Caller;
  }
}

/** A bounded set of user ids known to exist, so most requests skip the lookup. */
class KnownUsers {
  private ids = new Set<string>();
  constructor(private readonly max = 50_000) {}
  has(id: string) {
    return this.ids.has(id);
  }
  add(id: string) {
    if (this.ids.size >= this.max) this.ids.clear();
    this.ids.add(id);
  }
}

/** Which users exist, with a cache shared by the HTTP middleware and the WebSocket upgrade. */
export function createUserDirectory(pool: Pool) {
  const known = new KnownUsers();
  return {
    /** Known to exist without asking the database (a user seen by this process). */
    isKnown(id: string): boolean {
      return known.has(id);
    },
    async exists(id: string): Promise<boolean> {
      if (known.has(id)) return true;
      const r = await pool.query("select 1 from users where id = $1", [id]);
      if (r.rowCount) known.add(id);
      return Boolean(r.rowCount);
    },
    /** A bearer token's subject becomes a user on its first request. */
    async ensure(id: string): Promise<void> {
      if (known.has(id)) return;
      await pool.query("insert into users (id) values ($1) on conflict (id) do nothing", [id]);
      known.add(id);
    },
    async create(): Promise<string> {
      const created = await pool.query<{ id: string }>("insert into users default values returning id");
      const id = created.rows[0]?.id;
      if (!id) throw new AppError("internal", 500, "user insert returned no row", { expose: false });
      known.add(id);
      return id;
    },
  };
}

export type UserDirectory = ReturnType<typeof createUserDirectory>;

export interface AuthDeps {
  pool: Pool;
  codec: SessionCodec;
  /** Absent: bearer tokens are refused. */
  jwt: Jwt | undefined;
  config: Config;
  /** Shared with `identify` (default: a new one). */
  users?: UserDirectory;
}

/** The session cookie's value: the `__Host-` name over HTTPS, else the plain one. */
export function sessionCookie(cookieHeader: string | undefined, secure: boolean): string | undefined {
  return readCookie(cookieHeader, secure ? SECURE_COOKIE_NAME : COOKIE_NAME) ?? readCookie(cookieHeader, COOKIE_NAME);
}

/**
 * Identifies the caller: a bearer token when one is sent (and only then),
 * else the signed session cookie, else a new anonymous user with a fresh
 * cookie. A tampered or expired cookie is treated as no cookie.
 */
export function createAuthenticate(deps: AuthDeps): RequestHandler {
  const { codec, jwt } = deps;
  const users = deps.users ?? createUserDirectory(deps.pool);

  function setCookie(req: Request, res: Response, userId: string, now: number) {
    const secure = req.secure;
    const value = codec.sign(userId, now + SESSION_TTL_SECONDS);
    res.cookie(secure ? SECURE_COOKIE_NAME : COOKIE_NAME, value, {
      httpOnly: true,
      sameSite: "lax",
      secure,
      path: "/",
      maxAge: SESSION_TTL_SECONDS * 1000,
      encode: String,
    });
  }

  return async function authenticate(req: Request, res: Response, next: NextFunction) {
    const auth = req.headers.authorization;
    if (auth !== undefined) {
      if (!auth.startsWith("Bearer ")) throw new AppError("unauthorized", 401, "Authorization must be a Bearer token");
      if (!jwt) throw new AppError("unauthorized", 401, "Bearer tokens are not enabled on this server (JWT_SECRET)");
      const result = await jwt.verify(auth.slice(7).trim());
      if ("error" in result) throw new AppError("unauthorized", 401, `Bearer token rejected: ${result.error}`);
      await users.ensure(result.userId);
      req.user = { id: result.userId, via: "bearer" };
      return next();
    }

    const now = Math.floor(Date.now() / 1000);
    const raw = sessionCookie(req.headers.cookie, req.secure);
    const session = raw ? codec.verify(raw, now) : null;
    // A known user costs no await: most requests are a returning browser's.
    if (session && (users.isKnown(session.userId) || (await users.exists(session.userId)))) {
      req.user = { id: session.userId, via: "cookie" };
      if (session.expiresAt - now < SESSION_TTL_SECONDS / 2) setCookie(req, res, session.userId, now);
      return next();
    }
    const id = await users.create();
    req.user = { id, via: "cookie" };
    setCookie(req, res, id, now);
    next();
  };
}

/** application/json or application/*+json, whether or not a body follows. */
export const isJsonContentType = (h: string | undefined) => h !== undefined && /^application\/([\w.-]+\+)?json\s*(;|$)/i.test(h);

const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * CSRF for cookie-authenticated writes: JSON content type (a cross-site form
 * cannot send it without a CORS preflight) and, when the browser sends an
 * Origin, our own origin or one of CORS_ORIGINS. Bearer writes are exempt.
 */
export function createCsrfGuard(config: Config): RequestHandler {
  const allowed = new Set(config.security.corsOrigins);
  return function csrfGuard(req, _res, next) {
    if (!config.security.csrf || SAFE.has(req.method) || req.user?.via !== "cookie") return next();
    if (!isJsonContentType(req.headers["content-type"])) {
      throw new AppError("csrf_rejected", 403, "Cookie-authenticated writes must be sent as application/json");
    }
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== `${req.protocol}://${req.headers.host ?? ""}` && !allowed.has(origin)) {
      throw new AppError("csrf_rejected", 403, "Origin not allowed");
    }
    next();
  };
}

/** The authenticated caller; routes behind `authenticate` only. */
export function callerOf(req: Request): Caller {
  if (!req.user) throw new AppError("internal", 500, "route is missing authentication", { expose: false });
  return req.user;
}

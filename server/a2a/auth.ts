/**
 * Who calls an A2A endpoint: a bearer JWT of the identity layer, required on
 * every call but the cards (no session cookie, no anonymous user). The
 * caller reaches the request handler as the SDK's `User`, carrying the user
 * id every task is scoped to and a signal that fires when the HTTP client
 * goes away (so a stream stops following a run nobody reads).
 */
import type { Request, RequestHandler, Response, NextFunction } from "express";
import type { ServerCallContext, User } from "@a2a-js/sdk/server";
import type { UserBuilder } from "@a2a-js/sdk/server/express";
import { AppError } from "../http/errors.js";
import type { Identity } from "../auth/identity.js";

export class A2aCaller implements User {
  constructor(
    readonly userId: string,
    /** Fires when the client's connection closes. */
    readonly signal: AbortSignal,
  ) {}
  get isAuthenticated(): boolean {
    return true;
  }
  get userName(): string {
    return this.userId;
  }
}

/** The caller of a call, or an error (a route without `requireBearer` is a bug). */
export function callerOf(context: ServerCallContext): A2aCaller {
  const user = context.user;
  if (!(user instanceof A2aCaller)) throw new AppError("unauthorized", 401, "A bearer token is required");
  return user;
}

const unauthorized = (message: string) =>
  new AppError("unauthorized", 401, message, { expose: true, headers: { "www-authenticate": 'Bearer realm="a2a"' } });

/**
 * Only `Authorization: Bearer <jwt>`: then the identity layer verifies it
 * (HS256, expiry, subject = user id) and records the user on first sight.
 * Refusals are 401 with `WWW-Authenticate: Bearer`.
 */
export function requireBearer(identity: Identity): RequestHandler {
  return async function a2aAuth(req: Request, res: Response, next: NextFunction) {
    const auth = req.headers.authorization;
    if (auth === undefined || !/^Bearer\s+\S/.test(auth)) throw unauthorized("A2A calls need Authorization: Bearer <jwt> (see the agent card's securitySchemes)");
    try {
      await identity.authenticate(req, res, (err?: unknown) => {
        if (err) throw err;
      });
    } catch (err) {
      if (err instanceof AppError && err.status === 401) throw unauthorized(err.message);
      throw err;
    }
    if (!req.user || req.user.via !== "bearer") throw unauthorized("A bearer token is required");
    next();
  };
}

/** The SDK's UserBuilder: the caller set by requireBearer, with a signal tied to the connection. */
export const a2aUserBuilder: UserBuilder = async (req: Request) => {
  const userId = req.user?.id;
  if (!userId || req.user?.via !== "bearer") throw unauthorized("A bearer token is required");
  const controller = new AbortController();
  const res = req.res;
  // `close` on the response: the body was sent or the client went away.
  res?.once("close", () => controller.abort());
  return new A2aCaller(userId, controller.signal);
};

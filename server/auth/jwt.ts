import { SignJWT, jwtVerify, errors } from "jose";
import { isUuid } from "./session.js";

/**
 * Bearer tokens for programs: HS256 only (`none` and every other algorithm
 * are refused), subject = user id, expiry required.
 */
export function createJwt(secret: string) {
  const key = new TextEncoder().encode(secret);
  return {
    async sign(userId: string, ttlSeconds: number): Promise<string> {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({})
        .setProtectedHeader({ alg: "HS256", typ: "JWT" })
        .setSubject(userId)
        .setIssuedAt(now)
        .setExpirationTime(now + ttlSeconds)
        .sign(key);
    },
    /** The user id, or a reason the token is refused. */
    async verify(token: string): Promise<{ userId: string } | { error: string }> {
      try {
        const { payload } = await jwtVerify(token, key, { algorithms: ["HS256"], requiredClaims: ["exp", "sub"] });
        if (!payload.sub || !isUuid(payload.sub)) return { error: "token subject must be a user id" };
        return { userId: payload.sub.toLowerCase() };
      } catch (err) {
        if (err instanceof errors.JWTExpired) return { error: "token expired" };
        return { error: "invalid token" };
      }
    },
  };
}

export type Jwt = ReturnType<typeof createJwt>;

/** "1h", "30m", "7d", "3600" (seconds) → seconds. */
export function parseTtl(s: string): number | null {
  const m = /^(\d+)\s*([smhd]?)$/.exec(s.trim());
  if (!m) return null;
  const n = Number(m[1]);
  const unit = { "": 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as "" | "s" | "m" | "h" | "d"];
  return n > 0 ? n * unit : null;
}

import { createHmac, timingSafeEqual } from "node:crypto";

/** Session cookie lifetime; re-issued when less than half is left. */
export const SESSION_TTL_SECONDS = 180 * 24 * 60 * 60;
export const COOKIE_NAME = "esa_sid";
/** Over HTTPS the cookie is host-locked: no Domain, Path=/, Secure. */
export const SECURE_COOKIE_NAME = "__Host-esa_sid";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (s: string) => UUID.test(s);

export interface SessionCodec {
  /** `v1.<userId>.<expires, unix s>.<hmac>` */
  sign(userId: string, expiresAt: number): string;
  /** The user id and expiry of a valid, unexpired value, else null. */
  verify(value: string, nowSeconds: number): { userId: string; expiresAt: number } | null;
}

/** HMAC-SHA256 signed session values; tampering or expiry yields null, never a user. */
export function createSessionCodec(secret: string, opts: { cacheSize?: number } = {}): SessionCodec {
  const mac = (payload: string) => createHmac("sha256", secret).update(payload).digest();
  // Values whose MAC checked out, so a browser's every request does not pay
  // for an HMAC: a value always verifies the same way, only its expiry moves
  // (checked on every call). Only valid values are kept, at most `cacheSize`.
  const cacheSize = opts.cacheSize ?? 10_000;
  const verified = new Map<string, { userId: string; expiresAt: number }>();
  return {
    sign(userId, expiresAt) {
      const payload = `v1.${userId}.${expiresAt}`;
      return `${payload}.${mac(payload).toString("base64url")}`;
    },
    verify(value, nowSeconds) {
      const known = verified.get(value);
      if (known) return known.expiresAt > nowSeconds ? { ...known } : null;
      const parts = value.split(".");
      if (parts.length !== 4 || parts[0] !== "v1") return null;
      const [, userId = "", exp = "", sig = ""] = parts;
      if (!isUuid(userId) || !/^\d{1,12}$/.test(exp)) return null;
      const expected = mac(`v1.${userId}.${exp}`);
      const given = Buffer.from(sig, "base64url");
      // Only the canonical encoding: Buffer decoding ignores bad characters and
      // the last character's padding bits, so another string could decode to the MAC.
      if (given.length !== expected.length || given.toString("base64url") !== sig || !timingSafeEqual(given, expected)) return null;
      const expiresAt = Number(exp);
      if (expiresAt <= nowSeconds) return null;
      const session = { userId: userId.toLowerCase(), expiresAt };
      if (verified.size >= cacheSize) verified.clear();
      verified.set(value, session);
      return { ...session };
    },
  };
}

/** The value of one cookie from a Cookie header (no dependency needed for one name). */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq === -1) continue;
    if (part.slice(0, eq).trim() === name) {
      const v = part.slice(eq + 1).trim();
      try {
        return decodeURIComponent(v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1) : v);
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

import { badRequest } from "../http/errors.js";
import { isUuid } from "../auth/session.js";

/** The last millisecond of year 9999: later dates do not round-trip through ISO strings and PostgreSQL. */
const MAX_TIME = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

/**
 * Keyset pagination cursors: an opaque base64url of (timestamp, id). The
 * timestamps are millisecond precision in the schema, so a JS Date is exact.
 */
export function encodeCursor(at: Date, id: string): string {
  return Buffer.from(`${at.getTime()}:${id}`).toString("base64url");
}

/** The (timestamp, id) of a cursor this server made, else 400: never a value the database would refuse. */
export function decodeCursor(cursor: string): { at: Date; id: string } {
  const text = Buffer.from(cursor, "base64url").toString("utf8");
  const m = /^(\d{1,15}):([0-9a-f-]{36})$/i.exec(text);
  const ms = Number(m?.[1]);
  if (!m || !isUuid(m[2] as string) || !(ms <= MAX_TIME)) throw badRequest("cursor is invalid");
  return { at: new Date(ms), id: (m[2] as string).toLowerCase() };
}

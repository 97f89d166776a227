import { badRequest } from "../http/errors.js";

/**
 * Keyset pagination cursors: an opaque base64url of (timestamp, id). The
 * timestamps are millisecond precision in the schema, so a JS Date is exact.
 */
export function encodeCursor(at: Date, id: string): string {
  return Buffer.from(`${at.getTime()}:${id}`).toString("base64url");
}

export function decodeCursor(cursor: string): { at: Date; id: string } {
  const text = Buffer.from(cursor, "base64url").toString("utf8");
  const m = /^(\d{1,15}):([0-9a-f-]{36})$/i.exec(text);
  if (!m) throw badRequest("cursor is invalid");
  const at = new Date(Number(m[1]));
  if (Number.isNaN(at.getTime())) throw badRequest("cursor is invalid");
  return { at, id: m[2] as string };
}

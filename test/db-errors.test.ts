import { describe, expect, it } from "vitest";
import pg from "pg";
import { createTestDatabase } from "./helpers/db.js";
import { freePort } from "./fixtures/process.js";
import { isDatabaseUnavailable } from "../server/db/errors.js";
import { coerceError } from "../server/http/errors.js";

async function errorOf(fn: () => Promise<unknown>): Promise<unknown> {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected a rejection");
}

describe("database unavailable vs a failed query", () => {
  it("a refused connection and a terminated backend are 'unavailable' (503 not_ready with Retry-After); a bad query is a 500", async () => {
    const refused = await errorOf(async () => {
      const c = new pg.Client({ connectionString: `postgres://x:y@127.0.0.1:${await freePort()}/z`, connectionTimeoutMillis: 2000 });
      c.on("error", () => undefined);
      await c.connect();
    });
    expect(isDatabaseUnavailable(refused)).toBe(true);
    const answer = coerceError(refused);
    expect(answer.status).toBe(503);
    expect(answer.code).toBe("not_ready");
    expect(answer.headers?.["retry-after"]).toBe("2");

    const db = await createTestDatabase();
    const victim = new pg.Client({ connectionString: db.url });
    victim.on("error", () => undefined);
    await victim.connect();
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    try {
      const pid = (await victim.query<{ pid: number }>("select pg_backend_pid() as pid")).rows[0]!.pid;
      const bad = await errorOf(() => victim.query("select * from no_such_table"));
      expect(isDatabaseUnavailable(bad)).toBe(false);
      expect(coerceError(bad).status).toBe(500);

      await admin.query("select pg_terminate_backend($1)", [pid]);
      const terminated = await errorOf(() => victim.query("select 1"));
      expect(isDatabaseUnavailable(terminated)).toBe(true);
      expect(coerceError(terminated).status).toBe(503);
    } finally {
      await admin.end();
      await victim.end().catch(() => undefined);
      await db.drop();
    }
  });
});

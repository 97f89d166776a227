import { describe, it, expect, afterAll } from "vitest";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { pendingMigrations, runMigrations } from "../server/db/migrate.js";
import { pino } from "pino";
import path from "node:path";
import { readFileSync } from "node:fs";
import { ROOT } from "./helpers/paths.js";

const dbs: TestDatabase[] = [];
afterAll(async () => {
  await Promise.all(dbs.map((d) => d.drop()));
});

describe("migrations", () => {
  it("reports pending migrations on an empty database, none after applying", async () => {
    const db = await createTestDatabase();
    dbs.push(db);
    const folder = path.join(ROOT, "migrations");
    expect(await pendingMigrations(db.pool, folder)).toMatch(/migrations pending/);
    await runMigrations(db.pool, folder, pino({ level: "silent" }));
    expect(await pendingMigrations(db.pool, folder)).toBeNull();
    const t = await db.pool.query("select to_regclass('public.runs') as t");
    expect(t.rows[0].t).toBe("runs");
  });

  it("applies once when many instances migrate at the same time (advisory lock)", async () => {
    const db = await createTestDatabase();
    dbs.push(db);
    const folder = path.join(ROOT, "migrations");
    await Promise.all(Array.from({ length: 4 }, () => runMigrations(db.pool, folder, pino({ level: "silent" }))));
    const r = await db.pool.query("select count(*)::int as n from drizzle.__drizzle_migrations");
    const journal = JSON.parse(readFileSync(path.join(folder, "meta", "_journal.json"), "utf8")) as { entries: unknown[] };
    expect(r.rows[0].n).toBe(journal.entries.length);
  });
});

import { randomBytes } from "node:crypto";
import path from "node:path";
import pg from "pg";
import { inject } from "vitest";
import { pino } from "pino";
import { runMigrations } from "../../server/db/migrate.js";
import { clientConfigFromUrl } from "../../server/db/pool.js";
import { ROOT } from "./paths.js";

export interface TestDatabase {
  url: string;
  name: string;
  /** A small pool on the database, ended by drop(). */
  pool: pg.Pool;
  drop(): Promise<void>;
}

function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = "/" + name;
  return u.toString();
}

/** A fresh, empty database on the test server; `migrate` applies our migrations. */
export async function createTestDatabase(opts: { migrate?: boolean } = {}): Promise<TestDatabase> {
  const admin = inject("pgAdminUrl");
  const name = `t_${randomBytes(6).toString("hex")}`;
  const client = new pg.Client(clientConfigFromUrl(admin));
  await client.connect();
  await client.query(`create database ${name}`);
  await client.end();
  const url = withDatabase(admin, name);
  const pool = new pg.Pool({ ...clientConfigFromUrl(url), max: 4 });
  pool.on("error", () => undefined);
  pool.on("connect", (client) => client.on("error", () => undefined));
  if (opts.migrate) await runMigrations(pool, path.join(ROOT, "migrations"), pino({ level: "silent" }));
  return {
    url,
    name,
    pool,
    async drop() {
      await pool.end().catch(() => undefined);
      const c = new pg.Client(clientConfigFromUrl(admin));
      await c.connect();
      await c.query(`drop database if exists ${name} with (force)`);
      await c.end();
    },
  };
}

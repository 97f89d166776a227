import { readFile } from "node:fs/promises";
import path from "node:path";
import { drizzle } from "drizzle-orm/node-postgres";
import { migrate } from "drizzle-orm/node-postgres/migrator";
import type { Pool } from "./pool.js";
import type { Logger } from "../ops/logger.js";
import { migrateWorkerSchema } from "../queue/migrate.js";

/** pg_advisory_lock key shared by every instance that migrates ("esa-migr"). */
const MIGRATION_LOCK_KEY = 0x6573616d;

interface Journal {
  entries: { idx: number; when: number; tag: string }[];
}

async function readJournal(folder: string): Promise<Journal> {
  return JSON.parse(await readFile(path.join(folder, "meta", "_journal.json"), "utf8")) as Journal;
}

/**
 * Applies pending migrations under an advisory lock, so instances starting
 * together migrate once and the rest wait, then find nothing to do; then
 * graphile-worker's own schema (it takes its own lock).
 *
 * The lock and the timeout are transaction-scoped: through a transaction
 * pooler a session lock could be taken on one server connection and released
 * on another, and stay held for ever. Drizzle's own BEGIN/COMMIT joins this
 * transaction (PostgreSQL warns and carries on); its COMMIT ends it, lock
 * included, once the migrations are in.
 */
export async function runMigrations(pool: Pool, folder: string, log: Logger): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query("begin");
    await client.query("set local statement_timeout = 0");
    await client.query("select pg_advisory_xact_lock($1)", [MIGRATION_LOCK_KEY]);
    const started = Date.now();
    await migrate(drizzle(client), { migrationsFolder: folder });
    // Usually a no-op (Drizzle committed); ends the transaction if it had nothing to do.
    await client.query("commit");
    log.info({ ms: Date.now() - started }, "migrations applied");
    client.release();
  } catch (err) {
    await client.query("rollback").catch(() => undefined);
    client.release(true);
    throw err;
  }
  await migrateWorkerSchema(pool);
}

/**
 * Null when every migration in the folder has been applied, else why not.
 * Used for /ready when MIGRATE_ON_START=false.
 */
export async function pendingMigrations(pool: Pool, folder: string): Promise<string | null> {
  const journal = await readJournal(folder);
  const last = journal.entries.at(-1);
  if (!last) return null;
  const exists = await pool.query<{ t: string | null }>("select to_regclass('drizzle.__drizzle_migrations') as t");
  if (!exists.rows[0]?.t) return `migrations pending: ${journal.entries.length} not applied (run npm run db:migrate)`;
  const r = await pool.query<{ n: string }>(
    "select count(*) as n from drizzle.__drizzle_migrations where created_at >= $1",
    [last.when],
  );
  if (Number(r.rows[0]?.n ?? 0) === 0) return `migrations pending: latest is ${last.tag} (run npm run db:migrate)`;
  const worker = await pool.query<{ t: string | null }>("select to_regclass('graphile_worker._private_jobs') as t");
  if (!worker.rows[0]?.t) return "migrations pending: the job queue schema is missing (run npm run db:migrate)";
  return null;
}

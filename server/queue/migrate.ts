import { runMigrations } from "graphile-worker";
import type { Pool } from "../db/pool.js";

/** graphile-worker's own schema (`graphile_worker`), migrated by its own code. */
export async function migrateWorkerSchema(pool: Pool): Promise<void> {
  await runMigrations({ pgPool: pool });
}

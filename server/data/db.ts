import { drizzle } from "drizzle-orm/node-postgres";
import * as schema from "../../shared/schema.js";
import type { Pool } from "../db/pool.js";

/** Drizzle on the shared pool. */
export function createDb(pool: Pool) {
  return drizzle(pool, { schema });
}
export type Db = ReturnType<typeof createDb>;

import type { PoolClient } from "pg";
import type { Pool } from "./pool.js";

/**
 * Runs `fn` in a transaction on one pooled client: commit when it resolves,
 * rollback when it throws (the error is rethrown), the client released either way.
 */
export async function withTransaction<T>(pool: Pool, fn: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query("begin");
    const result = await fn(client);
    await client.query("commit");
    return result;
  } catch (err) {
    await client.query("rollback").catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

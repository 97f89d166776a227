/**
 * `npm run db:migrate`: applies migrations by hand (for MIGRATE_ON_START=false
 * deployments). Uses DATABASE_DIRECT_URL when set, else DATABASE_URL, else the
 * embedded database.
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadConfigOrExit } from "../config.js";
import { createLogger } from "../ops/logger.js";
import { createPool } from "./pool.js";
import { runMigrations } from "./migrate.js";
import { startEmbeddedPostgres } from "./embedded.js";

const here = path.dirname(fileURLToPath(import.meta.url));
// Built as dist/migrate.js (one level down) or run as server/db/migrateCli.ts (two).
const rootDir = path.resolve(here, path.basename(here) === "dist" ? ".." : "../..");

const config = loadConfigOrExit();
const log = createLogger({ ...config, monitoring: { ...config.monitoring, prettyLogs: false, logLevel: "info" } });
let url = config.database.directUrl ?? config.database.url;
const embedded = url
  ? null
  : await startEmbeddedPostgres({
      dataDir: config.database.embeddedDir ?? path.join(rootDir, ".data", "postgres"),
      port: config.database.embeddedPort,
      log,
    });
url ??= embedded?.url as string;
const pool = createPool(config.database, url, log, { max: 2, applicationName: "esa-agents-migrate" });
try {
  await runMigrations(pool, path.join(rootDir, "migrations"), log);
  process.exitCode = 0;
} catch (err) {
  log.error({ err }, "migration failed");
  process.exitCode = 1;
} finally {
  await pool.end();
  await embedded?.stop();
  log.flush();
}

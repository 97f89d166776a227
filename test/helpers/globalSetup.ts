/**
 * One PostgreSQL for the whole test run: TEST_DATABASE_URL when set, else an
 * embedded server under .data/test-postgres (OS temp dir when the checkout is
 * not reachable by the postgres user). Each test file makes its own database
 * from it (see db.ts).
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import type { TestProject } from "vitest/node";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../../server/db/embedded.js";

declare module "vitest" {
  export interface ProvidedContext {
    pgAdminUrl: string;
  }
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
let embedded: EmbeddedPostgres | undefined;

export async function setup(project: TestProject) {
  let url = process.env.TEST_DATABASE_URL;
  if (!url) {
    embedded = await startEmbeddedPostgres({
      dataDir: path.join(root, ".data", "test-postgres"),
      port: 54339,
      log: pino({ level: "warn" }),
    });
    url = embedded.url;
  }
  project.provide("pgAdminUrl", url);
}

export async function teardown() {
  await embedded?.stop();
}

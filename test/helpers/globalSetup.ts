/**
 * One PostgreSQL for the whole test run: TEST_DATABASE_URL when set, else an
 * embedded server under .data/test-postgres (OS temp dir when the checkout is
 * not reachable by the postgres user) on a free loopback port, or the one
 * already running on that folder. Each test file makes its own database from
 * it (see db.ts). Also builds `dist/` when a bare `vitest run` finds none.
 */
import path from "node:path";
import { existsSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { createServer } from "node:net";
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

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export async function setup(project: TestProject) {
  // `npm test` builds first; a bare `vitest run` on a fresh clone builds here,
  // once, before any test file spawns `node dist/index.js`.
  if (!existsSync(path.join(root, "dist", "index.js"))) execFileSync("npm", ["run", "build"], { cwd: root, stdio: "inherit" });
  let url = process.env.TEST_DATABASE_URL;
  if (!url) {
    embedded = await startEmbeddedPostgres({
      dataDir: path.join(root, ".data", "test-postgres"),
      port: await freePort(),
      log: pino({ level: "warn" }),
    });
    url = embedded.url;
  }
  project.provide("pgAdminUrl", url);
}

export async function teardown() {
  await embedded?.stop();
}

import { existsSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { randomBytes } from "node:crypto";
import path from "node:path";
import type { Logger } from "../ops/logger.js";

/**
 * A signing secret: the configured one, else one generated once and kept in
 * `<dataDir>/<name>` (mode 0600) so sessions survive restarts on this machine.
 * (In a Replit deployment the config refuses to start without it.)
 */
export function resolveSecret(opts: { name: string; envName: string; configured: string | undefined; dataDir: string; log: Logger }): string {
  if (opts.configured) return opts.configured;
  const file = path.join(opts.dataDir, opts.name);
  if (existsSync(file)) {
    const kept = readFileSync(file, "utf8").trim();
    if (kept.length >= 32) {
      opts.log.warn({ file }, `${opts.envName} is not set; using the one generated earlier on this machine`);
      return kept;
    }
  }
  const secret = randomBytes(32).toString("base64url");
  mkdirSync(opts.dataDir, { recursive: true, mode: 0o755 });
  writeFileSync(file, secret + "\n", { mode: 0o600 });
  opts.log.warn({ file }, `${opts.envName} is not set; generated one and kept it on this machine (set it in production)`);
  return secret;
}

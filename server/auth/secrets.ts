import { existsSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { randomBytes } from "node:crypto";
import path from "node:path";
import type { Logger } from "../ops/logger.js";

/** A kept secret long enough to use, else undefined. */
function readKept(file: string): string | undefined {
  if (!existsSync(file)) return undefined;
  const kept = readFileSync(file, "utf8").trim();
  return kept.length >= 32 ? kept : undefined;
}

/**
 * A signing secret: the configured one, else one generated once and kept in
 * `<dataDir>/<name>` (mode 0600) so sessions survive restarts on this machine.
 * (In a Replit deployment the config refuses to start without it.)
 */
export function resolveSecret(opts: { name: string; envName: string; configured: string | undefined; dataDir: string; log: Logger }): string {
  if (opts.configured) return opts.configured;
  const file = path.join(opts.dataDir, opts.name);
  const reuse = (kept: string) => {
    opts.log.warn({ file }, `${opts.envName} is not set; using the one generated earlier on this machine`);
    return kept;
  };
  const kept = readKept(file);
  if (kept) return reuse(kept);
  const secret = randomBytes(32).toString("base64url");
  // 0755: the embedded PostgreSQL folder lives here too and its user must traverse it; the secret file itself is 0600.
  mkdirSync(opts.dataDir, { recursive: true, mode: 0o755 });
  try {
    // "wx": when two processes start at once, the second keeps the first one's secret.
    writeFileSync(file, secret + "\n", { mode: 0o600, flag: existsSync(file) ? "w" : "wx" });
  } catch (err) {
    const other = (err as NodeJS.ErrnoException).code === "EEXIST" ? readKept(file) : undefined;
    if (other) return reuse(other);
    throw err;
  }
  opts.log.warn({ file }, `${opts.envName} is not set; generated one and kept it on this machine (set it in production)`);
  return secret;
}

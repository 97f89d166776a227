/**
 * `npm run token -- <userId> [--ttl 1h]`: prints a bearer token (HS256,
 * JWT_SECRET or the secret generated under .data/) for a user id.
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { loadConfigOrExit } from "../server/config.js";
import { resolveSecret } from "../server/auth/secrets.js";
import { createJwt, parseTtl } from "../server/auth/jwt.js";
import { isUuid } from "../server/auth/session.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const userId = args.find((a) => !a.startsWith("--") && args[args.indexOf(a) - 1] !== "--ttl");
const ttlArg = args.includes("--ttl") ? args[args.indexOf("--ttl") + 1] : "1h";
const ttl = ttlArg ? parseTtl(ttlArg) : null;
if (!userId || !isUuid(userId) || ttl === null) {
  process.stderr.write("usage: npm run token -- <userId (uuid)> [--ttl 1h|30m|7d|3600]\n");
  process.exit(2);
}
const config = loadConfigOrExit();
const secret = resolveSecret({
  name: "jwt-secret",
  envName: "JWT_SECRET",
  configured: config.security.jwtSecret,
  dataDir: path.join(root, ".data"),
  log: pino({ level: "silent" }),
});
process.stdout.write((await createJwt(secret).sign(userId.toLowerCase(), ttl)) + "\n");

import { pino, type Logger, type DestinationStream } from "pino";
import type { Config } from "../config.js";

export type { Logger };

/** Header names whose values are credentials. */
const SECRET_HEADERS = ["authorization", "proxy-authorization", "cookie", "set-cookie"];

const prop = (name: string) => (/^[A-Za-z_$][\w$]*$/.test(name) ? `.${name}` : `["${name}"]`);
const capitalised = (name: string) => name.replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase());

/**
 * Paths never written to a log line (pino `redact`, applied after the
 * serializers, so an `err` with headers attached is covered too). Headers are
 * caught however they are logged: a headers object at the top, under one key
 * (`req`, `res`, `err`) or under two (`err.config`, `err.response`), in Node's
 * lower case or the capitalised form outgoing requests use. Anything deeper is
 * the caller's job: log the object, not a whole client.
 */
export const REDACT_PATHS: readonly string[] = (() => {
  const names = SECRET_HEADERS.flatMap((h) => [h, capitalised(h)]);
  const paths: string[] = [];
  for (const name of SECRET_HEADERS) paths.push(prop(name).replace(/^\./, ""), `*${prop(name)}`);
  for (const prefix of ["", "*.", "*.*."]) for (const name of names) paths.push(`${prefix}headers${prop(name)}`);
  for (const key of ["apiKey", "password"]) paths.push(key, `*.${key}`);
  return Object.freeze([...new Set(paths)]);
})();

/**
 * JSON lines at `monitoring.logLevel`; pretty (pino-pretty, a dev dependency)
 * only under `npm run dev`. `destination` lets tests read the lines.
 */
export function createLogger(config: Config, destination?: DestinationStream): Logger {
  const options = {
    level: config.monitoring.logLevel,
    base: { pid: process.pid },
    redact: { paths: [...REDACT_PATHS], censor: "[redacted]" },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (destination) return pino(options, destination);
  if (config.monitoring.prettyLogs) {
    return pino({ ...options, transport: { target: "pino-pretty", options: { colorize: true } } });
  }
  return pino(options, pino.destination({ fd: 1, sync: false }));
}

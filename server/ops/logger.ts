import { format } from "node:util";
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

type ConsoleMethod = "error" | "warn" | "log" | "info" | "debug" | "trace";
const CONSOLE_LEVELS: Record<ConsoleMethod, "warn" | "info" | "debug"> = {
  // A library's console.error is often a client's mistake (the A2A SDK logs
  // an unknown task that way, with a stack), so warn, not error.
  error: "warn",
  warn: "warn",
  log: "info",
  info: "info",
  debug: "debug",
  trace: "debug",
};

/**
 * Libraries that write to the console (the A2A SDK does, with stacks) would
 * put multi-line plain text among the JSON lines a log collector parses. From
 * here on, each console call is one line of `log`, under `source: "console"`:
 * the first Error argument as `err` (serialized, redacted), the rest formatted
 * as console would. The process entry calls it once the logger exists (the
 * boot's config errors, printed before that, stay plain lines), for the
 * rest of the process.
 */
export function routeConsoleToLog(log: Logger): void {
  const logger = log.child({ source: "console" });
  for (const method of Object.keys(CONSOLE_LEVELS) as ConsoleMethod[]) {
    const level = CONSOLE_LEVELS[method];
    // eslint-disable-next-line no-console -- replacing the console is this function's job
    console[method] = (...args: unknown[]) => {
      if (!logger.isLevelEnabled(level)) return;
      const i = args.findIndex((a) => a instanceof Error);
      if (i === -1) return logger[level](format(...args));
      const rest = args.filter((_, j) => j !== i);
      logger[level]({ err: args[i] }, rest.length > 0 ? format(...rest) : (args[i] as Error).message);
    };
  }
}

import { pino, type Logger, type DestinationStream } from "pino";
import type { Config } from "../config.js";

export type { Logger };

/** Paths never written to a log line. */
export const REDACT_PATHS = [
  "authorization",
  "cookie",
  "apiKey",
  "password",
  "headers.authorization",
  "headers.cookie",
  'headers["set-cookie"]',
  "req.headers.authorization",
  "req.headers.cookie",
  'res.headers["set-cookie"]',
  "*.authorization",
  "*.cookie",
  "*.apiKey",
  "*.password",
  'res.headers["set-cookie"]',
];

/**
 * JSON lines at `monitoring.logLevel`; pretty (pino-pretty, a dev dependency)
 * only under `npm run dev`. `destination` lets tests read the lines.
 */
export function createLogger(config: Config, destination?: DestinationStream): Logger {
  const options = {
    level: config.monitoring.logLevel,
    base: { pid: process.pid },
    redact: { paths: [...new Set(REDACT_PATHS)], censor: "[redacted]" },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (destination) return pino(options, destination);
  if (config.monitoring.prettyLogs) {
    return pino({ ...options, transport: { target: "pino-pretty", options: { colorize: true } } });
  }
  return pino(options, pino.destination({ fd: 1, sync: false }));
}

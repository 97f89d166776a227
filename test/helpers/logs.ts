import { Writable } from "node:stream";
import type { Config } from "../../server/config.js";
import { createLogger, type Logger } from "../../server/ops/logger.js";

/** The app's own logger writing into memory: every line parsed, for tests to read. */
export function createCapturedLogger(config: Config): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString("utf8").split("\n")) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  return { log: createLogger(config, sink), lines };
}

/**
 * Composition root. Reads config, builds the logger and lifecycle, listens at
 * once (probes answer, other requests wait for the app), then loads the rest
 * (`boot.ts`, a lazily imported chunk) so the port is open in well under a
 * quarter of a second. Owns every signal.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { writeHeapSnapshot } from "node:v8";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadConfigOrExit } from "./config.js";
import { createLogger, routeConsoleToLog } from "./ops/logger.js";
import { createLifecycle } from "./ops/lifecycle.js";
import { createReleasers } from "./ops/releasers.js";
import { createProbeHandler, type HealthCheck } from "./ops/health.js";
import type { Metrics } from "./ops/metrics.js";
import { createShutdown } from "./ops/shutdown.js";
import type { UpgradeHandler } from "./boot.js";
import { refuseUpgrade } from "./realtime/refuse.js";
import { isDatabaseUnavailable } from "./db/errors.js";

const rootDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const config = loadConfigOrExit();
const log = createLogger(config);
routeConsoleToLog(log);
const lifecycle = createLifecycle();
const releasers = createReleasers(log);

process.on("uncaughtException", (err) => {
  log.fatal({ err }, "uncaught exception; exiting");
  log.flush();
  process.exit(1);
});
process.on("unhandledRejection", (reason) => {
  // graphile-worker records a job's end (completeJob/failJob) without awaiting
  // it: with the database down or restarting, that rejection lands here. The
  // database going away is the server's weather, not a bug (DESIGN: the
  // process does not exit); the job it concerned is handed back by the
  // recovery sweep (server/queue/recovery.ts, own stranded runs).
  if (isDatabaseUnavailable(reason)) {
    log.error({ err: reason }, "unhandled rejection from a lost database connection; carrying on");
    metrics?.backgroundErrors.inc({ loop: "unhandled-database" });
    return;
  }
  log.fatal({ err: reason }, "unhandled promise rejection; exiting");
  log.flush();
  process.exit(1);
});

let metrics: Metrics | undefined;
const checks: HealthCheck[] = [];
const probe = createProbeHandler({
  lifecycle,
  metrics: () => metrics,
  version: config.version,
  checks: () => checks,
  metricsRoute: config.monitoring.metricsPort === 0 ? { enabled: config.monitoring.metricsEnabled, token: config.monitoring.metricsToken } : null,
});

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
let app: Handler | null = null;
const waiting: [IncomingMessage, ServerResponse][] = [];

const server = createServer(
  {
    keepAliveTimeout: config.server.keepAliveTimeoutMs,
    requestTimeout: config.server.requestTimeoutMs,
    headersTimeout: Math.min(config.server.requestTimeoutMs, 20_000),
  },
  (req, res) => {
    if (lifecycle.phase !== "starting" && lifecycle.phase !== "ready") res.setHeader("connection", "close");
    if (probe(req, res)) return;
    if (app) app(req, res);
    else waiting.push([req, res]);
  },
);
// No socket inactivity timer: requestTimeout and headersTimeout bound slow requests, keepAliveTimeout idle sockets,
// and a per-socket timer refreshed on every read and write costs the hot path (measured on /live).
server.on("clientError", (err, socket) => {
  log.debug({ err }, "client connection error");
  if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
  else socket.destroy();
});

// WebSocket upgrades: the realtime module (built with the database) takes
// them once the process is ready; before that and while draining they are
// refused with 503, so clients retry, on this instance or another.
let upgrade: UpgradeHandler | null = null;
server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
  socket.on("error", (err) => log.debug({ err }, "upgrade socket error"));
  // `npm run dev`: Vite's HMR socket shares this server and answers its own upgrades.
  if (config.env === "development" && /\bvite-(hmr|ping)\b/.test(String(req.headers["sec-websocket-protocol"] ?? ""))) return;
  if (lifecycle.phase === "draining" || lifecycle.phase === "stopped") {
    return refuseUpgrade(socket, 503, "not_ready", "The server is shutting down; reconnect", { "retry-after": "1" });
  }
  if (!upgrade || lifecycle.phase !== "ready") {
    return refuseUpgrade(socket, 503, "not_ready", "The server is starting; try again shortly", { "retry-after": "2" });
  }
  Promise.resolve(upgrade(req, socket, head)).catch((err: unknown) => {
    log.error({ err }, "websocket upgrade failed");
    socket.destroy();
  });
});
server.on("error", (err) => {
  log.fatal({ err, port: config.server.port }, "http server failed");
  log.flush();
  process.exit(1);
});
server.listen(config.server.port, config.server.host, () => {
  const addr = server.address();
  log.info({ port: typeof addr === "object" && addr ? addr.port : config.server.port, host: config.server.host }, "listening");
});

const shutdown = createShutdown({ config, log, lifecycle, releasers, server });
for (const sig of ["SIGTERM", "SIGINT"] as const) process.on(sig, () => shutdown(sig));
process.on("SIGUSR2", () => {
  const file = path.join(os.tmpdir(), `esa-agents-${process.pid}-${Date.now()}.heapsnapshot`);
  log.warn({ memory: process.memoryUsage() }, "memory usage (SIGUSR2)");
  try {
    writeHeapSnapshot(file);
    log.warn({ file }, "heap snapshot written");
  } catch (err) {
    log.error({ err, file }, "heap snapshot failed");
  }
});

const { boot } = await import("./boot.js");
boot({
  config,
  log,
  lifecycle,
  releasers,
  server,
  rootDir,
  addCheck: (c) => checks.push(c),
  setMetrics: (m) => (metrics = m),
  setUpgradeHandler: (handler) => {
    upgrade = handler;
  },
  setApp: (handler) => {
    app = handler;
    for (const [req, res] of waiting.splice(0)) handler(req, res);
  },
}).catch((err: unknown) => {
  log.fatal({ err }, "boot failed");
  log.flush();
  process.exit(1);
});

/**
 * Builds the Express app (createApp) and serves it on a loopback port: real
 * HTTP, no child process. For tests of middleware, routes and errors.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Router } from "express";
import { loadConfig, type Config, type Env } from "../../server/config.js";
import type { Logger } from "../../server/ops/logger.js";
import { createMetrics, type Metrics } from "../../server/ops/metrics.js";
import { createLifecycle, type Lifecycle } from "../../server/ops/lifecycle.js";
import { createProbeHandler } from "../../server/ops/health.js";
import { createApp } from "../../server/app.js";
import type { ApiRateLimiter } from "../../server/http/middleware/security.js";
import type { StaticHandlers } from "../../server/static.js";
import { createCapturedLogger } from "./logs.js";

export interface TestApp {
  baseUrl: string;
  config: Config;
  log: Logger;
  metrics: Metrics;
  lifecycle: Lifecycle;
  /** Log lines written so far, parsed. */
  logLines: Record<string, unknown>[];
  server: Server;
  close(): Promise<void>;
}

export async function startTestApp(opts: {
  env?: Env;
  staticHandlers?: StaticHandlers;
  apiRouters?: Router[];
  /** The /api rate limit, to share it with a WebSocket server (default: the app's own). */
  apiRateLimiter?: ApiRateLimiter;
} = {}): Promise<TestApp> {
  const config = loadConfig({ NODE_ENV: "test", LOG_LEVEL: "info", ...opts.env });
  const { log, lines: logLines } = createCapturedLogger(config);
  const metrics = createMetrics({ defaultMetrics: false });
  const lifecycle = createLifecycle();
  const app = createApp({
    config,
    log,
    metrics,
    lifecycle,
    ...(opts.staticHandlers ? { staticHandlers: opts.staticHandlers } : {}),
    ...(opts.apiRouters ? { apiRouters: opts.apiRouters } : {}),
    ...(opts.apiRateLimiter ? { apiRateLimiter: opts.apiRateLimiter } : {}),
  });
  const probe = createProbeHandler({
    lifecycle,
    metrics: () => metrics,
    version: config.version,
    checks: () => [],
    metricsRoute: { enabled: config.monitoring.metricsEnabled, token: config.monitoring.metricsToken },
  });
  const server = createServer((req, res) => {
    if (!probe(req, res)) app(req, res);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    config,
    log,
    metrics,
    lifecycle,
    logLines,
    server,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

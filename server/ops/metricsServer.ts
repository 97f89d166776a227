import { createServer } from "node:http";
import type { Config } from "../config.js";
import type { Logger } from "./logger.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Metrics } from "./metrics.js";
import { createProbeHandler } from "./health.js";

/** /metrics on its own port (METRICS_PORT), nothing else there. Returns its release. */
export function startMetricsServer(deps: { config: Config; log: Logger; lifecycle: Lifecycle; metrics: Metrics }): () => Promise<void> {
  const { config, log, lifecycle, metrics } = deps;
  const probe = createProbeHandler({
    lifecycle,
    metrics: () => metrics,
    version: config.version,
    checks: () => [],
    metricsRoute: { enabled: true, token: config.monitoring.metricsToken },
  });
  const server = createServer((req, res) => {
    if (req.url?.split("?")[0] === "/metrics" && probe(req, res)) return;
    res.writeHead(404, { "content-type": "application/json" }).end('{"error":{"code":"not_found","message":"Only /metrics is served here"}}');
  });
  server.on("error", (err) => log.error({ err }, "metrics listener failed"));
  server.listen(config.monitoring.metricsPort, config.server.host);
  return () => new Promise<void>((r) => server.close(() => r()));
}

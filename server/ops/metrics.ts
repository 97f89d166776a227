import client from "prom-client";

/**
 * The process's Prometheus registry. One per process (not prom-client's global
 * one), so tests can build many apps side by side.
 */
export interface Metrics {
  registry: client.Registry;
  httpDuration: client.Histogram<"method" | "route" | "status_code">;
  httpInFlight: client.Gauge;
  /** Errors in background loops, by loop name. */
  backgroundErrors: client.Counter<"loop">;
}

/** The label every path no route matched is counted under. */
export const UNMATCHED_ROUTE = "unmatched";

export function createMetrics(opts: { defaultMetrics?: boolean } = {}): Metrics {
  const registry = new client.Registry();
  if (opts.defaultMetrics !== false) {
    client.collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 10 });
  }
  return {
    registry,
    httpDuration: new client.Histogram({
      name: "http_request_duration_seconds",
      help: "HTTP request duration by method, route template and status code",
      labelNames: ["method", "route", "status_code"] as const,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    httpInFlight: new client.Gauge({
      name: "http_requests_in_flight",
      help: "HTTP requests being served right now",
      registers: [registry],
    }),
    backgroundErrors: new client.Counter({
      name: "background_errors_total",
      help: "Errors caught in background loops, by loop",
      labelNames: ["loop"] as const,
      registers: [registry],
    }),
  };
}

const KNOWN_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);
/** Methods outside the usual set are folded into one label value. */
export const methodLabel = (m: string | undefined) => (m && KNOWN_METHODS.has(m) ? m : "OTHER");

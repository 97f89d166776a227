import client from "prom-client";
import type { Metrics } from "../ops/metrics.js";

/**
 * The metric registered under `name`, or a new one. A queue start that fails
 * and is retried (services.ts) builds these again on the same registry, which
 * prom-client refuses for a new metric of the same name.
 */
function once<T extends client.Metric>(registry: client.Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

/** Queue and run metrics; gauges of queue state are refreshed by the queue's sampler. */
export function createQueueMetrics(metrics: Metrics) {
  const registry = metrics.registry;
  const registers = [registry];
  const duration = once(
    registry,
    "agent_run_duration_seconds",
    () =>
      new client.Histogram({
        name: "agent_run_duration_seconds",
        help: "Duration of run attempts by agent and outcome",
        labelNames: ["agent", "outcome"] as const,
        buckets: [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120],
        registers,
      }),
  );
  const retries = once(
    registry,
    "agent_run_retries_total",
    () => new client.Counter({ name: "agent_run_retries_total", help: "Run attempts that failed and were retried", labelNames: ["agent"] as const, registers }),
  );
  const failures = once(
    registry,
    "agent_run_failures_total",
    () =>
      new client.Counter({ name: "agent_run_failures_total", help: "Runs that failed for good, by agent and error code", labelNames: ["agent", "code"] as const, registers }),
  );
  return {
    queued: once(registry, "agent_runs_queued", () => new client.Gauge({ name: "agent_runs_queued", help: "Runs waiting in the queue (all instances)", registers })),
    running: once(registry, "agent_runs_running", () => new client.Gauge({ name: "agent_runs_running", help: "Runs executing on this instance", registers })),
    runningAll: once(registry, "agent_runs_running_all", () => new client.Gauge({ name: "agent_runs_running_all", help: "Runs executing on any instance", registers })),
    oldestQueued: once(
      registry,
      "agent_run_oldest_queued_seconds",
      () => new client.Gauge({ name: "agent_run_oldest_queued_seconds", help: "Age of the oldest queued run", registers }),
    ),
    startLatency: once(
      registry,
      "agent_run_start_latency_seconds",
      () =>
        new client.Histogram({
          name: "agent_run_start_latency_seconds",
          help: "From message stored to first attempt started",
          buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
          registers,
        }),
    ),
    localStarts: once(
      registry,
      "agent_run_local_starts_total",
      () =>
        new client.Counter({
          name: "agent_run_local_starts_total",
          help: "Runs started on the instance their message was posted to, by outcome (succeeded there, not_run, queued: handed to the queue, error)",
          labelNames: ["outcome"] as const,
          registers,
        }),
    ),
    finished(agent: string, outcome: string, seconds: number) {
      duration.observe({ agent, outcome }, seconds);
    },
    retried(agent: string) {
      retries.inc({ agent });
    },
    failed(agent: string, code: string) {
      failures.inc({ agent, code });
    },
  };
}

export type QueueMetrics = ReturnType<typeof createQueueMetrics>;

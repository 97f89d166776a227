import client from "prom-client";
import type { Metrics } from "../ops/metrics.js";
import type { StoredEvent } from "./hub.js";

/** WebSocket and stream delivery metrics; one set per registry (services.ts builds it once). */
export function createRealtimeMetrics(metrics: Metrics) {
  const registers = [metrics.registry];
  const delivery = new client.Histogram({
    name: "run_event_delivery_seconds",
    help: "From a run event stored (run_events.created_at) to its live frame sent, by whether the run executes on this instance (same) or another (other)",
    labelNames: ["instance"] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers,
  });
  const same = delivery.labels({ instance: "same" });
  const other = delivery.labels({ instance: "other" });
  return {
    connections: new client.Gauge({ name: "ws_connections", help: "Open WebSocket connections", registers }),
    messagesSent: new client.Counter({ name: "ws_messages_sent_total", help: "WebSocket frames sent (events, errors, acknowledgements)", registers }),
    closedSlow: new client.Counter({ name: "ws_closed_slow_total", help: "WebSocket connections closed with 1013 because the client read too slowly", registers }),
    /** A live event just went out; the database clock may run a little apart from ours, hence the floor at 0. */
    delivered(event: StoredEvent) {
      (event.local ? same : other).observe(Math.max(0, Date.now() - event.storedAt) / 1000);
    },
  };
}

export type RealtimeMetrics = ReturnType<typeof createRealtimeMetrics>;

/**
 * `POST /api/client-metrics`: the browser's web vitals and uncaught errors,
 * batched (shared/clientMetrics.ts). Validated with zod, rate limited per
 * client IP, and turned into Prometheus histograms and counters on the
 * process registry. Every label value comes from a fixed list, so a client
 * cannot grow the series count; error messages go to the log, never to a label.
 *
 * Needs no database and no session: mount it beside the other /api routers.
 */
import { Router } from "express";
import { rateLimit } from "express-rate-limit";
import client from "prom-client";
import { z } from "zod";
import {
  CLIENT_ERROR_KINDS,
  CLIENT_PAGES,
  CLIENT_VITAL_RATINGS,
  CLIENT_VITALS,
  MAX_CLIENT_ERROR_MESSAGE,
  MAX_CLIENT_REPORTS,
} from "../../../shared/clientMetrics.js";
import type { Metrics } from "../../ops/metrics.js";
import { AppError } from "../errors.js";
import { parseInput } from "../validate.js";

export interface ClientMetricsOptions {
  /** Batches one client IP may send per window. Default 30. */
  maxBatches?: number;
  /** The rate limit's window, ms. Default 60 s. */
  windowMs?: number;
}

const page = z.enum(CLIENT_PAGES);

export const ClientMetricsBody = z.strictObject({
  reports: z
    .array(
      z.discriminatedUnion("type", [
        z.strictObject({
          type: z.literal("vital"),
          name: z.enum(CLIENT_VITALS),
          // An hour in ms bounds every timing; CLS scores are far below it.
          value: z.number().finite().min(0).max(3_600_000),
          rating: z.enum(CLIENT_VITAL_RATINGS),
          page,
        }),
        z.strictObject({
          type: z.literal("error"),
          kind: z.enum(CLIENT_ERROR_KINDS),
          page,
          message: z.string().max(MAX_CLIENT_ERROR_MESSAGE),
        }),
      ]),
    )
    .min(1, "reports must not be empty")
    .max(MAX_CLIENT_REPORTS, `at most ${MAX_CLIENT_REPORTS} reports per batch`),
});
export type ClientMetricsBody = z.infer<typeof ClientMetricsBody>;

/** The metrics, registered once per registry (a second router on the same registry shares them). */
export function createClientMetrics(metrics: Metrics) {
  const registry = metrics.registry;
  function once<T extends client.Metric>(name: string, make: () => T): T {
    return (registry.getSingleMetric(name) as T | undefined) ?? make();
  }
  const registers = [registry];
  return {
    /** LCP, INP, TTFB and FCP, seconds. */
    timings: once(
      "client_web_vitals_seconds",
      () =>
        new client.Histogram({
          name: "client_web_vitals_seconds",
          help: "Web vitals measured in browsers (LCP, INP, TTFB, FCP), by metric, page and web-vitals rating",
          labelNames: ["metric", "page", "rating"] as const,
          buckets: [0.025, 0.05, 0.1, 0.2, 0.5, 0.8, 1, 1.8, 2.5, 4, 6, 10, 20],
          registers,
        }),
    ) as client.Histogram<"metric" | "page" | "rating">,
    cls: once(
      "client_cumulative_layout_shift",
      () =>
        new client.Histogram({
          name: "client_cumulative_layout_shift",
          help: "Cumulative layout shift score measured in browsers, by page and web-vitals rating",
          labelNames: ["page", "rating"] as const,
          buckets: [0, 0.01, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2],
          registers,
        }),
    ) as client.Histogram<"page" | "rating">,
    errors: once(
      "client_errors_total",
      () =>
        new client.Counter({
          name: "client_errors_total",
          help: "Uncaught errors and unhandled rejections reported by browsers, by kind and page",
          labelNames: ["kind", "page"] as const,
          registers,
        }),
    ) as client.Counter<"kind" | "page">,
    batches: once(
      "client_metric_batches_total",
      () =>
        new client.Counter({
          name: "client_metric_batches_total",
          help: "Batches received on POST /api/client-metrics, by outcome (accepted, invalid, rate_limited)",
          labelNames: ["outcome"] as const,
          registers,
        }),
    ) as client.Counter<"outcome">,
  };
}

export function createClientMetricsRouter(metrics: Metrics, opts: ClientMetricsOptions = {}): Router {
  const m = createClientMetrics(metrics);
  const router = Router();
  const limiter = rateLimit({
    windowMs: opts.windowMs ?? 60_000,
    limit: opts.maxBatches ?? 30,
    standardHeaders: "draft-7",
    legacyHeaders: false,
    handler: (_req, res) => {
      m.batches.inc({ outcome: "rate_limited" });
      res.status(429).json(new AppError("rate_limited", 429, "Too many metric reports; try again later").toBody());
    },
  });

  router.post("/client-metrics", limiter, (req, res) => {
    let body: ClientMetricsBody;
    try {
      body = parseInput(ClientMetricsBody, req.body, "body");
    } catch (err) {
      m.batches.inc({ outcome: "invalid" });
      throw err;
    }
    for (const r of body.reports) {
      switch (r.type) {
        case "vital":
          if (r.name === "CLS") m.cls.observe({ page: r.page, rating: r.rating }, r.value);
          else m.timings.observe({ metric: r.name, page: r.page, rating: r.rating }, r.value / 1000);
          break;
        case "error":
          m.errors.inc({ kind: r.kind, page: r.page });
          req.log.warn({ client: { kind: r.kind, page: r.page, message: r.message } }, "client error reported");
          break;
        default: {
          const unreachable: never = r;
          throw new Error(`unknown report ${JSON.stringify(unreachable)}`);
        }
      }
    }
    m.batches.inc({ outcome: "accepted" });
    res.status(204).end();
  });
  return router;
}

/**
 * What the browser reports to `POST /api/client-metrics`: web vitals and
 * uncaught errors, batched. Plain constants and types (no zod), so the client
 * bundle stays small; the server validates with a zod schema built from them
 * (server/http/routes/clientMetrics.ts).
 *
 * Every value that becomes a Prometheus label comes from one of these fixed
 * lists: a client cannot add label values.
 */

/** The web vitals reported (npm `web-vitals`). CLS is a unitless score; the others are milliseconds. */
export const CLIENT_VITALS = ["LCP", "INP", "CLS", "TTFB", "FCP"] as const;
export type ClientVital = (typeof CLIENT_VITALS)[number];

/** web-vitals' own rating of a value. */
export const CLIENT_VITAL_RATINGS = ["good", "needs-improvement", "poor"] as const;
export type ClientVitalRating = (typeof CLIENT_VITAL_RATINGS)[number];

/** The page a report comes from: a route name, never a URL. */
export const CLIENT_PAGES = ["chat", "status", "other"] as const;
export type ClientPage = (typeof CLIENT_PAGES)[number];

/** `error`: window "error" event; `unhandledrejection`: a rejected promise nobody caught. */
export const CLIENT_ERROR_KINDS = ["error", "unhandledrejection"] as const;
export type ClientErrorKind = (typeof CLIENT_ERROR_KINDS)[number];

/** Most reports in one batch. */
export const MAX_CLIENT_REPORTS = 50;
/** Longest error message kept (characters); longer ones are cut by the client. */
export const MAX_CLIENT_ERROR_MESSAGE = 500;

export interface ClientVitalReport {
  type: "vital";
  name: ClientVital;
  /** ms, or the CLS score. */
  value: number;
  rating: ClientVitalRating;
  page: ClientPage;
}

export interface ClientErrorReport {
  type: "error";
  kind: ClientErrorKind;
  page: ClientPage;
  /** Logged by the server, never a label. */
  message: string;
}

export type ClientReport = ClientVitalReport | ClientErrorReport;

export interface ClientMetricsBatch {
  reports: ClientReport[];
}

/** The page label of a path. */
export function clientPageOf(pathname: string): ClientPage {
  if (pathname === "/status") return "status";
  if (pathname === "/" || pathname.startsWith("/c/")) return "chat";
  return "other";
}

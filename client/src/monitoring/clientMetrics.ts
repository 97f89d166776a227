/**
 * Web vitals (LCP, INP, CLS, TTFB, FCP; npm `web-vitals`) and uncaught errors,
 * batched to `POST /api/client-metrics` (shared/clientMetrics.ts). A batch
 * leaves a second after its first report, or at once when the page is being
 * hidden or left, with `keepalive` so it survives the unload.
 */
import { onCLS, onFCP, onINP, onLCP, onTTFB, type Metric } from "web-vitals";
import {
  clientPageOf,
  MAX_CLIENT_ERROR_MESSAGE,
  MAX_CLIENT_REPORTS,
  type ClientErrorKind,
  type ClientReport,
  type ClientVital,
} from "../../../shared/clientMetrics";

const ENDPOINT = "/api/client-metrics";
const FLUSH_AFTER_MS = 1000;
/** Errors reported per page load at most: a render loop must not flood the server. */
const MAX_ERRORS = 20;

let queue: ClientReport[] = [];
let timer: number | null = null;
let errors = 0;
let installed = false;

function flush() {
  if (timer !== null) clearTimeout(timer);
  timer = null;
  while (queue.length > 0) {
    const reports = queue.slice(0, MAX_CLIENT_REPORTS);
    queue = queue.slice(MAX_CLIENT_REPORTS);
    void fetch(ENDPOINT, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ reports }),
      keepalive: true,
      credentials: "same-origin",
    }).catch(() => undefined);
  }
}

function enqueue(report: ClientReport) {
  queue.push(report);
  if (document.visibilityState === "hidden") {
    // Several vitals arrive in the same hide event: send them together.
    if (timer !== null) clearTimeout(timer);
    timer = null;
    queueMicrotask(flush);
  } else {
    timer ??= window.setTimeout(flush, FLUSH_AFTER_MS);
  }
}

const page = () => clientPageOf(location.pathname);

function reportVital(m: Metric) {
  enqueue({ type: "vital", name: m.name as ClientVital, value: Math.max(0, m.value), rating: m.rating, page: page() });
}

export function reportError(kind: ClientErrorKind, message: string) {
  if (++errors > MAX_ERRORS) return;
  enqueue({ type: "error", kind, page: page(), message: message.slice(0, MAX_CLIENT_ERROR_MESSAGE) });
}

function describe(reason: unknown): string {
  if (reason instanceof Error) return `${reason.name}: ${reason.message}`;
  try {
    return typeof reason === "string" ? reason : JSON.stringify(reason) ?? String(reason);
  } catch {
    return String(reason);
  }
}

/** Starts reporting; once per page. */
export function installClientMetrics() {
  if (installed) return;
  installed = true;
  window.addEventListener("error", (e) => reportError("error", e.error !== undefined && e.error !== null ? describe(e.error) : e.message || "error"));
  window.addEventListener("unhandledrejection", (e) => reportError("unhandledrejection", describe(e.reason)));
  onLCP(reportVital);
  onINP(reportVital);
  onCLS(reportVital);
  onTTFB(reportVital);
  onFCP(reportVital);
  // Registered after web-vitals' own listeners: whatever they report on hide is queued by then.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") flush();
  });
  window.addEventListener("pagehide", flush);
}

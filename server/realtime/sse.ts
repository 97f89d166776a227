/**
 * `GET /api/runs/:id/events`: the run's stream as Server-Sent Events for
 * clients without WebSockets. Each event is `id: <seq>` and `data: <the
 * WebSocket event frame>`; `Last-Event-ID` (or `?after=`) resumes; a comment
 * line keeps proxies from timing the stream out; the response ends after the
 * terminal event. A run with nothing left to send answers 204, which tells
 * EventSource to stop reconnecting.
 */
import type { Request, RequestHandler, Response } from "express";
import type { Pool } from "../db/pool.js";
import type { Logger } from "../ops/logger.js";
import { SECOND } from "../config.js";
import { callerOf } from "../auth/middleware.js";
import { isUuid } from "../auth/session.js";
import { AppError, badRequest, notFound } from "../http/errors.js";
import type { RunHub } from "./hub.js";
import type { RealtimeMetrics } from "./metrics.js";
import { openRunStream } from "./runStream.js";
import { readRunForStream } from "./runAccess.js";

export interface SseOptions {
  /** Interval of the `: heartbeat` comment, ms. Default 15 s. */
  heartbeatMs?: number;
  /** Unsent bytes a response may hold before the stream is ended (resume with Last-Event-ID). Default 1 MiB. */
  maxBufferedBytes?: number;
  /** The `retry:` EventSource waits before reconnecting, ms. Default 1 s. */
  retryMs?: number;
}

export interface SseDeps {
  pool: Pool;
  hub: RunHub;
  log: Logger;
  metrics?: RealtimeMetrics;
  options?: SseOptions;
}

/** `Last-Event-ID`, else `?after=`, else 0. */
function resumeFrom(req: Request): number {
  const header = req.headers["last-event-id"];
  const query = req.query.after;
  const raw = typeof header === "string" && header.trim() !== "" ? header.trim() : typeof query === "string" ? query : undefined;
  if (raw === undefined) return 0;
  if (!/^\d{1,10}$/.test(raw) || Number(raw) > 2 ** 31 - 1) throw badRequest("Last-Event-ID (or after) must be a whole number of at most 2^31-1");
  return Number(raw);
}

export interface RunEventsHandler extends RequestHandler {
  /** Shutdown's drain stage: ends every open stream; EventSource reconnects (elsewhere) with Last-Event-ID. */
  drain(): void;
  /** Streams open now. */
  readonly open: number;
}

export function createRunEventsHandler(deps: SseDeps): RunEventsHandler {
  const open = new Set<() => void>();
  let draining = false;
  const heartbeatMs = deps.options?.heartbeatMs ?? 15 * SECOND;
  const maxBuffered = deps.options?.maxBufferedBytes ?? 1024 * 1024;
  const retryMs = deps.options?.retryMs ?? SECOND;

  const handler = async function runEvents(req: Request, res: Response) {
    const id = req.params.id;
    if (typeof id !== "string" || !isUuid(id)) throw notFound("Run not found");
    const runId = id.toLowerCase();
    const after = resumeFrom(req);
    const userId = callerOf(req).id;
    const run = await readRunForStream(deps.pool, userId, runId, after);
    if (!run) throw notFound("Run not found");
    // Gone while we looked: no `close` event is coming any more.
    if (req.socket.destroyed) return;
    if (draining) throw new AppError("not_ready", 503, "The server is shutting down; reconnect", { headers: { "retry-after": "1" } });
    if (run.finished && after >= run.lastSeq) {
      res.status(204).end();
      return;
    }

    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      // no-transform: the compression middleware (and proxies) leave the stream alone.
      "cache-control": "no-store, no-transform",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    // The request timeout is for requests; this response lives as long as the run.
    req.socket.setTimeout(0);
    res.write(`retry: ${retryMs}\n\n`);

    const heartbeat = setInterval(() => {
      if (!res.writableEnded && !res.destroyed) res.write(": heartbeat\n\n");
    }, heartbeatMs);
    heartbeat.unref();
    // Called only once the stream exists: its sink calls are asynchronous.
    function finish() {
      open.delete(finish);
      clearInterval(heartbeat);
      stream.close();
      if (!res.writableEnded) res.end();
    }
    const stream = openRunStream({
      hub: deps.hub,
      runId,
      after,
      knownSeq: run.lastSeq,
      finishedAtCheck: run.finished,
      firstPage: run.firstPage,
      sink: {
        send(event, live) {
          if (res.writableEnded || res.destroyed) return false;
          if (res.writableLength > maxBuffered) {
            deps.log.info({ runId, bufferedBytes: res.writableLength }, "SSE client too slow; ending the stream");
            finish();
            return false;
          }
          res.write(`id: ${event.seq}\ndata: ${event.frame}\n\n`);
          if (live) deps.metrics?.delivered(event);
          return true;
        },
        finished: finish,
        failed(err) {
          deps.log.warn({ err, runId }, "SSE run stream failed");
          finish();
        },
      },
    });
    open.add(finish);
    res.on("close", finish);
  };
  // defineProperties, not Object.assign: assign would read the getter once.
  return Object.defineProperties(handler, {
    drain: {
      value() {
        draining = true;
        for (const finish of [...open]) finish();
      },
    },
    open: { get: () => open.size },
  }) as unknown as RunEventsHandler;
}

/**
 * The WebSocket endpoint (`/ws`): `ws` in noServer mode behind the http
 * server's `upgrade` event (index.ts). The upgrade is checked before any
 * handshake (path, Origin, session cookie or bearer token); each connection
 * then holds a few run subscriptions (runStream.ts) fed by the hub.
 *
 * Limits, each to keep one client from costing the others: 64 KB frames,
 * a message rate, a subscription cap, a cap on unsent bytes (a client that
 * stops reading is closed with 1013 and resumes later with `after`), and a
 * ping every 25 s (two unanswered pings and the socket is cut).
 */
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, WebSocket, type RawData } from "ws";
import type { Config } from "../config.js";
import { SECOND } from "../config.js";
import type { Logger } from "../ops/logger.js";
import type { Pool } from "../db/pool.js";
import type { Caller } from "../auth/middleware.js";
import { ClientMessage, CLOSE_CODES, WS_PATH, type RealtimeErrorCode, type ServerMessage } from "../../shared/realtime.js";
import type { RunHub, StoredEvent } from "./hub.js";
import type { RealtimeMetrics } from "./metrics.js";
import { openRunStream, type RunStream } from "./runStream.js";
import { refuseUpgrade } from "./refuse.js";
import { readRunForStream } from "./runAccess.js";

export interface RealtimeOptions {
  /** Largest frame a client may send, bytes; a bigger one closes with 1009. Default 64 KiB. */
  maxPayloadBytes?: number;
  /** Malformed, unknown or rate-limited frames before the connection is closed with 1008. Default 10. */
  maxBadFrames?: number;
  /** Ping interval, ms. Default 25 s. */
  pingIntervalMs?: number;
  /** Unanswered pings after which the socket is terminated. Default 2. */
  maxMissedPongs?: number;
  /** Unsent bytes a socket may hold before it counts as slow and is closed with 1013. Default 1 MiB. */
  maxBufferedBytes?: number;
  /** Sustained client messages per second per connection. Default 20. */
  messagesPerSecond?: number;
  /** Messages a connection may send at once above the rate. Default 40. */
  messageBurst?: number;
  /** Runs one connection may be subscribed to at once. Default 32. */
  maxSubscriptions?: number;
  /** How long a closing socket gets to finish the close handshake before it is cut, ms. Default 5 s. */
  closeTimeoutMs?: number;
  /** Test hook, see RunStreamOptions.afterReplayPage. */
  afterReplayPage?: () => Promise<void>;
}

export interface RealtimeServerDeps {
  config: Config;
  log: Logger;
  pool: Pool;
  hub: RunHub;
  metrics: RealtimeMetrics;
  /** The caller of an upgrade request; never creates a user. */
  identify(req: IncomingMessage): Promise<Caller | null>;
  /** Requests a run's cancel; false when the run is not the caller's. */
  cancelRun(userId: string, runId: string): Promise<boolean>;
  options?: RealtimeOptions;
}

/** A subscription, reserved while its ownership check is under way. */
interface Slot {
  stream: RunStream | null;
}

interface Connection {
  ws: WebSocket;
  caller: Caller;
  /** A child logger, made on first use (most connections never log). */
  readonly log: Logger;
  subs: Map<string, Slot>;
  bad: number;
  tokens: number;
  refilledAt: number;
  unanswered: number;
  closing: boolean;
  killTimer: NodeJS.Timeout | null;
}

/**
 * The page's own host (any scheme: TLS usually ends at the proxy) or one of
 * CORS_ORIGINS. No Origin at all is a program, not a browser page: allowed,
 * it still needs a session or token.
 */
export function isAllowedOrigin(origin: string | undefined, host: string | undefined, allowed: ReadonlySet<string>): boolean {
  if (origin === undefined) return true;
  if (allowed.has(origin)) return true;
  try {
    const u = new URL(origin);
    return (u.protocol === "http:" || u.protocol === "https:") && host !== undefined && u.host === host.toLowerCase();
  } catch {
    return false;
  }
}

const pathnameOf = (url: string | undefined) => {
  const q = (url ?? "/").indexOf("?");
  return q === -1 ? (url ?? "/") : (url ?? "/").slice(0, q);
};

const frameText = (data: RawData): string =>
  Array.isArray(data) ? Buffer.concat(data).toString("utf8") : Buffer.isBuffer(data) ? data.toString("utf8") : Buffer.from(data).toString("utf8");

/** A frame's bytes, made once per event for all sockets. */
const frameBytes = new WeakMap<StoredEvent, Buffer>();
const bytesOf = (event: StoredEvent) => {
  let b = frameBytes.get(event);
  if (!b) frameBytes.set(event, (b = Buffer.from(event.frame)));
  return b;
};

export function createRealtimeServer(deps: RealtimeServerDeps) {
  const { config, log, pool, hub, metrics } = deps;
  const o = deps.options ?? {};
  const maxPayload = o.maxPayloadBytes ?? 64 * 1024;
  const maxBadFrames = o.maxBadFrames ?? 10;
  const pingIntervalMs = o.pingIntervalMs ?? 25 * SECOND;
  const maxMissedPongs = o.maxMissedPongs ?? 2;
  const maxBuffered = o.maxBufferedBytes ?? 1024 * 1024;
  const rate = o.messagesPerSecond ?? 20;
  const burst = o.messageBurst ?? 40;
  const maxSubscriptions = o.maxSubscriptions ?? 32;
  const closeTimeoutMs = o.closeTimeoutMs ?? 5 * SECOND;
  const allowedOrigins = new Set(config.security.corsOrigins);

  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload, clientTracking: false });
  wss.on("error", (err) => log.warn({ err }, "websocket server error"));
  const conns = new Set<Connection>();
  let accepting = true;

  const heartbeat = setInterval(() => {
    for (const conn of conns) {
      if (conn.unanswered >= maxMissedPongs) {
        conn.log.info({ missedPongs: conn.unanswered }, "websocket client stopped answering pings; terminated");
        conn.ws.terminate();
        continue;
      }
      conn.unanswered++;
      try {
        conn.ws.ping();
      } catch (err) {
        conn.log.debug({ err }, "ping failed");
      }
    }
  }, pingIntervalMs);
  heartbeat.unref();

  /** Sends a frame unless the client is too far behind; false when nothing more may be sent. */
  function sendRaw(conn: Connection, data: string | Buffer): boolean {
    if (conn.closing || conn.ws.readyState !== WebSocket.OPEN) return false;
    // The buffer already held, not this frame: a frame bigger than the cap still goes to a client that keeps up.
    if (conn.ws.bufferedAmount > maxBuffered) {
      metrics.closedSlow.inc();
      conn.log.info({ bufferedBytes: conn.ws.bufferedAmount }, "websocket client too slow; closing with 1013");
      closeConnection(conn, CLOSE_CODES.tryAgainLater, "too slow; resume with after");
      return false;
    }
    conn.ws.send(data, { binary: false });
    metrics.messagesSent.inc();
    return true;
  }

  const send = (conn: Connection, msg: ServerMessage) => sendRaw(conn, JSON.stringify(msg));

  const sendError = (conn: Connection, code: RealtimeErrorCode, message: string, runId?: string) =>
    send(conn, { type: "error", code, message, ...(runId ? { runId } : {}) });

  /** A frame the server could not use: an `error` frame, and after too many the door. */
  function bad(conn: Connection, code: RealtimeErrorCode, message: string) {
    conn.bad++;
    sendError(conn, code, message);
    if (conn.bad >= maxBadFrames) {
      conn.log.info({ badFrames: conn.bad }, "websocket client sent too many bad frames; closing with 1008");
      closeConnection(conn, CLOSE_CODES.policyViolation, "too many bad frames");
    }
  }

  function closeSubscriptions(conn: Connection) {
    for (const slot of conn.subs.values()) slot.stream?.close();
    conn.subs.clear();
  }

  function closeConnection(conn: Connection, code: number, reason: string) {
    if (conn.closing) return;
    conn.closing = true;
    closeSubscriptions(conn);
    conn.ws.close(code, reason);
    // A client that does not read will not answer the close either.
    conn.killTimer = setTimeout(() => conn.ws.terminate(), closeTimeoutMs);
    conn.killTimer.unref();
  }

  /** Token bucket per connection. */
  function takeToken(conn: Connection): boolean {
    const now = performance.now();
    conn.tokens = Math.min(burst, conn.tokens + ((now - conn.refilledAt) / 1000) * rate);
    conn.refilledAt = now;
    if (conn.tokens < 1) return false;
    conn.tokens -= 1;
    return true;
  }

  async function subscribe(conn: Connection, runId: string, after: number) {
    const existing = conn.subs.get(runId);
    if (!existing && conn.subs.size >= maxSubscriptions) {
      sendError(conn, "too_many_subscriptions", `At most ${maxSubscriptions} subscriptions per connection; unsubscribe first`, runId);
      return;
    }
    existing?.stream?.close();
    const slot: Slot = { stream: null };
    conn.subs.set(runId, slot);
    const current = () => !conn.closing && conn.subs.get(runId) === slot;
    let run;
    try {
      run = await readRunForStream(pool, conn.caller.id, runId, after);
    } catch (err) {
      if (!current()) return;
      conn.subs.delete(runId);
      conn.log.warn({ err, runId }, "subscribe failed");
      sendError(conn, "internal", "Could not read the run; try again", runId);
      return;
    }
    if (!current()) return;
    if (!run) {
      conn.subs.delete(runId);
      sendError(conn, "not_found", "Run not found", runId);
      return;
    }
    send(conn, { type: "subscribed", runId, after, lastSeq: run.lastSeq, status: run.status });
    slot.stream = openRunStream({
      hub,
      runId,
      after,
      knownSeq: run.lastSeq,
      finishedAtCheck: run.finished,
      firstPage: run.firstPage,
      ...(o.afterReplayPage ? { afterReplayPage: o.afterReplayPage } : {}),
      sink: {
        send(event, live) {
          const ok = sendRaw(conn, bytesOf(event));
          if (ok && live) metrics.delivered(event);
          return ok;
        },
        finished() {
          if (!current()) return;
          conn.subs.delete(runId);
          send(conn, { type: "unsubscribed", runId, reason: "finished" });
        },
        failed(err) {
          if (!current()) return;
          conn.subs.delete(runId);
          conn.log.warn({ err, runId }, "run stream failed");
          sendError(conn, "internal", "Reading the run's events failed; subscribe again", runId);
        },
      },
    });
  }

  async function cancel(conn: Connection, runId: string) {
    try {
      if (!(await deps.cancelRun(conn.caller.id, runId))) sendError(conn, "not_found", "Run not found", runId);
    } catch (err) {
      conn.log.warn({ err, runId }, "cancel failed");
      sendError(conn, "internal", "Could not cancel the run; try again", runId);
    }
  }

  function onMessage(conn: Connection, data: RawData, isBinary: boolean) {
    if (conn.closing) return;
    if (!takeToken(conn)) return bad(conn, "rate_limited", `More than ${rate} messages per second; slow down`);
    if (isBinary) return bad(conn, "bad_request", "Frames must be JSON text");
    let parsed: unknown;
    try {
      parsed = JSON.parse(frameText(data));
    } catch {
      return bad(conn, "bad_request", "Frame is not valid JSON");
    }
    const msg = ClientMessage.safeParse(parsed);
    if (!msg.success) {
      const issue = msg.error.issues[0];
      return bad(conn, "bad_request", issue ? `${issue.path.join(".") || "frame"}: ${issue.message}` : "Invalid frame");
    }
    const m = msg.data;
    switch (m.type) {
      case "subscribe":
        subscribe(conn, m.runId.toLowerCase(), m.after).catch((err: unknown) => conn.log.error({ err }, "subscribe failed"));
        return;
      case "unsubscribe": {
        const runId = m.runId.toLowerCase();
        const slot = conn.subs.get(runId);
        slot?.stream?.close();
        conn.subs.delete(runId);
        send(conn, { type: "unsubscribed", runId, reason: "requested" });
        return;
      }
      case "cancel":
        cancel(conn, m.runId.toLowerCase()).catch((err: unknown) => conn.log.error({ err }, "cancel failed"));
        return;
      default: {
        const unreachable: never = m;
        return bad(conn, "bad_request", `Unknown frame ${JSON.stringify(unreachable)}`);
      }
    }
  }

  function onConnection(ws: WebSocket, caller: Caller) {
    let connLog: Logger | undefined;
    const conn: Connection = {
      ws,
      caller,
      get log() {
        return (connLog ??= log.child({ userId: caller.id }));
      },
      subs: new Map(),
      bad: 0,
      tokens: burst,
      refilledAt: performance.now(),
      unanswered: 0,
      closing: false,
      killTimer: null,
    };
    conns.add(conn);
    metrics.connections.inc();
    ws.on("message", (data, isBinary) => onMessage(conn, data, isBinary));
    ws.on("pong", () => {
      conn.unanswered = 0;
    });
    // A frame above maxPayload arrives here too; ws closes with 1009 itself.
    ws.on("error", (err) => conn.log.debug({ err }, "websocket error"));
    ws.on("close", (code) => {
      conns.delete(conn);
      metrics.connections.dec();
      conn.closing = true;
      closeSubscriptions(conn);
      if (conn.killTimer) clearTimeout(conn.killTimer);
      conn.log.debug({ code }, "websocket closed");
    });
    if (!accepting) closeConnection(conn, CLOSE_CODES.serviceRestart, "server restarting");
  }

  return {
    /** The http server's `upgrade` handler (index.ts routes upgrades here once ready). */
    async handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
      const path = pathnameOf(req.url);
      if (path !== WS_PATH) return refuseUpgrade(socket, 404, "not_found", `No WebSocket endpoint at ${path}`);
      if (!accepting) return refuseUpgrade(socket, 503, "not_ready", "The server is shutting down; reconnect", { "retry-after": "1" });
      if (!isAllowedOrigin(req.headers.origin, req.headers.host, allowedOrigins)) {
        return refuseUpgrade(socket, 403, "forbidden", "Origin not allowed");
      }
      let caller: Caller | null;
      try {
        caller = await deps.identify(req);
      } catch (err) {
        log.warn({ err }, "websocket upgrade: identifying the caller failed");
        return refuseUpgrade(socket, 503, "not_ready", "Could not check the session; try again", { "retry-after": "2" });
      }
      if (!caller) return refuseUpgrade(socket, 401, "unauthorized", "A session cookie or bearer token is required");
      if (socket.destroyed) return;
      if (!accepting) return refuseUpgrade(socket, 503, "not_ready", "The server is shutting down; reconnect", { "retry-after": "1" });
      const who = caller;
      wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, who));
    },

    get connections() {
      return conns.size;
    },

    /**
     * Shutdown's drain stage: refuse new upgrades and close every client with
     * 1012 so it reconnects (elsewhere) and resumes; resolves once they are
     * closed, cutting those that do not answer within the close timeout.
     */
    async drain(): Promise<void> {
      accepting = false;
      const closed = [...conns].map((conn) => new Promise<void>((resolve) => {
        if (conn.ws.readyState === WebSocket.CLOSED) return resolve();
        conn.ws.once("close", () => resolve());
        closeConnection(conn, CLOSE_CODES.serviceRestart, "server restarting; reconnect and resume");
      }));
      await Promise.all(closed);
    },

    /** Cuts whatever is left (release stage). */
    async close(): Promise<void> {
      accepting = false;
      clearInterval(heartbeat);
      for (const conn of conns) conn.ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}

export type RealtimeServer = ReturnType<typeof createRealtimeServer>;

/**
 * The WebSocket endpoint (`/ws`): `ws` in noServer mode behind the http
 * server's `upgrade` event (index.ts). The upgrade is checked before any
 * handshake (path, Origin, session cookie or bearer token); each connection
 * then holds a few run subscriptions (runStream.ts) fed by the hub, and may
 * send messages (`send`: the message POST with the subscription to its run
 * implied, so no event of the new run can be stored before it is live here).
 *
 * Limits, each to keep one client from costing the others: 64 KB frames,
 * a message rate, a subscription cap, a cap on unsent bytes (a client that
 * stops reading is closed with 1013 and resumes later with `after`), and a
 * ping every 25 s (two unanswered pings and the socket is cut). A `send`
 * also counts against the API rate limit (RATE_LIMIT_MAX per window per
 * client IP), in the same store and under the same key as the client's HTTP
 * requests: the socket is no way around it.
 */
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, WebSocket, type RawData } from "ws";
import type { Config } from "../config.js";
import { SECOND } from "../config.js";
import type { Logger } from "../ops/logger.js";
import type { Pool } from "../db/pool.js";
import type { Caller } from "../auth/middleware.js";
import type { ApiRateLimiter } from "../http/middleware/security.js";
import { clientIpOf, compileTrustProxy } from "../http/clientIp.js";
import { ClientMessage, CLOSE_CODES, MAX_REQUEST_ID_LENGTH, WS_PATH, type RealtimeErrorCode, type ServerMessage } from "../../shared/realtime.js";
import { AGENT_NAMES, createMessageBody } from "../../shared/api.js";
import { isUuid } from "../auth/session.js";
import { describeInputError } from "../http/validate.js";
import { OVERLOADED_RETRY_AFTER_S, type PostResult } from "../data/messages.js";
import type { RunHub, StoredEvent } from "./hub.js";
import type { RealtimeMetrics } from "./metrics.js";
import { openRunStream, type RunStream, type RunStreamOptions } from "./runStream.js";
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
  /** Stores a user message and queues its run, as the message POST does (MessageStore.post). */
  postMessage(userId: string, conversationId: string, content: string, agent: string | undefined): Promise<PostResult>;
  /** Agent names a message may ask for (default: the built-in list), as the message POST's. */
  agentNames?: readonly string[];
  /**
   * The process's API rate limit, the one the /api middleware counts in: a
   * `send` is one hit for the connection's client IP (found at the upgrade
   * with TRUST_PROXY, as Express finds `req.ip`).
   */
  rateLimiter: Pick<ApiRateLimiter, "consume">;
  options?: RealtimeOptions;
}

/** A subscription, reserved while its ownership check is under way. */
interface Slot {
  stream: RunStream | null;
}

interface Connection {
  ws: WebSocket;
  caller: Caller;
  /** The client's IP as `req.ip` gives it for this client's HTTP requests (TRUST_PROXY applied at the upgrade): the rate limit's key. */
  ip: string;
  /** A child logger, made on first use (most connections never log). */
  readonly log: Logger;
  subs: Map<string, Slot>;
  /** The requestIds of `send`s whose message is being stored; each holds a subscription's place. */
  sending: Set<string>;
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

type SendFrame = Extract<ClientMessage, { type: "send" }>;

/** The requestId of a malformed `send`, when it is readable: its error frame then names the request. */
function requestIdOf(frame: unknown): string | undefined {
  if (typeof frame !== "object" || frame === null) return undefined;
  const { type, requestId } = frame as { type?: unknown; requestId?: unknown };
  return type === "send" && typeof requestId === "string" && requestId.length > 0 && requestId.length <= MAX_REQUEST_ID_LENGTH ? requestId : undefined;
}

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
  const trustProxy = compileTrustProxy(config.server.trustProxy);
  const MessageBody = createMessageBody(config.security.maxMessageLength, deps.agentNames ?? AGENT_NAMES);

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

  const sendError = (conn: Connection, code: RealtimeErrorCode, message: string, about: { runId?: string; requestId?: string } = {}) =>
    send(conn, { type: "error", code, message, ...(about.runId ? { runId: about.runId } : {}), ...(about.requestId ? { requestId: about.requestId } : {}) });

  /** A frame the server could not use: an `error` frame (naming the `send` it was meant to be, if that much can be read), and after too many the door. */
  function bad(conn: Connection, code: RealtimeErrorCode, message: string, requestId?: string) {
    conn.bad++;
    sendError(conn, code, message, requestId ? { requestId } : {});
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

  /** Subscriptions held and places reserved by `send`s under way: what the cap counts. */
  const subscriptionsOf = (conn: Connection) => conn.subs.size + conn.sending.size;

  const tooManySubscriptions = () => `At most ${maxSubscriptions} subscriptions per connection; unsubscribe first`;

  /** The run's stream into `slot`, the connection's subscription to it; for subscribe and send alike. */
  function streamInto(conn: Connection, runId: string, slot: Slot, from: Pick<RunStreamOptions, "after" | "knownSeq" | "finishedAtCheck" | "firstPage">) {
    const current = () => !conn.closing && conn.subs.get(runId) === slot;
    slot.stream = openRunStream({
      hub,
      runId,
      ...from,
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
          sendError(conn, "internal", "Reading the run's events failed; subscribe again", { runId });
        },
      },
    });
  }

  async function subscribe(conn: Connection, runId: string, after: number) {
    const existing = conn.subs.get(runId);
    if (!existing && subscriptionsOf(conn) >= maxSubscriptions) {
      sendError(conn, "too_many_subscriptions", tooManySubscriptions(), { runId });
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
      sendError(conn, "internal", "Could not read the run; try again", { runId });
      return;
    }
    if (!current()) return;
    if (!run) {
      conn.subs.delete(runId);
      sendError(conn, "not_found", "Run not found", { runId });
      return;
    }
    send(conn, { type: "subscribed", runId, after, lastSeq: run.lastSeq, status: run.status });
    streamInto(conn, runId, slot, { after, knownSeq: run.lastSeq, finishedAtCheck: run.finished, firstPage: run.firstPage });
  }

  /**
   * The message POST over the socket, subscribed to the new run at once: the
   * hub subscription is registered in the same turn as the post's answer, so
   * every event of the run (the first ones come soon after the commit) is
   * either live here or in the replay that follows, and `sent` goes first.
   * Each refusal comes before anything is stored. The API rate limit is
   * counted last, after the checks that need no database (a frame refused by
   * them is not counted, where the POST counts every request): past it,
   * `rate_limited`, and nothing is stored.
   */
  async function postMessage(conn: Connection, m: SendFrame) {
    const { requestId } = m;
    const refuse = (code: RealtimeErrorCode, message: string) => sendError(conn, code, message, { requestId });
    if (conn.sending.has(requestId)) return refuse("bad_request", "requestId: a send with this requestId is under way on this connection");
    const body = MessageBody.safeParse({ content: m.content, ...(m.agent !== undefined ? { agent: m.agent } : {}) });
    if (!body.success) return refuse("bad_request", describeInputError(body.error, "body"));
    // As the POST's path id: one that is not a UUID names nothing.
    if (!isUuid(m.conversationId)) return refuse("not_found", "Conversation not found");
    if (subscriptionsOf(conn) >= maxSubscriptions) return refuse("too_many_subscriptions", tooManySubscriptions());
    // Reserved before the limit is counted (an await): a second send with
    // this requestId meanwhile is refused above, and the place is held.
    conn.sending.add(requestId);
    let posted: PostResult;
    try {
      const verdict = await deps.rateLimiter.consume(conn.ip);
      if (verdict.limited) {
        const when = verdict.retryAfterSeconds > 0 ? `in ${verdict.retryAfterSeconds} seconds` : "now";
        return refuse("rate_limited", `Too many requests; try again ${when}`);
      }
      posted = await deps.postMessage(conn.caller.id, m.conversationId.toLowerCase(), body.data.content, body.data.agent);
    } catch (err) {
      conn.log.warn({ err, conversationId: m.conversationId }, "send failed");
      return refuse("internal", "Could not store the message; try again");
    } finally {
      conn.sending.delete(requestId);
    }
    if (posted === "not_found") return refuse("not_found", "Conversation not found");
    if (posted === "overloaded") return refuse("overloaded", `Too many runs are waiting; try again in ${OVERLOADED_RETRY_AFTER_S} seconds`);
    // Stored, but the socket is closing (the client left, or the server is
    // draining): the client learns the outcome by reloading the conversation.
    if (conn.closing) return;
    const runId = posted.run.id;
    if (!send(conn, { type: "sent", requestId, message: posted.message, run: posted.run })) return;
    const slot: Slot = { stream: null };
    conn.subs.set(runId, slot);
    // Nothing read yet: the run was just created for this caller (no
    // ownership check needed), and whatever it stored meanwhile is replayed.
    streamInto(conn, runId, slot, { after: 0, knownSeq: 0, finishedAtCheck: false });
  }

  async function cancel(conn: Connection, runId: string) {
    try {
      if (!(await deps.cancelRun(conn.caller.id, runId))) sendError(conn, "not_found", "Run not found", { runId });
    } catch (err) {
      conn.log.warn({ err, runId }, "cancel failed");
      sendError(conn, "internal", "Could not cancel the run; try again", { runId });
    }
  }

  function onMessage(conn: Connection, data: RawData, isBinary: boolean) {
    // Draining or closing: ignored, a `send` too (nothing is stored); the
    // client sees the close and settles an unanswered send as unknown.
    if (conn.closing) return;
    let parsed: unknown;
    let json = !isBinary;
    if (json) {
      try {
        parsed = JSON.parse(frameText(data));
      } catch {
        json = false;
      }
    }
    // A refused `send` still names its request, so the client is not left waiting for an answer.
    if (!takeToken(conn)) return bad(conn, "rate_limited", `More than ${rate} messages per second; slow down`, requestIdOf(parsed));
    if (isBinary) return bad(conn, "bad_request", "Frames must be JSON text");
    if (!json) return bad(conn, "bad_request", "Frame is not valid JSON");
    const msg = ClientMessage.safeParse(parsed);
    if (!msg.success) {
      const issue = msg.error.issues[0];
      return bad(conn, "bad_request", issue ? `${issue.path.join(".") || "frame"}: ${issue.message}` : "Invalid frame", requestIdOf(parsed));
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
      case "send":
        postMessage(conn, m).catch((err: unknown) => conn.log.error({ err }, "send failed"));
        return;
      default: {
        const unreachable: never = m;
        return bad(conn, "bad_request", `Unknown frame ${JSON.stringify(unreachable)}`);
      }
    }
  }

  function onConnection(ws: WebSocket, caller: Caller, ip: string) {
    let connLog: Logger | undefined;
    const conn: Connection = {
      ws,
      caller,
      ip,
      get log() {
        return (connLog ??= log.child({ userId: caller.id }));
      },
      subs: new Map(),
      sending: new Set(),
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
      // Once per connection, from the upgrade request: its sends count against this IP's API budget.
      const ip = clientIpOf(req, trustProxy);
      wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, who, ip));
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

/**
 * The tab's one WebSocket to `/ws`, carrying every run stream it watches
 * (protocol: shared/realtime.ts).
 *
 * - Resume: each watched run remembers the last `seq` it was given; on every
 *   (re)connect it is subscribed again with `after` = that seq, and any event
 *   at or below it is dropped, so no token is shown twice or missed.
 * - Reconnect: exponential backoff with jitter (backoff.ts); a connection
 *   counts as healthy only once it has stayed open a few seconds, so a socket
 *   that opens and drops at once keeps backing off. A deliberate restart
 *   (close 1012) retries at the shortest delay.
 * - Fallback: after a few failed attempts in a row, watched runs switch to
 *   Server-Sent Events (`GET /api/runs/:id/events`, `Last-Event-ID` resume)
 *   while the WebSocket keeps retrying; once it is back they return to it.
 * - Offline: while the browser says it is offline no attempt is made; coming
 *   back online reconnects at once.
 * - Sending: while the socket is open a message goes over it (`send`), which
 *   subscribes to the new run in the same step; its `sent` answer registers
 *   the run here before the next frame is read, so the run's first events,
 *   which follow it on the socket, are applied like any other.
 */
import type { PostMessageResponse } from "../../../shared/api";
import type { ClientMessage, EventFrame, RunEventType, ServerMessage } from "../../../shared/realtime";
import { backoffDelay } from "./backoff";

/** The endpoint (shared/realtime.ts WS_PATH; a value import would pull zod into the bundle). */
const WS_PATH = "/ws";
/** After these, nothing more is sent for the run (shared/realtime.ts TERMINAL_EVENT_TYPES). */
const TERMINAL: ReadonlySet<RunEventType> = new Set<RunEventType>(["done", "failed", "cancelled"]);
/** Close code of a server shutting down: reconnect (to another instance) at once. */
const SERVICE_RESTART = 1012;

/** Failed connection attempts in a row before watched runs move to SSE. */
export const SSE_AFTER_FAILURES = 2;
/** How long a socket must stay open before it counts as healthy, ms. */
const STABLE_AFTER_MS = 3000;
/** An attempt that has not opened by then is abandoned, ms. */
const CONNECT_TIMEOUT_MS = 8000;

export type ConnectionStatus = "connecting" | "open" | "reconnecting" | "offline";

export interface ConnectionState {
  status: ConnectionStatus;
  /** What carries run streams right now: the WebSocket, or SSE while it is down. */
  transport: "websocket" | "sse";
  /** When the next attempt starts (epoch ms), while reconnecting. */
  retryAt: number | null;
  /** Failed attempts in a row. */
  failures: number;
}

/**
 * A `send` refused by the server (nothing was stored): `code` as the API's,
 * e.g. "overloaded". `unread`: the server did not take the frame as a `send`
 * at all (an instance older than `send`, during a rolling deploy): the POST
 * will do.
 */
export class SendRefused extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly unread = false,
  ) {
    super(message);
    this.name = "SendRefused";
  }
}

/**
 * A `send` was written but no answer came: the socket closed first
 * (`closed`), or the server took too long (`timeout`). The message may or may
 * not be stored. Never sent again automatically, that could store it twice.
 */
export class SendOutcomeUnknown extends Error {
  constructor(readonly reason: "closed" | "timeout") {
    super(reason === "closed" ? "The connection dropped before the server answered" : "The server did not answer in time");
    this.name = "SendOutcomeUnknown";
  }
}

export interface SendRequest {
  conversationId: string;
  content: string;
  agent?: string;
}

interface PendingSend {
  /** Registers the run (see sendMessage); called once, when `sent` arrives. */
  onSent(posted: PostMessageResponse): void;
  resolve(posted: PostMessageResponse): void;
  reject(err: Error): void;
  settled: boolean;
  timer: number;
}

/**
 * How long a `send` may go unanswered before its outcome counts as unknown,
 * ms. Its answer is a single statement; this covers a server that never
 * answers (one that does not know `send`, during a rolling deploy).
 */
const SEND_ANSWER_TIMEOUT_MS = 15_000;

export interface RunListener {
  /** Each event once, in `seq` order. */
  onEvent(frame: EventFrame): void;
  /** The stream cannot be had (no such run, or not ours); nothing more will come. */
  onError(code: string, message: string): void;
}

interface Sub {
  runId: string;
  lastSeq: number;
  listener: RunListener;
  source: EventSource | null;
  sseFailures: number;
  retryTimer: number | null;
}

export interface RealtimeOptions {
  /** Default: the page's own origin, ws: or wss:. */
  url?: string;
  random?: () => number;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null;

/** A frame as the server sends it; only the fields used are checked (the server validates what it sends). */
function parseFrame(raw: string): ServerMessage | null {
  try {
    const v: unknown = JSON.parse(raw);
    if (!isObject(v) || typeof v.type !== "string") return null;
    if (v.type === "event" && (typeof v.runId !== "string" || typeof v.seq !== "number" || typeof v.event !== "string")) return null;
    return v as unknown as ServerMessage;
  } catch {
    return null;
  }
}

export class RealtimeConnection {
  private ws: WebSocket | null = null;
  private readonly subs = new Map<string, Sub>();
  private state: ConnectionState;
  private readonly listeners = new Set<() => void>();
  private reconnectTimer: number | null = null;
  private connectTimer: number | null = null;
  /** When the current socket opened (performance.now()), null before. */
  private openedAt: number | null = null;
  private started = false;
  private readonly url: string;
  private readonly random: () => number;
  /** `send`s written on the current socket and not answered yet, by requestId. */
  private readonly sends = new Map<string, PendingSend>();
  private requestSeq = 0;

  constructor(opts: RealtimeOptions = {}) {
    this.url = opts.url ?? `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${WS_PATH}`;
    this.random = opts.random ?? Math.random;
    this.state = { status: navigator.onLine ? "connecting" : "offline", transport: "websocket", retryAt: null, failures: 0 };
  }

  /** Opens the socket (the session cookie must exist: the upgrade never creates a user). */
  start(): void {
    if (this.started) return;
    this.started = true;
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    if (navigator.onLine) this.connect();
  }

  // ------------------------------------------------------------ state for React

  getState = (): ConnectionState => this.state;

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  private setState(patch: Partial<ConnectionState>) {
    const next = { ...this.state, ...patch };
    if (
      next.status === this.state.status &&
      next.transport === this.state.transport &&
      next.retryAt === this.state.retryAt &&
      next.failures === this.state.failures
    ) {
      return;
    }
    this.state = next;
    for (const fn of this.listeners) fn();
  }

  // ------------------------------------------------------------ runs

  /**
   * Streams the run's events after `after` to `listener` until a terminal
   * event, an error, or the returned function is called.
   */
  watch(runId: string, listener: RunListener, after = 0, opts: { subscribed?: boolean } = {}): () => void {
    const existing = this.subs.get(runId);
    if (existing) this.drop(existing, false);
    const sub: Sub = { runId, lastSeq: after, listener, source: null, sseFailures: 0, retryTimer: null };
    this.subs.set(runId, sub);
    // `subscribed`: the server holds the subscription already (a `send`'s run).
    if (!opts.subscribed) this.attach(sub);
    return () => {
      if (this.subs.get(runId) === sub) this.drop(sub, true);
    };
  }

  /** Asks for the run's cancel over the socket; false when it is not open (use the HTTP API then). */
  cancel(runId: string): boolean {
    return this.send({ type: "cancel", runId });
  }

  /**
   * Sends a message over the socket: the message POST, with the subscription
   * to its run implied. Null when the socket is not open (use the HTTP POST).
   *
   * `onSent` runs when the answer arrives and before any later frame is read:
   * it must register the run (`watch(run.id, listener, 0, { subscribed: true })`),
   * whose events follow on the socket. It runs even for an answer that comes
   * after the promise settled as unknown (a late one).
   *
   * Resolves with the stored message and run; rejects with SendRefused
   * (nothing stored) or SendOutcomeUnknown.
   */
  sendMessage(req: SendRequest, onSent: (posted: PostMessageResponse) => void): Promise<PostMessageResponse> | null {
    if (this.ws?.readyState !== WebSocket.OPEN) return null;
    const requestId = `s${++this.requestSeq}-${Math.floor(this.random() * 2 ** 32).toString(36)}`;
    return new Promise<PostMessageResponse>((resolve, reject) => {
      const pending: PendingSend = {
        onSent,
        resolve,
        reject,
        settled: false,
        // Left in `sends`: a late `sent` still registers its run.
        timer: window.setTimeout(() => this.settle(pending, new SendOutcomeUnknown("timeout")), SEND_ANSWER_TIMEOUT_MS),
      };
      this.sends.set(requestId, pending);
      this.send({ type: "send", requestId, conversationId: req.conversationId, content: req.content, ...(req.agent ? { agent: req.agent } : {}) });
    });
  }

  private settle(pending: PendingSend, outcome: PostMessageResponse | Error) {
    clearTimeout(pending.timer);
    if (pending.settled) return;
    pending.settled = true;
    if (outcome instanceof Error) pending.reject(outcome);
    else pending.resolve(outcome);
  }

  /** Runs being streamed right now. */
  get watching(): number {
    return this.subs.size;
  }

  private attach(sub: Sub) {
    if (this.ws?.readyState === WebSocket.OPEN) this.send({ type: "subscribe", runId: sub.runId, after: sub.lastSeq });
    else if (this.state.transport === "sse") this.openSse(sub);
    // else: subscribed when the socket opens.
  }

  private drop(sub: Sub, unsubscribe: boolean) {
    this.subs.delete(sub.runId);
    sub.source?.close();
    sub.source = null;
    if (sub.retryTimer !== null) clearTimeout(sub.retryTimer);
    if (unsubscribe) this.send({ type: "unsubscribe", runId: sub.runId });
  }

  private deliver(frame: EventFrame) {
    const sub = this.subs.get(frame.runId);
    if (!sub || frame.seq <= sub.lastSeq) return;
    sub.lastSeq = frame.seq;
    if (TERMINAL.has(frame.event)) this.drop(sub, false);
    sub.listener.onEvent(frame);
  }

  // ------------------------------------------------------------ WebSocket

  private send(msg: ClientMessage): boolean {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  private connect() {
    this.clearTimer("reconnectTimer");
    if (this.ws) return;
    this.setState({ status: this.state.failures === 0 && this.state.status !== "reconnecting" ? "connecting" : "reconnecting", retryAt: null });
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect(false);
      return;
    }
    this.ws = ws;
    this.connectTimer = window.setTimeout(() => ws.close(), CONNECT_TIMEOUT_MS);
    ws.onopen = () => {
      this.clearTimer("connectTimer");
      this.openedAt = performance.now();
      this.setState({ status: "open", transport: "websocket", retryAt: null });
      for (const sub of this.subs.values()) {
        sub.source?.close();
        sub.source = null;
        this.send({ type: "subscribe", runId: sub.runId, after: sub.lastSeq });
      }
    };
    ws.onmessage = (e: MessageEvent) => {
      if (typeof e.data === "string") this.onFrame(e.data);
    };
    ws.onclose = (e: CloseEvent) => {
      if (this.ws !== ws) return;
      this.ws = null;
      // Written, never answered: stored or not, only the server knows.
      for (const pending of this.sends.values()) this.settle(pending, new SendOutcomeUnknown("closed"));
      this.sends.clear();
      this.clearTimer("connectTimer");
      const stable = this.openedAt !== null && performance.now() - this.openedAt >= STABLE_AFTER_MS;
      this.openedAt = null;
      this.scheduleReconnect(e.code === SERVICE_RESTART || stable);
    };
    // An error is always followed by close, where the retry is decided.
    ws.onerror = () => undefined;
  }

  private onFrame(raw: string) {
    const msg = parseFrame(raw);
    if (!msg) return;
    switch (msg.type) {
      case "event":
        this.deliver(msg);
        return;
      case "subscribed":
        return;
      case "sent": {
        const pending = this.sends.get(msg.requestId);
        if (!pending) return;
        this.sends.delete(msg.requestId);
        const posted = { message: msg.message, run: msg.run };
        try {
          // Now, before the next frame (the run's first event may be it).
          pending.onSent(posted);
        } finally {
          this.settle(pending, posted);
        }
        return;
      }
      case "unsubscribed": {
        const sub = this.subs.get(msg.runId);
        // "finished" with nothing after our seq: the terminal event came before.
        if (sub && msg.reason === "finished") this.drop(sub, false);
        return;
      }
      case "error": {
        if (msg.requestId) {
          const pending = this.sends.get(msg.requestId);
          this.sends.delete(msg.requestId);
          if (pending) this.settle(pending, new SendRefused(msg.code, msg.message));
          return;
        }
        // Naming neither a run nor a request: a frame the server could not
        // read. This page's frames are well formed, so it is a `send` that an
        // instance without `send` refused (the oldest one under way); nothing
        // was stored. (A rate_limited one may answer any frame: not this.)
        if (!msg.runId && msg.code === "bad_request") {
          const [requestId, pending] = this.sends.entries().next().value ?? [];
          if (requestId === undefined || !pending) return;
          this.sends.delete(requestId);
          this.settle(pending, new SendRefused(msg.code, msg.message, true));
          return;
        }
        const sub = msg.runId ? this.subs.get(msg.runId) : undefined;
        if (!sub) return;
        if (msg.code === "not_found" || msg.code === "bad_request") {
          this.drop(sub, false);
          sub.listener.onError(msg.code, msg.message);
        } else {
          // rate_limited, too_many_subscriptions, internal: ask again shortly.
          if (sub.retryTimer !== null) clearTimeout(sub.retryTimer);
          sub.retryTimer = window.setTimeout(() => {
            sub.retryTimer = null;
            if (this.subs.get(sub.runId) === sub) this.attach(sub);
          }, backoffDelay(1, this.random()));
        }
        return;
      }
      default: {
        const unreachable: never = msg;
        void unreachable;
      }
    }
  }

  private scheduleReconnect(quick: boolean) {
    const failures = quick ? 0 : this.state.failures + 1;
    if (!navigator.onLine) {
      this.setState({ status: "offline", retryAt: null, failures });
      return;
    }
    const delay = backoffDelay(quick ? 0 : failures - 1, this.random());
    this.setState({ status: "reconnecting", retryAt: Date.now() + delay, failures });
    if (failures >= SSE_AFTER_FAILURES) {
      this.setState({ transport: "sse" });
      // Each run without a stream gets one (openSse leaves those that have one alone).
      for (const sub of this.subs.values()) this.openSse(sub);
    }
    this.reconnectTimer = window.setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delay);
  }

  private clearTimer(name: "reconnectTimer" | "connectTimer") {
    const t = this[name];
    if (t !== null) clearTimeout(t);
    this[name] = null;
  }

  private onOnline = () => {
    if (this.ws) {
      this.setState({ status: this.ws.readyState === WebSocket.OPEN ? "open" : "connecting" });
      return;
    }
    this.setState({ failures: 0 });
    this.connect();
  };

  private onOffline = () => {
    this.clearTimer("reconnectTimer");
    this.setState({ status: "offline", retryAt: null });
  };

  // ------------------------------------------------------------ SSE fallback

  private openSse(sub: Sub) {
    if (sub.source || !navigator.onLine) return;
    const es = new EventSource(`/api/runs/${encodeURIComponent(sub.runId)}/events?after=${sub.lastSeq}`);
    sub.source = es;
    es.onmessage = (e: MessageEvent<string>) => {
      sub.sseFailures = 0;
      const msg = parseFrame(e.data);
      if (msg?.type === "event") this.deliver(msg);
    };
    es.onerror = () => {
      // CONNECTING: the browser retries by itself with Last-Event-ID.
      if (es.readyState !== EventSource.CLOSED || sub.source !== es) return;
      sub.source = null;
      if (this.subs.get(sub.runId) !== sub) return;
      // Refused (404, 204 …): try a few times (the socket may be back by then), then give up.
      if (++sub.sseFailures > 4) {
        this.drop(sub, false);
        sub.listener.onError("stream_unavailable", "The answer's stream could not be opened");
        return;
      }
      sub.retryTimer = window.setTimeout(() => {
        sub.retryTimer = null;
        if (this.subs.get(sub.runId) === sub && this.state.transport === "sse") this.openSse(sub);
      }, backoffDelay(sub.sseFailures, this.random()));
    };
  }
}

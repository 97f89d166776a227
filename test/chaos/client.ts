/**
 * One simulated chat user of the chaos run: its own identity (session cookie
 * or bearer JWT), the HTTP API through the proxy (every response logged with
 * its status and time; network errors, 5xx and 429 retried with backoff), and
 * one WebSocket that it keeps open: after any close it reconnects through the
 * proxy and subscribes again to every unfinished run with `after` = the last
 * seq it has, so it never shows an event twice or misses one.
 */
import WebSocket from "ws";
import { send, type Res } from "../helpers/dataApi.js";
import { ServerMessage, isTerminalEvent, type EventFrame } from "../../shared/realtime.js";

export interface HttpLogEntry {
  client: number;
  method: string;
  /** The route, ids replaced by `:id`. */
  route: string;
  /** 0: no answer (connection refused or reset). */
  status: number;
  start: number;
  end: number;
  /** The `error.code` of an error answer. */
  code?: string;
}

export interface TrackedRun {
  runId: string;
  conversationId: string;
  kind: string;
  content: string;
  /** Events shown, in seq order, each once. */
  events: EventFrame[];
  lastSeq: number;
  terminal: string | null;
  /** When the 202 came back. */
  postedAt: number;
  lastEventAt: number;
  cancelRequested: boolean;
  onEvent: Set<() => void>;
}

export interface ClientStats {
  /** Subscriptions renewed with `after` > 0 after a reconnect or a stream error. */
  resumes: number;
  /** Sockets this client dropped on purpose. */
  drops: number;
  /** Socket closes of any cause (drops, 1012 on drain, killed instance). */
  closes: number;
  reconnects: number;
  duplicates: number;
  /** Error frames by code. */
  errorFrames: Record<string, number>;
  /** Resubscribes because a stream went silent for `watchdogMs`. */
  watchdogResubscribes: number;
}

export interface ClientOptions {
  index: number;
  baseUrl: string;
  wsUrl: string;
  auth: { cookie?: string; bearer?: string };
  httpLog: HttpLogEntry[];
  /** Protocol breaches seen by this client (gaps, invalid frames). */
  breaches: string[];
  /** A stream silent this long gets a resubscribe (counted, not a breach). */
  watchdogMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const routeOf = (p: string) => p.replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi, ":id");

export class ChaosClient {
  readonly runs = new Map<string, TrackedRun>();
  readonly stats: ClientStats = { resumes: 0, drops: 0, closes: 0, reconnects: 0, duplicates: 0, errorFrames: {}, watchdogResubscribes: 0 };
  private ws: WebSocket | null = null;
  private open = false;
  private stopped = false;
  private cookie: string | undefined;
  private watchdog: NodeJS.Timeout;

  constructor(private readonly o: ClientOptions) {
    this.cookie = o.auth.cookie;
    const watchdogMs = o.watchdogMs ?? 20_000;
    this.watchdog = setInterval(() => {
      const now = Date.now();
      for (const run of this.runs.values()) {
        if (run.terminal || now - run.lastEventAt < watchdogMs) continue;
        run.lastEventAt = now;
        this.stats.watchdogResubscribes++;
        this.subscribe(run);
      }
    }, 1000);
    this.watchdog.unref();
  }

  get index() {
    return this.o.index;
  }

  // ------------------------------------------------------------------ HTTP

  /** One request, logged; no retry. */
  async once(method: string, path: string, json?: unknown): Promise<Res | null> {
    const headers: Record<string, string> = {};
    if (this.cookie) headers.cookie = this.cookie;
    if (this.o.auth.bearer) headers.authorization = `Bearer ${this.o.auth.bearer}`;
    const start = Date.now();
    try {
      const res = await send(this.o.baseUrl, method, path, json !== undefined ? { headers, json } : { headers });
      const code = res.status >= 400 ? (res.body as { error?: { code?: string } } | undefined)?.error?.code : undefined;
      this.o.httpLog.push({ client: this.o.index, method, route: routeOf(path), status: res.status, start, end: Date.now(), ...(code ? { code } : {}) });
      for (const line of res.setCookie) {
        const pair = line.split(";")[0] ?? "";
        if (/^(__Host-)?esa_sid=/.test(pair)) this.cookie = pair;
      }
      return res;
    } catch {
      this.o.httpLog.push({ client: this.o.index, method, route: routeOf(path), status: 0, start, end: Date.now() });
      return null;
    }
  }

  /**
   * A request retried on no answer, 5xx and 429 with backoff (250 ms doubling
   * to 2 s) for up to `budgetMs`; any other answer is returned.
   */
  async request(method: string, path: string, json?: unknown, budgetMs = 60_000): Promise<Res> {
    const until = Date.now() + budgetMs;
    for (let delay = 250; ; delay = Math.min(delay * 2, 2000)) {
      const res = await this.once(method, path, json);
      if (res && res.status < 500 && res.status !== 429) return res;
      if (Date.now() + delay > until || this.stopped) {
        throw new Error(`client ${this.o.index}: ${method} ${path} got no usable answer within ${budgetMs} ms (last: ${res ? `${res.status} ${res.text.slice(0, 200)}` : "no answer"})`);
      }
      await sleep(delay);
    }
  }

  // ------------------------------------------------------------------ WebSocket

  /** Opens the socket (retrying until it works) and keeps it open until stop(). */
  async connect(timeoutMs = 30_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (let delay = 100; !this.stopped; delay = Math.min(delay * 2, 1000)) {
      if (await this.openOnce()) return;
      if (Date.now() > until) throw new Error(`client ${this.o.index}: no WebSocket within ${timeoutMs} ms`);
      await sleep(delay);
    }
  }

  private openOnce(): Promise<boolean> {
    return new Promise((resolve) => {
      const headers: Record<string, string> = {};
      if (this.cookie) headers.cookie = this.cookie;
      if (this.o.auth.bearer) headers.authorization = `Bearer ${this.o.auth.bearer}`;
      const ws = new WebSocket(this.o.wsUrl, { headers, perMessageDeflate: false, handshakeTimeout: 5000 });
      let settled = false;
      ws.on("error", () => undefined);
      ws.once("open", () => {
        settled = true;
        this.ws = ws;
        this.open = true;
        for (const run of this.runs.values()) {
          if (run.terminal) continue;
          if (run.lastSeq > 0) this.stats.resumes++;
          this.subscribe(run);
        }
        resolve(true);
      });
      ws.on("message", (data: Buffer) => this.onFrame(data.toString("utf8")));
      ws.once("close", () => {
        if (!settled) {
          settled = true;
          resolve(false);
          return;
        }
        this.open = false;
        this.stats.closes++;
        if (this.ws === ws) this.ws = null;
        if (!this.stopped) void this.reconnect();
      });
    });
  }

  private async reconnect() {
    this.stats.reconnects++;
    await sleep(50 + ((this.o.index * 37) % 150));
    await this.connect(120_000).catch((err: unknown) => this.o.breaches.push(String(err)));
  }

  /** Drops the socket without a close handshake, as a network failure would. */
  drop() {
    if (!this.ws || !this.open) return false;
    this.stats.drops++;
    this.ws.terminate();
    return true;
  }

  get connected() {
    return this.open;
  }

  private sendFrame(msg: unknown): boolean {
    if (!this.ws || !this.open) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  private subscribe(run: TrackedRun) {
    this.sendFrame({ type: "subscribe", runId: run.runId, after: run.lastSeq });
  }

  private onFrame(raw: string) {
    let parsed: ReturnType<typeof ServerMessage.safeParse>;
    try {
      parsed = ServerMessage.safeParse(JSON.parse(raw));
    } catch {
      this.o.breaches.push(`client ${this.o.index}: a frame that is not JSON: ${raw.slice(0, 200)}`);
      return;
    }
    if (!parsed.success) {
      this.o.breaches.push(`client ${this.o.index}: a frame outside the protocol: ${raw.slice(0, 200)}`);
      return;
    }
    const f = parsed.data;
    switch (f.type) {
      case "event": {
        const run = this.runs.get(f.runId);
        if (!run) return;
        if (f.seq <= run.lastSeq) {
          this.stats.duplicates++;
          return;
        }
        if (f.seq !== run.lastSeq + 1) {
          this.o.breaches.push(`client ${this.o.index}: run ${f.runId} jumped from seq ${run.lastSeq} to ${f.seq} (events missed)`);
          this.subscribe(run);
          return;
        }
        run.events.push(f);
        run.lastSeq = f.seq;
        run.lastEventAt = Date.now();
        if (isTerminalEvent(f.event)) run.terminal = f.event;
        for (const w of [...run.onEvent]) w();
        return;
      }
      case "error": {
        this.stats.errorFrames[f.code] = (this.stats.errorFrames[f.code] ?? 0) + 1;
        const run = f.runId ? this.runs.get(f.runId) : undefined;
        if (run && !run.terminal) {
          // "internal": reading the run failed (the database restarting); subscribe again shortly.
          if (run.lastSeq > 0) this.stats.resumes++;
          setTimeout(() => this.subscribe(run), 300).unref();
        }
        return;
      }
      // This client posts over HTTP and never sends `send`: no `sent` comes.
      case "subscribed":
      case "unsubscribed":
      case "sent":
        return;
      default: {
        const unreachable: never = f;
        throw new Error(`unknown frame ${JSON.stringify(unreachable)}`);
      }
    }
  }

  // ------------------------------------------------------------------ runs

  /** Starts following a run (subscribes now if the socket is open, else on reconnect). */
  track(run: Omit<TrackedRun, "events" | "lastSeq" | "terminal" | "lastEventAt" | "cancelRequested" | "onEvent">): TrackedRun {
    const t: TrackedRun = { ...run, events: [], lastSeq: 0, terminal: null, lastEventAt: Date.now(), cancelRequested: false, onEvent: new Set() };
    this.runs.set(run.runId, t);
    this.subscribe(t);
    return t;
  }

  /** Resolves once `pred` holds for the run (checked on each event), or false after `timeoutMs`. */
  waitRun(run: TrackedRun, pred: (r: TrackedRun) => boolean, timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const check = () => {
        if (pred(run)) finish(true);
      };
      const timer = setTimeout(() => finish(false), timeoutMs);
      const finish = (v: boolean) => {
        clearTimeout(timer);
        run.onEvent.delete(check);
        resolve(v);
      };
      run.onEvent.add(check);
      check();
    });
  }

  /** Asks to cancel over the socket when it is open, else over HTTP. */
  async cancel(run: TrackedRun, via: "ws" | "http") {
    run.cancelRequested = true;
    if (via === "ws" && this.sendFrame({ type: "cancel", runId: run.runId })) return;
    const res = await this.request("POST", `/api/runs/${run.runId}/cancel`, {});
    if (res.status >= 300) this.o.breaches.push(`client ${this.o.index}: cancel of ${run.runId} answered ${res.status} ${res.text.slice(0, 200)}`);
  }

  stop() {
    this.stopped = true;
    clearInterval(this.watchdog);
    this.ws?.terminate();
  }
}

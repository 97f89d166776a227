/**
 * Stream test helpers: an in-process realtime stack (hub, WebSocket server,
 * SSE, data API) on a test database, a WebSocket client that records every
 * frame, a raw upgrade request (to see refusals before any handshake) and an
 * SSE reader. Events are written the way the queue writes them
 * (appendEvents), so no agent runs in process.
 */
import { request as httpRequest } from "node:http";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Socket } from "node:net";
import { Router } from "express";
import WebSocket from "ws";
import { loadConfig, type Config, type Env } from "../../server/config.js";
import { createListener, type Listener } from "../../server/db/listener.js";
import { createIdentity } from "../../server/auth/identity.js";
import { createDataApi } from "../../server/http/routes/api.js";
import { requestCancel } from "../../server/queue/cancel.js";
import { appendEvents, type PendingEvent } from "../../server/queue/runEvents.js";
import { createRunHub, type HubOptions, type RunHub } from "../../server/realtime/hub.js";
import { createRealtimeMetrics } from "../../server/realtime/metrics.js";
import { createRealtimeServer, type RealtimeOptions, type RealtimeServer, type RealtimeServerDeps } from "../../server/realtime/wsServer.js";
import { messageStoreFor } from "../../server/data/messages.js";
import { createApiRateLimiter } from "../../server/http/middleware/security.js";
import { createRunEventsHandler, type SseOptions } from "../../server/realtime/sse.js";
import { applyTextEvent, ServerMessage, type EventFrame } from "../../shared/realtime.js";
import { startTestApp, type TestApp } from "./app.js";
import { Client, TEST_JWT_SECRET, TEST_SESSION_SECRET } from "./dataApi.js";
import type { TestDatabase } from "./db.js";
import { spawnServer, type ServerProcess } from "./spawnServer.js";
import { waitForStatus } from "../fixtures/process.js";
import { createCapturedLogger } from "./logs.js";

export { TEST_JWT_SECRET, TEST_SESSION_SECRET };

export interface StackOptions {
  env?: Env;
  /** false: no LISTEN connection, the hub polls (a transaction pooler). Default true. */
  listen?: boolean;
  hub?: HubOptions;
  ws?: RealtimeOptions;
  sse?: SseOptions;
  /** The WebSocket server's `send` (default: MessageStore.post on the test database, as services.ts wires it). */
  postMessage?: RealtimeServerDeps["postMessage"];
}

export interface RealtimeStack {
  app: TestApp;
  baseUrl: string;
  wsUrl: string;
  config: Config;
  hub: RunHub;
  realtime: RealtimeServer;
  listener: Listener | null;
  /** runs.instance_id that counts as "this instance". */
  instanceId: string;
  logLines: Record<string, unknown>[];
  /** A new anonymous user (cookie set). */
  user(): Promise<Client>;
  /** A new conversation with one message: its queued run's id. */
  newRun(client: Client, content?: string): Promise<string>;
  /** Appends events as the executor does; returns the last seq. */
  append(runId: string, events: PendingEvent[], attempt?: number): Promise<number>;
  /** Sets the run's status (with `finished_at` for a terminal one). */
  setStatus(runId: string, status: string, instanceId?: string | null): Promise<void>;
  metricsText(): Promise<string>;
  close(): Promise<void>;
}

export const text = (s: string): PendingEvent => ({ type: "text.delta", data: { text: s } });

export async function startRealtimeStack(db: TestDatabase, opts: StackOptions = {}): Promise<RealtimeStack> {
  const env: Env = {
    NODE_ENV: "test",
    LOG_LEVEL: "info",
    RATE_LIMIT_MAX: "1000000",
    SESSION_SECRET: TEST_SESSION_SECRET,
    JWT_SECRET: TEST_JWT_SECRET,
    ...opts.env,
  };
  const config = loadConfig(env);
  const { log, lines: logLines } = createCapturedLogger(config);
  const dataDir = mkdtempSync(path.join(tmpdir(), "esa-rt-"));
  const outer = Router();
  // One limiter for the app and the socket, as boot.ts makes it.
  const apiRateLimiter = createApiRateLimiter(config);
  const app = await startTestApp({ env, apiRouters: [outer], apiRateLimiter });
  const instanceId = `test-${randomBytes(4).toString("hex")}`;

  const listener = opts.listen === false ? null : createListener({ url: db.url, log });
  listener?.start();
  const hub = createRunHub({ pool: db.pool, listener, log, metrics: app.metrics, instanceId, ...(opts.hub ? { options: opts.hub } : {}) });
  await hub.start();
  const metrics = createRealtimeMetrics(app.metrics);
  const identity = createIdentity({ config, log, pool: db.pool, dataDir });
  const runEvents = createRunEventsHandler({ pool: db.pool, hub, log, metrics, ...(opts.sse ? { options: opts.sse } : {}) });
  outer.use(createDataApi({ config, log, pool: db.pool, dataDir, identity, runEvents }));
  // The message POST's store, as services.ts gives the WebSocket server.
  const messages = messageStoreFor(config, db.pool);
  const realtime = createRealtimeServer({
    config,
    log,
    pool: db.pool,
    hub,
    metrics,
    identify: identity.identify,
    cancelRun: (userId, runId) => requestCancel(db.pool, userId, runId),
    postMessage: opts.postMessage ?? ((userId, conversationId, content, agent) => messages.post(userId, conversationId, content, agent)),
    rateLimiter: apiRateLimiter,
    ...(opts.ws ? { options: opts.ws } : {}),
  });
  app.server.on("upgrade", (req, socket, head) => {
    socket.on("error", () => undefined);
    void realtime.handleUpgrade(req, socket, head);
  });
  if (listener) await waitUntil(() => listener.connected, 5000);

  return {
    app,
    baseUrl: app.baseUrl,
    wsUrl: app.baseUrl.replace(/^http/, "ws") + "/ws",
    config,
    hub,
    realtime,
    listener,
    instanceId,
    logLines,
    async user() {
      const c = new Client(app.baseUrl);
      await c.userId();
      return c;
    },
    async newRun(client, content = "hello") {
      const conv = await client.post("/api/conversations", {});
      if (conv.status !== 201) throw new Error(`conversation: ${conv.status} ${conv.text}`);
      const posted = await client.post(`/api/conversations/${conv.body.id as string}/messages`, { content });
      if (posted.status !== 202) throw new Error(`message: ${posted.status} ${posted.text}`);
      return posted.body.run.id as string;
    },
    async append(runId, events, attempt = 1) {
      // Only the run's current attempt may write (appendEvents checks runs.attempt): claim it as the executor would.
      await db.pool.query("update runs set attempt = $2 where id = $1 and attempt <> $2", [runId, attempt]);
      return appendEvents(db.pool, runId, attempt, events);
    },
    async setStatus(runId, status, instance) {
      await db.pool.query(
        `update runs set status = $2, instance_id = coalesce($3, instance_id),
           finished_at = case when $2 in ('succeeded', 'failed', 'cancelled') then now() else finished_at end
         where id = $1`,
        [runId, status, instance ?? null],
      );
    },
    metricsText: () => app.metrics.registry.metrics(),
    async close() {
      await realtime.close();
      await hub.stop();
      await listener?.stop();
      await app.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function waitUntil(fn: () => boolean | Promise<boolean>, timeoutMs = 5000, what = "condition"): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A metric's value from Prometheus text (first sample whose name and labels match). */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const l = m[2] ?? "";
    if (Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`))) return Number(m[3]);
  }
  return NaN;
}

export interface ConnectOptions {
  cookie?: string;
  bearer?: string;
  origin?: string;
  headers?: Record<string, string>;
  /** Answer pings (default true). */
  autoPong?: boolean;
  perMessageDeflate?: boolean;
}

function headersFor(opts: ConnectOptions): Record<string, string> {
  const h: Record<string, string> = { ...opts.headers };
  if (opts.cookie) h.cookie = opts.cookie;
  if (opts.bearer) h.authorization = `Bearer ${opts.bearer}`;
  if (opts.origin) h.origin = opts.origin;
  return h;
}

/** Frames for an error message, long strings cut. */
const brief = (frames: unknown[]) => JSON.stringify(frames, (_k, v: unknown) => (typeof v === "string" && v.length > 80 ? `${v.slice(0, 80)}…(${v.length})` : v));

/** A WebSocket client that keeps every frame it gets, parsed and checked against ServerMessage. */
export class WsClient {
  readonly frames: ServerMessage[] = [];
  /** Frames that did not parse as ServerMessage (a protocol bug if any). */
  readonly invalid: string[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters = new Set<() => void>();
  private isClosed = false;

  private constructor(readonly ws: WebSocket) {
    ws.on("message", (data: Buffer) => {
      const raw = data.toString("utf8");
      const parsed = ServerMessage.safeParse(JSON.parse(raw));
      if (parsed.success) this.frames.push(parsed.data);
      else this.invalid.push(raw);
      this.wake();
    });
    ws.on("error", () => undefined);
    this.closed = new Promise((resolve) =>
      ws.once("close", (code, reason) => {
        this.isClosed = true;
        this.wake();
        resolve({ code, reason: reason.toString() });
      }),
    );
  }

  static open(url: string, opts: ConnectOptions = {}): Promise<WsClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: headersFor(opts), autoPong: opts.autoPong ?? true, perMessageDeflate: opts.perMessageDeflate ?? false });
      const client = new WsClient(ws);
      ws.once("open", () => resolve(client));
      ws.once("unexpected-response", (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
      ws.once("error", reject);
    });
  }

  private wake() {
    for (const w of [...this.waiters]) w();
  }

  get closedNow() {
    return this.isClosed;
  }

  send(msg: unknown) {
    this.ws.send(typeof msg === "string" ? msg : JSON.stringify(msg));
  }

  /** The underlying TCP socket (to stop reading from it). */
  get socket(): Socket {
    return (this.ws as unknown as { _socket: Socket })._socket;
  }

  /** Resolves with the first frame (from index `from`) matching `pred`. */
  waitFor<T extends ServerMessage>(pred: (f: ServerMessage) => f is T, timeoutMs?: number, from?: number): Promise<T>;
  waitFor(pred: (f: ServerMessage) => boolean, timeoutMs?: number, from?: number): Promise<ServerMessage>;
  waitFor(pred: (f: ServerMessage) => boolean, timeoutMs = 10_000, from = 0): Promise<ServerMessage> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = this.frames.slice(from).find(pred);
        if (hit) {
          done();
          resolve(hit);
        } else if (this.isClosed) {
          done();
          reject(new Error(`closed before the frame; last frames: ${brief(this.frames.slice(-3))}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out waiting for a frame; last frames: ${brief(this.frames.slice(-3))}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  events(runId?: string): EventFrame[] {
    return this.frames.filter((f): f is EventFrame => f.type === "event" && (runId === undefined || f.runId === runId));
  }

  /** Resolves once the run's stream ended (`unsubscribed finished`). */
  finished(runId: string, timeoutMs = 20_000) {
    return this.waitFor((f) => f.type === "unsubscribed" && f.runId === runId && f.reason === "finished", timeoutMs);
  }

  close() {
    this.ws.close();
    return this.closed;
  }
}

/** The text a client shows for these events: deltas appended, `reset` starting over. */
export const textOf = (events: Pick<EventFrame, "event" | "data">[]) => events.reduce(applyTextEvent, "");

/**
 * A raw upgrade request: 101 when the server took it, else the refusal's
 * status and body, before any handshake.
 */
export function rawUpgrade(url: string, opts: ConnectOptions = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      host: u.hostname,
      port: u.port,
      path: u.pathname + u.search,
      headers: {
        connection: "Upgrade",
        upgrade: "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": randomBytes(16).toString("base64"),
        ...headersFor(opts),
      },
    });
    req.on("upgrade", (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode ?? 0, headers: res.headers, body: "" });
    });
    req.on("response", (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

export interface SseEvent {
  id?: string;
  data?: string;
  comment?: string;
  retry?: string;
}

/** GET an SSE stream; `events` fills as blocks arrive; `ended` resolves when the server ends the response. */
export function openSse(baseUrl: string, urlPath: string, headers: Record<string, string> = {}) {
  const u = new URL(urlPath, baseUrl);
  const events: SseEvent[] = [];
  let buf = "";
  let status = 0;
  let resHeaders: Record<string, string | string[] | undefined> = {};
  const waiters = new Set<() => void>();
  let destroy = () => undefined as void;
  const ended = new Promise<void>((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, path: u.pathname + u.search, headers: { accept: "text/event-stream", ...headers }, agent: false }, (res) => {
      status = res.statusCode ?? 0;
      resHeaders = res.headers;
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        buf += chunk;
        let i: number;
        while ((i = buf.indexOf("\n\n")) !== -1) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const ev: SseEvent = {};
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) ev.comment = line.slice(1).trim();
            else {
              const c = line.indexOf(":");
              const field = line.slice(0, c);
              const value = line.slice(c + 1).replace(/^ /, "");
              if (field === "id" || field === "data" || field === "retry") ev[field] = value;
            }
          }
          events.push(ev);
        }
        for (const w of [...waiters]) w();
      });
      res.on("end", () => resolve());
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
    destroy = () => void req.destroy();
  });
  ended.catch(() => undefined);
  return {
    events,
    ended,
    get status() {
      return status;
    },
    get headers() {
      return resHeaders;
    },
    frames: () => events.filter((e) => e.data !== undefined).map((e) => JSON.parse(e.data as string) as EventFrame),
    waitFor(pred: (e: SseEvent) => boolean, timeoutMs = 10_000): Promise<SseEvent> {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = events.find(pred);
          if (hit) {
            clearTimeout(timer);
            waiters.delete(check);
            resolve(hit);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`SSE: timed out; got ${JSON.stringify(events.slice(-5))}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    close: () => destroy(),
  };
}

/** A small seeded PRNG (mulberry32), so a failing random run can be replayed. */
export function seededRandom(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------- spawned instances

export interface Instance {
  proc: ServerProcess;
  baseUrl: string;
  wsUrl: string;
}

/** The built server on `db` (run `npm run build` first), talking to the fake LLM; resolves once /ready says 200. */
export async function spawnInstance(db: TestDatabase, llmUrl: string, env: Record<string, string | undefined> = {}): Promise<Instance> {
  const proc = await spawnServer({
    env: {
      DATABASE_URL: db.url,
      SESSION_SECRET: TEST_SESSION_SECRET,
      JWT_SECRET: TEST_JWT_SECRET,
      OPENAI_API_KEY: "sk-realtime-test",
      OPENAI_BASE_URL: llmUrl,
      RATE_LIMIT_MAX: "100000",
      HEARTBEAT_MS: "500",
      ...env,
    },
  });
  await waitForStatus(`${proc.baseUrl}/ready`, 200, 30_000);
  return { proc, baseUrl: proc.baseUrl, wsUrl: proc.baseUrl.replace(/^http/, "ws") + "/ws" };
}

/** A new conversation with one message for `agent`; the run id. */
export async function ask(client: Client, content: string, agent?: string): Promise<string> {
  const conv = await client.post("/api/conversations", {});
  if (conv.status !== 201) throw new Error(`conversation: ${conv.status} ${conv.text}`);
  const posted = await client.post(`/api/conversations/${conv.body.id as string}/messages`, { content, ...(agent ? { agent } : {}) });
  if (posted.status !== 202) throw new Error(`message: ${posted.status} ${posted.text}`);
  return posted.body.run.id as string;
}

/** The stored assistant message of a run, if any. */
export async function assistantText(db: TestDatabase, runId: string): Promise<string | undefined> {
  const r = await db.pool.query<{ content: string }>("select content from messages where run_id = $1 and role = 'assistant'", [runId]);
  return r.rows[0]?.content;
}

/** Seqs 1..n, each once, in order: nothing missed, nothing twice. */
export function assertContiguous(events: { seq: number }[]): void {
  events.forEach((e, i) => {
    if (e.seq !== i + 1) throw new Error(`event ${i} has seq ${e.seq}, expected ${i + 1} (seqs: ${events.map((x) => x.seq).join(",")})`);
  });
}

/** Prose with non-ASCII (BMP) characters, `n` characters long. */
export function longText(n: number): string {
  const words = ["streaming", "tokens", "naïve", "café", "über", "日本語", "Ωmega", "résumé", "a", "of", "the", "—", "“quoted”", "line\n", "tab\t", "back\\slash", '"q"', "€5"];
  let s = "";
  for (let i = 0; s.length < n; i++) s += words[(i * 7 + (i >> 3)) % words.length] + " ";
  return s.slice(0, n);
}

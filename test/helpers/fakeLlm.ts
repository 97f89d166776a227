/**
 * A loopback HTTP server speaking the OpenAI chat completions wire format:
 * `POST /v1/chat/completions`, SSE `data: {json}\n\n` chunks with
 * `choices[].delta`, tool-call arguments split across chunks, a final usage
 * chunk when `stream_options.include_usage`, then `data: [DONE]`.
 *
 * Each request takes the next scripted reply (else the default handler) and
 * may inject a fault: an HTTP status (429 with retry-after, 500, 401 …), a
 * dropped socket, a stall or a malformed line after N chunks. Requests and
 * client disconnects are recorded.
 */
import { createServer, type IncomingMessage, type ServerResponse, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { randomBytes } from "node:crypto";

export type FakeFault =
  /** Answer with this status and an OpenAI error body instead of a stream. */
  | { kind: "status"; status: number; retryAfter?: string; retryAfterMs?: number; code?: string; message?: string }
  /** Destroy the socket after N data chunks (the first, role-only chunk counts). */
  | { kind: "drop"; afterChunks: number }
  /** Stop sending after N data chunks, keeping the connection open until the client leaves. */
  | { kind: "stall"; afterChunks: number }
  /** Send a line that is not JSON after N data chunks, then carry on. */
  | { kind: "malformed"; afterChunks: number };

export interface FakeToolCall {
  id?: string;
  name: string;
  /** An object is JSON-encoded. */
  arguments: string | Record<string, unknown>;
  /** Characters of arguments per chunk. Default 5. */
  fragmentSize?: number;
}

export interface FakeReply {
  text?: string;
  /** Characters per content chunk. Default 4. */
  chunkSize?: number;
  /** Pause between chunks, ms. Default 0. */
  delayMs?: number;
  toolCalls?: FakeToolCall[];
  /** Default: "tool_calls" with tool calls, else "stop". */
  finishReason?: string;
  /** Default: prompt = characters of the request's messages / 4, completion = chunks sent. */
  usage?: { promptTokens: number; completionTokens: number };
  fault?: FakeFault;
}

export interface RecordedRequest {
  index: number;
  method: string;
  path: string;
  headers: IncomingMessage["headers"];
  body: ChatBody;
  /** The client went away before the response ended (a drop fault is not counted). */
  disconnected: boolean;
  /** A `drop` fault closed the socket. */
  droppedByServer: boolean;
  /** Data chunks written before the response ended or the client left. */
  chunksSent: number;
}

export interface ChatBody {
  model?: string;
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
  max_tokens?: number;
  messages?: { role: string; content?: string | null; tool_calls?: unknown[]; tool_call_id?: string }[];
  tools?: { type: string; function: { name: string; description?: string; parameters?: unknown } }[];
  tool_choice?: unknown;
  [k: string]: unknown;
}

export type ReplyFn = (body: ChatBody, req: RecordedRequest) => FakeReply;

export interface FakeLlm {
  /** OPENAI_BASE_URL for this server: `http://127.0.0.1:<port>/v1`. */
  url: string;
  port: number;
  requests: RecordedRequest[];
  /** Queues replies for the next requests, in order. */
  script(...replies: (FakeReply | ReplyFn)[]): void;
  /**
   * Queues replies for the next requests whose last user message is exactly
   * `userText`, in order, ahead of script()'s queue: a request the test did not
   * expect (an earlier test's run retrying under load, say) cannot take them.
   */
  scriptFor(userText: string, ...replies: (FakeReply | ReplyFn)[]): void;
  /** The reply when nothing is queued (default: `demoReply`). */
  setDefault(fn: ReplyFn): void;
  /** Resolves once request `index` (0-based) has arrived. */
  waitForRequest(index: number): Promise<RecordedRequest>;
  /** Resolves once the client of request `index` has disconnected before the end of the response. */
  waitForDisconnect(index: number): Promise<RecordedRequest>;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const words = (s: string) => Math.max(1, Math.ceil(s.length / 4));
const lastUser = (body: ChatBody) => [...(body.messages ?? [])].reverse().find((m) => m.role === "user")?.content ?? "";

/**
 * The reply when nothing is scripted, fit for trying the UI: the router tool
 * gets a choice, the math tool is called for a message with a number in it,
 * a tool result is read back, anything else is echoed.
 */
export function demoReply(body: ChatBody): FakeReply {
  const messages = body.messages ?? [];
  const last = messages[messages.length - 1];
  const tools = (body.tools ?? []).map((t) => t.function.name);
  const user = lastUser(body);
  if (tools.includes("route")) {
    const agent = /\d/.test(user) ? "math" : /^(hi|hello|hey)\b/i.test(user) ? "hello" : "assistant";
    return { toolCalls: [{ name: "route", arguments: { agent, reason: "the fake LLM's demo choice" } }] };
  }
  if (last?.role === "tool") return { text: `The math agent says: ${last.content ?? ""}. (This answer comes from the fake LLM.)`, chunkSize: 3, delayMs: 25 };
  const expr = /[\d(][\d\s+\-*/^().%!,]*[\d)!]/.exec(user)?.[0];
  if (tools.includes("math") && expr && /[+\-*/^!]/.test(expr)) {
    return { toolCalls: [{ name: "math", arguments: { expression: expr.trim() } }] };
  }
  return {
    text: `This is the fake LLM (scripts/fake-llm.ts), streaming a few characters at a time. You said: "${user.slice(0, 200)}".`,
    chunkSize: 3,
    delayMs: 25,
  };
}

function chunkPayload(id: string, model: string, created: number, choice: Record<string, unknown> | null, usage?: unknown) {
  return {
    id,
    object: "chat.completion.chunk",
    created,
    model,
    system_fingerprint: "fp_fake",
    choices: choice ? [{ index: 0, logprobs: null, finish_reason: null, ...choice }] : [],
    ...(usage !== undefined ? { usage } : {}),
  };
}

export async function startFakeLlm(opts: { apiKey?: string; port?: number; host?: string } = {}): Promise<FakeLlm> {
  const queue: (FakeReply | ReplyFn)[] = [];
  const forUser = new Map<string, (FakeReply | ReplyFn)[]>();
  let fallback: ReplyFn = demoReply;
  const requests: RecordedRequest[] = [];
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const w of waiters) w();
  };
  const sockets = new Set<import("node:net").Socket>();

  function waitUntil<T>(check: () => T | undefined): Promise<T> {
    return new Promise((resolve) => {
      const run = () => {
        const v = check();
        if (v !== undefined) {
          waiters.delete(run);
          resolve(v);
        }
      };
      waiters.add(run);
      run();
    });
  }

  function sendError(res: ServerResponse, status: number, message: string, extra: { type?: string; code?: string | null; headers?: Record<string, string> } = {}) {
    const body = JSON.stringify({ error: { message, type: extra.type ?? "invalid_request_error", param: null, code: extra.code ?? null } });
    res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...extra.headers });
    res.end(body);
  }

  async function handle(req: IncomingMessage, res: ServerResponse) {
    const raw = await new Promise<string>((resolve, reject) => {
      let data = "";
      req.setEncoding("utf8");
      req.on("data", (c: string) => (data += c));
      req.on("end", () => resolve(data));
      req.on("error", reject);
    });
    if (req.method !== "POST" || !/\/chat\/completions$/.test(req.url ?? "")) {
      sendError(res, 404, `Unknown route ${req.method} ${req.url}`, { type: "not_found" });
      return;
    }
    let body: ChatBody;
    try {
      body = JSON.parse(raw) as ChatBody;
    } catch {
      sendError(res, 400, "We could not parse the JSON body of your request.");
      return;
    }
    const rec: RecordedRequest = {
      index: requests.length,
      method: req.method,
      path: req.url ?? "",
      headers: req.headers,
      body,
      disconnected: false,
      droppedByServer: false,
      chunksSent: 0,
    };
    requests.push(rec);
    res.on("close", () => {
      if (!res.writableFinished && !rec.droppedByServer) {
        rec.disconnected = true;
        notify();
      }
    });
    notify();

    const presented = /^Bearer (.*)$/.exec(req.headers.authorization ?? "")?.[1];
    if (opts.apiKey !== undefined && presented !== opts.apiKey) {
      // Like OpenAI, the message names the key presented: the client must not pass it on.
      sendError(res, 401, `Incorrect API key provided: ${presented ?? "(none)"}.`, { code: "invalid_api_key" });
      return;
    }
    const next = forUser.get(lastUser(body))?.shift() ?? queue.shift() ?? fallback;
    const reply = typeof next === "function" ? next(body, rec) : next;
    const fault = reply.fault;
    if (fault?.kind === "status") {
      const headers: Record<string, string> = {};
      if (fault.retryAfter !== undefined) headers["retry-after"] = fault.retryAfter;
      if (fault.retryAfterMs !== undefined) headers["retry-after-ms"] = String(fault.retryAfterMs);
      const message = fault.message ?? (fault.status === 401 ? `Incorrect API key provided: ${presented ?? "(none)"}.` : `Fake fault: HTTP ${fault.status}`);
      sendError(res, fault.status, message, { code: fault.code ?? null, type: fault.status >= 500 ? "server_error" : "invalid_request_error", headers });
      return;
    }

    const id = `chatcmpl-${randomBytes(6).toString("hex")}`;
    const model = body.model ?? "fake-model";
    const created = Math.floor(Date.now() / 1000);
    const toolCalls = (reply.toolCalls ?? []).map((t, i) => ({
      id: t.id ?? `call_${randomBytes(4).toString("hex")}_${i}`,
      name: t.name,
      args: typeof t.arguments === "string" ? t.arguments : JSON.stringify(t.arguments),
      fragmentSize: t.fragmentSize ?? 5,
    }));
    const finishReason = reply.finishReason ?? (toolCalls.length ? "tool_calls" : "stop");
    const text = reply.text ?? "";
    const chunkSize = Math.max(1, reply.chunkSize ?? 4);
    const promptTokens = reply.usage?.promptTokens ?? words(JSON.stringify(body.messages ?? []));

    if (!body.stream) {
      const message = {
        role: "assistant",
        content: text || null,
        ...(toolCalls.length ? { tool_calls: toolCalls.map((t) => ({ id: t.id, type: "function", function: { name: t.name, arguments: t.args } })) } : {}),
      };
      const completion = {
        id,
        object: "chat.completion",
        created,
        model,
        choices: [{ index: 0, message, logprobs: null, finish_reason: finishReason }],
        usage: { prompt_tokens: promptTokens, completion_tokens: reply.usage?.completionTokens ?? words(text), total_tokens: 0 },
      };
      completion.usage.total_tokens = completion.usage.prompt_tokens + completion.usage.completion_tokens;
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(completion));
      return;
    }

    // The stream: role, content pieces, tool-call fragments, finish, usage, [DONE].
    const includeUsage = body.stream_options?.include_usage === true;
    const usageField = includeUsage ? { usage: null } : {};
    const chunks: unknown[] = [{ ...chunkPayload(id, model, created, { delta: { role: "assistant", content: "", refusal: null } }), ...usageField }];
    for (let i = 0; i < text.length; i += chunkSize) {
      chunks.push({ ...chunkPayload(id, model, created, { delta: { content: text.slice(i, i + chunkSize) } }), ...usageField });
    }
    toolCalls.forEach((t, index) => {
      chunks.push({
        ...chunkPayload(id, model, created, { delta: { tool_calls: [{ index, id: t.id, type: "function", function: { name: t.name, arguments: "" } }] } }),
        ...usageField,
      });
      for (let i = 0; i < t.args.length; i += t.fragmentSize) {
        chunks.push({
          ...chunkPayload(id, model, created, { delta: { tool_calls: [{ index, function: { arguments: t.args.slice(i, i + t.fragmentSize) } }] } }),
          ...usageField,
        });
      }
    });
    chunks.push({ ...chunkPayload(id, model, created, { delta: {}, finish_reason: finishReason }), ...usageField });
    const contentChunks = chunks.length - 2;
    if (includeUsage) {
      const completion = reply.usage?.completionTokens ?? Math.max(1, contentChunks);
      chunks.push(chunkPayload(id, model, created, null, { prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion }));
    }

    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", connection: "keep-alive" });
    res.flushHeaders();
    for (const chunk of chunks) {
      if (res.destroyed) return;
      if (fault && fault.afterChunks === rec.chunksSent) {
        if (fault.kind === "drop") {
          rec.droppedByServer = true;
          res.socket?.destroy();
          return;
        }
        if (fault.kind === "stall") return; // keep the socket open; the client's stall timer or abort ends it
        if (fault.kind === "malformed") res.write('data: {"id": "broken", "choices": [{"delta": {"content": "oops"\n\n');
      }
      res.write(`data: ${JSON.stringify(chunk)}\n\n`);
      rec.chunksSent++;
      if (reply.delayMs) await sleep(reply.delayMs);
    }
    if (res.destroyed) return;
    res.end("data: [DONE]\n\n");
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) sendError(res, 500, `fake llm failed: ${String(err)}`, { type: "server_error" });
      else res.destroy();
    });
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(opts.port ?? 0, opts.host ?? "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${opts.host && opts.host !== "0.0.0.0" ? opts.host : "127.0.0.1"}:${port}/v1`,
    port,
    requests,
    script: (...replies) => void queue.push(...replies),
    scriptFor: (userText, ...replies) => {
      const q = forUser.get(userText) ?? [];
      q.push(...replies);
      forUser.set(userText, q);
    },
    setDefault: (fn) => void (fallback = fn),
    waitForRequest: (index) => waitUntil(() => requests[index]),
    waitForDisconnect: (index) => waitUntil(() => (requests[index]?.disconnected ? requests[index] : undefined)),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

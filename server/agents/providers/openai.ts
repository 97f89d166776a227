/**
 * The OpenAI-compatible chat provider (official `openai` package): streaming
 * chat completions to `OPENAI_BASE_URL` (default OpenAI), tool-call
 * fragments assembled, usage from the final chunk, the run's signal on the
 * HTTP request, a stall timer, and every failure turned into an AgentError
 * that never carries the key.
 */
import type OpenAI from "openai";
import type { ChatCompletionChunk, ChatCompletionMessageParam, ChatCompletionTool, ChatCompletionToolChoiceOption } from "openai/resources/chat/completions";
import type { Config } from "../../config.js";
import type { Logger } from "../../ops/logger.js";
import { AgentError } from "../types.js";

export const DEFAULT_BASE_URL = "https://api.openai.com/v1";
/** No chunk (or no response) for this long counts as a stall. Default 30 s. */
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000;

export type ChatMessage = ChatCompletionMessageParam;
export type ChatTool = ChatCompletionTool;

export interface ToolCall {
  id: string;
  name: string;
  /** The JSON arguments as the model wrote them (fragments joined). */
  arguments: string;
}

export type ChatStreamEvent =
  | { type: "text"; text: string }
  | { type: "tool_calls"; calls: ToolCall[] }
  | { type: "usage"; promptTokens: number; completionTokens: number }
  | { type: "finish"; reason: string };

export interface ChatRequest {
  messages: ChatMessage[];
  tools?: ChatTool[];
  toolChoice?: ChatCompletionToolChoiceOption;
  signal: AbortSignal;
  log?: Logger;
}

export interface ChatProvider {
  /** Null when usable, else why not. */
  unavailableReason(): string | null;
  /** Model name, for logs and the router. */
  readonly model: string;
  streamChat(req: ChatRequest): AsyncIterable<ChatStreamEvent>;
}

export interface OpenAiProviderOptions {
  /** Stall timeout, ms (see DEFAULT_IDLE_TIMEOUT_MS). */
  idleTimeoutMs?: number;
  /** Replaces global fetch (tests). */
  fetch?: typeof fetch;
}

/** Replaces the key, and anything shaped like one, in text bound for a log, an event or an error. */
export function redactSecrets(text: string, key: string | undefined): string {
  let out = text;
  if (key && key.length >= 4) out = out.split(key).join("[redacted]");
  return out.replace(/\b(sk-[A-Za-z0-9_-]{6})[A-Za-z0-9_-]+/g, "$1…[redacted]").replace(/(Bearer\s+)\S+/gi, "$1[redacted]");
}

/** `retry-after-ms`, else `retry-after` as seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(headers: Headers | undefined, now = Date.now()): number | undefined {
  const ms = Number(headers?.get("retry-after-ms"));
  if (headers?.get("retry-after-ms") && Number.isFinite(ms) && ms >= 0) return Math.ceil(ms);
  const raw = headers?.get("retry-after");
  if (!raw) return undefined;
  const seconds = Number(raw);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.ceil(seconds * 1000);
  const date = Date.parse(raw);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** Why a stream ended early, from our side. */
class StallError extends Error {
  override name = "StallError";
}

type OpenAiPackage = typeof import("openai");
let openAiPackage: Promise<OpenAiPackage> | undefined;
/**
 * The `openai` package loads with the first request, not at boot: a server
 * without OPENAI_API_KEY (the assistant unavailable) never pays its memory.
 */
const loadOpenAiPackage = () => (openAiPackage ??= import("openai"));

/** Maps whatever the client threw to an AgentError with a user-fit message and no secret in it. */
export function toAgentError(err: unknown, key: string | undefined, { APIConnectionError, APIConnectionTimeoutError, APIError }: OpenAiPackage): AgentError {
  if (err instanceof AgentError) return err;
  const clean = (s: string) => redactSecrets(s, key).slice(0, 300);
  if (err instanceof StallError) {
    return new AgentError("provider_stalled", "The OpenAI API stopped sending the answer (stalled)", { retryable: true });
  }
  if (err instanceof APIConnectionTimeoutError) {
    return new AgentError("provider_timeout", "The OpenAI API did not answer in time", { retryable: true });
  }
  if (err instanceof APIConnectionError) {
    return new AgentError("provider_unreachable", "Could not reach the OpenAI API", { retryable: true });
  }
  if (err instanceof APIError) {
    const status = err.status;
    const detail = clean((err.error as { message?: unknown } | undefined)?.message?.toString() ?? "");
    if (status === 401 || status === 403) {
      return new AgentError("provider_auth", `The OpenAI API rejected the key (HTTP ${status}); check OPENAI_API_KEY`, { retryable: false });
    }
    if (status === 429) {
      if (err.code === "insufficient_quota") {
        return new AgentError("provider_quota", "The OpenAI account has no quota left (HTTP 429 insufficient_quota)", { retryable: false });
      }
      const retryAfterMs = parseRetryAfter(err.headers);
      return new AgentError("provider_rate_limited", "The OpenAI API is rate limiting requests (HTTP 429)", {
        retryable: true,
        ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
      });
    }
    if (status === undefined) {
      return new AgentError("provider_error", `The OpenAI API reported an error mid-stream${detail ? `: ${detail}` : ""}`, { retryable: true });
    }
    if (status === 408 || status === 409 || status >= 500) {
      return new AgentError("provider_unavailable", `The OpenAI API failed (HTTP ${status})`, { retryable: true });
    }
    return new AgentError("provider_bad_request", `The OpenAI API refused the request (HTTP ${status})${detail ? `: ${detail}` : ""}`, { retryable: false });
  }
  if (err instanceof SyntaxError) {
    return new AgentError("provider_malformed", "The OpenAI API sent a malformed stream", { retryable: true });
  }
  return new AgentError("provider_stream_dropped", "The connection to the OpenAI API dropped mid-answer", { retryable: true });
}

/** Tool calls arrive as fragments keyed by index: the first names it, later ones extend the arguments. */
function collectToolCalls(into: Map<number, ToolCall>, chunk: ChatCompletionChunk) {
  for (const choice of chunk.choices) {
    for (const part of choice.delta?.tool_calls ?? []) {
      const call = into.get(part.index) ?? { id: "", name: "", arguments: "" };
      if (part.id) call.id = part.id;
      if (part.function?.name) call.name += part.function.name;
      if (part.function?.arguments) call.arguments += part.function.arguments;
      into.set(part.index, call);
    }
  }
}

export function createOpenAiProvider(openai: Config["openai"], opts: OpenAiProviderOptions = {}): ChatProvider {
  const idleTimeoutMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const key = openai.apiKey;
  let client: OpenAI | null = null;
  // Every option is explicit so the package never reads the environment on its own (config.ts does).
  const getClient = (sdk: OpenAiPackage) =>
    (client ??= new sdk.OpenAI({
      // A server without auth (Ollama) still needs a value; the header is then dropped.
      apiKey: key ?? "unused",
      baseURL: openai.baseUrl ?? DEFAULT_BASE_URL,
      organization: null,
      project: null,
      webhookSecret: null,
      adminAPIKey: null,
      // The queue retries (counted, with backoff and Retry-After); a hidden retry here would hide failures.
      maxRetries: 0,
      logLevel: "off",
      ...(key ? {} : { defaultHeaders: { Authorization: null } }),
      ...(opts.fetch ? { fetch: opts.fetch } : {}),
    }));

  return {
    model: openai.model,
    unavailableReason: () => (key || openai.baseUrl ? null : "OPENAI_API_KEY is not set"),
    async *streamChat(req: ChatRequest): AsyncGenerator<ChatStreamEvent> {
      const sdk = await loadOpenAiPackage();
      const idle = new AbortController();
      const signal = AbortSignal.any([req.signal, idle.signal]);
      const timer = setTimeout(() => idle.abort(new StallError("stalled")), idleTimeoutMs);
      const calls = new Map<number, ToolCall>();
      let finish: string | null = null;
      try {
        const stream = await getClient(sdk).chat.completions.create(
          {
            model: openai.model,
            messages: req.messages,
            max_tokens: openai.maxTokens,
            stream: true,
            stream_options: { include_usage: true },
            ...(req.tools?.length ? { tools: req.tools } : {}),
            ...(req.tools?.length && req.toolChoice ? { tool_choice: req.toolChoice } : {}),
          },
          { signal },
        );
        for await (const chunk of stream) {
          // Chunks already buffered are not passed on once the run is aborted.
          req.signal.throwIfAborted();
          timer.refresh();
          const choice = chunk.choices[0];
          const text = choice?.delta?.content;
          if (text) yield { type: "text", text };
          collectToolCalls(calls, chunk);
          if (choice?.finish_reason) finish = choice.finish_reason;
          if (chunk.usage) {
            yield { type: "usage", promptTokens: chunk.usage.prompt_tokens ?? 0, completionTokens: chunk.usage.completion_tokens ?? 0 };
          }
        }
      } catch (err) {
        if (req.signal.aborted) throw req.signal.reason;
        if (idle.signal.aborted) throw toAgentError(new StallError("stalled"), key, sdk);
        const mapped = toAgentError(err, key, sdk);
        req.log?.warn({ code: mapped.code, retryable: mapped.opts.retryable }, "provider request failed");
        throw mapped;
      } finally {
        clearTimeout(timer);
      }
      // The package ends the stream quietly on abort and on a connection closed
      // before [DONE]; neither is an answer.
      if (req.signal.aborted) throw req.signal.reason;
      if (idle.signal.aborted) throw toAgentError(new StallError("stalled"), key, sdk);
      if (!finish) {
        const mapped = toAgentError(new Error("stream ended before finish_reason"), key, sdk);
        req.log?.warn({ code: mapped.code }, "provider stream ended early");
        throw mapped;
      }
      if (calls.size) yield { type: "tool_calls", calls: [...calls.entries()].sort(([a], [b]) => a - b).map(([, c]) => c) };
      yield { type: "finish", reason: finish };
    },
  };
}

/**
 * The assistant and its OpenAI provider against the fake server over
 * loopback: streaming, history, max_tokens, the math tool, usage, the
 * signal reaching the socket, provider errors, and the key kept secret.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { Writable } from "node:stream";
import { loadConfig, type Env } from "../server/config.js";
import { createLogger, type Logger } from "../server/ops/logger.js";
import { createAgentRegistry } from "../server/agents/registry.js";
import { unlimitedBudget, type LlmBudget } from "../server/agents/budget.js";
import { AgentError, type AgentContext, type AgentEvent, type ChatTurn } from "../server/agents/types.js";
import { parseRetryAfter } from "../server/agents/providers/openai.js";
import { startFakeLlm, type FakeLlm, type FakeReply } from "./helpers/fakeLlm.js";

const KEY = "sk-test-SECRETSECRETSECRET-0123456789abcdef";
let fake: FakeLlm;

beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
});

function setup(env: Env = {}, opts: { budget?: LlmBudget; idleTimeoutMs?: number } = {}) {
  const config = loadConfig({
    NODE_ENV: "test",
    LOG_LEVEL: "trace",
    OPENAI_API_KEY: KEY,
    OPENAI_BASE_URL: fake.url,
    OPENAI_MODEL: "fake-model",
    OPENAI_MAX_TOKENS: "123",
    ...env,
  });
  const lines: string[] = [];
  const log = createLogger(
    config,
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString("utf8"));
        cb();
      },
    }),
  );
  const registry = createAgentRegistry(config, { budget: opts.budget ?? unlimitedBudget, idleTimeoutMs: opts.idleTimeoutMs ?? 5000 });
  const assistant = registry.get("assistant")!;
  return { config, log, lines, registry, assistant };
}

function ctxFor(s: ReturnType<typeof setup>, history: ChatTurn[], signal = new AbortController().signal): AgentContext {
  return { signal, log: s.log, history, config: s.config, runId: "00000000-0000-4000-8000-0000000000aa", attempt: 1 };
}

async function collect(iter: AsyncIterable<AgentEvent>) {
  const events: AgentEvent[] = [];
  let error: unknown;
  try {
    for await (const ev of iter) events.push(ev);
  } catch (err) {
    error = err;
  }
  return { events, error, text: events.map((e) => (e.type === "text.delta" ? e.text : "")).join("") };
}

const ask = (s: ReturnType<typeof setup>, content: string, history: ChatTurn[] = [{ role: "user", content }]) =>
  collect(s.assistant.run({ content }, ctxFor(s, history)));

describe("assistant: streaming chat completions", () => {
  it("sends model, max_tokens, the history and the math tool; streams deltas; reports usage from the final chunk", async () => {
    const s = setup();
    fake.script({ text: "Paris is the capital of France.", chunkSize: 4, usage: { promptTokens: 21, completionTokens: 8 } });
    const n = fake.requests.length;
    const history: ChatTurn[] = [
      { role: "user", content: "hi" },
      { role: "assistant", content: "Hello!" },
      { role: "user", content: "@assistant capital of France?" },
    ];
    const { events, text, error } = await collect(s.assistant.run({ content: "capital of France?" }, ctxFor(s, history)));
    expect(error).toBeUndefined();
    expect(text).toBe("Paris is the capital of France.");
    expect(events.filter((e) => e.type === "text.delta").length).toBe(8);
    expect(events.at(-1)).toEqual({ type: "usage", promptTokens: 21, completionTokens: 8 });

    const req = fake.requests[n]!;
    expect(req.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(req.body).toMatchObject({ model: "fake-model", max_tokens: 123, stream: true, stream_options: { include_usage: true } });
    expect(req.body.messages?.map((m) => [m.role, m.content])).toEqual([
      ["system", expect.stringContaining("math")],
      ["user", "hi"],
      ["assistant", "Hello!"],
      ["user", "capital of France?"],
    ]);
    expect(req.body.tools?.map((t) => t.function.name)).toEqual(["math"]);
  });

  it("runs the math tool the model calls (arguments split across chunks), sends the result back and continues", async () => {
    const s = setup();
    fake.script(
      { toolCalls: [{ id: "call_m1", name: "math", arguments: { expression: "2^64" }, fragmentSize: 3 }], usage: { promptTokens: 30, completionTokens: 12 } },
      { text: "2^64 is 18446744073709551616.", usage: { promptTokens: 50, completionTokens: 9 } },
    );
    const n = fake.requests.length;
    const { events, text, error } = await ask(s, "How big is 2^64 exactly?");
    expect(error).toBeUndefined();
    expect(events.filter((e) => e.type !== "text.delta")).toEqual([
      { type: "usage", promptTokens: 30, completionTokens: 12 },
      { type: "tool.call", id: "call_m1", name: "math", args: { expression: "2^64" } },
      { type: "tool.result", id: "call_m1", name: "math", result: "18446744073709551616" },
      { type: "usage", promptTokens: 50, completionTokens: 9 },
    ]);
    expect(text).toBe("2^64 is 18446744073709551616.");
    const second = fake.requests[n + 1]!.body.messages!;
    expect(second.at(-2)).toMatchObject({ role: "assistant", tool_calls: [{ id: "call_m1", type: "function", function: { name: "math", arguments: '{"expression":"2^64"}' } }] });
    expect(second.at(-1)).toEqual({ role: "tool", tool_call_id: "call_m1", content: "18446744073709551616" });
  });

  it("a failing tool call is reported to the model, not thrown", async () => {
    const s = setup();
    fake.script({ toolCalls: [{ id: "c2", name: "math", arguments: { expression: "import(1)" } }] }, { text: "Sorry." });
    const n = fake.requests.length;
    const { events, error } = await ask(s, "do something odd");
    expect(error).toBeUndefined();
    expect(events.find((e) => e.type === "tool.result")).toMatchObject({ result: null, error: expect.stringMatching(/not available/) });
    expect(fake.requests[n + 1]!.body.messages!.at(-1)?.content).toMatch(/^Error: /);
  });

  it("the run's signal reaches the HTTP call: aborting mid-stream closes the socket", async () => {
    const s = setup({}, { idleTimeoutMs: 60_000 });
    fake.script({ text: "one two three four five six", chunkSize: 4, fault: { kind: "stall", afterChunks: 3 } });
    const n = fake.requests.length;
    const ac = new AbortController();
    const it = s.assistant.run({ content: "go" }, ctxFor(s, [{ role: "user", content: "go" }], ac.signal))[Symbol.asyncIterator]();
    expect((await it.next()).value).toEqual({ type: "text.delta", text: "one " });
    const reason = new Error("cancelled by the user");
    ac.abort(reason);
    const rec = await fake.waitForDisconnect(n);
    expect(rec.disconnected).toBe(true);
    await expect(it.next()).rejects.toBe(reason);
  });

  it("an abort before the response arrives also closes the socket", async () => {
    const s = setup({}, { idleTimeoutMs: 60_000 });
    fake.script({ text: "late", fault: { kind: "stall", afterChunks: 0 } });
    const n = fake.requests.length;
    const ac = new AbortController();
    const done = collect(s.assistant.run({ content: "go" }, ctxFor(s, [{ role: "user", content: "go" }], ac.signal)));
    await fake.waitForRequest(n);
    ac.abort(new Error("timeout"));
    await fake.waitForDisconnect(n);
    expect((await done).error).toMatchObject({ message: "timeout" });
  });

  it("waits for the shared budget with a status event before the request", async () => {
    let calls = 0;
    const budget: LlmBudget = {
      tryAcquire: async () => (++calls === 1 ? { ok: false, waitMs: 5, until: new Date(Date.now() + 5) } : { ok: true, at: new Date() }),
    };
    const s = setup({}, { budget });
    fake.script({ text: "done" });
    const n = fake.requests.length;
    const { events } = await ask(s, "hello?");
    expect(events[0]).toMatchObject({ type: "status", status: "waiting", until: expect.any(String) });
    expect(events.slice(1).some((e) => e.type === "text.delta")).toBe(true);
    expect(calls).toBe(2);
    expect(fake.requests.length).toBe(n + 1);
  });

  it("with OPENAI_BASE_URL and no key (Ollama), it is available and sends no Authorization header", async () => {
    const s = setup({ OPENAI_API_KEY: "" });
    expect(s.assistant.unavailableReason()).toBeNull();
    fake.script({ text: "local" });
    const n = fake.requests.length;
    expect((await ask(s, "hi")).text).toBe("local");
    expect(fake.requests[n]!.headers.authorization).toBeUndefined();
  });

  it("without a key or base URL it is unavailable, and says why", () => {
    const s = setup({ OPENAI_API_KEY: "", OPENAI_BASE_URL: "" });
    expect(s.assistant.unavailableReason()).toBe("OPENAI_API_KEY is not set");
  });
});

describe("assistant: provider errors become AgentErrors", () => {
  const cases: [string, FakeReply, { code: string; retryable: boolean; retryAfterMs?: number; message?: RegExp }][] = [
    ["429 with retry-after seconds", { fault: { kind: "status", status: 429, retryAfter: "3" } }, { code: "provider_rate_limited", retryable: true, retryAfterMs: 3000 }],
    ["429 with retry-after-ms", { fault: { kind: "status", status: 429, retryAfterMs: 1500 } }, { code: "provider_rate_limited", retryable: true, retryAfterMs: 1500 }],
    ["429 insufficient_quota", { fault: { kind: "status", status: 429, code: "insufficient_quota" } }, { code: "provider_quota", retryable: false }],
    ["500", { fault: { kind: "status", status: 500 } }, { code: "provider_unavailable", retryable: true }],
    ["503", { fault: { kind: "status", status: 503 } }, { code: "provider_unavailable", retryable: true }],
    ["a dropped stream", { text: "abcdefghij", chunkSize: 1, fault: { kind: "drop", afterChunks: 4 } }, { code: "provider_stream_dropped", retryable: true }],
    ["a stall", { text: "abcdefghij", chunkSize: 1, fault: { kind: "stall", afterChunks: 2 } }, { code: "provider_stalled", retryable: true }],
    ["a malformed line", { text: "abcdefghij", chunkSize: 1, fault: { kind: "malformed", afterChunks: 2 } }, { code: "provider_malformed", retryable: true }],
    ["401", { fault: { kind: "status", status: 401 } }, { code: "provider_auth", retryable: false, message: /the OpenAI API rejected the key/i }],
    ["403", { fault: { kind: "status", status: 403 } }, { code: "provider_auth", retryable: false, message: /the OpenAI API rejected the key/i }],
    ["400", { fault: { kind: "status", status: 400, message: "max_tokens is too large" } }, { code: "provider_bad_request", retryable: false, message: /max_tokens is too large/ }],
  ];

  it.each(cases)("%s", async (_name, reply, expected) => {
    // A short idle timeout only where the stall is the point; elsewhere a loaded machine must not look like one.
    const s = setup({}, { idleTimeoutMs: reply.fault?.kind === "stall" ? 300 : 5000 });
    fake.script(reply);
    const { error } = await ask(s, "hello");
    expect(error).toBeInstanceOf(AgentError);
    const e = error as AgentError;
    expect(e.code).toBe(expected.code);
    expect(e.opts.retryable).toBe(expected.retryable);
    if (expected.retryAfterMs !== undefined) expect(e.opts.retryAfterMs).toBe(expected.retryAfterMs);
    if (expected.message) expect(e.message).toMatch(expected.message);
  });

  it("a server that refuses the key (its own 401) fails at once", async () => {
    const strict = await startFakeLlm({ apiKey: "another-key" });
    try {
      const s = setup({ OPENAI_BASE_URL: strict.url });
      const { error } = await ask(s, "hello");
      expect(error).toMatchObject({ code: "provider_auth", opts: { retryable: false } });
    } finally {
      await strict.close();
    }
  });

  it("an unreachable server is a retryable failure", async () => {
    const gone = await startFakeLlm();
    const url = gone.url;
    await gone.close();
    const s = setup({ OPENAI_BASE_URL: url });
    const { error } = await ask(s, "hello");
    expect(error).toMatchObject({ code: "provider_unreachable", opts: { retryable: true } });
  });

  it("parses retry-after as seconds, an HTTP date, or retry-after-ms", () => {
    const h = (o: Record<string, string>) => new Headers(o);
    expect(parseRetryAfter(h({ "retry-after": "2.5" }))).toBe(2500);
    expect(parseRetryAfter(h({ "retry-after": new Date(10_000).toUTCString() }), 4_000)).toBe(6000);
    expect(parseRetryAfter(h({ "retry-after-ms": "120", "retry-after": "9" }))).toBe(120);
    expect(parseRetryAfter(h({}))).toBeUndefined();
  });
});

describe("the key stays secret", () => {
  it("never appears in a log line, an event or an error, whatever fails", async () => {
    const s = setup();
    const seen: string[] = [];
    const faults: FakeReply[] = [
      { text: "fine", usage: { promptTokens: 1, completionTokens: 1 } },
      { toolCalls: [{ name: "math", arguments: { expression: "1+1" } }] },
      { text: "two" },
      { fault: { kind: "status", status: 401 } },
      { fault: { kind: "status", status: 403, message: `key ${KEY} may not use this model` } },
      { fault: { kind: "status", status: 400, message: `Invalid request for key ${KEY}` } },
      { fault: { kind: "status", status: 429, retryAfter: "1" } },
      { fault: { kind: "status", status: 500, message: `internal error, Authorization: Bearer ${KEY}` } },
      { text: "abcdef", chunkSize: 1, fault: { kind: "drop", afterChunks: 2 } },
      { text: "abcdef", chunkSize: 1, fault: { kind: "stall", afterChunks: 2 } },
      { text: "abcdef", chunkSize: 1, fault: { kind: "malformed", afterChunks: 2 } },
    ];
    fake.script(...faults);
    const log: Logger = s.log;
    for (let i = 0; i < faults.length - 1; i++) {
      const { events, error } = await ask(s, `question ${i}`);
      seen.push(JSON.stringify(events));
      if (error) {
        const e = error as AgentError;
        seen.push(e.message, String(e.stack), JSON.stringify(e), JSON.stringify(e.opts), String((e as { cause?: unknown }).cause));
        // What the queue does with a failure: log it under `err`, store code and message.
        log.warn({ err: error, code: e.code }, "run attempt failed; retrying");
      }
    }
    expect(s.lines.length).toBeGreaterThan(5);
    const all = [...seen, ...s.lines].join("\n");
    expect(all).not.toContain(KEY);
    expect(all).not.toContain("SECRETSECRET");
  });

  it("the config's key is redacted when the openai section is logged whole", () => {
    const s = setup();
    s.log.info({ openai: s.config.openai }, "config");
    expect(s.lines.join("")).toContain("[redacted]");
    expect(s.lines.join("")).not.toContain(KEY);
  });
});

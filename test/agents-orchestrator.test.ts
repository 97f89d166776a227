/**
 * The orchestrator: requested agent and `@name` first, then ROUTER=llm (with
 * the rules as the fallback on any error), then the rules. The first event is
 * always `route`.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { pino } from "pino";
import { loadConfig, type Env } from "../server/config.js";
import { createAgentRegistry } from "../server/agents/registry.js";
import { createOrchestrator } from "../server/agents/orchestrator.js";
import { unlimitedBudget, type LlmBudget } from "../server/agents/budget.js";
import type { AgentContext, ChatTurn, RoutedEvent } from "../server/agents/types.js";
import { startFakeLlm, type FakeLlm } from "./helpers/fakeLlm.js";

let fake: FakeLlm;
beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
});

function setup(env: Env = {}, budget: LlmBudget = unlimitedBudget) {
  const config = loadConfig({ NODE_ENV: "test", ...env });
  const registry = createAgentRegistry(config, { budget, idleTimeoutMs: 2000 });
  return { config, registry, orchestrator: createOrchestrator(registry, config) };
}
const withLlm = (env: Env = {}) => setup({ OPENAI_API_KEY: "sk-orch", OPENAI_BASE_URL: fake.url, ...env });

async function run(
  s: ReturnType<typeof setup>,
  content: string,
  opts: { requestedAgent?: string | null; history?: ChatTurn[]; signal?: AbortSignal } = {},
) {
  const ctx: AgentContext = {
    signal: opts.signal ?? new AbortController().signal,
    log: pino({ level: "silent" }),
    history: opts.history ?? [{ role: "user", content }],
    config: s.config,
    runId: "00000000-0000-4000-8000-0000000000bb",
    attempt: 1,
  };
  const events: RoutedEvent[] = [];
  for await (const ev of s.orchestrator.run({ content, requestedAgent: opts.requestedAgent ?? null }, ctx)) events.push(ev);
  const route = events[0];
  if (route?.type !== "route") throw new Error(`first event is ${JSON.stringify(route)}`);
  return { route, events, text: events.map((e) => (e.type === "text.delta" ? e.text : "")).join("") };
}

describe("orchestrator: rules", () => {
  it("names the registry's agents", () => {
    expect(setup().orchestrator.agentNames()).toEqual(["math", "hello", "assistant"]);
  });

  it("an arithmetic expression or 'what is <expression>' goes to math", async () => {
    const s = setup();
    for (const content of ["2 + 2", "what is 2^64?", "calculate 5 km to mile", "Simplify 2x + 3x"]) {
      const { route } = await run(s, content);
      expect(route, content).toEqual({ type: "route", agent: "math", reason: "rules: a calculation" });
    }
    expect((await run(s, "what is 2^64")).text).toBe("2^64 = 18446744073709551616");
  });

  it("a greeting goes to hello", async () => {
    const { route, text } = await run(setup(), "Hi there!");
    expect(route).toEqual({ type: "route", agent: "hello", reason: "rules: a greeting" });
    expect(text).toMatch(/^Hello!/);
  });

  it("anything else goes to the assistant when an LLM is configured", async () => {
    const s = withLlm();
    fake.script({ text: "A heat pump moves heat." });
    const { route, text } = await run(s, "How does a heat pump work?");
    expect(route).toEqual({ type: "route", agent: "assistant", reason: "rules: a general question" });
    expect(text).toBe("A heat pump moves heat.");
  });

  it("without an LLM, hello answers and explains how to add one", async () => {
    const { route, text } = await run(setup(), "How does a heat pump work?");
    expect(route).toEqual({ type: "route", agent: "hello", reason: "rules: a general question, but assistant is unavailable (OPENAI_API_KEY is not set)" });
    expect(text).toMatch(/No LLM is configured/);
    expect(text).toMatch(/OPENAI_API_KEY/);
    expect(text).toMatch(/OPENAI_BASE_URL/);
  });
});

describe("orchestrator: requested agent and @mentions", () => {
  it("the requested agent wins over the rules", async () => {
    const { route, text } = await run(setup(), "hello", { requestedAgent: "math" });
    expect(route).toEqual({ type: "route", agent: "math", reason: "requested" });
    expect(text).toMatch(/^I couldn't work that out/);
  });

  it("a leading @name wins and is removed from what the agent sees", async () => {
    const { route, text } = await run(setup(), "@math what is 2^64");
    expect(route).toEqual({ type: "route", agent: "math", reason: "mentioned @math" });
    expect(text).toBe("2^64 = 18446744073709551616");
  });

  it("the assistant's history carries the message without the mention", async () => {
    const s = withLlm();
    fake.script({ text: "ok" });
    const n = fake.requests.length;
    const history: ChatTurn[] = [
      { role: "user", content: "earlier" },
      { role: "assistant", content: "reply" },
      { role: "user", content: "@assistant 2 + 2" },
    ];
    const { route } = await run(s, "@assistant 2 + 2", { history });
    expect(route.agent).toBe("assistant");
    expect(fake.requests[n]!.body.messages?.slice(1).map((m) => m.content)).toEqual(["earlier", "reply", "2 + 2"]);
  });

  it("an unknown @name is just text", async () => {
    const { route } = await run(setup(), "@nobody 2 + 2");
    expect(route.agent).toBe("hello");
  });

  it("asking for the assistant without an LLM gets hello's explanation", async () => {
    const { route, text } = await run(setup(), "@assistant write a poem");
    expect(route).toMatchObject({ agent: "hello", reason: expect.stringMatching(/^mentioned @assistant, but assistant is unavailable/) });
    expect(text).toMatch(/No LLM is configured/);
  });
});

describe("orchestrator: ROUTER=llm", () => {
  it("the model picks the agent with a route tool call over the available agents' descriptions", async () => {
    const s = withLlm({ ROUTER: "llm" });
    fake.script({ toolCalls: [{ name: "route", arguments: { agent: "math", reason: "it is arithmetic" } }], usage: { promptTokens: 40, completionTokens: 6 } });
    const n = fake.requests.length;
    const { route, events, text } = await run(s, "how much are two and two, as a number");
    expect(route).toEqual({ type: "route", agent: "math", reason: "llm: it is arithmetic" });
    expect(events[1]).toEqual({ type: "usage", promptTokens: 40, completionTokens: 6 });
    expect(text).toMatch(/^I couldn't work that out/);
    const body = fake.requests[n]!.body;
    expect(body.tool_choice).toEqual({ type: "function", function: { name: "route" } });
    const params = body.tools?.[0]?.function.parameters as { properties: { agent: { enum: string[] } } };
    expect(params.properties.agent.enum).toEqual(["math", "hello", "assistant"]);
    expect(String(body.messages?.[0]?.content)).toContain("Exact math");
  });

  it.each([
    ["a 500", { fault: { kind: "status" as const, status: 500 } }],
    ["an unknown agent", { toolCalls: [{ name: "route", arguments: { agent: "weather" } }] }],
    ["arguments that are not JSON", { toolCalls: [{ name: "route", arguments: "{agent: math" }] }],
    ["no tool call", { text: "I think math." }],
    ["a dropped stream", { text: "abcdef", chunkSize: 1, fault: { kind: "drop" as const, afterChunks: 2 } }],
  ])("falls back to the rules on %s", async (_name, reply) => {
    const s = withLlm({ ROUTER: "llm" });
    fake.script(reply);
    const { route } = await run(s, "2 + 2");
    expect(route).toEqual({ type: "route", agent: "math", reason: "rules: a calculation (the LLM router failed)" });
  });

  it("falls back to the rules at once when the budget is full, without calling the model", async () => {
    const full: LlmBudget = { tryAcquire: async () => ({ ok: false, waitMs: 60_000, until: new Date(Date.now() + 60_000) }) };
    const s = setup({ OPENAI_API_KEY: "sk-orch", OPENAI_BASE_URL: fake.url, ROUTER: "llm" }, full);
    const n = fake.requests.length;
    const { route } = await run(s, "hello");
    expect(route).toEqual({ type: "route", agent: "hello", reason: "rules: a greeting (the LLM router failed)" });
    expect(fake.requests.length).toBe(n);
  });

  it("without an LLM configured, ROUTER=llm uses the rules and calls nothing", async () => {
    const n = fake.requests.length;
    const { route } = await run(setup({ ROUTER: "llm" }), "2 + 2");
    expect(route).toEqual({ type: "route", agent: "math", reason: "rules: a calculation" });
    expect(fake.requests.length).toBe(n);
  });

  it("a cancel while routing ends the run instead of falling back", async () => {
    const s = withLlm({ ROUTER: "llm" });
    fake.script({ fault: { kind: "stall", afterChunks: 1 } });
    const n = fake.requests.length;
    const ac = new AbortController();
    const done = run(s, "2 + 2", { signal: ac.signal });
    await fake.waitForRequest(n);
    const reason = new Error("cancelled");
    ac.abort(reason);
    await expect(done).rejects.toBe(reason);
    await fake.waitForDisconnect(n);
  });
});

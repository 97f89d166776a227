/**
 * mathjs (~90 MB RSS) loads on the first message that needs it, never at
 * boot: building the registry and the orchestrator does not import it, nor
 * does routing a greeting or plain text; the first math question does, once.
 * A spy on the `mathjs` module counts real imports.
 */
import { describe, it, expect, vi } from "vitest";
import { pino } from "pino";
import { loadConfig } from "../server/config.js";
import { createAgentRegistry } from "../server/agents/registry.js";
import { createOrchestrator } from "../server/agents/orchestrator.js";
import { createMathEngine } from "../server/agents/mathEngine.js";
import { isMathQuestion, mathCandidate } from "../server/agents/math.js";
import { unlimitedBudget } from "../server/agents/budget.js";
import type { AgentContext, RoutedEvent } from "../server/agents/types.js";

const mathjs = vi.hoisted(() => ({ loads: 0 }));
vi.mock("mathjs", async (importOriginal) => {
  mathjs.loads++;
  return await importOriginal<typeof import("mathjs")>();
});

const config = loadConfig({ NODE_ENV: "test" });
const registry = createAgentRegistry(config, { budget: unlimitedBudget });
const orchestrator = createOrchestrator(registry, config);

async function run(content: string) {
  const ctx: AgentContext = {
    signal: new AbortController().signal,
    log: pino({ level: "silent" }),
    history: [{ role: "user", content }],
    config,
    runId: "00000000-0000-4000-8000-0000000000cc",
    attempt: 1,
  };
  const events: RoutedEvent[] = [];
  for await (const ev of orchestrator.run({ content, requestedAgent: null }, ctx)) events.push(ev);
  return { route: events[0], text: events.map((e) => (e.type === "text.delta" ? e.text : "")).join("") };
}

// The tests run in order: mathjs must still be unloaded until the math question.
describe("mathjs loads lazily", () => {
  it("importing the agents and building the registry and orchestrator does not load it", () => {
    expect(mathjs.loads).toBe(0);
    expect(registry.math.isLoaded()).toBe(false);
  });

  it("greetings and plain text are routed without loading it", async () => {
    for (const [content, agent] of [
      ["hello", "hello"],
      ["Good morning!", "hello"],
      ["tell me a story", "hello"],
      ["what is love", "hello"],
      ["what can you do?", "hello"],
    ] as const) {
      const { route, text } = await run(content);
      expect(route, content).toMatchObject({ type: "route", agent });
      expect(text.length, content).toBeGreaterThan(0);
    }
    expect(mathjs.loads).toBe(0);
    expect(registry.math.isLoaded()).toBe(false);
  });

  it("the synchronous pre-check decides plain text; only a possible calculation is left to the engine", () => {
    expect(mathCandidate("hello")).toBe(false);
    expect(mathCandidate("tell me a story")).toBe(false);
    expect(mathCandidate("what is love")).toBe(false);
    expect(mathCandidate("calculate the meaning of life")).toBe(true);
    expect(mathCandidate("what is 2^64?")).toBe("2^64");
    expect(mathCandidate("sqrt(16)")).toBe("sqrt(16)");
    expect(mathCandidate("what is pi")).toBe("pi");
    expect(mathjs.loads).toBe(0);
  });

  it("input refused on its face is answered without loading it", async () => {
    const engine = createMathEngine();
    expect(await engine.evaluate("   ")).toMatchObject({ ok: false, error: "There is no expression to work out" });
    expect(await engine.evaluate("1+".repeat(300) + "1")).toMatchObject({ ok: false, error: expect.stringMatching(/longer than 500/) });
    expect(await engine.isCalculation("")).toBe(false);
    expect(await isMathQuestion("calculate the meaning of life", engine)).toBe(true);
    expect(engine.isLoaded()).toBe(false);
    expect(mathjs.loads).toBe(0);
  });

  it("the first math question loads it, once", async () => {
    const { route, text } = await run("what is 2^64?");
    expect(route).toEqual({ type: "route", agent: "math", reason: "rules: a calculation" });
    expect(text).toBe("2^64 = 18446744073709551616");
    expect(registry.math.isLoaded()).toBe(true);
    expect(mathjs.loads).toBe(1);

    expect((await run("1/3 + 1/6")).text).toBe("1/3 + 1/6 = 1/2 = 0.5");
    expect(mathjs.loads).toBe(1);
  });

  it("concurrent first calls share one load; warm() loads without a message", async () => {
    const engine = createMathEngine();
    expect(engine.isLoaded()).toBe(false);
    const [a, b, c] = await Promise.all([engine.evaluate("2 + 2"), engine.isCalculation("sqrt(2)"), engine.evaluate("3 * 3")]);
    expect(a).toMatchObject({ ok: true, result: "4" });
    expect(b).toBe(true);
    expect(c).toMatchObject({ ok: true, result: "9" });
    expect(engine.isLoaded()).toBe(true);

    const warmed = createMathEngine();
    await warmed.warm();
    expect(warmed.isLoaded()).toBe(true);
    expect(mathjs.loads).toBe(1);
  });
});

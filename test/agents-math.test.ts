import { describe, it, expect } from "vitest";
import { pino } from "pino";
import { loadConfig } from "../server/config.js";
import { createMathEngine } from "../server/agents/mathEngine.js";
import { createRestrictedMath } from "../server/agents/mathRestricted.js";
import { createMathAgent, isMathQuestion, parseMathRequest } from "../server/agents/math.js";
import type { AgentContext, AgentEvent } from "../server/agents/types.js";

const engine = createMathEngine();
const config = loadConfig({ NODE_ENV: "test" });

function ctx(signal = new AbortController().signal): AgentContext {
  return { signal, log: pino({ level: "silent" }), history: [], config, runId: "00000000-0000-4000-8000-000000000001", attempt: 1 };
}

async function run(content: string) {
  const events: AgentEvent[] = [];
  for await (const ev of createMathAgent(engine).run({ content }, ctx())) events.push(ev);
  return { events, text: events.map((e) => (e.type === "text.delta" ? e.text : "")).join("") };
}

async function ok(expr: string) {
  const r = await engine.evaluate(expr);
  if (!r.ok) throw new Error(`${expr}: ${r.error}`);
  return r.result;
}

describe("math engine: exact answers", () => {
  it("big integers in full, not in exponent notation", async () => {
    expect(await ok("2^64")).toBe("18446744073709551616");
    expect(await ok("2^200")).toBe("1606938044258990275541962092341162602522202993782792835301376");
    expect(await ok("0.1 + 0.2")).toBe("3/10 = 0.3");
  });

  it("fractions: the exact ratio beside the decimal", async () => {
    expect(await ok("1/3 + 1/6")).toBe("1/2 = 0.5");
    expect(await ok("1/3")).toBe("1/3 ≈ 0.333333333333333");
    expect(await ok("fraction(0.75) * 2")).toBe("3/2");
  });

  it("units and conversions", async () => {
    expect(await ok("5 cm + 2 inch")).toBe("10.08 cm");
    expect(await ok("5 km to mile")).toBe("3.10685596118667 mile");
    expect(await ok("2 kg * 9.8 m/s^2")).toBe("19.6 N");
  });

  it("matrices", async () => {
    expect(await ok("[1,2;3,4] * [5;6]")).toBe("[[17], [39]]");
    expect(await ok("det([1,2;3,4])")).toBe("-2");
    expect(await ok("inv([1,2;3,4])")).toBe("[[-2, 1], [1.5, -0.5]]");
  });

  it("simplify and derivative", async () => {
    expect(await ok('simplify("2x + 3x")')).toBe("5 * x");
    expect(await ok('derivative("x^3 + 2x", "x")')).toBe("3 * x ^ 2 + 2");
    expect(await engine.simplify("2x + 3x")).toMatchObject({ ok: true, result: "5 * x" });
    expect(await engine.derivative("t^2 + 3t")).toMatchObject({ ok: true, result: "2 * t + 3", variable: "t" });
  });
});

describe("math engine: restricted", () => {
  it.each([
    ["import({evil: 1}, {override: true})", /not available/],
    ['createUnit("furlong2", "220 yard")', /not available/],
    ['evaluate("1 + 1")', /not available/],
    ['parse("1 + 1")', /not available/],
    ['compile("1 + 1")', /not available/],
    ["f(x) = x^2", /no function definitions/],
    ["a = 3", /no assignments/],
    ["a = 1; a + 1", /no several statements/],
    ["cos.constructor", /Property access/],
    ['simplify("import(1)")', /not available/],
    ['derivative("f(x) = x", "x")', /no function definitions/],
    ["Unit", /not available/],
  ])("%s is refused", async (expr, message) => {
    const r = await engine.evaluate(expr);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toMatch(message);
  });

  it("the instance itself refuses, even for a tree that skipped the parser check", () => {
    const { parse } = createRestrictedMath({ number: "BigNumber", precision: 64 });
    for (const [expr, message] of [
      ["import({a: 1}, {override: true})", /import is disabled/],
      ['createUnit("furlong2", "220 yard")', /createUnit is disabled/],
      ['evaluate("1 + 1")', /evaluate is disabled/],
      ['parse("1 + 1")', /parse is disabled/],
      ['simplify("f(x) = x")', /no function definitions/],
      ["zeros(100, 100)", /limit is 1000/],
    ] as const) {
      expect(() => parse(expr).compile().evaluate({}), expr).toThrow(message);
    }
  });

  it("limits input length, matrix sizes, combinatorics and result size", async () => {
    expect(await engine.evaluate("1+".repeat(300) + "1")).toMatchObject({ ok: false, error: expect.stringMatching(/longer than 500/) });
    expect(await engine.evaluate("zeros(1000, 1000)")).toMatchObject({ ok: false, error: expect.stringMatching(/limit is 1000/) });
    expect(await engine.evaluate("1:100000")).toMatchObject({ ok: false, error: expect.stringMatching(/limit is 1000/) });
    expect(await engine.evaluate("1e10!")).toMatchObject({ ok: false, error: expect.stringMatching(/limited/) });
    const small = createMathEngine({ maxResultChars: 20 });
    expect(await small.evaluate("2^100")).toMatchObject({ ok: false, error: expect.stringMatching(/too large to show/) });
  });

  it("a calculation past the CPU limit is stopped, and the engine still works after", async () => {
    const quick = createMathEngine({ timeoutMs: 200 });
    expect(await quick.evaluate("isPrime(10^60 + 7)")).toMatchObject({ ok: false, error: expect.stringMatching(/too long/) });
    expect(await quick.evaluate("2 + 2")).toMatchObject({ ok: true, result: "4" });
  });

  it("invalid input gets a plain message", async () => {
    expect(await engine.evaluate("2 +")).toMatchObject({ ok: false });
    expect(await engine.evaluate("x + 1")).toMatchObject({ ok: false, error: "Undefined symbol x" });
  });
});

describe("math phrasing", () => {
  it("reads questions, keywords and bare expressions", () => {
    expect(parseMathRequest("what is 2^64?")).toEqual({ kind: "evaluate", expression: "2^64", explicit: false });
    expect(parseMathRequest("Calculate 3 * 7")).toEqual({ kind: "evaluate", expression: "3 * 7", explicit: true });
    expect(parseMathRequest("simplify 2x + 3x")).toEqual({ kind: "simplify", expression: "2x + 3x", explicit: true });
    expect(parseMathRequest('simplify("2x + 3x")')).toMatchObject({ kind: "evaluate" });
    expect(parseMathRequest("derivative of x^3 with respect to x")).toEqual({ kind: "derivative", expression: "x^3", variable: "x", explicit: true });
    expect(parseMathRequest("d/dt t^2")).toEqual({ kind: "derivative", expression: "t^2", variable: "t", explicit: true });
  });

  it("tells calculations from other questions", async () => {
    for (const t of ["2+2", "what is 2^64", "what's 5 km in mile?", "(3*4)^2 =", "calculate the meaning of life", "sqrt(16)", "what is pi"]) {
      expect(await isMathQuestion(t, engine), t).toBe(true);
    }
    for (const t of ["what is love", "hello", "what is the capital of France?", "3 apples and 2 pears", "tell me about 1984", "what is a day"]) {
      expect(await isMathQuestion(t, engine), t).toBe(false);
    }
  });
});

describe("math agent", () => {
  it("answers 'what is 2^64' with every digit, streamed as several deltas", async () => {
    const { events, text } = await run("what is 2^64");
    expect(text).toBe("2^64 = 18446744073709551616");
    expect(events.length).toBeGreaterThan(1);
    expect(events.every((e) => e.type === "text.delta")).toBe(true);
  });

  it("simplify and derivative phrasing", async () => {
    expect((await run("simplify 2x + 3x")).text).toBe("2x + 3x simplifies to 5 * x");
    expect((await run("derivative of t^3")).text).toBe("d/dt (t^3) = 3 * t ^ 2");
  });

  it("invalid input: a plain answer, not a failure", async () => {
    const { text } = await run("calculate 2 +* 3");
    expect(text).toMatch(/^I couldn't work that out: .+ Try an expression such as/);
  });

  it("stops when the signal fires", async () => {
    const ac = new AbortController();
    const agent = createMathAgent(engine);
    const it = agent.run({ content: "what is 2^64 + 1" }, ctx(ac.signal))[Symbol.asyncIterator]();
    await it.next();
    ac.abort(new Error("cancelled"));
    await expect(it.next()).rejects.toThrow("cancelled");
  });
});

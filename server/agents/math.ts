/**
 * The math agent: exact answers from the restricted mathjs engine, offline.
 * Also says whether a message reads as a math question (the orchestrator's
 * rule), so the reading of math phrasing lives in one place.
 */
import type { Agent, AgentContext, AgentEvent, AgentInput } from "./types.js";
import type { MathEngine, MathOutcome } from "./mathEngine.js";
import { streamWords } from "./stream.js";

export interface MathRequest {
  kind: "evaluate" | "simplify" | "derivative";
  expression: string;
  variable?: string;
  /** Asked for by a keyword ("calculate", "simplify" …): math answers even when it cannot read it. */
  explicit: boolean;
}

const VAR = String.raw`(?:\s+(?:with respect to|wrt|w\.r\.t\.?|by)\s+([A-Za-z]\w*))?`;
const DERIVATIVE = [
  new RegExp(String.raw`^(?:what(?:'s|\s+is)\s+)?(?:the\s+)?derivative\s+of\s+(.+?)${VAR}$`, "i"),
  new RegExp(String.raw`^differentiate\s+(.+?)${VAR}$`, "i"),
];
const D_DX = /^d\/d([A-Za-z])\s*(?:of\s+)?(.+)$/i;
const SIMPLIFY = /^simplify\s*:?\s+(.+)$/i;
const EXPLICIT = /^(?:calculate|compute|evaluate|calc)\s*:?\s+(.+)$/i;
const QUESTION = /^(?:what(?:'s|\s+is)|whats|how\s+much\s+is)\s+(?:the\s+(?:value|result)\s+of\s+)?(.+)$/i;
const CONSTANTS = new Set(["pi", "e", "tau", "phi", "i"]);

/** Reads "what is 2^64", "calculate 3 km to mile", "simplify 2x + 3x", "d/dx x^3" …; null when there is nothing to read. */
export function parseMathRequest(text: string): MathRequest | null {
  const t = text
    .trim()
    .replace(/^(?:please|can you|could you)\s+/i, "")
    .replace(/[\s?!.=]+$/, "")
    .trim();
  if (!t) return null;
  for (const re of DERIVATIVE) {
    const m = re.exec(t);
    if (m?.[1]) return { kind: "derivative", expression: m[1], ...(m[2] ? { variable: m[2] } : {}), explicit: true };
  }
  const d = D_DX.exec(t);
  if (d?.[1] && d[2]) return { kind: "derivative", expression: d[2], variable: d[1], explicit: true };
  // `simplify("…")` is function syntax: evaluate it as written.
  const s = /^simplify\s*\(/i.test(t) ? null : SIMPLIFY.exec(t);
  if (s?.[1]) return { kind: "simplify", expression: s[1], explicit: true };
  const e = EXPLICIT.exec(t);
  if (e?.[1]) return { kind: "evaluate", expression: e[1], explicit: true };
  const q = QUESTION.exec(t);
  if (q?.[1]) return { kind: "evaluate", expression: q[1], explicit: false };
  return { kind: "evaluate", expression: t, explicit: false };
}

/**
 * The cheap, synchronous half of the routing rule: `true` for a keyword
 * (math answers it, whatever follows), `false` when the message cannot be
 * math, else the expression the engine must still read. An expression needs a
 * number in it, a function call or a lone constant, so "hello" and "tell me a
 * story" are decided here and never load mathjs.
 */
export function mathCandidate(text: string): boolean | string {
  const req = parseMathRequest(text);
  if (!req) return false;
  if (req.explicit) return true;
  const expr = req.expression.trim();
  const looksNumeric = /\d/.test(expr) || /^[A-Za-z]\w*\s*\(/.test(expr) || CONSTANTS.has(expr.toLowerCase());
  return looksNumeric ? expr : false;
}

/**
 * The routing rule: a keyword, or an expression with a number in it (or a
 * function call, or a lone constant) made only of names mathjs knows.
 * "what is love" and "3 apples" are not math; "what is 2^64" is. Only the
 * second case asks the engine (loading mathjs on first use).
 */
export async function isMathQuestion(text: string, engine: MathEngine): Promise<boolean> {
  const candidate = mathCandidate(text);
  return typeof candidate === "string" ? engine.isCalculation(candidate) : candidate;
}

export const MATH_DESCRIPTION =
  "Exact math, offline: arithmetic with big numbers, fractions, units, matrices, simplification and derivatives (mathjs).";

const HELP = "Try an expression such as `2^64`, `1/3 + 1/6`, `5 km to mile`, `det([1,2;3,4])`, `simplify 2x + 3x` or `derivative of x^3`.";

/** The answer text for one request. */
export async function answerMath(req: MathRequest, engine: MathEngine): Promise<{ text: string; outcome: MathOutcome }> {
  const outcome =
    req.kind === "simplify"
      ? await engine.simplify(req.expression)
      : req.kind === "derivative"
        ? await engine.derivative(req.expression, req.variable)
        : await engine.evaluate(req.expression);
  if (!outcome.ok) return { outcome, text: `I couldn't work that out: ${outcome.error.replace(/\.?$/, ".")} ${HELP}` };
  const text =
    req.kind === "simplify"
      ? `${outcome.expression} simplifies to ${outcome.result}`
      : req.kind === "derivative"
        ? `d/d${outcome.variable ?? "x"} (${outcome.expression}) = ${outcome.result}`
        : `${outcome.expression} = ${outcome.result}`;
  return { outcome, text };
}

export function createMathAgent(engine: MathEngine): Agent {
  return {
    name: "math",
    description: MATH_DESCRIPTION,
    skills: [
      { id: "arithmetic", name: "Arithmetic", description: "Exact integers and decimals of any size, fractions, powers, roots", examples: ["what is 2^64", "1/3 + 1/6", "100!"] },
      { id: "units", name: "Units", description: "Quantities with units and conversions", examples: ["5 km to mile", "2 kg * 9.8 m/s^2"] },
      { id: "matrices", name: "Matrices", description: "Matrix arithmetic, determinants, inverses", examples: ["det([1,2;3,4])", "[1,2;3,4] * [5;6]"] },
      { id: "symbolic", name: "Algebra", description: "Simplify expressions and take derivatives", examples: ["simplify 2x + 3x", "derivative of x^3 + 2x"] },
    ],
    unavailableReason: () => null,
    readsHistory: false,
    pure: true,
    async *run(input: AgentInput, ctx: AgentContext): AsyncGenerator<AgentEvent> {
      const req = parseMathRequest(input.content);
      if (!req) {
        yield* streamWords(`There is no expression to work out. ${HELP}`, ctx.signal);
        return;
      }
      const { text, outcome } = await answerMath(req, engine);
      ctx.log.debug({ kind: req.kind, ok: outcome.ok }, "math answered");
      yield* streamWords(text, ctx.signal);
    },
  };
}

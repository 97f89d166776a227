/**
 * What the math agent (and the assistant's math tool) evaluate user input
 * with: restricted mathjs instances (see mathRestricted.ts) in BigNumber mode
 * for exact big numbers and in Fraction mode for exact ratios, answers
 * formatted within size limits.
 *
 * Stability: a calculation runs under a `vm` timeout (V8 terminates it even
 * inside mathjs's own functions, after which the instances are rebuilt),
 * and the functions that allocate matrices refuse sizes past a limit.
 */
import vm from "node:vm";
import type { MathJsInstance, MathNode } from "mathjs";
import { DEFAULT_LIMITS, MathInputError, type RestrictedLimits } from "./mathLimits.js";
// Types only: the module itself (and mathjs with it) loads on first use, see `load`.
import type * as RestrictedModule from "./mathRestricted.js";
import type { Namespace, Restricted } from "./mathRestricted.js";

export { MathInputError } from "./mathLimits.js";

export interface MathEngineOptions extends Partial<RestrictedLimits> {
  /** Longest answer shown, characters. Default 2,000. */
  maxResultChars?: number;
  /** CPU time one calculation may take, ms. Default 1 s. */
  timeoutMs?: number;
}

export type MathOutcome =
  /** `variable`: the one a derivative was taken by. */
  | { ok: true; expression: string; result: string; variable?: string }
  | { ok: false; expression: string; error: string };

export interface MathEngine {
  evaluate(expression: string): Promise<MathOutcome>;
  simplify(expression: string): Promise<MathOutcome>;
  derivative(expression: string, variable?: string): Promise<MathOutcome>;
  /**
   * Whether `expression` reads as a calculation: it parses, passes the checks
   * and names only known functions, constants and units. Never evaluates.
   */
  isCalculation(expression: string): Promise<boolean>;
  /** Loads mathjs and builds the instances now (a few hundred ms, ~90 MB) rather than on the first calculation. */
  warm(): Promise<void>;
  /** Whether mathjs has been loaded and the instances built (by warm or a first calculation). */
  isLoaded(): boolean;
}

/** mathRestricted.ts once loaded: the restricted instances and their checks. */
type Lib = typeof RestrictedModule;

/** The engine once mathjs is loaded: everything that touches it, synchronous. */
interface LoadedEngine {
  evaluate(expression: string): MathOutcome;
  simplify(expression: string): MathOutcome;
  derivative(expression: string, variable?: string): MathOutcome;
  isCalculation(expression: string): boolean;
  warm(): void;
}

function formatNumber(lib: Lib, math: MathJsInstance, v: unknown): string {
  if (lib.isBig(v)) {
    const b = v as unknown as { isInteger(): boolean; isFinite(): boolean; abs(): { lt(n: string): boolean }; toFixed(d: number): string };
    // Exact integers print in full (2^64 = 18446744073709551616, not 1.8e19).
    if (b.isFinite() && b.isInteger() && b.abs().lt("1e64")) return b.toFixed(0);
  }
  if (typeof v === "number" && Number.isSafeInteger(v)) return String(v);
  return math.format(v, { precision: 15, lowerExp: -9, upperExp: 21 });
}

function formatValue(lib: Lib, math: MathJsInstance, v: unknown, maxElements: number): string {
  if (typeof v === "function") throw new MathInputError("That names a function; call it with arguments, e.g. sqrt(16)");
  if (v === undefined || v === null) throw new MathInputError("That expression has no value");
  if (typeof v === "string") return v;
  if (typeof v === "boolean") return String(v);
  if (Array.isArray(v) || lib.isMatrixLike(v)) {
    const n = lib.elementsOf(v);
    if (n > maxElements) throw new MathInputError(`The result has ${n} elements; the limit is ${maxElements}`);
    return math.format(v, (x: unknown) => formatNumber(lib, math, x));
  }
  if (lib.isBig(v) || typeof v === "number") return formatNumber(lib, math, v);
  if (math.isFraction(v)) return math.format(v, { fraction: "ratio" });
  if (math.isNode(v)) return v.toString();
  return math.format(v, { precision: 15, lowerExp: -9, upperExp: 21 });
}

/** Touches the common paths once so their lazy setup is not charged to a user's time limit. */
const WARM_UP = ["1 + 2 * 3 / 4 - 5", "2^64", "sqrt(2)", "5 cm to inch", "det([1,2;3,4]) * inv([1,2;3,4])", 'simplify("2x + 3x")', 'derivative("x^2", "x")', "1:3"];

const DEFAULTS: Required<MathEngineOptions> = { ...DEFAULT_LIMITS, maxResultChars: 2000, timeoutMs: 1000 };

/** Why an expression is refused before anything is worked out (empty, too long); null when it may go on. */
function inputProblem(expr: string, opts: Required<MathEngineOptions>): string | null {
  if (!expr) return "There is no expression to work out";
  if (expr.length > opts.maxInputLength) return `The expression is longer than ${opts.maxInputLength} characters`;
  return null;
}

/**
 * The engine. Importing this module does not load mathjs: the first call that
 * needs it (or `warm`) imports mathRestricted.ts, which holds the only static
 * mathjs import, and builds the instances. Input refused on its face (empty,
 * too long) is answered without loading it.
 */
export function createMathEngine(options: MathEngineOptions = {}): MathEngine {
  const opts: Required<MathEngineOptions> = { ...DEFAULTS, ...options };
  let loaded: LoadedEngine | null = null;
  let loading: Promise<LoadedEngine> | null = null;

  /** One import however many calls arrive while it runs; a failed import is tried again by the next call. */
  const load = (): Promise<LoadedEngine> =>
    (loading ??= (async () => {
      try {
        const engine = createLoadedEngine(await import("./mathRestricted.js"), opts);
        engine.warm();
        return (loaded = engine);
      } catch (err) {
        loading = null;
        throw err;
      }
    })());

  const refused = (expression: string): MathOutcome | null => {
    const expr = expression.trim();
    const problem = inputProblem(expr, opts);
    return problem === null ? null : { ok: false, expression: expr, error: problem };
  };

  return {
    evaluate: async (expression) => refused(expression) ?? (await load()).evaluate(expression),
    simplify: async (expression) => refused(expression) ?? (await load()).simplify(expression),
    derivative: async (expression, variable) => refused(expression) ?? (await load()).derivative(expression, variable),
    async isCalculation(expression) {
      if (inputProblem(expression.trim(), opts) !== null) return false;
      return (await load()).isCalculation(expression);
    },
    warm: async () => void (await load()),
    isLoaded: () => loaded !== null,
  };
}

/** The synchronous engine over a loaded mathRestricted.ts: the instances, the CPU limit, the formatting. */
function createLoadedEngine(lib: Lib, opts: Required<MathEngineOptions>): LoadedEngine {
  const { parseSafe } = lib;
  let state: { big: Restricted; frac: Restricted } | null = null;
  let job: (() => unknown) | null = null;
  const context = vm.createContext({ run: () => job?.() });
  const script = new vm.Script("run()");

  /**
   * Builds the instances (and resolves mathjs's lazily created functions with
   * a few warm-up sums) outside the CPU limit: a few hundred ms, once, and
   * again after a timeout.
   */
  const instances = () => {
    if (!state) {
      const symbolic = lib.createSymbolicMath();
      const next = {
        // BigNumber with 64 digits: exact big integers and decimals (0.1 + 0.2 = 0.3).
        big: lib.createRestrictedMath({ number: "BigNumber", precision: 64 }, opts, symbolic),
        // Fractions: the exact form of a rational result (1/3 + 1/6 = 1/2).
        frac: lib.createRestrictedMath({ number: "Fraction" }, opts, symbolic),
      };
      for (const expr of WARM_UP) {
        for (const r of [next.big, next.frac]) {
          try {
            formatValue(lib, r.math, parseSafe(r, expr).compile().evaluate({}), opts.maxElements);
          } catch {
            // Some sums have no meaning in one mode (sqrt of a fraction); warming is all they are for.
          }
        }
      }
      state = next;
    }
    return state;
  };

  /** Runs `fn` under the CPU time limit; a timeout discards the instances it may have left half-built. */
  function limited<T>(fn: () => T): T {
    instances();
    job = fn;
    try {
      return script.runInContext(context, { timeout: opts.timeoutMs }) as T;
    } catch (err) {
      if ((err as { code?: unknown }).code === "ERR_SCRIPT_EXECUTION_TIMEOUT") {
        state = null;
        throw new MathInputError(`That calculation takes too long (limit ${opts.timeoutMs / 1000} s)`);
      }
      throw err;
    } finally {
      job = null;
    }
  }

  function outcome(expression: string, compute: () => string): MathOutcome {
    const expr = expression.trim();
    try {
      const problem = inputProblem(expr, opts);
      if (problem !== null) throw new MathInputError(problem);
      const result = limited(compute);
      if (result.length > opts.maxResultChars) {
        throw new MathInputError(`The result is too large to show (${result.length} characters; the limit is ${opts.maxResultChars})`);
      }
      return { ok: true, expression: expr, result };
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      return { ok: false, expression: expr, error: message.length > 300 ? `${message.slice(0, 300)}…` : message };
    }
  }

  /** The exact fraction of a rational result, when it is a short one. */
  function fractionOf(expr: string): string | null {
    try {
      const { frac } = instances();
      const v: unknown = parseSafe(frac, expr).compile().evaluate({});
      if (!frac.math.isFraction(v)) return null;
      const f = v as unknown as { d: bigint | number };
      const d = BigInt(f.d);
      if (d === 1n || d > 1_000_000_000n) return null;
      return frac.math.format(v, { fraction: "ratio" });
    } catch {
      return null;
    }
  }

  return {
    evaluate: (expression) =>
      outcome(expression, () => {
        const { big, frac } = instances();
        const expr = expression.trim();
        let value: unknown;
        try {
          value = parseSafe(big, expr).compile().evaluate({});
        } catch (err) {
          // Fractions do not mix with BigNumbers (fraction(3/4) * 2): a Fraction instance may read it.
          if (err instanceof MathInputError) throw err;
          try {
            return formatValue(lib, frac.math, parseSafe(frac, expr).compile().evaluate({}), opts.maxElements);
          } catch {
            throw err;
          }
        }
        const text = formatValue(lib, big.math, value, opts.maxElements);
        if (!(lib.isBig(value) && !(value as unknown as { isInteger(): boolean }).isInteger())) return text;
        const fraction = fractionOf(expr);
        if (!fraction) return text;
        // Decimals with few digits are exact (5/2 = 2.5); longer ones were rounded (1/3 ≈ 0.333…).
        const exact = (value as unknown as { sd(): number }).sd() <= 15;
        return `${fraction} ${exact ? "=" : "≈"} ${text}`;
      }),
    simplify: (expression) =>
      outcome(expression, () => {
        const { big } = instances();
        return String((big.math as unknown as { simplify(e: string): unknown }).simplify(expression.trim()));
      }),
    derivative(expression, variable) {
      let v = variable ?? "x";
      const r = outcome(expression, () => {
        const { big } = instances();
        v = variable ?? firstVariable(lib, big, expression.trim()) ?? "x";
        return String((big.math as unknown as { derivative(e: string, v: string): unknown }).derivative(expression.trim(), v));
      });
      return r.ok ? { ...r, variable: v } : r;
    },
    warm: () => void instances(),
    isCalculation(expression) {
      const expr = expression.trim();
      if (!expr || expr.length > opts.maxInputLength) return false;
      try {
        return limited(() => {
          const { big } = instances();
          const node = parseSafe(big, expr);
          let known = true;
          node.traverse((n: MathNode) => {
            if (lib.isSymbolNode(n) && !lib.isKnownSymbol(n.name, big.math)) known = false;
          });
          return known;
        });
      } catch {
        return false;
      }
    },
  };
}

/**
 * The variable to differentiate by: the first symbol that is neither a
 * function nor a constant (units count as variables here: d/dt t^2).
 */
function firstVariable(lib: Lib, r: Restricted, expr: string): string | null {
  let found: string | null = null;
  lib.parseSafe(r, expr).traverse((n: MathNode) => {
    if (!found && lib.isSymbolNode(n) && !(n.name in (r.math as unknown as Namespace))) found = n.name;
  });
  return found;
}

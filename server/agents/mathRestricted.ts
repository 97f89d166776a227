/**
 * One restricted mathjs instance, following mathjs's "Less vulnerable
 * expression parser" recipe (https://mathjs.org/docs/expressions/security.html):
 * `import`, `createUnit`, `evaluate`, `parse` and friends are replaced by
 * functions that throw; `simplify` and `derivative` by wrappers that re-check
 * their input and hand it to a private instance input never reaches; the
 * functions that allocate matrices refuse sizes past a limit. Every parsed
 * tree is also checked before it is compiled (`assertSafeTree`).
 */
// The only static import of mathjs (~90 MB RSS): the engine loads this module
// with `await import()` on first use, never at boot.
import { create, all, type MathJsInstance, type MathNode, type ConfigOptions } from "mathjs";
import { DEFAULT_LIMITS, MathInputError, type RestrictedLimits } from "./mathLimits.js";

export { DEFAULT_LIMITS, MathInputError, type RestrictedLimits } from "./mathLimits.js";

/** Names input may not reach (called or as values). */
const BLOCKED = new Set([
  "import", "createUnit", "evaluate", "parse", "compile", "parser", "resolve", "reviver", "replacer",
  "chain", "config", "typed", "help", "simplifyConstant", "simplifyCore", "rationalize", "symbolicEqual",
  "leafCount", "lazy", "factory", "create",
]);
const DISABLED = ["import", "createUnit", "evaluate", "parse", "compile", "parser", "resolve", "reviver", "replacer", "chain", "config", "help", "simplifyConstant", "simplifyCore", "rationalize", "symbolicEqual", "leafCount"];
const ALLOWED_NODES = new Set([
  "ConstantNode", "SymbolNode", "OperatorNode", "ParenthesisNode", "FunctionNode", "ArrayNode",
  "RangeNode", "ConditionalNode", "RelationalNode", "AccessorNode", "IndexNode",
]);
const NODE_PHRASES: Record<string, string> = {
  FunctionAssignmentNode: "function definitions",
  AssignmentNode: "assignments",
  BlockNode: "several statements",
  ObjectNode: "objects",
};
const COMBINATORIC = ["factorial", "gamma", "combinations", "combinationsWithRep", "permutations", "stirlingS2", "bellNumbers", "catalan", "composition", "multinomial"];

export type Namespace = Record<string, unknown>;
/** mathjs types `all` as optional; the package always exports it. */
export const factories = all as NonNullable<typeof all>;
/** A plain instance with every function, for the `simplify`/`derivative` wrappers; input never reaches it. */
export const createSymbolicMath = (): MathJsInstance => create(factories);
export interface Restricted {
  math: MathJsInstance;
  parse: MathJsInstance["parse"];
}

export const isBig = (x: unknown): x is { toNumber(): number } =>
  typeof x === "object" && x !== null && (x as { isBigNumber?: unknown }).isBigNumber === true;
export const isMatrixLike = (x: unknown): x is { toArray(): unknown[]; size(): number[] } =>
  typeof x === "object" && x !== null && (x as { isMatrix?: unknown }).isMatrix === true;

/** Every number in an argument (arrays and matrices flattened). */
function numbersIn(x: unknown): number[] {
  if (typeof x === "number") return [x];
  if (isBig(x)) return [x.toNumber()];
  if (Array.isArray(x)) return x.flatMap(numbersIn);
  if (isMatrixLike(x)) return numbersIn(x.toArray());
  return [];
}
const product = (ns: number[]) => ns.reduce((a, b) => a * Math.abs(b), 1);
export function elementsOf(x: unknown): number {
  if (Array.isArray(x)) return x.reduce<number>((n, v) => n + (Array.isArray(v) ? elementsOf(v) : 1), 0);
  if (isMatrixLike(x)) return product(x.size());
  return 1;
}

/**
 * One restricted instance and the parser captured before `parse` was
 * disabled. Exported for tests, which compile trees without the tree check
 * to show the instance refuses on its own.
 */
export function createRestrictedMath(config: ConfigOptions, limits: Partial<RestrictedLimits> = {}, symbolic: MathJsInstance = createSymbolicMath()): Restricted {
  const opts: RestrictedLimits = { ...DEFAULT_LIMITS, ...limits };
  const math = create(factories, config);
  const ns = math as unknown as Namespace;
  const withTransform = (math as unknown as { expression: { mathWithTransform: Namespace } }).expression.mathWithTransform;
  const parse = math.parse;
  const checkElements = (n: number, what: string) => {
    if (!(n <= opts.maxElements)) throw new MathInputError(`${what} would have ${Number.isFinite(n) ? n : "too many"} elements; the limit is ${opts.maxElements}`);
  };
  /** Wraps a function (and its expression transform) with a check of its arguments. */
  const guard = (name: string, check: (args: unknown[]) => void) => {
    const plain = ns[name] as (...a: unknown[]) => unknown;
    const transform = withTransform[name] as (...a: unknown[]) => unknown;
    const fn = Object.assign((...args: unknown[]) => (check(args), plain(...args)), {});
    if (transform !== plain) Object.assign(fn, { transform: (...args: unknown[]) => (check(args), transform(...args)) });
    return fn;
  };
  const sizeArgs = (name: string) => guard(name, (args) => checkElements(product(args.flatMap(numbersIn)), `${name}(…)`));
  const replacements: Record<string, unknown> = {
    zeros: sizeArgs("zeros"),
    ones: sizeArgs("ones"),
    identity: guard("identity", (args) => {
      const ns2 = args.flatMap(numbersIn);
      checkElements(ns2.length === 1 ? product(ns2) ** 2 : product(ns2), "identity(…)");
    }),
    range: guard("range", (args) => {
      if (typeof args[0] === "string") throw new MathInputError('range("…") is not supported; write start:end or range(start, end, step)');
      const [start = 0, end = 0, step = 1] = args.flatMap(numbersIn);
      checkElements(Math.floor(Math.abs(end - start) / (Math.abs(step) || 1)) + 1, "range(…)");
    }),
    resize: guard("resize", (args) => checkElements(product(numbersIn(args[1])), "resize(…)")),
    reshape: guard("reshape", (args) => checkElements(product(numbersIn(args[1])), "reshape(…)")),
    matrixFromFunction: guard("matrixFromFunction", (args) => checkElements(product(numbersIn(args[0])), "matrixFromFunction(…)")),
    kron: guard("kron", (args) => checkElements(elementsOf(args[0]) * elementsOf(args[1]), "kron(…)")),
    diag: guard("diag", (args) => checkElements(elementsOf(args[0]) ** 2, "diag(…)")),
    random: guard("random", (args) => checkElements(Array.isArray(args[0]) || isMatrixLike(args[0]) ? product(numbersIn(args[0])) : 1, "random(…)")),
    randomInt: guard("randomInt", (args) => checkElements(Array.isArray(args[0]) || isMatrixLike(args[0]) ? product(numbersIn(args[0])) : 1, "randomInt(…)")),
    pickRandom: guard("pickRandom", (args) => checkElements(numbersIn(args[1]).reduce((a, b) => Math.max(a, b), 1), "pickRandom(…)")),
    simplify: (expr: unknown) => symbolicCall(expr, (node) => symbolic.simplify(node.toString()).toString()),
    derivative: (expr: unknown, variable: unknown) =>
      symbolicCall(expr, (node) => {
        const v = typeof variable === "string" ? variable : isSymbolNode(variable) ? variable.name : null;
        if (!v || !/^[A-Za-z_]\w*$/.test(v)) throw new MathInputError('derivative takes a quoted variable, e.g. derivative("x^2", "x")');
        return symbolic.derivative(node.toString(), v).toString();
      }),
  };
  for (const name of COMBINATORIC) {
    replacements[name] = guard(name, (args) => {
      if (args.flatMap(numbersIn).some((n) => Math.abs(n) > opts.maxCombinatoricArg)) {
        throw new MathInputError(`${name} is limited to arguments up to ${opts.maxCombinatoricArg}`);
      }
    });
  }
  for (const name of DISABLED) {
    replacements[name] = () => {
      throw new MathInputError(`Function ${name} is disabled`);
    };
  }
  function symbolicCall(expr: unknown, fn: (node: MathNode) => string): string {
    if (typeof expr !== "string") throw new MathInputError('Put the expression in quotes, e.g. simplify("2x + 3x")');
    if (expr.length > opts.maxInputLength) throw new MathInputError(`The expression is longer than ${opts.maxInputLength} characters`);
    const node = parse(expr);
    assertSafeTree(node, math);
    return fn(node);
  }
  math.import(replacements, { override: true });
  return { math, parse };
}

export function isSymbolNode(x: unknown): x is { name: string } {
  return typeof x === "object" && x !== null && (x as { isSymbolNode?: unknown }).isSymbolNode === true;
}

/** Rejects a name input may not reach: blocked functions, classes, Object.prototype members. */
function assertAllowedName(name: string, math: MathJsInstance) {
  if (BLOCKED.has(name) || name in Object.prototype || name.startsWith("_")) throw new MathInputError(`"${name}" is not available`);
  const value = (math as unknown as Namespace)[name];
  if (typeof value === "function" && /^[A-Z]/.test(name)) throw new MathInputError(`"${name}" is not available`);
}

/** Only plain expressions: no assignments, function definitions, objects, blocks or property access. */
export function assertSafeTree(root: MathNode, math: MathJsInstance) {
  root.traverse((node: MathNode) => {
    if (!ALLOWED_NODES.has(node.type)) {
      const what = NODE_PHRASES[node.type] ?? node.type.replace(/Node$/, "").toLowerCase();
      throw new MathInputError(`Only a single expression can be worked out here (no ${what})`);
    }
    if (node.type === "IndexNode" && (node as unknown as { dotNotation: boolean }).dotNotation) {
      throw new MathInputError("Property access is not supported");
    }
    if (node.type === "FunctionNode" && !isSymbolNode((node as unknown as { fn: unknown }).fn)) {
      throw new MathInputError("Only named functions can be called");
    }
    if (node.type === "SymbolNode") assertAllowedName((node as unknown as { name: string }).name, math);
  });
}

/** Known to mathjs: a function, a constant or a unit. */
export function isKnownSymbol(name: string, math: MathJsInstance): boolean {
  if (name in (math as unknown as Namespace)) return true;
  try {
    return math.Unit.isValuelessUnit(name);
  } catch {
    return false;
  }
}

/** Parses with the captured parser and checks the tree. */
export function parseSafe(r: Restricted, expr: string): MathNode {
  const node = r.parse(expr);
  assertSafeTree(node, r.math);
  return node;
}

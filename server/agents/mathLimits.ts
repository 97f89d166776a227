/**
 * What the math engine and its restricted mathjs instances share without
 * loading mathjs: the limits and the error for our own refusals. Kept apart
 * from mathRestricted.ts (the only module that imports mathjs) so that
 * importing the engine at boot costs nothing; mathjs loads on first use.
 */

export interface RestrictedLimits {
  /** Longest expression accepted, characters. Default 500. */
  maxInputLength: number;
  /** Largest matrix a function may build or a result may hold, elements. Default 1,000. */
  maxElements: number;
  /** Largest argument of factorial and friends. Default 10,000. */
  maxCombinatoricArg: number;
}

export const DEFAULT_LIMITS: RestrictedLimits = { maxInputLength: 500, maxElements: 1000, maxCombinatoricArg: 10_000 };

/** Our own refusals; their message is shown to the user as is. */
export class MathInputError extends Error {
  override name = "MathInputError";
}

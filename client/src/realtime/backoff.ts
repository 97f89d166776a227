/** First reconnect delay before jitter, ms. */
export const BACKOFF_BASE_MS = 1000;
/** Longest reconnect delay, ms. */
export const BACKOFF_MAX_MS = 30_000;

/**
 * Exponential backoff with "equal jitter": half of the capped exponential
 * step, plus a random part of the other half. Never 0 (a restarted server is
 * not hit by every tab at once), never above the cap, and spread out so a
 * thousand tabs cut off together do not come back together.
 *
 * @param failures consecutive failed attempts so far (0 for the first retry)
 * @param random a number in [0, 1)
 */
export function backoffDelay(failures: number, random: number = Math.random()): number {
  const step = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, Math.min(failures, 16)));
  return Math.round(step / 2 + (random * step) / 2);
}

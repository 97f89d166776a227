/**
 * This instance's run slots (`agents.maxConcurrentJobs`), shared by the runs
 * graphile-worker fetches and those started where they were posted
 * (localStart.ts), so that together they never run more agents at once.
 */
export interface Slots {
  /** A slot if one is free now, without waiting. */
  tryTake(): boolean;
  /**
   * A slot, once one is free: true. False when `signal` fires first (or had):
   * the caller goes on without one, as a run that is being interrupted only
   * hands itself back.
   */
  take(signal: AbortSignal): Promise<boolean>;
  release(): void;
  readonly free: number;
}

export function createSlots(size: number): Slots {
  let free = size;
  const waiting: (() => void)[] = [];
  return {
    get free() {
      return free;
    },
    tryTake() {
      if (free === 0) return false;
      free--;
      return true;
    },
    take(signal) {
      if (free > 0) {
        free--;
        return Promise.resolve(true);
      }
      if (signal.aborted) return Promise.resolve(false);
      return new Promise<boolean>((resolve) => {
        const granted = () => {
          signal.removeEventListener("abort", onAbort);
          resolve(true);
        };
        const onAbort = () => {
          const i = waiting.indexOf(granted);
          if (i >= 0) waiting.splice(i, 1);
          resolve(false);
        };
        waiting.push(granted);
        signal.addEventListener("abort", onAbort, { once: true });
      });
    },
    release() {
      // Handed straight to the longest waiter, else back to the free count.
      const next = waiting.shift();
      if (next) next();
      else free = Math.min(size, free + 1);
    },
  };
}

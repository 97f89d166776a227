import type { Logger } from "./logger.js";

/**
 * Release where you acquire: each resource registers its release next to its
 * acquisition; shutdown runs them last-in-first-out, once each.
 */
export interface Releasers {
  add(name: string, release: () => Promise<void> | void): void;
  releaseAll(): Promise<void>;
  /**
   * Work that stops when the server stops accepting (the job queue, sockets):
   * run together, while in-flight HTTP requests finish, before any release.
   */
  addDrain(name: string, drain: () => Promise<void> | void): void;
  drainAll(): Promise<void>;
}

export function createReleasers(log: Logger): Releasers {
  const stack: { name: string; release: () => Promise<void> | void }[] = [];
  const drains: { name: string; drain: () => Promise<void> | void }[] = [];
  let released = false;
  let drained: Promise<void> | null = null;
  return {
    addDrain(name, drain) {
      drains.push({ name, drain });
    },
    drainAll() {
      drained ??= Promise.all(
        drains.map(async (d) => {
          try {
            await d.drain();
            log.debug({ resource: d.name }, "drained");
          } catch (err) {
            log.error({ err, resource: d.name }, "drain failed");
          }
        }),
      ).then(() => undefined);
      return drained;
    },
    add(name, release) {
      if (released) {
        // Acquired after shutdown began: release at once.
        Promise.resolve()
          .then(release)
          .catch((err: unknown) => log.error({ err, resource: name }, "release failed"));
        return;
      }
      stack.push({ name, release });
    },
    async releaseAll() {
      released = true;
      while (stack.length) {
        const r = stack.pop();
        if (!r) break;
        try {
          await r.release();
          log.debug({ resource: r.name }, "released");
        } catch (err) {
          log.error({ err, resource: r.name }, "release failed");
        }
      }
    },
  };
}

export const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });

/**
 * Wall-clock time (ms since the epoch) with sub-millisecond resolution, to
 * compare a time taken in one process with one taken in another, or with
 * PostgreSQL's `clock_timestamp()` (both CLOCK_REALTIME on this machine).
 *
 * `Date.now()` has 1 ms resolution; `performance.now()` is finer but
 * monotonic. {@link calibrateWallClock} anchors the second to the first at the
 * instant `Date.now()` ticks over a millisecond (the true wall time is then
 * the integer it shows), so the error is a loop iteration, well under 10 µs.
 * Re-calibrate before each measuring phase: NTP slewing would move the two
 * clocks apart over minutes.
 */
import type { ChatBody, RecordedRequest } from "../../../test/helpers/fakeLlm.js";

let offset = calibrate();

function calibrate(): number {
  const samples: number[] = [];
  for (let i = 0; i < 5; i++) {
    const d0 = Date.now();
    let d = d0;
    let p = 0;
    while (d === d0) {
      p = performance.now();
      d = Date.now();
    }
    samples.push(d - p);
  }
  samples.sort((a, b) => a - b);
  return samples[2] as number;
}

/** Re-anchors the clock (spins up to ~5 ms); returns how far it moved, ms. */
export function calibrateWallClock(): number {
  const next = calibrate();
  const moved = next - offset;
  offset = next;
  return moved;
}

/** Now, ms since the epoch, sub-millisecond. */
export const wallNow = (): number => performance.now() + offset;

/** The last user message of a chat request to the fake provider. */
export const lastUser = (body: ChatBody) => [...(body.messages ?? [])].reverse().find((m) => m.role === "user")?.content ?? "";

/**
 * Send times (bench wall clock) of every chunk the fake writes for this
 * request (index 0 the role chunk, 1..n the content chunks, then finish and
 * usage): the fake increments `chunksSent` right after each `res.write`.
 */
export function recordSendTimes(rec: RecordedRequest): number[] {
  const times: number[] = [];
  let n = rec.chunksSent;
  Object.defineProperty(rec, "chunksSent", {
    configurable: true,
    enumerable: true,
    get: () => n,
    set: (v: number) => {
      times.push(wallNow());
      n = v;
    },
  });
  return times;
}

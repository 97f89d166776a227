/**
 * What the chaos run's clients ask for: run kinds drawn from a seeded PRNG,
 * and for each message the fake provider's replies, attempt by attempt (the
 * nth provider request for a message gets the nth reply; the last repeats, so
 * an interrupted attempt is answered like the one before). Every reply that
 * carries no fault has the same text, so a succeeded run's stored message must
 * be exactly that text whichever attempt produced it.
 */
import type { FakeReply } from "../helpers/fakeLlm.js";

export const RUN_KINDS = ["normal", "long", "retry429", "retry500", "dropped", "fail", "cancel"] as const;
export type RunKind = (typeof RUN_KINDS)[number];

/** Relative weights of the kinds. */
const WEIGHTS: Record<RunKind, number> = { normal: 33, long: 20, retry429: 10, retry500: 10, dropped: 8, fail: 6, cancel: 13 };

/** The outcome each kind must reach. */
export const EXPECTED_STATUS: Record<RunKind, "succeeded" | "failed" | "cancelled"> = {
  normal: "succeeded",
  long: "succeeded",
  retry429: "succeeded",
  retry500: "succeeded",
  dropped: "succeeded",
  fail: "failed",
  cancel: "cancelled",
};

export function pickKind(rand: () => number): RunKind {
  const total = RUN_KINDS.reduce((n, k) => n + WEIGHTS[k], 0);
  let x = rand() * total;
  for (const k of RUN_KINDS) {
    x -= WEIGHTS[k];
    if (x < 0) return k;
  }
  return "normal";
}

/** Non-ASCII (BMP) prose with newlines, tabs, quotes and backslashes, `n` characters, varied by `rand`. */
export function prose(rand: () => number, n: number): string {
  const words = ["streaming", "tokens", "naïve", "café", "über", "日本語", "Ωmega", "résumé", "a", "of", "the", "—", "“quoted”", "line\n", "tab\t", "back\\slash", '"q"', "€5", "ñandú", "Zürich"];
  let s = "";
  while (s.length < n) s += `${words[Math.floor(rand() * words.length)] ?? "x"} `;
  return s.slice(0, n);
}

export interface Plan {
  kind: RunKind;
  /** The text every fault-free reply streams. */
  text: string;
  replies: FakeReply[];
}

/** The provider's replies for one message of `kind`. */
export function planFor(kind: RunKind, rand: () => number): Plan {
  const short = (): FakeReply => ({ text, chunkSize: 5, delayMs: 40 });
  let text: string;
  switch (kind) {
    case "normal":
      text = prose(rand, 60 + Math.floor(rand() * 80));
      return { kind, text, replies: [short()] };
    case "long":
    case "cancel": {
      // About 7-9 s of streaming: long enough to be under way when an instance or the database goes.
      text = prose(rand, 280 + Math.floor(rand() * 80));
      return { kind, text, replies: [{ text, chunkSize: 4, delayMs: 100 }] };
    }
    case "retry429":
      text = prose(rand, 60 + Math.floor(rand() * 60));
      return { kind, text, replies: [{ fault: { kind: "status", status: 429, retryAfter: "1" } }, short()] };
    case "retry500":
      text = prose(rand, 60 + Math.floor(rand() * 60));
      return { kind, text, replies: [{ fault: { kind: "status", status: 500 } }, short()] };
    case "dropped": {
      // The first attempt streams some text, then the provider drops the connection: the retry's `reset` must clear it.
      text = prose(rand, 80 + Math.floor(rand() * 60));
      const partial = prose(rand, 80);
      return { kind, text, replies: [{ text: partial, chunkSize: 4, delayMs: 30, fault: { kind: "drop", afterChunks: 6 } }, short()] };
    }
    case "fail":
      text = "";
      return { kind, text, replies: [{ fault: { kind: "status", status: 500, message: "planned provider failure" } }] };
    default: {
      const unreachable: never = kind;
      throw new Error(`unknown kind ${String(unreachable)}`);
    }
  }
}

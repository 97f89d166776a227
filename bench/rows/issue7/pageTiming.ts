/**
 * Page-side timing for the first-token row: the page clock aligned with the
 * bench's, and a watcher that stamps when a text first shows in the DOM and
 * when the frame holding it has been painted.
 *
 * Page stamps are `performance.timeOrigin + performance.now()`; the bench's
 * are wall clock with sub-ms resolution (issue5/wallClock.ts), both from this
 * machine's clock. The scripts are strings, not functions: tsx's transform
 * would put its `__name` helper into a function's source, and pages have none.
 */
import type { Page } from "playwright-core";
import { wallNow } from "../issue5/wallClock.js";

/** Page clock − bench clock, ms, from the round trip with the shortest RTT; the error is at most half that RTT. */
export async function clockOffset(page: Page, trips = 25): Promise<{ offset: number; errorMs: number }> {
  let best = { offset: 0, errorMs: Infinity };
  for (let i = 0; i < trips; i++) {
    const t0 = wallNow();
    const tp = await page.evaluate("performance.timeOrigin + performance.now()");
    const t1 = wallNow();
    if (typeof tp !== "number") throw new Error("the page clock is not a number");
    if ((t1 - t0) / 2 < best.errorMs) best = { offset: tp - (t0 + t1) / 2, errorMs: (t1 - t0) / 2 };
  }
  return best;
}

export interface Stamps {
  /** Enter pressed (keydown, capture phase); absent when no Enter was pressed. */
  enter?: number;
  /** The MutationObserver callback that first found the text inside `selector`. */
  seen: number;
  /** The requestAnimationFrame callback of the next frame (style, layout and paint follow it). */
  frame: number;
  /** A task queued from that frame callback: runs once the frame has been painted. */
  painted: number;
}

/** Arms the watcher for `text` inside any element matching `selector`; stamps land on window.__ft. */
export function watchFor(page: Page, text: string, selector: string): Promise<unknown> {
  return page.evaluate(`(() => {
    const m = ${JSON.stringify(text)};
    const sel = ${JSON.stringify(selector)};
    const now = () => performance.timeOrigin + performance.now();
    const w = window;
    w.__ft = {};
    w.__ftPainted = new Promise((resolve) => { w.__ftResolve = resolve; });
    document.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && w.__ft.enter === undefined) w.__ft.enter = now();
    }, { capture: true });
    const mo = new MutationObserver(() => {
      if (w.__ft.seen !== undefined) return;
      if (![...document.querySelectorAll(sel)].some((el) => (el.textContent || "").includes(m))) return;
      w.__ft.seen = now();
      mo.disconnect();
      requestAnimationFrame(() => {
        w.__ft.frame = now();
        setTimeout(() => { w.__ft.painted = now(); w.__ftResolve(w.__ft); }, 0);
      });
    });
    mo.observe(document.body, { subtree: true, childList: true, characterData: true });
  })()`);
}

/**
 * Waits for the painted stamp and returns all stamps: one evaluate that
 * awaits the watcher's promise in the page. Polling (an evaluate every 10 ms)
 * cost the bench, the browser process and the page CPU while the token was on
 * its way, on a machine whose spare CPU is what the figure depends on.
 * (waitForFunction with a string predicate evals in the page, which the app's
 * CSP, script-src 'self', refuses.)
 */
export async function readStamps(page: Page, timeoutMs = 10_000): Promise<Stamps> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), timeoutMs)));
  try {
    const ft = (await Promise.race([page.evaluate("window.__ftPainted"), timedOut])) as Stamps | null;
    if (ft) return ft;
  } finally {
    clearTimeout(timer);
  }
  const state = await page.evaluate("JSON.stringify({ ft: window.__ft, url: location.href, hidden: document.hidden, text: [...document.querySelectorAll('article')].map((a) => a.textContent).join(' | ').slice(0, 300) })");
  throw new Error(`the token was not painted within ${timeoutMs} ms; page: ${String(state)}`);
}

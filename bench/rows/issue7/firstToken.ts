/**
 * Issue 7: time from the (fake) provider sending the first chunk of an answer
 * to that token painted in the chat page, and from pressing Enter to it.
 *
 * The built server talks to the test suite's fake OpenAI provider
 * (test/helpers/fakeLlm.ts) running in the bench process; the assistant agent
 * answers (the rules router sends a message without digits or a greeting to
 * it). The fake counts each SSE chunk it writes in `RecordedRequest.chunksSent`
 * right after `res.write` returns; a setter on that field takes the send time
 * of each chunk (as bench/rows/issue5/chunkToStored.ts does). Chunk 0 is the
 * role-only chunk, chunk 1 the first content: a per-sample marker word.
 *
 * In the page (Debian Chromium via playwright-core): a keydown listener
 * (capture) stamps Enter; a MutationObserver on the document watches for the
 * marker, then requestAnimationFrame, and a task queued from that frame
 * callback stamps "painted": it runs once the frame holding the token has gone
 * through style, layout and paint. Page stamps are `performance.timeOrigin +
 * performance.now()`; the bench's are wall clock with sub-ms resolution
 * (issue5/wallClock.ts). The two are aligned per page by round trips
 * (`page.evaluate` of the page clock between two bench stamps; the
 * shortest-RTT one gives the offset, error ≤ RTT / 2, kept in the JSON).
 *
 * One browser page per sample (the WebSocket is open before Enter: the header
 * shows "Live"); each sample waits for its answer to finish.
 */
import type { Page } from "playwright-core";
import type { BenchContext } from "../../lib/context.js";
import type { BenchRow, Measurement } from "../../lib/types.js";
import { quantile, round } from "../../lib/stats.js";
import { startFakeLlm, type ChatBody, type RecordedRequest } from "../../../test/helpers/fakeLlm.js";
import { launchBrowser } from "../../../test/helpers/browser.js";
import { calibrateWallClock, wallNow } from "../issue5/wallClock.js";

const GOAL_MS = 50;
const CHUNK_DELAY_MS = 20;

const lastUser = (body: ChatBody) => [...(body.messages ?? [])].reverse().find((m) => m.role === "user")?.content ?? "";

/** Send times (bench wall clock) of every chunk the fake writes for `rec`. */
function recordSendTimes(rec: RecordedRequest): number[] {
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

/** page clock − bench clock, ms, from the round trip with the shortest RTT. */
async function clockOffset(page: Page): Promise<{ offset: number; errorMs: number }> {
  let best = { offset: 0, errorMs: Infinity };
  for (let i = 0; i < 25; i++) {
    const t0 = wallNow();
    const tp = await page.evaluate(() => performance.timeOrigin + performance.now());
    const t1 = wallNow();
    if ((t1 - t0) / 2 < best.errorMs) best = { offset: tp - (t0 + t1) / 2, errorMs: (t1 - t0) / 2 };
  }
  return best;
}

/** Installs the Enter stamp and the marker watcher; page-clock stamps land on window.__ft. */
function watchFor(page: Page, marker: string) {
  return page.evaluate((m) => {
    const now = () => performance.timeOrigin + performance.now();
    const w = window as unknown as { __ft: { enter?: number; seen?: number; frame?: number; painted?: number } };
    w.__ft = {};
    document.addEventListener(
      "keydown",
      (e) => {
        if (e.key === "Enter" && !e.shiftKey && w.__ft.enter === undefined) w.__ft.enter = now();
      },
      { capture: true },
    );
    const mo = new MutationObserver(() => {
      if (w.__ft.seen !== undefined || !(document.body.textContent ?? "").includes(m)) return;
      w.__ft.seen = now();
      mo.disconnect();
      requestAnimationFrame(() => {
        w.__ft.frame = now();
        setTimeout(() => (w.__ft.painted = now()), 0);
      });
    });
    mo.observe(document.body, { subtree: true, childList: true, characterData: true });
  }, marker);
}

interface Sample {
  sentToPainted: number;
  enterToPainted: number;
  sentToSeen: number;
  seenToPainted: number;
  clockErrorMs: number;
}

const LETTERS = "abcdefghijklmnopqrstuvwxyz";
const markerFor = (i: number) => `Zephyrq${LETTERS[i % 26]}${LETTERS[Math.floor(i / 26) % 26]}`;

async function run(ctx: BenchContext): Promise<Measurement[]> {
  const samples = ctx.options.quick ? 4 : 20;
  const fake = await startFakeLlm({ apiKey: "x" });
  const sends = new Map<string, number[]>();
  fake.setDefault((body, rec) => {
    const marker = /^first token (\w+)$/.exec(lastUser(body))?.[1];
    if (!marker) return { text: "unexpected request" };
    sends.set(marker, recordSendTimes(rec));
    // The marker is the whole first content chunk.
    return { text: `${marker} and the rest of a short answer, streamed a few characters at a time.`, chunkSize: marker.length, delayMs: CHUNK_DELAY_MS };
  });
  const browser = await launchBrowser();
  try {
    const server = await ctx.spawnServer({
      env: {
        OPENAI_API_KEY: "x",
        OPENAI_BASE_URL: fake.url,
        OPENAI_RATE_LIMIT_MAX: "1000000",
        SESSION_SECRET: "bench-session-secret-issue7-0123456789abcdef",
        JWT_SECRET: "bench-jwt-secret-issue7-0123456789abcdefghij",
      },
    });
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    try {
      const out: Sample[] = [];
      ctx.progress(`${samples} answers (after 2 warm-ups), one fresh page each`);
      for (let i = 0; i < samples + 2; i++) {
        const marker = markerFor(i);
        const page = await context.newPage();
        try {
          await page.goto(server.baseUrl + "/", { waitUntil: "load" });
          await page.locator('.conn[data-state="open"]').waitFor({ timeout: 20_000 });
          const composer = page.getByLabel("Message", { exact: true });
          await composer.fill(`first token ${marker}`);
          calibrateWallClock();
          const { offset, errorMs } = await clockOffset(page);
          await watchFor(page, marker);
          await composer.press("Enter");
          await page.locator('article.msg-assistant[data-phase="succeeded"]').waitFor({ timeout: 30_000 });
          await page.waitForFunction(() => (window as unknown as { __ft: { painted?: number } }).__ft.painted !== undefined, undefined, { timeout: 5000 });
          const ft = await page.evaluate(() => (window as unknown as { __ft: { enter: number; seen: number; painted: number } }).__ft);
          const sent = sends.get(marker)?.[1];
          if (sent === undefined) throw new Error(`the fake recorded no first content chunk for ${marker}`);
          if (i < 2) continue;
          const sentPage = sent + offset;
          out.push({
            sentToPainted: ft.painted - sentPage,
            enterToPainted: ft.painted - ft.enter,
            sentToSeen: ft.seen - sentPage,
            seenToPainted: ft.painted - ft.seen,
            clockErrorMs: errorMs,
          });
        } finally {
          await page.close();
        }
      }
      const col = (k: keyof Sample) => out.map((s) => s[k]);
      const q = (k: keyof Sample, p: number) => round(quantile(col(k), p), 1);
      const details = { samples: out.map((s) => Object.fromEntries(Object.entries(s).map(([k, v]) => [k, round(v, 2)]))), chunkDelayMs: CHUNK_DELAY_MS };
      const maxErr = round(Math.max(...col("clockErrorMs")), 2);
      return [
        {
          name: "first token: provider sent → painted p50",
          measured: { value: q("sentToPainted", 0.5), unit: "ms" },
          goal: { kind: "under", value: GOAL_MS, unit: "ms" },
          details,
          notes: [
            `first token: provider → DOM p50 ${q("sentToSeen", 0.5)} ms, DOM → painted p50 ${q("seenToPainted", 0.5)} ms; page/bench clock alignment error ≤ ${maxErr} ms`,
          ],
        },
        { name: "first token: provider sent → painted p99", measured: { value: q("sentToPainted", 0.99), unit: "ms" }, goal: { kind: "under", value: GOAL_MS, unit: "ms" } },
        { name: "first token: Enter → painted p50", measured: { value: q("enterToPainted", 0.5), unit: "ms" }, goal: { kind: "info" } },
        { name: "first token: Enter → painted p99", measured: { value: q("enterToPainted", 0.99), unit: "ms" }, goal: { kind: "info" } },
      ];
    } finally {
      await context.close();
      await server.stop("SIGTERM", 15_000);
    }
  } finally {
    await browser.close();
    await fake.close();
  }
}

export const firstTokenRow: BenchRow = {
  name: "issue7-first-token",
  issue: 7,
  description: "fake provider sends the first chunk → that token painted in Chromium (goal ≤ 50 ms), and Enter → painted",
  run,
};

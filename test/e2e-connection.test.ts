/**
 * Issue 7, points 2 and 3, in real Chromium against the built server: one
 * WebSocket per tab; reconnecting with backoff and jitter and resuming the
 * open run with `after`; a visible connection state; Server-Sent Events
 * when the WebSocket cannot connect; the offline banner; a reload in the
 * middle of an answer that continues it without doubling any text. Sending:
 * over the open socket (`send`, no POST), by POST without it, and a send
 * whose answer never comes, which is not sent again.
 *
 * The WebSocket is cut and refused through Playwright's WebSocket routing,
 * which proxies the page's socket to the real server and records both ways.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import type { Browser, Page, Request, WebSocketRoute } from "playwright-core";
import type { MessageDto, Page as ListPage } from "../shared/api.js";
import type { EventFrame } from "../shared/realtime.js";
import { backoffDelay, BACKOFF_BASE_MS } from "../client/src/realtime/backoff.js";
import { apiGet, launchBrowser, newPage, plainText, startE2eServer, type E2eEnv, eventually } from "./helpers/browser.js";

let env: E2eEnv;
let browser: Browser;

beforeAll(async () => {
  [env, browser] = await Promise.all([startE2eServer(), launchBrowser()]);
});

afterAll(async () => {
  await browser?.close();
  await env?.close();
});

const composer = (page: Page) => page.getByLabel("Message", { exact: true });
const conversationIdOf = (page: Page) => /\/c\/([0-9a-f-]{36})/.exec(page.url())?.[1] ?? "";
const connState = (page: Page) => page.locator(".conn").getAttribute("data-state");

async function send(page: Page, text: string) {
  await composer(page).fill(text);
  await composer(page).press("Enter");
}

/** The run's stored assistant message (through the API, as the page's user). */
async function storedAnswer(page: Page, runId: string): Promise<string | undefined> {
  const messages = await apiGet<ListPage<MessageDto>>(page, `/api/conversations/${conversationIdOf(page)}/messages`);
  return messages.items.find((m) => m.role === "assistant" && m.runId === runId)?.content;
}

const answerText = async (page: Page) => ((await page.locator("article.msg-assistant .answer").last().textContent().catch(() => "")) ?? "").trim();

/**
 * Samples the streamed text until the answer is done: every sample must be
 * a prefix of the final text (nothing shown twice, nothing dropped and then
 * re-added out of order).
 */
async function watchUntilDone(page: Page, timeoutMs = 40_000): Promise<{ samples: string[]; final: string; runId: string }> {
  const samples: string[] = [];
  const until = Date.now() + timeoutMs;
  for (;;) {
    samples.push(await answerText(page));
    const phase = await page.locator("article.msg-assistant").last().getAttribute("data-phase").catch(() => null);
    if (phase === "succeeded") break;
    if (Date.now() > until) throw new Error(`answer not done; phase ${phase}; last text ${samples.at(-1)?.slice(-80)}`);
    await page.waitForTimeout(50);
  }
  const final = await answerText(page);
  const runId = (await page.locator("article.msg-assistant").last().getAttribute("data-run-id")) ?? "";
  for (const s of samples) expect(final.startsWith(s), `sample is not a prefix of the final text:\n${s.slice(-120)}`).toBe(true);
  return { samples, final, runId };
}

interface Attempt {
  at: number;
  route: WebSocketRoute;
  /** What was forwarded each way. */
  toServer: string[];
  toPage: string[];
}

interface Proxy {
  /** One entry per connection attempt: when, and what went each way. */
  attempts: Attempt[];
  refuse: boolean;
  /** Sees each frame from the page first; false: not forwarded. */
  fromPage?: (frame: Record<string, unknown>, attempt: Attempt) => boolean;
  /** Sees each frame from the server first; false: not forwarded. */
  fromServer?: (frame: Record<string, unknown>, attempt: Attempt) => boolean;
}

/** Routes the page's `/ws` through Playwright: forwards and records, or refuses while `refuse` is set. */
async function proxyWebSocket(page: Page): Promise<Proxy> {
  const proxy: Proxy = { attempts: [], refuse: false };
  await page.routeWebSocket(/\/ws$/, (ws) => {
    const attempt: Attempt = { at: Date.now(), route: ws, toServer: [], toPage: [] };
    proxy.attempts.push(attempt);
    if (proxy.refuse) {
      ws.close({ code: 1011, reason: "refused by the test" });
      return;
    }
    const server = ws.connectToServer();
    ws.onMessage((m) => {
      if (proxy.fromPage && !proxy.fromPage(JSON.parse(String(m)) as Record<string, unknown>, attempt)) return;
      attempt.toServer.push(String(m));
      server.send(m);
    });
    server.onMessage((m) => {
      if (proxy.fromServer && !proxy.fromServer(JSON.parse(String(m)) as Record<string, unknown>, attempt)) return;
      attempt.toPage.push(String(m));
      ws.send(m);
    });
    ws.onClose(() => server.close());
    server.onClose((code, reason) => ws.close({ code, reason }));
  });
  return proxy;
}

const isMessagePost = (r: Request) => r.method() === "POST" && /\/api\/conversations\/[^/]+\/messages$/.test(new URL(r.url()).pathname);

/** The user messages of the page's conversation, as stored. */
async function storedQuestions(page: Page): Promise<string[]> {
  const messages = await apiGet<ListPage<MessageDto>>(page, `/api/conversations/${conversationIdOf(page)}/messages`);
  return messages.items.filter((m) => m.role === "user").map((m) => m.content);
}

const eventsIn = (frames: string[], runId: string) =>
  frames.map((f) => JSON.parse(f) as { type: string }).filter((f): f is EventFrame => f.type === "event" && (f as EventFrame).runId === runId);

describe("connection", () => {
  it("backoff: exponential steps, each jittered within its upper half", () => {
    for (let n = 0; n < 8; n++) {
      const step = Math.min(30_000, BACKOFF_BASE_MS * 2 ** n);
      expect(backoffDelay(n, 0)).toBe(step / 2);
      expect(backoffDelay(n, 0.999999)).toBeLessThanOrEqual(step);
      expect(backoffDelay(n, 0.999999)).toBeGreaterThan(step * 0.99);
    }
    const spread = new Set(Array.from({ length: 50 }, () => backoffDelay(3)));
    expect(spread.size).toBeGreaterThan(25);
    expect(backoffDelay(60, 0.5)).toBeLessThanOrEqual(30_000);
  });

  it("keeps one WebSocket per tab, whatever the page shows, and says it is live", async () => {
    const { context, page } = await newPage(browser, env.baseUrl);
    const sockets: string[] = [];
    page.on("websocket", (ws) => sockets.push(ws.url()));
    await page.goto("/");
    await eventually(() => connState(page)).toBe("open");
    expect(await page.locator(".conn").textContent()).toBe("Live");

    env.llm.script({ text: "First answer." }, { text: "Second answer." });
    await send(page, "A first question");
    await page.locator('article.msg-assistant[data-phase="succeeded"]').waitFor();
    await page.getByRole("button", { name: "New chat" }).click();
    await send(page, "A second question");
    await page.locator('article.msg-assistant[data-phase="succeeded"]').waitFor();
    await page.locator(".conv-link").last().click();
    await page.getByRole("link", { name: "System status" }).click();
    await page.getByText("All systems healthy").waitFor();
    await page.getByRole("link", { name: "Back to chat" }).click();
    await page.getByRole("heading", { name: "What can I help with?" }).waitFor();

    expect(sockets).toEqual([`${env.baseUrl.replace("http", "ws")}/ws`]);
    await context.close();
  });

  it("with the socket open, a message goes over it as `send` (no POST) and its answer streams on it from seq 1", async () => {
    const { context, page, errors } = await newPage(browser, env.baseUrl);
    const posts: string[] = [];
    page.on("request", (r) => {
      if (isMessagePost(r)) posts.push(r.url());
    });
    const framesSent: Record<string, unknown>[] = [];
    const framesReceived: string[] = [];
    page.on("websocket", (ws) => {
      ws.on("framesent", (f) => framesSent.push(JSON.parse(String(f.payload)) as Record<string, unknown>));
      ws.on("framereceived", (f) => framesReceived.push(String(f.payload)));
    });
    await page.goto("/");
    await eventually(() => connState(page)).toBe("open");

    env.llm.script({ text: plainText(60, 51), chunkSize: 4, delayMs: 10 });
    await send(page, "Tell me about orbits and signals");
    const { final, runId } = await watchUntilDone(page);
    expect(final).toBe((await storedAnswer(page, runId))?.trim());
    expect(await storedQuestions(page)).toEqual(["Tell me about orbits and signals"]);

    expect(posts).toEqual([]);
    const sends = framesSent.filter((f) => f.type === "send");
    expect(sends).toEqual([{ type: "send", requestId: expect.any(String), conversationId: conversationIdOf(page), content: "Tell me about orbits and signals" }]);
    // The subscription came with it: the page never asked for the run.
    expect(framesSent.filter((f) => f.type === "subscribe")).toEqual([]);
    const received = framesReceived.map((f) => JSON.parse(f) as { type: string; requestId?: string; run?: { id: string } });
    const answer = received.findIndex((f) => f.type === "sent" && f.requestId === sends[0]?.requestId);
    expect(received[answer]?.run?.id).toBe(runId);
    const events = eventsIn(framesReceived, runId);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    expect(received.findIndex((f) => f.type === "event")).toBeGreaterThan(answer);
    expect(events.at(-1)?.event).toBe("done");
    expect(errors).toEqual([]);
    await context.close();
  });

  it("a send whose answer never comes is not sent again: the conversation is reloaded, and shows the message and then its answer if it was stored", async () => {
    const { context, page } = await newPage(browser, env.baseUrl);
    const proxy = await proxyWebSocket(page);
    let cut = false;
    // The server stores the message and answers; the socket drops before the answer reaches the page.
    proxy.fromServer = (f, attempt) => {
      if (f.type !== "sent" || cut) return true;
      cut = true;
      attempt.route.close({ code: 4000, reason: "cut by the test" });
      return false;
    };
    await page.goto("/");
    await eventually(() => connState(page)).toBe("open");
    env.llm.script({ text: "Lanterns light the harbor." });
    await send(page, "Tell me about lanterns");
    await page.getByRole("alert").filter({ hasText: "Your message was sent, but its answer cannot be followed live; it will show here when it is ready." }).waitFor();
    expect(cut).toBe(true);
    await page.locator("article.msg-user .bubble", { hasText: "Tell me about lanterns" }).waitFor();
    // Its answer, once stored, found by reloading the conversation (its run's stream cannot be followed).
    await page.locator('article.msg-assistant[data-phase="succeeded"]', { hasText: "Lanterns light the harbor." }).waitFor({ timeout: 30_000 });
    expect(await storedQuestions(page)).toEqual(["Tell me about lanterns"]);
    // Sent once: no socket attempt carried a second send, and nothing went by POST.
    const sends = proxy.attempts.flatMap((a) => a.toServer.map((m) => JSON.parse(m) as { type: string })).filter((f) => f.type === "send");
    expect(sends).toHaveLength(1);
    expect(await page.locator("article.msg-user").count()).toBe(1);
    expect(await composer(page).inputValue()).toBe("");
    await context.close();
  });

  it("a send lost before the server read it: the user is told it was not sent and gets the text back; a refusal keeps its words; a server without `send` gets the POST", async () => {
    const { context, page } = await newPage(browser, env.baseUrl);
    const proxy = await proxyWebSocket(page);
    const posts: string[] = [];
    page.on("request", (r) => {
      if (isMessagePost(r)) posts.push(r.url());
    });
    let mode: "lose" | "overloaded" | "old server" = "lose";
    proxy.fromPage = (f, attempt) => {
      if (f.type !== "send") return true;
      if (mode === "lose") attempt.route.close({ code: 4000, reason: "cut by the test" });
      else if (mode === "overloaded") attempt.route.send(JSON.stringify({ type: "error", code: "overloaded", message: "Too many runs are waiting; try again in 5 seconds", requestId: f.requestId }));
      // What an instance from before `send` answers: an unknown frame type, no requestId.
      else attempt.route.send(JSON.stringify({ type: "error", code: "bad_request", message: "type: Invalid input" }));
      return false;
    };
    await page.goto("/");
    await page.getByRole("button", { name: "New chat" }).click();
    await page.waitForURL(/\/c\/[0-9a-f-]{36}$/);
    await eventually(() => connState(page)).toBe("open");

    await send(page, "Tell me about maples");
    await page.getByRole("alert").filter({ hasText: "Not sent: the connection dropped before the server answered. Send it again." }).waitFor();
    await eventually(() => composer(page).inputValue()).toBe("Tell me about maples");
    expect(await storedQuestions(page)).toEqual([]);

    await eventually(() => connState(page), { timeout: 10_000 }).toBe("open");
    mode = "overloaded";
    await composer(page).press("Enter");
    await page.getByRole("alert").filter({ hasText: "The server is busy; try again in a few seconds." }).waitFor();
    await eventually(() => composer(page).inputValue()).toBe("Tell me about maples");
    expect(await storedQuestions(page)).toEqual([]);

    expect(posts).toEqual([]);

    mode = "old server";
    env.llm.script({ text: "Maples turn red." });
    await composer(page).press("Enter");
    await page.locator('article.msg-assistant[data-phase="succeeded"]', { hasText: "Maples turn red." }).waitFor({ timeout: 15_000 });
    expect(await storedQuestions(page)).toEqual(["Tell me about maples"]);
    expect(posts).toHaveLength(1);
    await context.close();
  });

  it("reconnects after a drop and resumes the open run with `after`; no text lost or doubled", async () => {
    const { context, page } = await newPage(browser, env.baseUrl);
    const proxy = await proxyWebSocket(page);
    await page.goto("/");
    await eventually(() => connState(page)).toBe("open");

    env.llm.script({ text: plainText(130, 11), chunkSize: 4, delayMs: 25 });
    await send(page, "Tell me about lanterns and harbors");
    await eventually(() => answerText(page).then((t) => t.length), { timeout: 15_000 }).toBeGreaterThan(80);
    const runId = (await page.locator("article.msg-assistant").last().getAttribute("data-run-id")) ?? "";

    // Cut the socket mid-answer.
    const first = proxy.attempts[0];
    if (!first) throw new Error("no socket");
    first.route.close({ code: 4000, reason: "cut by the test" });
    const seenBefore = Math.max(...eventsIn(first.toPage, runId).map((e) => e.seq));
    await eventually(() => connState(page), { timeout: 5000, interval: 20 }).toBe("reconnecting");
    expect(await page.locator(".conn").textContent()).toBe("Reconnecting…");

    // The new socket asks for exactly what follows.
    await eventually(() => proxy.attempts.length, { timeout: 10_000 }).toBe(2);
    await eventually(() => connState(page)).toBe("open");
    const second = proxy.attempts[1];
    await eventually(() => second?.toServer.length ?? 0).toBeGreaterThan(0);
    expect(second?.toServer.map((m) => JSON.parse(m) as unknown)).toContainEqual({ type: "subscribe", runId, after: seenBefore });
    await eventually(() => eventsIn(second?.toPage ?? [], runId).length, { timeout: 10_000 }).toBeGreaterThan(0);
    expect(eventsIn(second?.toPage ?? [], runId)[0]?.seq).toBe(seenBefore + 1);

    const { final } = await watchUntilDone(page);
    expect(final).toBe((await storedAnswer(page, runId))?.trim());
    await context.close();
  });

  it("backs off with jitter while the WebSocket is refused, streams over SSE meanwhile, then returns to the WebSocket", async () => {
    const { context, page } = await newPage(browser, env.baseUrl);
    const proxy = await proxyWebSocket(page);
    proxy.refuse = true;
    const sse: string[] = [];
    const posts: string[] = [];
    page.on("request", (r) => {
      if (r.url().includes("/events")) sse.push(r.url());
      if (isMessagePost(r)) posts.push(r.url());
    });
    await page.goto("/");

    // Two failed attempts in a row: streams move to SSE while the socket keeps retrying.
    await eventually(() => page.locator(".conn").getAttribute("data-transport"), { timeout: 10_000 }).toBe("sse");
    expect(await page.locator(".conn").textContent()).toBe("Live (SSE)");

    env.llm.script({ text: plainText(60, 21), chunkSize: 4, delayMs: 20 });
    await send(page, "Tell me about rivers please");
    const { final, runId } = await watchUntilDone(page);
    expect(final).toBe((await storedAnswer(page, runId))?.trim());
    expect(sse.some((u) => u.includes(`/api/runs/${runId}/events`))).toBe(true);
    // No socket to send on: the message went by POST.
    expect(posts).toHaveLength(1);

    // The attempts so far were spaced by the backoff: step n waits between half and all of 2^n seconds.
    await eventually(() => proxy.attempts.length, { timeout: 20_000 }).toBeGreaterThanOrEqual(4);
    const at = proxy.attempts.map((a) => a.at);
    for (let n = 0; n < 3; n++) {
      const gap = (at[n + 1] ?? 0) - (at[n] ?? 0);
      const step = BACKOFF_BASE_MS * 2 ** n;
      expect(gap, `gap ${n}`).toBeGreaterThanOrEqual(step / 2 - 100);
      expect(gap, `gap ${n}`).toBeLessThanOrEqual(step + 800);
    }

    // Once the socket is accepted again, the page is back on it.
    proxy.refuse = false;
    await eventually(() => connState(page), { timeout: 20_000 }).toBe("open");
    expect(await page.locator(".conn").getAttribute("data-transport")).toBe("websocket");
    env.llm.script({ text: plainText(30, 22) });
    const before = proxy.attempts.length;
    await send(page, "And one more about clouds");
    await eventually(() => page.locator('article.msg-assistant[data-phase="succeeded"]').count(), { timeout: 15_000 }).toBe(2);
    // Sent over the socket it is back on, and streamed there; no POST this time.
    const last = proxy.attempts[before - 1];
    const again = (await page.locator("article.msg-assistant").last().getAttribute("data-run-id")) ?? "";
    expect(last?.toServer.map((m) => JSON.parse(m) as unknown)).toContainEqual(expect.objectContaining({ type: "send", content: "And one more about clouds" }));
    expect(eventsIn(last?.toPage ?? [], again).length).toBeGreaterThan(0);
    expect(posts).toHaveLength(1);
    await context.close();
  });

  it("shows an offline banner while the browser is offline, and the answer completes after", async () => {
    const { context, page } = await newPage(browser, env.baseUrl);
    await page.goto("/");
    await eventually(() => connState(page)).toBe("open");
    env.llm.script({ text: plainText(130, 31), chunkSize: 4, delayMs: 25 });
    await send(page, "Tell me about gardens");
    await eventually(() => answerText(page).then((t) => t.length), { timeout: 15_000 }).toBeGreaterThan(40);

    await context.setOffline(true);
    const banner = page.getByRole("alert").filter({ hasText: "You are offline." });
    await banner.waitFor();
    await eventually(() => connState(page)).toBe("offline");
    expect(await page.locator(".conn").textContent()).toBe("Offline");
    await page.waitForTimeout(1500);

    await context.setOffline(false);
    await banner.waitFor({ state: "detached" });
    const { final, runId } = await watchUntilDone(page);
    expect(final).toBe((await storedAnswer(page, runId))?.trim());
    await eventually(() => connState(page), { timeout: 10_000 }).toBe("open");
    await context.close();
  });

  it("a reload mid-answer continues the answer without doubling any text", async () => {
    const { context, page } = await newPage(browser, env.baseUrl);
    await page.goto("/");
    env.llm.script({ text: plainText(150, 41), chunkSize: 4, delayMs: 25 });
    await send(page, "Tell me about silver maples");
    await eventually(() => answerText(page).then((t) => t.length), { timeout: 15_000 }).toBeGreaterThan(100);
    const beforeReload = await answerText(page);
    const url = page.url();

    await page.reload();
    expect(page.url()).toBe(url);
    await page.locator("article.msg-assistant").first().waitFor();
    const { samples, final, runId } = await watchUntilDone(page);
    // It went on from where it was (some samples between the reload and the end were still partial) …
    expect(samples.some((s) => s.length > 0 && s.length < final.length)).toBe(true);
    expect(final.startsWith(beforeReload)).toBe(true);
    // … and equals what the server stored, byte for byte.
    expect(final).toBe((await storedAnswer(page, runId))?.trim());
    expect(await page.locator("article.msg-assistant").count()).toBe(1);
    await context.close();
  });
});

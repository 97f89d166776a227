/**
 * Issue 7, points 1, 6 and 8, in real Chromium against the built server:
 * the conversation list, the composer (Enter, Shift+Enter, agent picker,
 * @mentions), streamed answers with their agent and route reason, stop,
 * retry, failure, safe markdown; isolation between two browser contexts;
 * screenshots and a layout from 360 px to desktop width.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import type { Browser, Page } from "playwright-core";
import type { MessageDto, RunDto, Page as ListPage, ConversationDto } from "../shared/api.js";
import { apiGet, launchBrowser, newPage, overflowsHorizontally, plainText, screenshot, startE2eServer, type E2eEnv, eventually } from "./helpers/browser.js";

let env: E2eEnv;
let browser: Browser;

beforeAll(async () => {
  [env, browser] = await Promise.all([startE2eServer({ RETRY_ATTEMPTS: "2" }), launchBrowser()]);
});

afterAll(async () => {
  await browser?.close();
  await env?.close();
});

const composer = (page: Page) => page.getByLabel("Message", { exact: true });
const conversationIdOf = (page: Page) => /\/c\/([0-9a-f-]{36})/.exec(page.url())?.[1] ?? "";
const lastAnswer = (page: Page) => page.locator("article.msg-assistant").last();

/** Sends a message; the index of the answer it will get. */
async function send(page: Page, text: string): Promise<number> {
  const n = await page.locator("article.msg-assistant").count();
  await composer(page).fill(text);
  await composer(page).press("Enter");
  return n;
}

/** Waits for answer `n` (the last one by default) to end in `phase`; returns its text. */
async function answerDone(page: Page, phase = "succeeded", n?: number, timeout = 30_000): Promise<string> {
  const nth = n ?? Math.max(0, (await page.locator("article.msg-assistant").count()) - 1);
  await page.locator("article.msg-assistant").nth(nth).and(page.locator(`[data-phase="${phase}"]`)).waitFor({ timeout });
  const answer = page.locator("article.msg-assistant").nth(nth).locator(".answer");
  return (await answer.count()) ? ((await answer.textContent()) ?? "").trim() : "";
}

describe("chat", () => {
  it("lists conversations: new, rename, delete, and titles a new one from its first message", async () => {
    const { context, page, errors } = await newPage(browser, env.baseUrl);
    await page.goto("/");
    await page.getByText("No conversations yet.").waitFor();

    await page.getByRole("button", { name: "New chat" }).click();
    await page.waitForURL(/\/c\/[0-9a-f-]{36}$/);
    const first = conversationIdOf(page);
    const current = page.locator('.conv-link[aria-current="page"]');
    await eventually(() => current.textContent()).toBe("New conversation");

    // Rename with the keyboard: Enter saves.
    await page.getByRole("button", { name: "Rename “New conversation”" }).click();
    const input = page.getByLabel("Conversation title");
    await input.fill("Trip planning");
    await input.press("Enter");
    await eventually(() => current.textContent()).toBe("Trip planning");
    await eventually(() => page.locator("h1.chat-title").textContent()).toBe("Trip planning");
    expect((await apiGet<ConversationDto>(page, `/api/conversations/${first}`)).title).toBe("Trip planning");

    // Escape leaves the title alone.
    await page.getByRole("button", { name: "Rename “Trip planning”" }).click();
    await page.getByLabel("Conversation title").fill("Not this");
    await page.getByLabel("Conversation title").press("Escape");
    await eventually(() => current.textContent()).toBe("Trip planning");

    // A second one, titled from its first message.
    await page.getByRole("button", { name: "New chat" }).click();
    await page.waitForURL((u) => !u.pathname.endsWith(first));
    env.llm.scriptFor("Which plants like shade in a north facing garden", { text: "Short answer." });
    await send(page, "Which plants like shade in a north facing garden");
    await answerDone(page);
    await eventually(() => current.textContent()).toBe("Which plants like shade in a north facing garden");
    await eventually(() => page.locator(".conv-link").count()).toBe(2);
    // Newest first.
    await eventually(() => page.locator(".conv-link").first().textContent()).toBe("Which plants like shade in a north facing garden");

    // Delete asks first; Cancel keeps it.
    await page.getByRole("button", { name: "Delete “Trip planning”" }).click();
    await page.getByRole("button", { name: "Cancel" }).click();
    await eventually(() => page.locator(".conv-link").count()).toBe(2);
    await page.getByRole("button", { name: "Delete “Trip planning”" }).click();
    await page.getByRole("button", { name: "Delete", exact: true }).click();
    // The row itself, not its link: the confirm that replaced the link stays until the DELETE has been answered.
    await eventually(() => page.locator("li.conv").count()).toBe(1);
    const gone = await page.evaluate(async (id) => (await fetch(`/api/conversations/${id}`)).status, first);
    expect(gone).toBe(404);

    // Opening a conversation from the list shows its messages.
    await page.goto("/");
    await page.locator(".conv-link").first().click();
    await page.locator("article.msg-user").first().waitFor();
    expect(await page.locator("article.msg-user .bubble").first().textContent()).toBe("Which plants like shade in a north facing garden");
    expect(errors).toEqual([]);
    await context.close();
  });

  it("streams the answer with its agent and route reason; Enter sends, Shift+Enter breaks the line; markdown is safe", async () => {
    const { context, page, errors } = await newPage(browser, env.baseUrl);
    await page.goto("/");
    await page.getByRole("heading", { name: "What can I help with?" }).waitFor();
    await screenshot(page, "chat-empty");

    const reply = [
      "# Heading",
      "",
      "Some **bold** words and `inline code`.",
      "",
      "- first item",
      "- second item",
      "",
      '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> [click me](javascript:window.__pwned=3)',
      '<a href="https://example.com" onclick="window.__pwned=4">raw link</a> <iframe src="https://example.com"></iframe>',
      "",
      "```",
      "const answer = 42;",
      "```",
      "",
      plainText(40),
    ].join("\n");
    env.llm.scriptFor("Please show me markdown\nwith a list", { text: reply, chunkSize: 5, delayMs: 40 });

    // Shift+Enter is a new line, Enter sends.
    const box = composer(page);
    await box.click();
    await page.keyboard.type("Please show me markdown");
    await page.keyboard.press("Shift+Enter");
    await page.keyboard.type("with a list");
    expect(await box.inputValue()).toBe("Please show me markdown\nwith a list");
    await page.keyboard.press("Enter");
    await page.waitForURL(/\/c\/[0-9a-f-]{36}$/);
    expect(await box.inputValue()).toBe("");
    expect(await page.locator("article.msg-user .bubble").last().textContent()).toBe("Please show me markdown\nwith a list");

    // Streaming: the text grows while the run is live, beside its agent and route reason.
    const answer = page.locator(".answer[data-streaming]");
    await answer.waitFor();
    const early = ((await answer.textContent()) ?? "").length;
    await page.getByRole("button", { name: "Stop" }).waitFor();
    await eventually(async () => ((await answer.textContent().catch(() => "")) ?? "").length, { timeout: 10_000 }).toBeGreaterThan(early + 10);
    expect(await lastAnswer(page).locator(".agent-name").textContent()).toBe("assistant");
    expect(await lastAnswer(page).locator(".route-reason").textContent()).toBe("rules: a general question");
    await screenshot(page, "chat-streaming");

    await answerDone(page);
    await screenshot(page, "chat-finished");
    const a = lastAnswer(page);
    expect(await a.locator("h1").textContent()).toBe("Heading");
    expect(await a.locator("strong").first().textContent()).toBe("bold");
    expect(await a.locator("li").count()).toBe(2);
    expect(await a.locator("pre code").textContent()).toContain("const answer = 42;");
    // No HTML from the model reached the page as HTML: shown as text, never run.
    expect(await a.locator("img, script, iframe, [onerror], [onclick]").count()).toBe(0);
    expect(await a.locator('a[href^="javascript"]').count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    expect(await a.locator(".answer").textContent()).toContain("<img src=x onerror=");
    const link = a.locator('a[href="https://example.com"]');
    if ((await link.count()) > 0) expect(await link.getAttribute("rel")).toContain("noopener");

    // The stored message is the same text.
    const runId = await a.getAttribute("data-run-id");
    const messages = await apiGet<ListPage<MessageDto>>(page, `/api/conversations/${conversationIdOf(page)}/messages`);
    expect(messages.items.find((m) => m.runId === runId)?.content).toBe(reply);
    expect(messages.items.find((m) => m.role === "user")?.content).toBe("Please show me markdown\nwith a list");
    expect(errors).toEqual([]);
    await context.close();
  });

  it("@mentions and the agent picker choose the agent", async () => {
    const { context, page } = await newPage(browser, env.baseUrl);
    await page.goto("/");
    const box = composer(page);
    await box.click();
    await page.keyboard.type("@ma");
    const list = page.getByRole("listbox", { name: "Agents" });
    await list.waitFor();
    expect(await list.getByRole("option").allTextContents()).toEqual([expect.stringContaining("@math")]);
    await page.keyboard.press("Enter");
    expect(await box.inputValue()).toBe("@math ");
    await page.keyboard.type("2^10 + 1");
    await page.keyboard.press("Enter");
    expect(await answerDone(page, "succeeded", 0)).toContain("1025");
    expect(await lastAnswer(page).locator(".agent-name").textContent()).toBe("math");
    expect(await lastAnswer(page).locator(".route-reason").textContent()).toBe("mentioned @math");

    // Arrow keys move through the suggestions; Escape closes them.
    await box.click();
    await page.keyboard.type("@");
    await list.waitFor();
    expect(await list.getByRole("option").count()).toBeGreaterThanOrEqual(3);
    await page.keyboard.press("ArrowDown");
    expect(await list.locator('[aria-selected="true"]').textContent()).toContain("@hello");
    await page.keyboard.press("Escape");
    await list.waitFor({ state: "detached" });
    await box.fill("");

    await page.locator(".agent-picker select").selectOption("hello");
    const n = await send(page, "tell me what you can do");
    await answerDone(page, "succeeded", n);
    expect(await lastAnswer(page).locator(".agent-name").textContent()).toBe("hello");
    expect(await lastAnswer(page).locator(".route-reason").textContent()).toBe("requested");
    await context.close();
  });

  it("the thread follows a long answer down as it streams, and stays where the reader scrolled up", async () => {
    const { context, page } = await newPage(browser, env.baseUrl, { viewport: { width: 1280, height: 600 } });
    await page.goto("/");
    const paragraphs = (n: number) => Array.from({ length: n }, (_, i) => `Paragraph ${i + 1} of a long answer.`).join("\n\n");
    const distanceFromBottom = () =>
      page.locator(".thread").evaluate((el) => Math.round(el.scrollHeight - el.scrollTop - el.clientHeight));
    // Chunks of several paragraphs, several per frame at times: the view must keep up.
    env.llm.scriptFor("Tell me a long story", { text: paragraphs(60), chunkSize: 120, delayMs: 15 });
    await send(page, "Tell me a long story");
    await answerDone(page);
    expect(await page.locator(".thread").evaluate((el) => el.scrollHeight > el.clientHeight * 2)).toBe(true);
    await eventually(distanceFromBottom).toBeLessThan(2);

    // Scrolled up while the next answer streams: left there.
    env.llm.scriptFor("And another one", { text: paragraphs(60), chunkSize: 60, delayMs: 30 });
    const n = await send(page, "And another one");
    await page.locator("article.msg-assistant").nth(n).locator(".answer").waitFor();
    await page.locator(".thread").hover();
    await page.mouse.wheel(0, -2000);
    await eventually(distanceFromBottom).toBeGreaterThan(500);
    await answerDone(page, "succeeded", n);
    expect(await distanceFromBottom()).toBeGreaterThan(500);
    await context.close();
  });

  it("opening a conversation shows its end, also after the reader scrolled up in another", async () => {
    const { context, page } = await newPage(browser, env.baseUrl, { viewport: { width: 1280, height: 600 } });
    await page.goto("/");
    const paragraphs = (n: number, what: string) => Array.from({ length: n }, (_, i) => `${what} paragraph ${i + 1}.`).join("\n\n");
    const distanceFromBottom = () =>
      page.locator(".thread").evaluate((el) => Math.round(el.scrollHeight - el.scrollTop - el.clientHeight));

    env.llm.scriptFor("Rivers of the world, at length", { text: paragraphs(50, "Rivers"), chunkSize: 400, delayMs: 5 });
    await send(page, "Rivers of the world, at length");
    await answerDone(page);
    const rivers = conversationIdOf(page);

    await page.getByRole("button", { name: "New chat" }).click();
    await page.waitForURL((url) => url.pathname.startsWith("/c/") && !url.pathname.endsWith(rivers));
    env.llm.scriptFor("Mountains of the world, at length", { text: paragraphs(50, "Mountains"), chunkSize: 400, delayMs: 5 });
    await send(page, "Mountains of the world, at length");
    await answerDone(page);
    // Scrolled to the top of this one: it no longer follows.
    await page.locator(".thread").hover();
    await page.mouse.wheel(0, -20_000);
    await eventually(distanceFromBottom).toBeGreaterThan(500);

    // Back to the first: shown from its end, not where the other was left.
    await page.locator(`.conv-link[href="/c/${rivers}"]`).click();
    await page.waitForURL(`**/c/${rivers}`);
    await page.getByText("Rivers paragraph 50.").waitFor();
    expect(await page.locator(".thread").evaluate((el) => el.scrollHeight > el.clientHeight * 2)).toBe(true);
    await eventually(distanceFromBottom).toBeLessThan(2);

    // And on a fresh load of its address.
    await page.goto(`/c/${rivers}`);
    await page.getByText("Rivers paragraph 50.").waitFor();
    await eventually(distanceFromBottom).toBeLessThan(2);
    await context.close();
  });

  it("the stop button cancels the run", async () => {
    const { context, page } = await newPage(browser, env.baseUrl);
    await page.goto("/");
    const index = env.llm.requests.length;
    env.llm.scriptFor("Write me a long story about rivers", { text: plainText(300, 7), chunkSize: 3, delayMs: 50 });
    await send(page, "Write me a long story about rivers");
    await page.locator(".answer[data-streaming]").waitFor();
    await page.getByRole("button", { name: "Stop" }).click();
    await answerDone(page, "cancelled");
    expect(await lastAnswer(page).locator(".run-cancelled").textContent()).toBe("Stopped.");
    const runId = (await lastAnswer(page).getAttribute("data-run-id")) ?? "";
    await eventually(async () => (await apiGet<RunDto>(page, `/api/runs/${runId}`)).status).toBe("cancelled");
    // The provider call was abandoned too.
    await env.llm.waitForDisconnect(index);
    // The composer is usable again.
    await page.getByRole("button", { name: "Send message" }).waitFor({ state: "attached" });
    await context.close();
  });

  it('a retry shows "retrying (2 of 3)" and then only the new attempt\'s text', async () => {
    const { context, page } = await newPage(browser, env.baseUrl);
    await page.goto("/");
    const final = plainText(25, 3);
    env.llm.scriptFor("Explain the water cycle", { text: "FIRSTATTEMPT text that is dropped by the reset event", chunkSize: 4, delayMs: 30, fault: { kind: "drop", afterChunks: 5 } }, { text: final, chunkSize: 6, delayMs: 10 });
    await send(page, "Explain the water cycle");
    await page.getByText("retrying (2 of 3)").waitFor({ timeout: 20_000 });
    const text = await answerDone(page);
    expect(text).toBe(final);
    expect(text).not.toContain("FIRSTATTEMPT");
    await context.close();
  });

  it("a failure shows its message and code", async () => {
    const { context, page } = await newPage(browser, env.baseUrl);
    await page.goto("/");
    env.llm.scriptFor("Something the model refuses", { fault: { kind: "status", status: 400, message: "This model does not accept that request" } });
    await send(page, "Something the model refuses");
    await answerDone(page, "failed");
    const alert = lastAnswer(page).locator(".run-error[role=alert]");
    expect(await alert.locator(".run-error-message").textContent()).toContain("The OpenAI API refused the request (HTTP 400)");
    expect(await alert.locator("code").textContent()).toBe("provider_bad_request");
    await screenshot(page, "chat-error");

    // Still there after a reload: the run is replayed from its log.
    await page.reload();
    await answerDone(page, "failed");
    expect(await lastAnswer(page).locator("code").textContent()).toBe("provider_bad_request");
    await context.close();
  });

  it("two browser contexts never see each other's conversations", async () => {
    const a = await newPage(browser, env.baseUrl);
    const b = await newPage(browser, env.baseUrl);
    await a.page.goto("/");
    env.llm.scriptFor("Alice secret plans", { text: "Only for Alice." });
    await send(a.page, "Alice secret plans");
    await answerDone(a.page);
    const aliceConversation = conversationIdOf(a.page);

    await b.page.goto("/");
    await b.page.getByText("No conversations yet.").waitFor();
    expect(await b.page.getByText("Alice secret plans").count()).toBe(0);
    const list = await apiGet<ListPage<ConversationDto>>(b.page, "/api/conversations");
    expect(list.items).toEqual([]);

    // Her conversation's address shows nothing of it to Bob.
    await b.page.goto(`/c/${aliceConversation}`);
    await b.page.getByText("This conversation does not exist, or is not yours.").waitFor();
    expect(await b.page.locator("article.msg").count()).toBe(0);
    expect(await b.page.content()).not.toContain("Alice secret plans");

    // Bob's own conversation stays his.
    env.llm.scriptFor("Bob private notes", { text: "Only for Bob." });
    await b.page.goto("/");
    await answerDone(b.page, "succeeded", await send(b.page, "Bob private notes"));
    await a.page.reload();
    await a.page.locator(".conv-link").first().waitFor();
    expect(await a.page.locator(".conv-link").allTextContents()).toEqual(["Alice secret plans"]);
    await a.context.close();
    await b.context.close();
  });

  it("fits from 360 px to desktop width", async () => {
    for (const width of [360, 768, 1440]) {
      const { context, page } = await newPage(browser, env.baseUrl, { viewport: { width, height: 800 } });
      await page.goto("/");
      await page.getByRole("heading", { name: "What can I help with?" }).waitFor();
      expect(await overflowsHorizontally(page)).toBe(false);
      if (width === 360) await screenshot(page, "chat-empty-360");
      env.llm.scriptFor("A long answer with a wide code block please", { text: `${plainText(60, width)}\n\n\`\`\`\n${"a_very_long_unbroken_identifier_".repeat(6)}\n\`\`\`` });
      await send(page, "A long answer with a wide code block please");
      await answerDone(page);
      expect(await overflowsHorizontally(page)).toBe(false);
      if (width === 360) {
        await screenshot(page, "chat-finished-360");
        // The conversation list is a drawer on narrow screens.
        expect(await page.locator(".sidebar").isVisible()).toBe(false);
        await page.getByRole("button", { name: "Open the conversation list" }).click();
        await page.locator(".sidebar").waitFor({ state: "visible" });
        await page.waitForTimeout(300);
        await screenshot(page, "chat-drawer-360");
        await page.getByRole("button", { name: "Close the conversation list" }).click();
      } else {
        expect(await page.locator(".sidebar").isVisible()).toBe(true);
      }
      await context.close();
    }
  });
});

/**
 * Issue 7, point 7: the composer, send and stop by keyboard alone; streamed
 * text inside an aria-live region; a label on every control; axe-core finds
 * no serious or critical violation on the chat (empty, answered, failed, the
 * narrow-screen drawer) or the status page.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import type { Browser, Page } from "playwright-core";
import { launchBrowser, newPage, plainText, seriousAxeViolations, startE2eServer, type E2eEnv, eventually } from "./helpers/browser.js";

let env: E2eEnv;
let browser: Browser;

beforeAll(async () => {
  [env, browser] = await Promise.all([startE2eServer(), launchBrowser()]);
});

afterAll(async () => {
  await browser?.close();
  await env?.close();
});

const activeDescription = (page: Page) =>
  page.evaluate(() => {
    const el = document.activeElement as HTMLElement | null;
    return { tag: el?.tagName ?? "", id: el?.id ?? "", text: el?.textContent?.trim() ?? "", label: el?.getAttribute("aria-label") ?? "" };
  });

/** Presses Tab until `pred` holds for the focused element (at most `max` times). */
async function tabTo(page: Page, pred: (a: Awaited<ReturnType<typeof activeDescription>>) => boolean, max = 12) {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press("Tab");
    if (pred(await activeDescription(page))) return;
  }
  throw new Error(`focus never reached the element; last: ${JSON.stringify(await activeDescription(page))}`);
}

/** Controls without an accessible name (label element, aria-label, aria-labelledby or text). */
const unlabelled = (page: Page) =>
  page.evaluate(() =>
    [...document.querySelectorAll<HTMLElement>("button, select, textarea, input, a[href]")]
      .filter((el) => {
        const labels = (el as HTMLInputElement).labels;
        const named = (labels && labels.length > 0) || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby") || (el.textContent ?? "").trim();
        return !named;
      })
      .map((el) => el.outerHTML.slice(0, 120)),
  );

const expectNoSerious = async (page: Page, where: string) => {
  const v = await seriousAxeViolations(page);
  expect(v, `${where}: ${JSON.stringify(v, null, 1)}`).toEqual([]);
};

describe("accessibility", () => {
  it("composer, send and stop work from the keyboard alone; the answer streams into a live region", async () => {
    const { context, page } = await newPage(browser, env.baseUrl);
    await page.goto("/");
    await page.getByRole("heading", { name: "What can I help with?" }).waitFor();

    // First Tab: the skip link, which takes focus to the message box.
    await page.keyboard.press("Tab");
    expect((await activeDescription(page)).text).toBe("Skip to the message box");
    await page.keyboard.press("Enter");
    expect((await activeDescription(page)).id).toBe("composer-input");

    env.llm.script({ text: plainText(200, 5), chunkSize: 3, delayMs: 50 }, { text: plainText(200, 6), chunkSize: 3, delayMs: 50 });
    await page.keyboard.type("Tell me a long story about lanterns");
    await page.keyboard.press("Enter");
    const answer = page.locator(".answer[data-streaming]");
    await answer.waitFor();

    // The streamed text sits inside a polite live region (role=log).
    const live = await answer.evaluate((el) => {
      const region = el.closest("[aria-live]");
      return { live: region?.getAttribute("aria-live"), role: region?.getAttribute("role") };
    });
    expect(live).toEqual({ live: "polite", role: "log" });

    // Tab from the message box reaches Stop; Enter presses it.
    await tabTo(page, (a) => a.tag === "BUTTON" && a.text === "Stop");
    await page.keyboard.press("Enter");
    await page.locator('article.msg-assistant[data-phase="cancelled"]').waitFor();

    // Escape in the message box stops too.
    await page.getByLabel("Message", { exact: true }).focus();
    await page.keyboard.type("And another one about harbors");
    await page.keyboard.press("Enter");
    await page.locator(".answer[data-streaming]").waitFor();
    expect((await activeDescription(page)).id).toBe("composer-input");
    await page.keyboard.press("Escape");
    await eventually(() => page.locator('article.msg-assistant[data-phase="cancelled"]').count()).toBe(2);
    await context.close();
  });

  it("every control has a label, and axe finds nothing serious on any screen", async () => {
    const { context, page } = await newPage(browser, env.baseUrl);
    await page.goto("/");
    await page.getByRole("heading", { name: "What can I help with?" }).waitFor();
    expect(await unlabelled(page)).toEqual([]);
    await expectNoSerious(page, "empty chat");

    env.llm.script({ text: "Some **markdown**, a [link](https://example.com) and `code`.\n\n- one\n- two" }, { fault: { kind: "status", status: 400, message: "refused" } });
    await page.getByLabel("Message", { exact: true }).fill("Show me an answer");
    await page.getByLabel("Message", { exact: true }).press("Enter");
    await page.locator('article.msg-assistant[data-phase="succeeded"]').waitFor();
    await page.getByLabel("Message", { exact: true }).fill("And now fail please");
    await page.getByLabel("Message", { exact: true }).press("Enter");
    await page.locator('article.msg-assistant[data-phase="failed"]').waitFor();
    // The mention list open, too.
    await page.getByLabel("Message", { exact: true }).fill("@");
    await page.getByRole("listbox", { name: "Agents" }).waitFor();
    expect(await unlabelled(page)).toEqual([]);
    await expectNoSerious(page, "answered and failed chat");
    await page.getByLabel("Message", { exact: true }).fill("");

    // Renaming and deleting in the list.
    await page.getByRole("button", { name: /^Rename “/ }).click();
    expect(await unlabelled(page)).toEqual([]);
    await expectNoSerious(page, "renaming");
    await page.keyboard.press("Escape");

    await page.setViewportSize({ width: 360, height: 740 });
    await page.getByRole("button", { name: "Open the conversation list" }).click();
    await page.locator(".sidebar").waitFor({ state: "visible" });
    await expectNoSerious(page, "drawer at 360 px");

    await page.setViewportSize({ width: 1280, height: 800 });
    await page.goto("/status");
    await page.getByText("All systems healthy").waitFor();
    expect(await unlabelled(page)).toEqual([]);
    await expectNoSerious(page, "status page");
    await context.close();
  });

  it("the dark colour scheme passes axe too", async () => {
    const { context, page } = await newPage(browser, env.baseUrl, { colorScheme: "dark" });
    await page.goto("/");
    await page.getByRole("heading", { name: "What can I help with?" }).waitFor();
    await expectNoSerious(page, "dark empty chat");
    env.llm.script({ text: "A **dark** answer with `code`." }, { fault: { kind: "status", status: 400, message: "refused" } });
    await page.getByLabel("Message", { exact: true }).fill("Answer in the dark");
    await page.getByLabel("Message", { exact: true }).press("Enter");
    await page.locator('article.msg-assistant[data-phase="succeeded"]').waitFor();
    await page.getByLabel("Message", { exact: true }).fill("Fail in the dark");
    await page.getByLabel("Message", { exact: true }).press("Enter");
    await page.locator('article.msg-assistant[data-phase="failed"]').waitFor();
    await expectNoSerious(page, "dark answered chat");
    await page.goto("/status");
    await page.getByText("All systems healthy").waitFor();
    await expectNoSerious(page, "dark status page");
    await context.close();
  });
});

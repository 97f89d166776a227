/**
 * End-to-end helpers: Debian's Chromium driven by playwright-core (no
 * downloaded browsers), against the built server (`npm run build` first) on a
 * fresh test database, with the fake OpenAI-compatible provider behind the
 * assistant agent. Screenshots go to test-artifacts/.
 */
import { existsSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { expect } from "vitest";
import { chromium, type Browser, type BrowserContext, type BrowserContextOptions, type Page } from "playwright-core";
import { createTestDatabase, type TestDatabase } from "./db.js";
import { startFakeLlm, type FakeLlm } from "./fakeLlm.js";
import { spawnServer, type ServerProcess } from "./spawnServer.js";
import { ROOT } from "./paths.js";
import { waitForStatus } from "../fixtures/process.js";

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const ARTIFACTS = path.join(ROOT, "test-artifacts");

const SESSION_SECRET = "e2e-session-secret-0123456789abcdefghijklmnop";
const JWT_SECRET = "e2e-jwt-secret-0123456789abcdefghijklmnopqrstuv";

export function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(`no Chromium at ${CHROMIUM_PATH}: apt-get install -y chromium (or set CHROMIUM_PATH)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"],
  });
}

export interface E2eEnv {
  server: ServerProcess;
  baseUrl: string;
  db: TestDatabase;
  llm: FakeLlm;
  close(): Promise<void>;
}

/** The built server on a fresh, migrated database, talking to a fake LLM; resolves once /ready says 200. */
export async function startE2eServer(env: Record<string, string | undefined> = {}): Promise<E2eEnv> {
  if (!existsSync(path.join(ROOT, "dist", "public", "index.html"))) throw new Error("no client bundle in dist/public: run npm run build first");
  const db = await createTestDatabase({ migrate: true });
  const llm = await startFakeLlm();
  let server: ServerProcess | undefined;
  const close = async () => {
    await server?.stop();
    await llm.close();
    await db.drop();
  };
  try {
    // Not spawnServer's own wait: on a failure to start, the process must still be ours to stop.
    server = await spawnServer({
      waitListening: false,
      env: {
        DATABASE_URL: db.url,
        SESSION_SECRET,
        JWT_SECRET,
        OPENAI_API_KEY: "sk-e2e-test",
        OPENAI_BASE_URL: llm.url,
        RATE_LIMIT_MAX: "100000",
        HEARTBEAT_MS: "500",
        ...env,
      },
    });
    const listening = await server.waitForLog((l) => l.msg === "listening", 30_000);
    const baseUrl = `http://127.0.0.1:${Number(listening.port)}`;
    await waitForStatus(`${baseUrl}/ready`, 200, 30_000);
    return { server, baseUrl, db, llm, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** A fresh browser context (its own cookies and storage: a different anonymous user). */
export async function newPage(browser: Browser, baseUrl: string, opts: BrowserContextOptions = {}): Promise<{ context: BrowserContext; page: Page; errors: string[] }> {
  const context = await browser.newContext({ baseURL: baseUrl, viewport: { width: 1280, height: 800 }, ...opts });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (err) => errors.push(err.message));
  return { context, page, errors };
}

export async function screenshot(page: Page, name: string, opts: { fullPage?: boolean } = {}): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: opts.fullPage ?? false, animations: "disabled", caret: "hide" });
  return file;
}

/** JSON from the API as the page's user (its cookies), through the page's own fetch. */
export function apiGet<T>(page: Page, urlPath: string): Promise<T> {
  return page.evaluate(async (p) => {
    const res = await fetch(p, { headers: { accept: "application/json" } });
    if (!res.ok) throw new Error(`${p}: HTTP ${res.status}`);
    return (await res.json()) as unknown;
  }, urlPath) as Promise<T>;
}

export interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: { target: unknown[]; html: string }[];
}

const require = createRequire(import.meta.url);
let axeSource: string | undefined;

/**
 * Runs axe-core in the page (evaluated through the DevTools protocol, which
 * the page's CSP does not govern) and returns the serious and critical
 * violations.
 */
export async function seriousAxeViolations(page: Page): Promise<AxeViolation[]> {
  axeSource ??= (require("axe-core") as { source: string }).source;
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const axe = (window as unknown as { axe: { run(ctx: Document, opts: unknown): Promise<{ violations: AxeViolation[] }> } }).axe;
    const r = await axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => ({ target: n.target, html: n.html })) }));
  });
  return violations.filter((v) => v.impact === "serious" || v.impact === "critical");
}

/** True when the page scrolls sideways (a layout that does not fit the viewport). */
export function overflowsHorizontally(page: Page): Promise<boolean> {
  return page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
}

/** Plain words (no markdown syntax, no digits: the rules router sends digits to the math agent). */
export function plainText(words: number, seed = 1): string {
  const vocab = ["stream", "token", "answer", "river", "cloud", "paper", "window", "garden", "silver", "quiet", "orbit", "signal", "harbor", "maple", "lantern"];
  const out: string[] = [];
  let x = seed;
  for (let i = 0; i < words; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    out.push(vocab[x % vocab.length] ?? "word");
  }
  return out.join(" ") + ".";
}

/** expect.poll with timeouts fit for a browser on a busy two-core machine (vitest's default is 1 s). */
export const eventually = <T>(fn: () => T | Promise<T>, opts: { timeout?: number; interval?: number } = {}) =>
  expect.poll(fn, { timeout: 10_000, interval: 50, ...opts });

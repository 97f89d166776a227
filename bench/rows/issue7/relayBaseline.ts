/**
 * The first-token row's baseline, measured in the same run and browser: a
 * provider stream (a bare SSE response from this process, the chunk stamped
 * right after `res.write`, as the fake provider does) read by relayPage.ts in
 * its own process and forwarded over a bare WebSocket to a page that appends
 * it as text. Same watcher, same clock alignment. What remains is loopback
 * twice, one WebSocket frame, a DOM append and a frame: the floor under the
 * app's figure on this machine at this moment.
 */
import { createServer, type ServerResponse } from "node:http";
import type { Browser, Page } from "playwright-core";
import type { BenchContext } from "../../lib/context.js";
import { wallNow } from "../issue5/wallClock.js";
import { startSmallServer, type SmallServer } from "./child.js";
import { clockOffset, readStamps, watchFor } from "./pageTiming.js";

export interface BaselineSample {
  sentToPainted: number;
  sentToSeen: number;
  seenToPainted: number;
  clockErrorMs: number;
}

export interface RelayBaseline {
  sample(marker: string): Promise<BaselineSample>;
  close(): Promise<void>;
}

export async function startRelayBaseline(ctx: BenchContext, browser: Browser): Promise<RelayBaseline> {
  let stream: ServerResponse | undefined;
  let connected: () => void = () => undefined;
  const streamOpen = new Promise<void>((r) => (connected = r));
  const provider = createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
    res.flushHeaders();
    stream = res;
    connected();
  });
  await new Promise<void>((r) => provider.listen(0, "127.0.0.1", () => r()));
  const addr = provider.address();
  const providerUrl = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}/stream`;
  let relay: SmallServer | undefined;
  let page: Page | undefined;
  const close = async () => {
    await page?.context().close().catch(() => undefined);
    await relay?.stop();
    provider.closeAllConnections();
    await new Promise<void>((r) => provider.close(() => r()));
  };
  try {
    relay = await startSmallServer(ctx, "relayPage.ts", [providerUrl]);
    await streamOpen;
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    await page.goto(relay.url, { waitUntil: "load" });
    await page.locator('body[data-ws="open"]').waitFor({ timeout: 20_000 });
  } catch (err) {
    await close();
    throw err;
  }
  const p = page;
  return {
    async sample(marker) {
      const { offset, errorMs } = await clockOffset(p);
      await watchFor(p, marker, "#out");
      if (!stream) throw new Error("the relay is not connected to the provider stream");
      stream.write(`data: ${marker}\n\n`);
      const sent = wallNow() + offset;
      const ft = await readStamps(p);
      return { sentToPainted: ft.painted - sent, sentToSeen: ft.seen - sent, seenToPainted: ft.painted - ft.seen, clockErrorMs: errorMs };
    },
    close,
  };
}

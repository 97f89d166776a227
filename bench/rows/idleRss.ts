/**
 * Issue 2: resident memory of a fresh server (bench database) 2 s after
 * `/ready`, from /proc/<pid>/status. Absolute goal; the bare node:http
 * baseline, 2 s after its first answer, is shown for context.
 */
import type { BenchRow } from "../lib/types.js";
import { rssBytes } from "../lib/proc.js";
import { sleep } from "../lib/http.js";

const IDLE_MS = 2000;
const MiB = 1024 * 1024;

export const idleRssRow: BenchRow = {
  name: "idle-rss",
  issue: 2,
  description: `RSS ${IDLE_MS / 1000} s after /ready, vs a bare node:http server`,
  async run(ctx) {
    const [server, bare] = await Promise.all([ctx.spawnServer({ waitFor: "ready" }), ctx.spawnBaseline("bareHttp")]);
    try {
      await sleep(IDLE_MS);
      const s = rssBytes(server.pid);
      const b = rssBytes(bare.pid);
      return [
        {
          name: "idle RSS after boot",
          measured: { value: s.rss / MiB, unit: "MiB" },
          baseline: { value: b.rss / MiB, unit: "MiB", label: "bare node:http" },
          goal: { kind: "under", value: 100, unit: "MiB" },
          details: { serverBytes: s, bareBytes: b },
        },
      ];
    } finally {
      await Promise.all([server.stop(), bare.stop()]);
    }
  },
};

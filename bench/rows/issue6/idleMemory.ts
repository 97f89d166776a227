/**
 * Issue 6: server memory per idle authenticated WebSocket, as a ratio of a
 * bare `ws` server's. RSS of the server process (/proc/<pid>/status) before
 * and after 1,000 idle sockets are opened, / 1,000; the same for the bare
 * baseline (issue6BareWs.ts) in the same run. The server's sockets carry a
 * session cookie (one user, from GET /api/session) and subscribe to nothing.
 *
 * Each trial starts a fresh server (no queue: ENABLE_AGENTS=false, so only
 * the HTTP and realtime side holds memory) and a fresh baseline; both first
 * take and drop a few sockets (code paths compiled), then settle a second
 * before the "before" figure; "after" is the median of five samples over a
 * second, 1.5 s after the last socket opened. RSS moves in steps (heap
 * growth), so three trials are run and the median per side counts. Another
 * 1,000 sockets then give the marginal cost, past the first growth steps
 * (details only). The clients run in their own process (wsClients.ts) on the
 * load core.
 */
import type { BenchContext } from "../../lib/context.js";
import type { BenchRow, Measurement } from "../../lib/types.js";
import { rssBytes } from "../../lib/proc.js";
import { median, round } from "../../lib/stats.js";
import { sleep } from "../../lib/http.js";
import { newSession } from "../issue5/appClient.js";
import { assertFileLimit, spawnBareWs, spawnClients, type ClientsChild } from "./programs.js";
import { SHARED_SECRETS, startAll, stopServer, wsUrl } from "./servers.js";

const SOCKETS = 1000;
const GOAL = 1.5;
const WARM_SOCKETS = 20;

async function rssMedian(pid: number, samples = 5, everyMs = 200): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < samples; i++) {
    if (i) await sleep(everyMs);
    xs.push(rssBytes(pid).rss);
  }
  return median(xs);
}

interface Trial {
  /** KiB per socket for the first 1,000 (the measurement) and for the next 1,000 (marginal). */
  server: { first: number; next: number };
  bare: { first: number; next: number };
  rssBytes: Record<"server" | "bare", number[]>;
  connectMs: Record<string, number>;
}

async function trial(ctx: BenchContext, c: ClientsChild, n: number): Promise<Trial> {
  const [server, bare] = await startAll([() => ctx.spawnServer({ pin: true, env: { ...SHARED_SECRETS, ENABLE_AGENTS: "false" } }), () => spawnBareWs(ctx)] as const);
  if (!server || !bare) throw new Error("a child did not start");
  const groups: string[] = [];
  try {
    const cookie = await newSession(server.baseUrl);
    const targets = [
      { side: "server" as const, url: wsUrl(server), pid: server.pid, cookie },
      { side: "bare" as const, url: wsUrl(bare), pid: bare.pid, cookie: undefined },
    ];
    const connect = async (t: (typeof targets)[number], group: string, count: number, concurrency: number) => {
      groups.push(group);
      const r = await c.call<{ sockets: number; ms: number }>({ cmd: "connect", group, url: t.url, ...(t.cookie ? { cookie: t.cookie } : {}), count, concurrency });
      if (r.sockets !== count) throw new Error(`${group}: ${r.sockets} of ${count} sockets open`);
      return r.ms;
    };
    for (const t of targets) {
      await connect(t, `${t.side}-warm-${n}`, WARM_SOCKETS, 10);
      await c.call({ cmd: "close", group: `${t.side}-warm-${n}` });
    }
    await sleep(1000);
    const rss: Trial["rssBytes"] = { server: [await rssMedian(server.pid)], bare: [await rssMedian(bare.pid)] };
    const connectMs: Record<string, number> = {};
    for (const step of [1, 2]) {
      for (const t of targets) connectMs[`${t.side}-${step}`] = await connect(t, `${t.side}-${step}-${n}`, SOCKETS, 50);
      await sleep(1500);
      rss.server.push(await rssMedian(server.pid));
      rss.bare.push(await rssMedian(bare.pid));
    }
    const kib = (xs: number[], i: number) => round(((xs[i + 1] as number) - (xs[i] as number)) / SOCKETS / 1024, 2);
    return {
      server: { first: kib(rss.server, 0), next: kib(rss.server, 1) },
      bare: { first: kib(rss.bare, 0), next: kib(rss.bare, 1) },
      rssBytes: rss,
      connectMs,
    };
  } finally {
    for (const g of groups) await c.call({ cmd: "close", group: g }).catch(() => undefined);
    await Promise.all([stopServer(ctx, "server", server), bare.stop()]);
  }
}

async function run(ctx: BenchContext): Promise<Measurement[]> {
  assertFileLimit(2 * SOCKETS);
  const trials = ctx.options.quick ? 1 : 3;
  const clients = await spawnClients(ctx, 4 * SOCKETS);
  try {
    const results: Trial[] = [];
    for (let i = 0; i < trials; i++) results.push(await trial(ctx, clients, i));
    const med = (side: "server" | "bare", k: "first" | "next") => median(results.map((r) => r[side][k]));
    const notes = [
      `ws idle memory: RSS growth per socket over the first ${SOCKETS} idle sockets, median of ${trials} trial(s) on fresh processes (server / bare ws, KiB: ${results.map((r) => `${r.server.first} / ${r.bare.first}`).join("; ")}); ` +
        `the next ${SOCKETS} sockets cost ${med("server", "next")} / ${med("bare", "next")} KiB each (past the first heap growth steps)`,
    ];
    if (med("bare", "first") <= 0) notes.push("ws idle memory: the bare ws server's RSS did not grow; the ratio means nothing this run");
    return [
      {
        name: `server RSS per idle authenticated socket @${SOCKETS}`,
        measured: { value: med("server", "first"), unit: "KiB" },
        baseline: { value: med("bare", "first"), unit: "KiB", label: `bare ws, ${SOCKETS} sockets` },
        goal: { kind: "ratioAtMost", ratio: GOAL },
        details: { sockets: SOCKETS, trials: results, marginalKiB: { server: med("server", "next"), bare: med("bare", "next") } },
        notes,
      },
    ];
  } finally {
    await clients.stop();
  }
}

export const idleMemoryRow: BenchRow = {
  name: "ws-idle-memory",
  issue: 6,
  description: `server RSS per idle authenticated WebSocket (${SOCKETS} sockets), vs a bare ws server`,
  run,
};

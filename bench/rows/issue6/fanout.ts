/**
 * Issue 6: event stored → frame received, p50/p99, for 1,000 sockets
 * subscribed to one run, an event every 20 ms, with the sockets on the
 * instance executing the run ("same") and on another one ("other"), against
 * a bare `ws` server broadcasting to 1,000 sockets at the same pace in the
 * same run.
 *
 * Set-up: instance B runs the job queue and streams a real run from the fake
 * provider (test/helpers/fakeLlm.ts, in the bench process), which sends one
 * character every 20 s: the run stays `running` on B, its stall timer never
 * fires, and its own (rare) events are left out of the figures. Instance A
 * has no queue (ENABLE_AGENTS=false). One user (a session cookie from GET
 * /api/session, valid on both: same secrets, same database) holds all the
 * sockets.
 *
 * Events: the bench appends one `text.delta` every 20 ms to that run, as its
 * current attempt, with the queue's own `appendEvents` (one statement: seq
 * from runs.last_seq, the row, NOTIFY on commit). Not the run's own deltas:
 * their pace would follow the provider, the executor's write-through
 * coalescing and timers rather than the bench's 20 ms. Delivery does not depend on
 * who wrote the row: on every instance, the executing one included, the hub
 * learns of new rows from the NOTIFY, reads them once and sends the same
 * bytes to every subscribed socket. "same" therefore differs from "other" in
 * the run executing (and the hub marking its events local) on the instance
 * that holds the sockets.
 *
 * Times: `run_events.created_at` (clock_timestamp() in the insert) to the
 * client's receive stamp; for the baseline, the `sentAt` the bare server
 * puts in the frame before its send loop. Both wall clocks at sub-ms
 * resolution (wallClock.ts). The clients run in their own process on the
 * load core (wsClients.ts); the servers and the baseline on the server core.
 */
import pg from "pg";
import type { BenchContext } from "../../lib/context.js";
import type { BenchRow, Measurement } from "../../lib/types.js";
import { get, sleep } from "../../lib/http.js";
import { cpuMs } from "../../lib/proc.js";
import { median, round } from "../../lib/stats.js";
import { startFakeLlm } from "../../../test/helpers/fakeLlm.js";
import { appendEvents } from "../../../server/queue/runEvents.js";
import { cancelRun, newSession, startRun } from "../issue5/appClient.js";
import { assertFileLimit, spawnBareWs, spawnClients, type ClientsChild } from "./programs.js";
import { runQueueWaitMs } from "../issue5/schedstat.js";
import type { LatencySummary } from "./protocol.js";
import { SHARED_SECRETS, startAll, stopServer, wsUrl } from "./servers.js";

const SOCKETS = 1000;
const INTERVAL_MS = 20;
const GOAL = 1.5;
const TEXT = "abcdefghijklmnopqrstuvwxyz012345";
const BARE_RUN = "00000000-0000-4000-8000-000000000006";

type Kind = "other" | "same" | "bare";

async function waitRunning(pool: pg.Pool, runId: string, timeoutMs = 20_000): Promise<{ attempt: number; instanceId: string }> {
  const until = performance.now() + timeoutMs;
  for (;;) {
    const r = await pool.query<{ status: string; attempt: number; instance_id: string | null }>("select status, attempt, instance_id from runs where id = $1", [runId]);
    const row = r.rows[0];
    if (row?.status === "running" && row.instance_id) return { attempt: row.attempt, instanceId: row.instance_id };
    if (performance.now() > until) throw new Error(`run ${runId} not running within ${timeoutMs} ms (status ${row?.status})`);
    await sleep(50);
  }
}

/** One `text.delta` every `intervalMs` (catching up without bursts when late); the seqs. */
async function appendEvery(pool: pg.Pool, runId: string, attempt: number, count: number, intervalMs: number) {
  const seqs: number[] = [];
  let late = 0;
  const t0 = performance.now();
  for (let k = 0; k < count; k++) {
    const wait = t0 + k * intervalMs - performance.now();
    if (wait > 0) await sleep(wait);
    else if (k > 0) late++;
    seqs.push(await appendEvents(pool, runId, attempt, [{ type: "text.delta", data: { text: TEXT } }]));
  }
  return { seqs, late };
}

interface PhaseResult extends LatencySummary {
  kind: Kind;
  round: number;
  subscribeMs: number;
  lateTicks: number;
  /** CPU time (user + system, 10 ms resolution) of the serving process and of the client process, per event, over the phase. */
  serverCpuMs: number;
  clientsCpuMs: number;
  wallMs: number;
  /** Main-thread time spent runnable but off-core during the phase (other processes on the core). */
  serverRunQueueWaitMs: number;
  clientsRunQueueWaitMs: number;
}

async function run(ctx: BenchContext): Promise<Measurement[]> {
  assertFileLimit(SOCKETS);
  const warm = 25;
  const measured = ctx.options.quick ? 75 : 150;
  const rounds = ctx.options.quick ? 1 : 3;
  // Its own database: a server left by another row (or another bench on the
  // shared bench PostgreSQL) must not pick up the run this row watches.
  const db = { url: await (await ctx.database()).freshDatabase("bench_fanout") };
  const fake = await startFakeLlm({ apiKey: "x" });
  // One character every 20 s, under the provider's 30 s stall timer: the run stays running.
  fake.setDefault(() => ({ text: "x".repeat(200), chunkSize: 1, delayMs: 20_000 }));
  const pool = new pg.Pool({ connectionString: db.url, max: 2 });
  pool.on("error", () => undefined);
  let clients: ClientsChild | undefined;
  try {
    const [b, a, bare] = await startAll([
      () => ctx.spawnServer({ pin: true, env: { ...SHARED_SECRETS, DATABASE_URL: db.url, OPENAI_API_KEY: "x", OPENAI_BASE_URL: fake.url, JOB_TIMEOUT_MS: "600000" } }),
      () => ctx.spawnServer({ pin: true, env: { ...SHARED_SECRETS, DATABASE_URL: db.url, ENABLE_AGENTS: "false" } }),
      () => spawnBareWs(ctx),
    ] as const);
    if (!a || !b || !bare) throw new Error("a child did not start");
    let cookie = "";
    let runId = "";
    try {
      cookie = await newSession(a.baseUrl);
      runId = await startRun(a.baseUrl, cookie, "bench-6: a long run", "assistant");
      const { attempt, instanceId } = await waitRunning(pool, runId);
      if (!instanceId.includes(`-${b.pid}-`)) throw new Error(`the run executes on ${instanceId}, not on B (pid ${b.pid})`);

      clients = await spawnClients(ctx, 3 * SOCKETS);
      const connectMs: Record<string, number> = {};
      for (const [group, url, withCookie] of [
        ["other", wsUrl(a), true],
        ["same", wsUrl(b), true],
        ["bare", wsUrl(bare), false],
      ] as const) {
        const r = await clients.call<{ sockets: number; ms: number }>({ cmd: "connect", group, url, ...(withCookie ? { cookie } : {}), count: SOCKETS, concurrency: 50 });
        if (r.sockets !== SOCKETS) throw new Error(`${group}: ${r.sockets} of ${SOCKETS} sockets open`);
        connectMs[group] = r.ms;
      }
      ctx.progress(`${SOCKETS} sockets on each of A, B and bare ws (${Object.entries(connectMs).map(([g, ms]) => `${g} ${ms} ms`).join(", ")}); run ${runId} executing on B`);

      const c = clients;
      const servers: Record<Kind, number> = { other: a.pid, same: b.pid, bare: bare.pid };
      /** Until every frame of the phase is in (or none came for a second, or 10 s passed). */
      const drain = async (kind: Kind, expected: number) => {
        const until = performance.now() + 10_000;
        let last = -1;
        let stillSince = performance.now();
        for (;;) {
          const { frames } = await c.call<{ frames: number }>({ cmd: "frames", group: kind });
          if (frames >= expected || performance.now() > until) return;
          if (frames !== last) {
            last = frames;
            stillSince = performance.now();
          } else if (performance.now() - stillSince > 1000) return;
          await sleep(100);
        }
      };
      const phase = async (kind: Kind, roundNo: number): Promise<PhaseResult> => {
        const lastSeq = async () => Number((await pool.query<{ last_seq: number }>("select last_seq from runs where id = $1", [runId])).rows[0]?.last_seq ?? 0);
        const target = kind === "bare" ? BARE_RUN : runId;
        const sub = await c.call<{ ms: number }>({ cmd: "subscribe", group: kind, runId: target, after: kind === "bare" ? 0 : await lastSeq(), concurrency: 50 });
        await sleep(200);
        await c.call({ cmd: "record", group: kind, on: true });
        const cpu0 = { server: cpuMs(servers[kind]), clients: cpuMs(c.child.pid) };
        const wait0 = { server: runQueueWaitMs(servers[kind]), clients: runQueueWaitMs(c.child.pid) };
        const t0 = performance.now();
        let summary: LatencySummary;
        let lateTicks: number;
        let measuredSeqs: number[] = [];
        const events = warm + measured;
        if (kind === "bare") {
          const r = await get(bare.port, `/broadcast?count=${events}&intervalMs=${INTERVAL_MS}`, events * INTERVAL_MS + 10_000);
          lateTicks = (JSON.parse(r.body) as { lateTicks: number }).lateTicks;
          await drain(kind, events * SOCKETS);
        } else {
          const appended = await appendEvery(pool, runId, attempt, events, INTERVAL_MS);
          lateTicks = appended.late;
          measuredSeqs = appended.seqs.slice(warm);
          await drain(kind, events * SOCKETS);
        }
        const wallMs = performance.now() - t0;
        const cpu = { server: cpuMs(servers[kind]) - cpu0.server, clients: cpuMs(c.child.pid) - cpu0.clients };
        const waited = { server: runQueueWaitMs(servers[kind]) - wait0.server, clients: runQueueWaitMs(c.child.pid) - wait0.clients };
        await c.call({ cmd: "record", group: kind, on: false });
        if (kind === "bare") {
          summary = await c.call<LatencySummary>({ cmd: "summary", group: kind, fromSeq: warm + 1 });
        } else {
          const stored = await pool.query<{ seq: number; at: number }>(
            "select seq, (extract(epoch from created_at) * 1000)::float8 as at from run_events where run_id = $1 and seq = any($2::int[])",
            [runId, measuredSeqs],
          );
          summary = await c.call<LatencySummary>({ cmd: "summary", group: kind, stored: stored.rows.map((r) => [r.seq, r.at] as [number, number]) });
        }
        await c.call({ cmd: "unsubscribe", group: kind, runId: target });
        const perEvent = {
          serverCpuMs: round(cpu.server / events, 3),
          clientsCpuMs: round(cpu.clients / events, 3),
          wallMs: Math.round(wallMs),
          serverRunQueueWaitMs: Math.round(waited.server),
          clientsRunQueueWaitMs: Math.round(waited.clients),
        };
        ctx.progress(
          `round ${roundNo + 1} ${kind}: p50 ${summary.p50} ms, p99 ${summary.p99} ms, ${summary.received}/${summary.expected} frames; CPU per event: server ${perEvent.serverCpuMs} ms, clients ${perEvent.clientsCpuMs} ms; waited for a core: server ${perEvent.serverRunQueueWaitMs} ms, clients ${perEvent.clientsRunQueueWaitMs} ms of ${perEvent.wallMs} ms`,
        );
        return { ...summary, kind, round: roundNo, subscribeMs: sub.ms, lateTicks, ...perEvent };
      };

      const results: PhaseResult[] = [];
      const orders: Kind[][] = [
        ["other", "bare", "same"],
        ["same", "bare", "other"],
        ["bare", "other", "same"],
      ];
      for (let r = 0; r < rounds; r++) for (const kind of orders[r % orders.length] ?? []) results.push(await phase(kind, r));

      // The best round of each side counts (as in the load rows): the lowest p99.
      const best = (kind: Kind) => {
        const mine = results.filter((r) => r.kind === kind);
        const pick = mine.reduce((x, y) => (y.p99 < x.p99 ? y : x), mine[0] as PhaseResult);
        return pick;
      };
      /** Median over the rounds: CPU time hardly moves with contention. */
      const cpuPerEvent = (kind: Kind) => median(results.filter((r) => r.kind === kind).map((r) => r.serverCpuMs));
      const other = best("other");
      const same = best("same");
      const bareBest = best("bare");
      const notes: string[] = [
        `ws fan-out: ${SOCKETS} sockets of one user subscribed to one run executing on instance B; the bench appends a text.delta every ${INTERVAL_MS} ms with the queue's appendEvents (not the run's own deltas, whose pace follows the provider); "other" = sockets on instance A, "same" = on B. ` +
          `Stored (run_events.created_at) → received; the bare ws server stamps its frame before its send loop. ${warm} warm-up + ${measured} measured events per phase, ${rounds} round(s), best p99 per side.`,
      ];
      for (const r of results) {
        if (r.received < r.expected) notes.push(`ws fan-out: round ${r.round + 1} ${r.kind} received ${r.received} of ${r.expected} frames`);
        if (Object.keys(r.closes).length) notes.push(`ws fan-out: round ${r.round + 1} ${r.kind}: sockets closed by the server: ${JSON.stringify(r.closes)}`);
      }
      const contended = [other, same, bareBest]
        .map((r) => ({ r, share: Math.max(r.serverRunQueueWaitMs, r.clientsRunQueueWaitMs) / r.wallMs }))
        .filter((x) => x.share > 0.1);
      if (contended.length) {
        notes.push(
          `ws fan-out: other processes held the cores during the counted phases (main thread runnable but waiting: ${contended
            .map(({ r }) => `${r.kind} server ${r.serverRunQueueWaitMs} ms, clients ${r.clientsRunQueueWaitMs} ms of ${r.wallMs} ms`)
            .join("; ")}); the latencies measure the machine as much as the server, the CPU per event is the steadier figure`,
        );
      }
      const details = { sockets: SOCKETS, intervalMs: INTERVAL_MS, warmupEvents: warm, measuredEvents: measured, connectMs, phases: results };
      const ms = (value: number) => ({ value, unit: "ms" });
      const baseline = (value: number) => ({ value, unit: "ms", label: `bare ws, ${SOCKETS} sockets` });
      return [
        {
          name: `WS stored → frame p50, other instance @${SOCKETS} sockets`,
          measured: ms(other.p50),
          baseline: baseline(bareBest.p50),
          goal: { kind: "info" },
          details,
          notes,
        },
        {
          name: `WS stored → frame p99, other instance @${SOCKETS} sockets`,
          measured: ms(other.p99),
          baseline: baseline(bareBest.p99),
          goal: { kind: "ratioAtMost", ratio: GOAL },
        },
        { name: `WS stored → frame p50, same instance @${SOCKETS} sockets`, measured: ms(same.p50), baseline: baseline(bareBest.p50), goal: { kind: "info" } },
        { name: `WS stored → frame p99, same instance @${SOCKETS} sockets`, measured: ms(same.p99), baseline: baseline(bareBest.p99), goal: { kind: "info" } },
        {
          name: `WS fan-out CPU per event, other instance @${SOCKETS} sockets`,
          measured: ms(cpuPerEvent("other")),
          baseline: baseline(cpuPerEvent("bare")),
          goal: { kind: "info" },
        },
      ];
    } finally {
      if (runId) await cancelRun(a.baseUrl, cookie, runId);
      await clients?.stop();
      await Promise.all([stopServer(ctx, "instance A", a), stopServer(ctx, "instance B", b), bare.stop()]);
    }
  } finally {
    await clients?.stop();
    await pool.end().catch(() => undefined);
    await fake.close();
  }
}

export const fanoutRow: BenchRow = {
  name: "ws-fanout",
  issue: 6,
  description: `event stored → WebSocket frame received, p50/p99, ${SOCKETS} sockets, an event every ${INTERVAL_MS} ms, same and other instance, vs a bare ws broadcast`,
  run,
};

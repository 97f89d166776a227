/**
 * Issue 8, point 2, on the built server: "SIGTERM with 20 streaming sockets"
 * (every one closed with 1012 before the process exits 0, and every client
 * resumes on another instance without losing or repeating an event) and "two
 * SIGTERMs" (the second exits 1 at once; process-lifecycle.test.ts covers
 * SIGTERM then SIGINT). Only processes spawned here are signalled, by PID.
 */
import { describe, it, expect, afterEach } from "vitest";
import { Client } from "./helpers/dataApi.js";
import { spawnServer, type ServerProcess } from "./helpers/spawnServer.js";
import { scriptByContent, slowReply, tail } from "./helpers/cluster.js";
import { WsClient, ask, assertContiguous, assistantText, spawnInstance, textOf, type Instance } from "./helpers/ws.js";
import { useServerFixture } from "./helpers/failures.js";
import { sleep } from "./fixtures/process.js";
import type { EventFrame } from "../shared/realtime.js";

const fx = useServerFixture();
const procs: ServerProcess[] = [];

afterEach(async () => {
  await Promise.all(procs.splice(0).map((p) => p.stop()));
});

describe("SIGTERM with 20 streaming sockets", () => {
  it("closes all 20 with 1012 before exiting 0; each resumes on the other instance with every event once and the stored text", async () => {
    const script = scriptByContent(fx.llm);
    const RUNS = 10;
    const SOCKETS = 20;
    const contents = Array.from({ length: RUNS }, (_, i) => `long story number ${i}`);
    const answers = contents.map((_, i) => `Story ${i}, told again in full on the other instance.`);
    // The first attempt (on A) is far too long to finish by A's deadline; the retry (on B) is quick.
    contents.forEach((content, i) => script.plan(content, slowReply(30, `s${i}`), { text: answers[i], chunkSize: 3, delayMs: 2 }));

    const a: Instance = await spawnInstance(fx.db, fx.llm.url, { SHUTDOWN_DELAY_MS: "300", SHUTDOWN_TIMEOUT_MS: "4000" });
    procs.push(a.proc);
    const c = new Client(a.baseUrl);
    await c.userId();
    const runIds: string[] = [];
    for (const content of contents) runIds.push(await ask(c, content, "assistant"));

    // 20 sockets on A, two per run, each with the run's text streaming.
    const sockets = await Promise.all(Array.from({ length: SOCKETS }, () => WsClient.open(a.wsUrl, { cookie: c.cookie })));
    sockets.forEach((ws, i) => ws.send({ type: "subscribe", runId: runIds[i % RUNS] }));
    await Promise.all(sockets.map((ws, i) => ws.waitFor((f) => f.type === "event" && f.runId === runIds[i % RUNS] && f.event === "text.delta", 30_000)));

    // B joins only now, so every run is certainly A's.
    const b = await spawnInstance(fx.db, fx.llm.url);
    procs.push(b.proc);
    const owners = await fx.db.pool.query<{ instance_id: string }>("select instance_id from runs where id = any($1::uuid[])", [runIds]);
    expect(owners.rows.map((r) => r.instance_id.includes(`-${a.proc.pid}-`))).toEqual(runIds.map(() => true));

    let exitedAt = Infinity;
    void a.proc.exited.then(() => (exitedAt = performance.now()));
    a.proc.kill("SIGTERM");
    const closes = await Promise.all(sockets.map(async (ws) => ({ ...(await ws.closed), at: performance.now() })));
    expect(closes.map((x) => x.code)).toEqual(sockets.map(() => 1012));
    const exit = await Promise.race([a.proc.exited, sleep(8000).then(() => null)]);
    expect(exit, tail(a.proc)).toEqual({ code: 0, signal: null });
    // Every socket was closed by the shutdown itself, not by the process dying.
    expect(Math.max(...closes.map((x) => x.at))).toBeLessThanOrEqual(exitedAt);

    // Each client reconnects to B and resumes after the last seq it showed.
    const resumed = await Promise.all(
      sockets.map(async (ws, i) => {
        const runId = runIds[i % RUNS] as string;
        const shown: EventFrame[] = ws.events(runId);
        expect(shown.at(-1)?.event).not.toBe("done");
        const again = await WsClient.open(b.wsUrl, { cookie: c.cookie });
        again.send({ type: "subscribe", runId, after: shown.at(-1)?.seq ?? 0 });
        await again.finished(runId, 60_000);
        const all = [...shown, ...again.events(runId)];
        await again.close();
        return { runId, i, all };
      }),
    );
    for (const { runId, i, all } of resumed) {
      assertContiguous(all);
      expect(all.at(-1)?.event).toBe("done");
      expect(all.find((e) => e.event === "reset")?.data).toEqual({ attempt: 2 });
      expect(textOf(all)).toBe(answers[i % RUNS]);
      expect(await assistantText(fx.db, runId)).toBe(answers[i % RUNS]);
    }
    const answered = await fx.db.pool.query<{ n: number }>("select count(*)::int as n from messages where role = 'assistant' and run_id = any($1::uuid[])", [runIds]);
    expect(answered.rows[0]?.n).toBe(RUNS);
  });
});

describe("two SIGTERMs", () => {
  it("the second SIGTERM exits 1 at once, during the shutdown delay", async () => {
    const srv = await spawnServer({ env: { DATABASE_URL: fx.db.url, SHUTDOWN_DELAY_MS: "5000" } });
    procs.push(srv);
    srv.kill("SIGTERM");
    await srv.waitForLog((l) => l.msg === "shutting down", 5000);
    const t0 = performance.now();
    srv.kill("SIGTERM");
    const exit = await Promise.race([srv.exited, sleep(2000).then(() => null)]);
    expect(exit).toEqual({ code: 1, signal: null });
    // Far inside the 5 s delay the first signal would have waited out.
    expect(performance.now() - t0).toBeLessThan(2000);
  });
});

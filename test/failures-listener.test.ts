/**
 * Issue 8, point 2, "the LISTEN connection killed (it reconnects, polling
 * catches up, nothing stranded)", on the built server with the fake LLM.
 *
 * The server's LISTEN backends (found in pg_stat_activity by their last
 * statement, `LISTEN …`) are ended with pg_terminate_backend while a run
 * streams to a WebSocket. So that the outage is long enough to matter and
 * no NOTIFY can slip through, a login event trigger (PostgreSQL 17+) refuses
 * new connections named `esa-agents-listen` until the test drops it: the
 * listener cannot reconnect, every notification of that window is lost.
 * Meanwhile the streamed run must still reach its socket to the last event
 * (polling), a run posted during the outage must run and stream, and a cancel
 * must still stop a running run. Once connections are let through again,
 * a new LISTEN backend appears and a later run streams over it.
 */
import { describe, it, expect, afterAll } from "vitest";
import { Client } from "./helpers/dataApi.js";
import { WsClient, ask, assertContiguous, assistantText, longText, textOf, waitUntil } from "./helpers/ws.js";
import { listenBackends, sampleValue, useServerFixture } from "./helpers/failures.js";

const fx = useServerFixture();
// Runs before the fixture's afterAll (hooks stack): the database is still there.
afterAll(async () => {
  await fx.db.pool.query("drop event trigger if exists refuse_listen").catch(() => undefined);
});

/** Refuses logins named esa-agents-listen to this database, until dropped. */
async function refuseListenerLogins(on: boolean) {
  if (!on) {
    await fx.db.pool.query("drop event trigger if exists refuse_listen");
    return;
  }
  await fx.db.pool.query(`
    create or replace function refuse_listen() returns event_trigger language plpgsql as $$
    begin
      if current_setting('application_name') = 'esa-agents-listen' then
        raise exception 'test: LISTEN connections refused';
      end if;
    end $$`);
  await fx.db.pool.query("create event trigger refuse_listen on login execute function refuse_listen()");
}

const runStatus = async (runId: string) => (await fx.db.pool.query<{ status: string }>("select status from runs where id = $1", [runId])).rows[0]?.status;

describe("the LISTEN connection killed", () => {
  it("events still reach the socket by polling, runs posted or cancelled meanwhile are not stranded, and the listener reconnects", async () => {
    const full = `Streamed across the outage: ${longText(1500)}`;
    const quick = "Posted while LISTEN was down.";
    const after = "Streamed over the new LISTEN connection.";
    fx.llm.setDefault((body) => {
      const user = [...(body.messages ?? [])].reverse().find((m) => m.role === "user")?.content ?? "";
      if (user.includes("outage")) return { text: full, chunkSize: 3, delayMs: 6 };
      if (user.includes("cancel me")) return { text: longText(3000), chunkSize: 2, delayMs: 10 };
      if (user.includes("meanwhile")) return { text: quick, chunkSize: 4, delayMs: 5 };
      return { text: after, chunkSize: 4, delayMs: 5 };
    });
    const a = await fx.spawn();
    const c = new Client(a.baseUrl);
    await c.userId();

    const before = await listenBackends(fx.db.pool, fx.db.name);
    const listener = before.filter((b) => b.application_name === "esa-agents-listen");
    expect(listener, JSON.stringify(before)).toHaveLength(1);
    // graphile-worker's own LISTEN (new jobs) is on a pooled connection of the server: killed too.
    expect(before.some((b) => b.query.includes('"jobs:insert"')), JSON.stringify(before)).toBe(true);

    // A run streaming to a socket.
    const runId = await ask(c, "stream through the outage", "assistant");
    const ws = await WsClient.open(a.wsUrl, { cookie: c.cookie });
    ws.send({ type: "subscribe", runId });
    await ws.waitFor((f) => f.type === "event" && f.event === "text.delta", 15_000);

    // Kill every LISTEN backend of the server, and keep the listener's out.
    await refuseListenerLogins(true);
    const killed = await fx.db.pool.query<{ ok: boolean }>("select pg_terminate_backend(pid) as ok from unnest($1::int[]) as pid", [before.map((b) => b.pid)]);
    expect(killed.rows.every((r) => r.ok)).toBe(true);
    await a.proc.waitForLog((l) => l.msg === "LISTEN connection failed", 5000);
    await a.proc.waitForLog((l) => l.msg === "LISTEN connection could not be made; retrying", 5000);
    expect((await listenBackends(fx.db.pool, fx.db.name)).filter((b) => b.application_name === "esa-agents-listen")).toEqual([]);

    // Polling catches up: every event of the run reaches the socket, the terminal one included.
    await ws.finished(runId, 30_000);
    const seen = ws.events(runId);
    assertContiguous(seen);
    expect(seen.at(-1)?.event).toBe("done");
    expect(textOf(seen)).toBe(full);
    expect(await assistantText(fx.db, runId)).toBe(full);
    // The listener is still refused: that was not LISTEN.
    expect((await listenBackends(fx.db.pool, fx.db.name)).filter((b) => b.application_name === "esa-agents-listen")).toEqual([]);

    // Nothing stranded: a run posted now is taken, run and streamed...
    const during = await ask(c, "posted meanwhile", "assistant");
    ws.send({ type: "subscribe", runId: during });
    await ws.finished(during, 30_000);
    assertContiguous(ws.events(during));
    expect(textOf(ws.events(during))).toBe(quick);
    expect(await runStatus(during)).toBe("succeeded");

    // ...and a cancel still reaches a running run.
    const victim = await ask(c, "cancel me", "assistant");
    ws.send({ type: "subscribe", runId: victim });
    await ws.waitFor((f) => f.type === "event" && f.runId === victim && f.event === "text.delta", 15_000);
    const cancelled = await c.post(`/api/runs/${victim}/cancel`);
    expect(cancelled.status).toBe(200);
    await ws.finished(victim, 15_000);
    expect(ws.events(victim).at(-1)?.event).toBe("cancelled");
    expect(await runStatus(victim)).toBe("cancelled");
    expect(await assistantText(fx.db, victim)).toBeUndefined();
    expect((await listenBackends(fx.db.pool, fx.db.name)).filter((b) => b.application_name === "esa-agents-listen")).toEqual([]);

    // Let it back in: the listener reconnects on a new backend.
    await refuseListenerLogins(false);
    await waitUntil(
      async () => (await listenBackends(fx.db.pool, fx.db.name)).some((b) => b.application_name === "esa-agents-listen" && !before.some((o) => o.pid === b.pid)),
      15_000,
      "a new LISTEN backend",
    );
    const last = await ask(c, "and after", "assistant");
    ws.send({ type: "subscribe", runId: last });
    await ws.finished(last, 30_000);
    expect(textOf(ws.events(last))).toBe(after);

    // The outage was counted, the process never went down.
    const metrics = await (await fetch(`${a.baseUrl}/metrics`)).text();
    expect(sampleValue(metrics, "background_errors_total", { loop: "listener" })).toBeGreaterThan(0);
    expect(a.proc.child.exitCode).toBeNull();
    expect(a.proc.logs.some((l) => Number(l.level) >= 60)).toBe(false);
    await ws.close();
  });
});

/**
 * Issue 4, point 10: behind a transaction pooler. Debian's PgBouncer (installed
 * when missing; the test fails, never skips, when it cannot be had) runs in
 * transaction mode without prepared statement support in front of the test
 * database, and DATABASE_URL points at it with DATABASE_TRANSACTION_POOLER=true.
 * Without DATABASE_DIRECT_URL nothing can LISTEN: new jobs and cancels are
 * found by polling. With it, LISTEN, migrations and the queue use the direct
 * connection. Either way runs complete and a cancel posted to one instance
 * stops the run on the other. Two server processes each; only processes
 * spawned here are signalled, by PID.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { startFakeLlm, type FakeLlm } from "./helpers/fakeLlm.js";
import { createCluster, quickReply, scriptByContent, slowReply, startPgbouncer, tail, type Cluster, type Pgbouncer } from "./helpers/cluster.js";
import { Client } from "./helpers/dataApi.js";
import { sleep } from "./fixtures/process.js";

let llm: FakeLlm;
let bouncer: Pgbouncer;
let script: ReturnType<typeof scriptByContent>;

beforeAll(async () => {
  llm = await startFakeLlm();
  script = scriptByContent(llm);
  // One pgbouncer for every test database: its `*` entry passes any database name through.
  const admin = await createTestDatabase();
  try {
    bouncer = await startPgbouncer(admin.url);
  } finally {
    await admin.drop();
  }
}, 300_000);
afterAll(async () => {
  await bouncer?.stop();
  await llm?.close();
});

/** `url`'s database through pgbouncer. */
function viaBouncer(url: string): string {
  const u = new URL(url);
  const b = new URL(bouncer.url);
  u.hostname = b.hostname;
  u.port = b.port;
  return u.toString();
}

/** Backends of the test database by application name (what each pool calls itself). */
async function backends(db: TestDatabase): Promise<Record<string, number>> {
  const r = await db.pool.query<{ app: string; n: string }>(
    "select application_name as app, count(*) as n from pg_stat_activity where datname = $1 and pid <> pg_backend_pid() group by 1",
    [db.name],
  );
  return Object.fromEntries(r.rows.map((x) => [x.app, Number(x.n)]));
}

describe.each([
  { label: "without DATABASE_DIRECT_URL (everything polls)", direct: false },
  { label: "with DATABASE_DIRECT_URL (LISTEN, migrations and the queue on the direct connection)", direct: true },
])("behind PgBouncer in transaction mode, $label", ({ direct }) => {
  // A database of its own: see the report on migrations' advisory lock behind a pooler.
  let db: TestDatabase;
  let cluster: Cluster;
  beforeAll(async () => {
    db = await createTestDatabase({ migrate: true });
    cluster = createCluster({
      db,
      llm,
      env: {
        DATABASE_URL: viaBouncer(db.url),
        DATABASE_TRANSACTION_POOLER: "true",
        DATABASE_DIRECT_URL: direct ? db.url : undefined,
      },
    });
    await Promise.all([cluster.spawn(), cluster.spawn()]);
  });
  afterAll(async () => {
    await cluster?.stopAll();
    await db?.drop();
  });

  it("connects the way the configuration says", async () => {
    const seen = await backends(db);
    if (direct) {
      expect(seen["esa-agents-listen"], JSON.stringify(seen)).toBe(2);
      expect(seen["esa-agents-direct"] ?? 0, JSON.stringify(seen)).toBeGreaterThan(0);
    } else {
      expect(seen["esa-agents-listen"] ?? 0, JSON.stringify(seen)).toBe(0);
      expect(seen["esa-agents-direct"] ?? 0, JSON.stringify(seen)).toBe(0);
    }
    for (const s of cluster.servers) {
      const health = (await (await fetch(`${s.baseUrl}/health`)).json()) as { checks: Record<string, { status: string }> };
      expect(health.checks.queue?.status, JSON.stringify(health)).toBe("up");
    }
  });

  it("runs complete, each with exactly one answer", async () => {
    const [a, b] = cluster.servers;
    if (!a || !b) throw new Error("two instances expected");
    const clients = await Promise.all([cluster.client(a), cluster.client(b)]);
    const tag = direct ? "direct" : "pooled";
    const asked = await Promise.all(
      Array.from({ length: 6 }, async (_, i) => {
        const content = `Please answer question ${"abcdef"[i]} for the ${tag} pool`;
        script.plan(content, quickReply(`Answer ${"abcdef"[i]} (${tag}).`));
        const client = clients[i % 2] as Client;
        return { content, i, ...(await cluster.ask(client, content)) };
      }),
    );
    for (const { runId, i } of asked) {
      const done = await cluster.waitForRun(runId, (r) => r.status !== "queued" && r.status !== "running", 20_000);
      expect(done.status, `${tail(a)}\n${tail(b)}`).toBe("succeeded");
      expect(done.attempt).toBe(1);
      const messages = await cluster.assistantMessages(runId);
      expect(messages.map((m) => m.content)).toEqual([`Answer ${"abcdef"[i]} (${tag}).`]);
      expect((await cluster.events(runId)).at(-1)?.type).toBe("done");
    }
    // Nothing relied on a prepared statement surviving a transaction.
    for (const s of cluster.servers) {
      expect(s.stdout()).not.toMatch(/prepared statement .* (does not exist|already exists)/);
      expect(s.logs.filter((l) => Number(l.level) >= 50), tail(s)).toEqual([]);
    }
  });

  it("a cancel posted to one instance stops the run on the other within 1 s", async () => {
    const content = `Narrate a long saga, please (${direct ? "direct" : "pooled"})`;
    script.plan(content, slowReply(30));
    const [a] = cluster.servers;
    if (!a) throw new Error("no instance");
    const client = await cluster.client(a);
    const { runId } = await cluster.ask(client, content);
    await cluster.waitForRun(runId, (r) => r.status === "running", 15_000);
    const until = Date.now() + 10_000;
    while (script.requests(content) === 0 && Date.now() < until) await sleep(20);
    const index = llm.requests.findIndex((r) => JSON.stringify(r.body.messages).includes(content));
    expect(index).toBeGreaterThanOrEqual(0);
    await sleep(300); // let the run settle into streaming

    const runner = await cluster.runnerOf(runId);
    const other = cluster.servers.find((s) => s !== runner);
    if (!other) throw new Error("no second instance");
    const viaOther = new Client(other.baseUrl, { ...(client.cookie ? { cookie: client.cookie } : {}) });
    const t0 = performance.now();
    const res = await viaOther.post(`/api/runs/${runId}/cancel`);
    expect(res.status, res.text).toBe(200);
    const disconnected = await Promise.race([llm.waitForDisconnect(index).then(() => performance.now() - t0), sleep(3000).then(() => Infinity)]);
    expect(disconnected, tail(runner)).toBeLessThan(1000);

    const done = await cluster.waitForRun(runId, (r) => r.status === "cancelled", 5000);
    expect(done.failures).toBe(0);
    expect(await cluster.assistantMessages(runId)).toEqual([]);
    expect((await cluster.events(runId)).at(-1)?.type).toBe("cancelled");
  });
});

/**
 * The claim (runStatements.ts): what a run's attempt starts with. The
 * conversation's history is read for agents that may use it; a run that asks
 * by name for an agent that reads none (hello, math) gets its own message
 * alone, and no other message is read. And the schema's rule that open runs,
 * and only they, have no `finished_at`, which the open-runs index relies on.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { startDataApi, type Client, type DataApi } from "./helpers/dataApi.js";
import { newConversation } from "./helpers/queue.js";
import { claimRun } from "../server/queue/runStatements.js";
import { createOrchestrator } from "../server/agents/orchestrator.js";
import { createAgentRegistry } from "../server/agents/registry.js";
import { loadConfig } from "../server/config.js";
import { unlimitedBudget } from "../server/agents/budget.js";

let db: TestDatabase;
let api: DataApi;
let client: Client;

beforeAll(async () => {
  db = await createTestDatabase({ migrate: true });
  // No queue runs here: every run stays queued until the test claims it.
  api = await startDataApi(db);
  client = api.client();
});
afterAll(async () => {
  await api?.close();
  await db?.drop();
});

async function post(conversation: string, content: string, agent?: string): Promise<string> {
  const res = await client.post(`/api/conversations/${conversation}/messages`, agent ? { content, agent } : { content });
  expect(res.status).toBe(202);
  return (res.body as { run: { id: string } }).run.id;
}

const claim = (runId: string, historyFreeAgents: string[]) =>
  claimRun(db.pool, runId, "test-instance", { maxAttempts: 4, historyLimit: 20, prepared: false, historyFreeAgents });

describe("the claim", () => {
  it("reads the conversation up to the run's message, oldest first, for an agent that may use it", async () => {
    const conv = await newConversation(client);
    await post(conv, "first");
    await post(conv, "second");
    const run = await post(conv, "third");
    await post(conv, "after it");
    const c = await claim(run, ["hello", "math"]);
    expect(c?.content).toBe("third");
    expect(c?.turns).toEqual([
      { role: "user", content: "first" },
      { role: "user", content: "second" },
      { role: "user", content: "third" },
    ]);
  });

  it("gives a run that asked for an agent reading no history its own message alone", async () => {
    const conv = await newConversation(client);
    await post(conv, "earlier");
    const run = await post(conv, "hi there", "hello");
    const c = await claim(run, ["hello", "math"]);
    expect(c?.content).toBe("hi there");
    expect(c?.turns).toEqual([{ role: "user", content: "hi there" }]);
    expect(c?.run.requested_agent).toBe("hello");
    // The same claim for an agent not in the list reads the history (a second attempt of the run).
    await db.pool.query("update runs set status = 'queued' where id = $1", [run]);
    const again = await claim(run, ["math"]);
    expect(again?.run.attempt).toBe(2);
    expect(again?.turns.map((t) => t.content)).toEqual(["earlier", "hi there"]);
  });

  it("the orchestrator names hello and math as reading no history, not the assistant", () => {
    const config = loadConfig({ NODE_ENV: "test" });
    const registry = createAgentRegistry(config, { budget: unlimitedBudget });
    expect([...createOrchestrator(registry, config).historyFreeAgents()].sort()).toEqual(["hello", "math"]);
  });
});

describe("runs' finished_at", () => {
  it("is set exactly when the run is over: the database refuses anything else", async () => {
    const conv = await newConversation(client);
    const run = await post(conv, "check");
    const set = (status: string, finished: boolean) =>
      db.pool.query(`update runs set status = $2, finished_at = ${finished ? "now()" : "null"} where id = $1`, [run, status]);
    await expect(set("succeeded", false)).rejects.toThrow(/runs_finished_iff_over/);
    await expect(set("queued", true)).rejects.toThrow(/runs_finished_iff_over/);
    await expect(set("running", true)).rejects.toThrow(/runs_finished_iff_over/);
    await set("failed", true);
    const r = await db.pool.query<{ status: string }>("select status from runs where id = $1", [run]);
    expect(r.rows[0]?.status).toBe("failed");
  });
});

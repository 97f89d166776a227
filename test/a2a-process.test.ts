/**
 * Issue 9 in the built server (dist/, `npm run build` first): the A2A router
 * is wired at the root by services.ts, outside /api (no CSRF, rate limit or
 * JSON rules of the browser API), and a message sent with the SDK's client
 * runs on the server's own queue and streams back.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { TaskState, type StreamResponse } from "@a2a-js/sdk";
import { DefaultAgentCardResolver } from "@a2a-js/sdk/client";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { spawnServer, type ServerProcess } from "./helpers/spawnServer.js";
import { waitForStatus } from "./fixtures/process.js";
import { TEST_JWT_SECRET, TEST_SESSION_SECRET } from "./helpers/dataApi.js";
import { a2aClient, userMessage } from "./helpers/a2a.js";
import { createJwt } from "../server/auth/jwt.js";

let db: TestDatabase;
let srv: ServerProcess;

beforeAll(async () => {
  db = await createTestDatabase();
  // A rate limit of 2 and CSRF on: neither applies outside /api.
  srv = await spawnServer({ env: { DATABASE_URL: db.url, SESSION_SECRET: TEST_SESSION_SECRET, JWT_SECRET: TEST_JWT_SECRET, RATE_LIMIT_MAX: "2" } });
  await waitForStatus(`${srv.baseUrl}/ready`, 200, 60_000);
}, 90_000);
afterAll(async () => {
  await srv?.stop();
  await db?.drop();
});

describe("the A2A surface of the built server", () => {
  it("serves the cards and runs a streamed message on its own queue", async () => {
    const token = await createJwt(TEST_JWT_SECRET).sign(crypto.randomUUID(), 600);
    for (let i = 0; i < 3; i++) {
      const card = await new DefaultAgentCardResolver().resolve(srv.baseUrl);
      expect(card.name).toBe("orchestrator");
      expect(card.supportedInterfaces[0]?.url).toBe(`${srv.baseUrl}/a2a/jsonrpc`);
    }
    const client = await a2aClient(srv.baseUrl, token);
    const events: StreamResponse[] = [];
    for await (const r of client.sendMessageStream({ tenant: "", message: userMessage("what is 20+22?"), configuration: undefined, metadata: undefined })) events.push(r);
    expect(events[0]?.payload?.$case).toBe("task");
    const last = events.at(-1)?.payload;
    if (last?.$case !== "statusUpdate") throw new Error("no final status");
    expect(TaskState[last.value.status?.state ?? 0]).toBe("TASK_STATE_COMPLETED");
    const task = await client.getTask({ tenant: "", id: last.value.taskId });
    expect(task.artifacts[0]?.parts.map((p) => (p.content?.$case === "text" ? p.content.value : "")).join("")).toMatch(/\b42\b/);
    const run = await db.pool.query<{ status: string; agent: string }>("select status, agent from runs where id = $1", [task.id]);
    expect(run.rows[0]).toEqual({ status: "succeeded", agent: "math" });
  }, 60_000);

  it("a library's console output (the SDK's error for an unknown task) is one JSON log line, not a plain-text stack", async () => {
    const token = await createJwt(TEST_JWT_SECRET).sign(crypto.randomUUID(), 600);
    const client = await a2aClient(srv.baseUrl, token);
    const unknown = crypto.randomUUID();
    const sub = client.resubscribeTask({ tenant: "", id: unknown });
    await expect(sub[Symbol.asyncIterator]().next()).rejects.toMatchObject({ name: "TaskNotFoundError" });
    const line = await srv.waitForLog((l) => l.source === "console" && JSON.stringify(l).includes(unknown));
    expect(line.level).toBe(40);
    expect(line.msg).toMatch(/^Pre-stream error for request/);
    expect((line.err as { type?: string } | undefined)?.type).toBe("TaskNotFoundError");
    // Every line either stream carries is JSON: no stack printed around the log.
    const plain = [...srv.stdout().split("\n"), ...srv.stderr().split("\n")].filter((l) => l.trim() !== "" && !l.startsWith("{"));
    expect(plain).toEqual([]);
  }, 30_000);
});

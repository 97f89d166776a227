/**
 * Issue 9, point 3: every A2A call but the cards needs a bearer JWT of the
 * identity layer (no cookie, no anonymous user), and tasks are scoped to the
 * token's user: another user's task is "not found", never its data.
 */
import { describe, it, expect } from "vitest";
import { SignJWT } from "jose";
import type { Task } from "@a2a-js/sdk";
import { scriptOf, waitForStatus } from "./helpers/queue.js";
import { startHeldTask, useA2aStack, userMessage, rawRpc } from "./helpers/a2a.js";
import { TEST_JWT_SECRET } from "./helpers/dataApi.js";

const a2a = useA2aStack();

describe("bearer JWT on every call but the cards", () => {
  const endpoints = ["/a2a/jsonrpc", "/a2a/agents/math/jsonrpc", "/a2a/agents/hello/jsonrpc", "/a2a/agents/assistant/jsonrpc"];

  it("refuses calls without a valid bearer token with 401 and WWW-Authenticate: Bearer, storing nothing", async () => {
    const expired = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject(crypto.randomUUID()).setIssuedAt(1).setExpirationTime(2).sign(new TextEncoder().encode(TEST_JWT_SECRET));
    const otherKey = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject(crypto.randomUUID()).setExpirationTime("1h").sign(new TextEncoder().encode("another-secret-0123456789abcdefghijklmnopq"));
    const send = { jsonrpc: "2.0", id: 1, method: "SendMessage", params: { message: { messageId: "m1", role: "ROLE_USER", parts: [{ text: "hi" }] } } };
    const cases: Record<string, string>[] = [
      {},
      { authorization: "Basic dXNlcjpwYXNz" },
      { authorization: "Bearer not.a.jwt" },
      { authorization: `Bearer ${expired}` },
      { authorization: `Bearer ${otherKey}` },
      // A session cookie is the browser's credential, not an A2A one.
      { cookie: "esa_sid=anything" },
    ];
    for (const path of endpoints) {
      for (const headers of cases) {
        const r = await rawRpc(`${a2a.stack.baseUrl}${path}`, send, { "a2a-version": "1.0", ...headers });
        expect(r.status, `${path} ${JSON.stringify(headers)}`).toBe(401);
        expect(r.headers.get("www-authenticate")).toMatch(/^Bearer/);
        expect(r.json).toMatchObject({ error: { code: "unauthorized" } });
      }
    }
    // REST too.
    const rest = await fetch(`${a2a.stack.baseUrl}/a2a/rest/tasks/00000000-0000-4000-8000-000000000000`, { headers: { "a2a-version": "1.0" } });
    expect(rest.status).toBe(401);
    const runs = await a2a.db.pool.query("select 1 from runs");
    expect(runs.rowCount).toBe(0);
  });

  it("the SDK client without a token is refused; with one it works", async () => {
    const { token } = await a2a.stack.token();
    const anonymous = await a2a.stack.client("");
    await expect(anonymous.sendMessage({ tenant: "", message: userMessage("hi"), configuration: undefined, metadata: undefined })).rejects.toThrow(/401/);
    const client = await a2a.stack.client(token);
    const task = (await client.sendMessage({ tenant: "", message: userMessage(scriptOf({ text: ["ok"] })), configuration: undefined, metadata: undefined })) as Task;
    expect(task.id).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("cards need no token", async () => {
    for (const path of ["/.well-known/agent-card.json", "/a2a/agents/math/agent-card.json"]) {
      const r = await fetch(`${a2a.stack.baseUrl}${path}`, { headers: { "a2a-version": "1.0" } });
      expect(r.status, path).toBe(200);
    }
  });
});

describe("tasks are the token's user's", () => {
  it("another user's task is not found for get, cancel, subscribe and follow-up messages; their context is refused", async () => {
    const alice = await a2a.stack.token();
    const bob = await a2a.stack.token();
    const a = await a2a.stack.client(alice.token);
    const b = await a2a.stack.client(bob.token);
    const task = await startHeldTask(a, a2a.db, "secret");

    await expect(b.getTask({ tenant: "", id: task.id })).rejects.toMatchObject({ name: "TaskNotFoundError" });
    await expect(b.cancelTask({ tenant: "", id: task.id, metadata: undefined })).rejects.toMatchObject({ name: "TaskNotFoundError" });
    const sub = b.resubscribeTask({ tenant: "", id: task.id });
    await expect(sub.next()).rejects.toMatchObject({ name: "TaskNotFoundError" });
    await expect(b.sendMessage({ tenant: "", message: userMessage("more", { taskId: task.id }), configuration: undefined, metadata: undefined })).rejects.toMatchObject({
      name: "TaskNotFoundError",
    });
    await expect(b.sendMessage({ tenant: "", message: userMessage("join", { contextId: task.contextId }), configuration: undefined, metadata: undefined })).rejects.toThrow(
      /not one of your conversations/,
    );
    const listed = await b.listTasks({ tenant: "", contextId: "", status: 0, pageToken: "", statusTimestampAfter: undefined });
    expect(listed.tasks).toEqual([]);
    // Bob's attempts changed nothing: the run still runs, in Alice's conversation only.
    expect((await waitForStatus(a2a.db, task.id, ["running"])).cancel_requested_at).toBeNull();
    const inConv = await a2a.db.pool.query<{ user_id: string }>("select distinct user_id from messages where conversation_id = $1", [task.contextId]);
    expect(inConv.rows).toEqual([{ user_id: alice.userId }]);

    // Alice sees and cancels her own.
    const mine = await a.getTask({ tenant: "", id: task.id });
    expect(mine.id).toBe(task.id);
    expect((await a.listTasks({ tenant: "", contextId: "", status: 0, pageToken: "", statusTimestampAfter: undefined })).tasks.map((t) => t.id)).toContain(task.id);
    await a.cancelTask({ tenant: "", id: task.id, metadata: undefined });
    await waitForStatus(a2a.db, task.id, ["cancelled"]);
  });
});

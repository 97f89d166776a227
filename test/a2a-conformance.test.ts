/**
 * Issue 9, points 2, 3 and 5: the A2A endpoints driven on loopback by the
 * SDK's own client (and raw JSON-RPC where the client cannot say it): send,
 * stream, get, cancel and subscribe on runs executed by the real queue; v0.3
 * method names; bearer auth and per-user scoping; the protocol's errors.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { TaskState, type StreamResponse, type Task } from "@a2a-js/sdk";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { createScriptedAgents, scriptOf, waitForStatus, type ScriptedAgents } from "./helpers/queue.js";
import { startA2aStack, userMessage, rawRpc, sseData, type A2aStack } from "./helpers/a2a.js";

let db: TestDatabase;
let agents: ScriptedAgents;
let stack: A2aStack;

beforeAll(async () => {
  db = await createTestDatabase({ migrate: true });
  agents = createScriptedAgents();
  stack = await startA2aStack(db, agents.orchestrator);
});
afterAll(async () => {
  await stack?.close();
  await db?.drop();
});

type Kind = "task" | "message" | "statusUpdate" | "artifactUpdate";
const kindOf = (r: StreamResponse): Kind => {
  if (!r.payload) throw new Error("empty stream response");
  return r.payload.$case;
};
const stateName = (s: TaskState | undefined) => (s === undefined ? "none" : TaskState[s]);

/** Collects a stream until it ends (or `until` says stop). */
async function collect(stream: AsyncGenerator<StreamResponse>, until?: (r: StreamResponse, all: StreamResponse[]) => boolean): Promise<StreamResponse[]> {
  const out: StreamResponse[] = [];
  for await (const r of stream) {
    out.push(r);
    if (until?.(r, out)) break;
  }
  return out;
}

/** The answer as a client rebuilds it: append, or replace when append is false. */
function answerText(events: StreamResponse[], start = ""): string {
  let text = start;
  for (const r of events) {
    if (r.payload?.$case !== "artifactUpdate") continue;
    const parts = r.payload.value.artifact?.parts ?? [];
    const chunk = parts.map((p) => (p.content?.$case === "text" ? p.content.value : "")).join("");
    text = r.payload.value.append ? text + chunk : chunk;
  }
  return text;
}

const artifactText = (t: Task) =>
  t.artifacts
    .flatMap((a) => a.parts)
    .map((p) => (p.content?.$case === "text" ? p.content.value : ""))
    .join("");

describe("SendMessage and GetTask (point 2)", () => {
  it("a message becomes a run on the queue: the task is the run, its context the conversation", async () => {
    const { token, userId } = await stack.token();
    const client = await stack.client(token);
    const result = await client.sendMessage({ tenant: "", message: userMessage(scriptOf({ text: ["Hel", "lo"] })), configuration: undefined, metadata: undefined });
    expect("id" in result).toBe(true);
    const task = result as Task;
    expect(stateName(task.status?.state)).toBe("TASK_STATE_COMPLETED");
    expect(artifactText(task)).toBe("Hello");
    const run = await db.pool.query<{ user_id: string; conversation_id: string; status: string; instance_id: string; requested_agent: string | null }>(
      "select user_id, conversation_id, status, instance_id, requested_agent from runs where id = $1",
      [task.id],
    );
    expect(run.rows[0]).toMatchObject({ user_id: userId, conversation_id: task.contextId, status: "succeeded", instance_id: stack.queue.instanceId, requested_agent: null });
    const msgs = await db.pool.query<{ role: string; content: string }>("select role, content from messages where conversation_id = $1 order by created_at", [task.contextId]);
    expect(msgs.rows.map((m) => m.role)).toEqual(["user", "assistant"]);
    expect(msgs.rows[1]?.content).toBe("Hello");

    // The same context continues the conversation.
    const second = (await client.sendMessage({ tenant: "", message: userMessage(scriptOf({ text: ["again"] }), { contextId: task.contextId }), configuration: undefined, metadata: undefined })) as Task;
    expect(second.contextId).toBe(task.contextId);
    expect(second.id).not.toBe(task.id);
    const runs = await db.pool.query("select id from runs where conversation_id = $1", [task.contextId]);
    expect(runs.rowCount).toBe(2);

    const got = await client.getTask({ tenant: "", id: task.id });
    expect(got.id).toBe(task.id);
    expect(stateName(got.status?.state)).toBe("TASK_STATE_COMPLETED");
    expect(artifactText(got)).toBe("Hello");
    expect(got.history.map((m) => m.role)).toEqual([1, 2]);
  });

  it("returnImmediately answers with the submitted task; the run goes on", async () => {
    const { token } = await stack.token();
    const client = await stack.client(token);
    const task = (await client.sendMessage({
      tenant: "",
      message: userMessage(scriptOf({ text: ["later"] })),
      configuration: { acceptedOutputModes: [], taskPushNotificationConfig: undefined, returnImmediately: true },
      metadata: undefined,
    })) as Task;
    expect(["TASK_STATE_SUBMITTED", "TASK_STATE_WORKING"]).toContain(stateName(task.status?.state));
    await waitForStatus(db, task.id, ["succeeded"]);
    expect(artifactText(await client.getTask({ tenant: "", id: task.id }))).toBe("later");
  });

  it("REST (HTTP+JSON) takes the same calls", async () => {
    const { token } = await stack.token();
    const client = await stack.client(token, undefined, { rest: true });
    const task = (await client.sendMessage({ tenant: "", message: userMessage(scriptOf({ text: ["rest"] })), configuration: undefined, metadata: undefined })) as Task;
    expect(stateName(task.status?.state)).toBe("TASK_STATE_COMPLETED");
    expect(artifactText(await client.getTask({ tenant: "", id: task.id }))).toBe("rest");
  });
});

describe("streaming (point 5)", () => {
  it("streams the task, then status, then artifact chunks, then the final status, in order", async () => {
    const { token } = await stack.token();
    const client = await stack.client(token);
    const events = await collect(client.sendMessageStream({ tenant: "", message: userMessage(scriptOf({ text: ["a", "b", "c"], delayMs: 60 })), configuration: undefined, metadata: undefined }));
    const kinds = events.map(kindOf);
    expect(kinds[0]).toBe("task");
    expect(kinds.indexOf("statusUpdate")).toBeGreaterThan(0);
    expect(kinds.indexOf("artifactUpdate")).toBeGreaterThan(kinds.indexOf("statusUpdate"));
    const last = events.at(-1);
    expect(last?.payload?.$case).toBe("statusUpdate");
    if (last?.payload?.$case === "statusUpdate") expect(stateName(last.payload.value.status?.state)).toBe("TASK_STATE_COMPLETED");
    // Only the last event is terminal; updates follow the run's seq order.
    const seqs = events.flatMap((r) => (r.payload?.$case === "statusUpdate" || r.payload?.$case === "artifactUpdate" ? [(r.payload.value.metadata as { esa: { seq: number } }).esa.seq] : []));
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(answerText(events)).toBe("abc");
    const task = events[0]?.payload?.$case === "task" ? events[0].payload.value : undefined;
    expect(task?.id).toMatch(/^[0-9a-f-]{36}$/);
    expect((await waitForStatus(db, task?.id ?? "", ["succeeded"])).status).toBe("succeeded");
  });
});

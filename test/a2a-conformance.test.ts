/**
 * Issue 9, points 2, 3 and 5: the A2A endpoints driven on loopback by the
 * SDK's own client (and raw JSON-RPC where the client cannot say it): send,
 * stream, get, cancel and subscribe on runs executed by the real queue; v0.3
 * method names; bearer auth and per-user scoping; the protocol's errors.
 */
import { describe, it, expect } from "vitest";
import { TaskState, type StreamResponse, type Task } from "@a2a-js/sdk";
import { scriptOf, waitForStatus } from "./helpers/queue.js";
import { startHeldTask, useA2aStack, userMessage, rawRpc, sseData } from "./helpers/a2a.js";
import { waitUntil } from "./helpers/ws.js";

const a2a = useA2aStack();

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
    const { token, userId } = await a2a.stack.token();
    const client = await a2a.stack.client(token);
    const result = await client.sendMessage({ tenant: "", message: userMessage(scriptOf({ text: ["Hel", "lo"] })), configuration: undefined, metadata: undefined });
    expect("id" in result).toBe(true);
    const task = result as Task;
    expect(stateName(task.status?.state)).toBe("TASK_STATE_COMPLETED");
    expect(artifactText(task)).toBe("Hello");
    const run = await a2a.db.pool.query<{ user_id: string; conversation_id: string; status: string; instance_id: string; requested_agent: string | null }>(
      "select user_id, conversation_id, status, instance_id, requested_agent from runs where id = $1",
      [task.id],
    );
    expect(run.rows[0]).toMatchObject({ user_id: userId, conversation_id: task.contextId, status: "succeeded", instance_id: a2a.stack.queue.instanceId, requested_agent: null });
    const msgs = await a2a.db.pool.query<{ role: string; content: string }>("select role, content from messages where conversation_id = $1 order by created_at", [task.contextId]);
    expect(msgs.rows.map((m) => m.role)).toEqual(["user", "assistant"]);
    expect(msgs.rows[1]?.content).toBe("Hello");

    // The same context continues the conversation.
    const second = (await client.sendMessage({ tenant: "", message: userMessage(scriptOf({ text: ["again"] }), { contextId: task.contextId }), configuration: undefined, metadata: undefined })) as Task;
    expect(second.contextId).toBe(task.contextId);
    expect(second.id).not.toBe(task.id);
    const runs = await a2a.db.pool.query("select id from runs where conversation_id = $1", [task.contextId]);
    expect(runs.rowCount).toBe(2);

    const got = await client.getTask({ tenant: "", id: task.id });
    expect(got.id).toBe(task.id);
    expect(stateName(got.status?.state)).toBe("TASK_STATE_COMPLETED");
    expect(artifactText(got)).toBe("Hello");
    expect(got.history.map((m) => m.role)).toEqual([1, 2]);
  });

  it("returnImmediately answers with the submitted task; the run goes on", async () => {
    const { token } = await a2a.stack.token();
    const client = await a2a.stack.client(token);
    const task = (await client.sendMessage({
      tenant: "",
      message: userMessage(scriptOf({ text: ["later"] })),
      configuration: { acceptedOutputModes: [], taskPushNotificationConfig: undefined, returnImmediately: true },
      metadata: undefined,
    })) as Task;
    expect(["TASK_STATE_SUBMITTED", "TASK_STATE_WORKING"]).toContain(stateName(task.status?.state));
    await waitForStatus(a2a.db, task.id, ["succeeded"]);
    expect(artifactText(await client.getTask({ tenant: "", id: task.id }))).toBe("later");
  });

  it("REST (HTTP+JSON) takes the same calls", async () => {
    const { token } = await a2a.stack.token();
    const client = await a2a.stack.client(token, undefined, { rest: true });
    const task = (await client.sendMessage({ tenant: "", message: userMessage(scriptOf({ text: ["rest"] })), configuration: undefined, metadata: undefined })) as Task;
    expect(stateName(task.status?.state)).toBe("TASK_STATE_COMPLETED");
    expect(artifactText(await client.getTask({ tenant: "", id: task.id }))).toBe("rest");
    // Stream, subscribe and cancel over REST too.
    const held = await startHeldTask(client, a2a.db, "held");
    const sub = client.resubscribeTask({ tenant: "", id: held.id });
    const first = await sub.next();
    expect((first.value as StreamResponse | undefined)?.payload?.$case).toBe("task");
    const cancelled = await client.cancelTask({ tenant: "", id: held.id, metadata: undefined });
    expect(stateName(cancelled.status?.state)).toBe("TASK_STATE_CANCELED");
    const rest: StreamResponse[] = [];
    for (let n = await sub.next(); !n.done; n = await sub.next()) rest.push(n.value);
    const last = rest.at(-1)?.payload;
    expect(last?.$case === "statusUpdate" && stateName(last.value.status?.state)).toBe("TASK_STATE_CANCELED");
    await expect(client.getTask({ tenant: "", id: "00000000-0000-4000-8000-000000000000" })).rejects.toMatchObject({ name: "TaskNotFoundError" });
  });
});

describe("streaming (point 5)", () => {
  it("streams the task, then status, then artifact chunks, then the final status, in order", async () => {
    const { token } = await a2a.stack.token();
    const client = await a2a.stack.client(token);
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
    expect((await waitForStatus(a2a.db, task?.id ?? "", ["succeeded"])).status).toBe("succeeded");
  });
});

describe("cancel and subscribe (point 5)", () => {
  it("CancelTask on a running task ends it CANCELED, on the stream too, through the queue's cancel", async () => {
    const { token } = await a2a.stack.token();
    const client = await a2a.stack.client(token);
    const stream = client.sendMessageStream({ tenant: "", message: userMessage(scriptOf({ text: ["working"], hang: true })), configuration: undefined, metadata: undefined });
    const seen: StreamResponse[] = [];
    let taskId = "";
    for await (const r of stream) {
      seen.push(r);
      if (r.payload?.$case === "task") taskId = r.payload.value.id;
      if (r.payload?.$case === "artifactUpdate") break;
    }
    expect(taskId).not.toBe("");
    // The run is executing (the stream showed its text): cancel it from another call.
    const cancelled = await client.cancelTask({ tenant: "", id: taskId, metadata: undefined });
    expect(stateName(cancelled.status?.state)).toBe("TASK_STATE_CANCELED");
    const row = await waitForStatus(a2a.db, taskId, ["cancelled"]);
    expect(row.cancel_requested_at).not.toBeNull();
    // A subscriber of the finished task is told to use GetTask; GetTask says CANCELED.
    await expect(collect(client.resubscribeTask({ tenant: "", id: taskId }))).rejects.toThrow(/terminal/);
    expect(stateName((await client.getTask({ tenant: "", id: taskId })).status?.state)).toBe("TASK_STATE_CANCELED");
    // Cancelling again is idempotent.
    expect(stateName((await client.cancelTask({ tenant: "", id: taskId, metadata: undefined })).status?.state)).toBe("TASK_STATE_CANCELED");
  });

  it("a streaming client cut off mid-run sees CANCELED as the last event when it stays", async () => {
    const { token } = await a2a.stack.token();
    const client = await a2a.stack.client(token);
    const events: StreamResponse[] = [];
    let id = "";
    // The cancel is not awaited inside the loop (the stream must go on being
    // read), but its failure, or a stream that never ends after it, fails the
    // test at once with what was seen, not at the test's timeout.
    const abort = new AbortController();
    let gaveUp: string | null = null;
    let watchdog: NodeJS.Timeout | undefined;
    try {
      for await (const r of client.sendMessageStream(
        { tenant: "", message: userMessage(scriptOf({ text: ["x"], hang: true })), configuration: undefined, metadata: undefined },
        { signal: abort.signal },
      )) {
        events.push(r);
        if (r.payload?.$case === "artifactUpdate" && !id) {
          id = events[0]?.payload?.$case === "task" ? events[0].payload.value.id : "";
          client.cancelTask({ tenant: "", id, metadata: undefined }).catch((err: unknown) => {
            gaveUp = `cancelTask failed: ${String(err)}`;
            abort.abort();
          });
          watchdog = setTimeout(() => {
            gaveUp = "the stream did not end within 15 s of the cancel";
            abort.abort();
          }, 15_000);
        }
      }
    } catch (err) {
      if (!gaveUp) throw err;
    } finally {
      clearTimeout(watchdog);
    }
    if (gaveUp) {
      const row = id ? await a2a.db.pool.query("select status, cancel_requested_at, last_seq from runs where id = $1", [id]) : null;
      const stored = id ? await a2a.db.pool.query("select seq, type from run_events where run_id = $1 order by seq", [id]) : null;
      throw new Error(
        `${gaveUp}; stream events: ${events.map((e) => e.payload?.$case).join(", ")}; run: ${JSON.stringify(row?.rows[0])}; ` +
          `stored events: ${stored?.rows.map((e: { seq: number; type: string }) => `${e.seq} ${e.type}`).join(", ")}`,
      );
    }
    const last = events.at(-1);
    expect(last?.payload?.$case).toBe("statusUpdate");
    if (last?.payload?.$case === "statusUpdate") expect(stateName(last.payload.value.status?.state)).toBe("TASK_STATE_CANCELED");
  });

  it("subscribing after a disconnect returns the task as it stands, then the rest, nothing twice", async () => {
    const { token } = await a2a.stack.token();
    const client = await a2a.stack.client(token);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    a2a.agents.hook("resubscribe", () => held);
    let taskId = "";
    let phase = "sending";
    const seen: string[] = [];
    // Each phase gets PHASE_MS; one that hangs fails the test at once with
    // what was seen, the run's row and its stored events, and the agent is
    // let go whatever happens (its hook ignores the run's signal: held, it
    // would keep the queue from stopping after the test).
    const abort = new AbortController();
    const subAbort = new AbortController();
    const PHASE_MS = 15_000;
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    const deadline = (name: string) => {
      phase = name;
      clearTimeout(timer);
      timer = setTimeout(() => {
        timedOut = true;
        abort.abort();
        subAbort.abort();
      }, PHASE_MS);
    };
    const diagnose = async (err: unknown) => {
      const row = taskId ? await a2a.db.pool.query("select status, attempt, cancel_requested_at, last_seq from runs where id = $1", [taskId]) : null;
      const stored = taskId ? await a2a.db.pool.query<{ seq: number; type: string }>("select seq, type from run_events where run_id = $1 order by seq", [taskId]) : null;
      return new Error(
        `${timedOut ? `phase "${phase}" took over ${PHASE_MS} ms` : `phase "${phase}" failed: ${String(err)}`}; seen: ${seen.join(", ")}; ` +
          `run: ${JSON.stringify(row?.rows[0])}; stored events: ${stored?.rows.map((e) => `${e.seq} ${e.type}`).join(", ")}; hub feeds: ${a2a.stack.hub.feeds}`,
      );
    };
    try {
      deadline("sending");
      try {
        for await (const r of client.sendMessageStream(
          { tenant: "", message: userMessage(scriptOf({ text: ["one ", "two"], hook: "resubscribe", usage: { promptTokens: 3, completionTokens: 2 } })), configuration: undefined, metadata: undefined },
          { signal: abort.signal },
        )) {
          seen.push(`send:${r.payload?.$case ?? "?"}`);
          if (r.payload?.$case === "task") taskId = r.payload.value.id;
          if (answerText([r], "") !== "" && r.payload?.$case === "artifactUpdate") abort.abort();
        }
      } catch (err) {
        // The abort ends the client's stream with an AbortError.
        if (timedOut) throw err;
      }
      expect(taskId).not.toBe("");
      // The server stops following the run for a client that is gone (the run goes on).
      deadline("the abandoned stream's feed closing");
      await waitUntil(() => a2a.stack.hub.feeds === 0, 5000, "the hub feed of the abandoned stream to close");
      // Everything the agent wrote before the hook is stored before we look.
      deadline("the run running");
      await waitForStatus(a2a.db, taskId, ["running"], PHASE_MS);
      deadline("the snapshot");
      const sub = client.resubscribeTask({ tenant: "", id: taskId }, { signal: subAbort.signal });
      const first = await sub.next();
      const snapshot = first.value as StreamResponse;
      seen.push(`sub:${snapshot.payload?.$case ?? "?"}`);
      expect(snapshot.payload?.$case).toBe("task");
      const task = snapshot.payload?.$case === "task" ? snapshot.payload.value : undefined;
      expect(task?.id).toBe(taskId);
      expect(stateName(task?.status?.state)).toBe("TASK_STATE_WORKING");
      const lastSeq = (task?.metadata as { esa: { lastSeq: number } }).esa.lastSeq;
      release();
      deadline("the rest of the stream");
      const rest: StreamResponse[] = [];
      for (let n = await sub.next(); !n.done; n = await sub.next()) {
        seen.push(`sub:${n.value.payload?.$case ?? "?"}`);
        rest.push(n.value);
      }
      clearTimeout(timer);
      const seqs = rest.flatMap((r) => (r.payload?.$case === "statusUpdate" || r.payload?.$case === "artifactUpdate" ? [(r.payload.value.metadata as { esa: { seq: number } }).esa.seq] : []));
      // The rest: every event after the snapshot's seq, none of those before it.
      expect(seqs.length).toBeGreaterThan(0);
      expect(Math.min(...seqs)).toBe(lastSeq + 1);
      const stored = await a2a.db.pool.query<{ seq: number }>("select seq from run_events where run_id = $1 and seq > $2 order by seq", [taskId, lastSeq]);
      expect([...new Set(seqs)]).toEqual(stored.rows.map((r) => r.seq));
      const last = rest.at(-1);
      if (last?.payload?.$case !== "statusUpdate") throw new Error("the last event is not a status update");
      expect(stateName(last.payload.value.status?.state)).toBe("TASK_STATE_COMPLETED");
      expect(answerText(rest, task ? artifactText(task) : "")).toBe("one two");
    } catch (err) {
      if (timedOut) throw await diagnose(err);
      throw err;
    } finally {
      clearTimeout(timer);
      release();
    }
  });
});

describe("protocol errors (point 5)", () => {
  it("an unknown task is the protocol's TaskNotFound (-32001) for get, cancel and subscribe", async () => {
    const { token } = await a2a.stack.token();
    const client = await a2a.stack.client(token);
    const unknown = "00000000-0000-4000-8000-000000000000";
    await expect(client.getTask({ tenant: "", id: unknown })).rejects.toMatchObject({ name: "TaskNotFoundError" });
    await expect(client.cancelTask({ tenant: "", id: unknown, metadata: undefined })).rejects.toMatchObject({ name: "TaskNotFoundError" });
    await expect(collect(client.resubscribeTask({ tenant: "", id: unknown }))).rejects.toMatchObject({ name: "TaskNotFoundError" });
    await expect(client.getTask({ tenant: "", id: "not-a-uuid" })).rejects.toMatchObject({ name: "TaskNotFoundError" });
    const raw = await rawRpc(`${a2a.stack.baseUrl}/a2a/jsonrpc`, { jsonrpc: "2.0", id: 7, method: "GetTask", params: { id: unknown } }, { authorization: `Bearer ${token}`, "a2a-version": "1.0" });
    expect(raw.json).toMatchObject({ jsonrpc: "2.0", id: 7, error: { code: -32001 } });
  });

  it("a malformed JSON-RPC body is the protocol's parse error (-32700); an unknown method is -32601, a non-2.0 request invalid", async () => {
    const { token } = await a2a.stack.token();
    const auth = { authorization: `Bearer ${token}`, "a2a-version": "1.0" };
    const parse = await rawRpc(`${a2a.stack.baseUrl}/a2a/jsonrpc`, '{"jsonrpc":"2.0","id":1,"method":', auth);
    expect(parse.json).toEqual({ jsonrpc: "2.0", id: null, error: { code: -32700, message: expect.any(String) } });
    const method = await rawRpc(`${a2a.stack.baseUrl}/a2a/jsonrpc`, { jsonrpc: "2.0", id: 2, method: "NoSuchMethod", params: {} }, auth);
    expect(method.json).toMatchObject({ id: 2, error: { code: -32601 } });
    // Not JSON-RPC 2.0 (no `jsonrpc`): refused as invalid by the SDK (-32602 in 1.3.0).
    const invalid = await rawRpc(`${a2a.stack.baseUrl}/a2a/jsonrpc`, { id: 3, method: "GetTask" }, auth);
    const code = (invalid.json as { error: { code: number } }).error.code;
    expect(code).toBeLessThanOrEqual(-32600);
    expect(code).toBeGreaterThanOrEqual(-32603);
  });

  it("a message the server cannot take is a protocol error, and nothing is stored", async () => {
    const { token, userId } = await a2a.stack.token();
    const client = await a2a.stack.client(token);
    const before = await a2a.db.pool.query("select 1 from runs where user_id = $1", [userId]);
    const noText = { ...userMessage("x"), parts: [] };
    await expect(client.sendMessage({ tenant: "", message: noText, configuration: undefined, metadata: undefined })).rejects.toThrow(/text part/);
    await expect(client.sendMessage({ tenant: "", message: userMessage("a".repeat(a2a.stack.config.security.maxMessageLength + 1)), configuration: undefined, metadata: undefined })).rejects.toThrow(/longer than/);
    await expect(
      client.sendMessage({ tenant: "", message: userMessage("hi", { contextId: "00000000-0000-4000-8000-000000000001" }), configuration: undefined, metadata: undefined }),
    ).rejects.toThrow(/not one of your conversations/);
    const after = await a2a.db.pool.query("select 1 from runs where user_id = $1", [userId]);
    expect(after.rowCount).toBe(before.rowCount);
  });
});

describe("the v1.0 wire format, raw (point 2)", () => {
  it("SendMessage in ProtoJSON, as the README's curl example sends it", async () => {
    const { token } = await a2a.stack.token();
    const r = await rawRpc(
      `${a2a.stack.baseUrl}/a2a/agents/math/jsonrpc`,
      { jsonrpc: "2.0", id: 1, method: "SendMessage", params: { message: { messageId: "m1", role: "ROLE_USER", parts: [{ text: scriptOf({ text: ["5"] }) }] } } },
      { authorization: `Bearer ${token}`, "a2a-version": "1.0" },
    );
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ jsonrpc: "2.0", id: 1, result: { task: { status: { state: "TASK_STATE_COMPLETED" }, artifacts: [{ artifactId: "answer", parts: [{ text: "5" }] }] } } });
  });
});

describe("v0.3 method names through the SDK's legacy compatibility (point 2)", () => {
  const v03 = (parts: string) => ({ kind: "message", messageId: crypto.randomUUID(), role: "user", parts: [{ kind: "text", text: parts }] });

  it("message/send, tasks/get, message/stream, tasks/resubscribe and tasks/cancel work without an A2A-Version header", async () => {
    const { token } = await a2a.stack.token();
    const url = `${a2a.stack.baseUrl}/a2a/jsonrpc`;
    const auth = { authorization: `Bearer ${token}` };

    const sent = await rawRpc(url, { jsonrpc: "2.0", id: 1, method: "message/send", params: { message: v03(scriptOf({ text: ["v0.3"] })) } }, auth);
    const task = (sent.json as { result: { kind: string; id: string; contextId: string; status: { state: string }; artifacts: { parts: { text: string }[] }[] } }).result;
    expect(task).toMatchObject({ kind: "task", status: { state: "completed" } });
    expect(task.artifacts[0]?.parts[0]?.text).toBe("v0.3");

    const got = await rawRpc(url, { jsonrpc: "2.0", id: 2, method: "tasks/get", params: { id: task.id } }, auth);
    expect(got.json).toMatchObject({ id: 2, result: { id: task.id, contextId: task.contextId, status: { state: "completed" } } });

    const streamed = await rawRpc(url, { jsonrpc: "2.0", id: 3, method: "message/stream", params: { message: { ...v03(scriptOf({ text: ["s"] })), contextId: task.contextId } } }, auth);
    expect(streamed.headers.get("content-type")).toMatch(/text\/event-stream/);
    const frames = sseData(streamed.text) as { result: { kind: string; status?: { state: string }; final?: boolean } }[];
    expect(frames[0]?.result.kind).toBe("task");
    expect(frames.at(-1)?.result).toMatchObject({ kind: "status-update", status: { state: "completed" } });

    // A held run: resubscribe sees it working, cancel ends it.
    const hold = await rawRpc(url, { jsonrpc: "2.0", id: 4, method: "message/send", params: { message: v03(scriptOf({ hang: true })), configuration: { blocking: false } } }, auth);
    const held = (hold.json as { result: { id: string } }).result;
    await waitForStatus(a2a.db, held.id, ["running"]);
    const cancelling = rawRpc(url, { jsonrpc: "2.0", id: 5, method: "tasks/resubscribe", params: { id: held.id } }, auth);
    await new Promise((r) => setTimeout(r, 200));
    const cancel = await rawRpc(url, { jsonrpc: "2.0", id: 6, method: "tasks/cancel", params: { id: held.id } }, auth);
    expect(cancel.json).toMatchObject({ id: 6, result: { id: held.id, status: { state: "canceled" } } });
    const resub = sseData((await cancelling).text) as { result: { kind: string; status?: { state: string } } }[];
    expect(resub[0]?.result).toMatchObject({ kind: "task", status: { state: "working" } });
    expect(resub.at(-1)?.result).toMatchObject({ kind: "status-update", status: { state: "canceled" } });
  });
});

describe("a full queue", () => {
  const full = useA2aStack({ env: { MAX_QUEUE_DEPTH: "1" } });

  it("refuses a message with an error saying so, and stores nothing (no empty conversation either)", async () => {
    // One queued run with no job: it stays queued and fills the queue.
    await full.db.pool.query(`
      with u as (insert into users default values returning id),
      c as (insert into conversations (user_id) select id from u returning id, user_id),
      m as (insert into messages (conversation_id, user_id, role, content) select id, user_id, 'user', 'x' from c returning id, conversation_id, user_id)
      insert into runs (user_id, conversation_id, message_id) select user_id, conversation_id, id from m`);
    const { token, userId } = await full.stack.token();
    const client = await full.stack.client(token);
    await expect(client.sendMessage({ tenant: "", message: userMessage("hi"), configuration: undefined, metadata: undefined })).rejects.toThrow(/Too many runs are waiting/);
    const mine = await full.db.pool.query("select 1 from conversations where user_id = $1", [userId]);
    expect(mine.rowCount).toBe(0);
  });
});

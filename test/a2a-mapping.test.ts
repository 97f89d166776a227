/**
 * Issue 9, point 4: run events map to A2A status and artifact updates in
 * order; a retry (status retrying, then reset) shows as status updates and
 * the next attempt's text replaces the last one's; the terminal state is the
 * run's (COMPLETED, FAILED, CANCELED). The mapper alone on every event type,
 * then runs on the real queue (scripted agents, and the real orchestrator).
 */
import { describe, it, expect } from "vitest";
import { TaskState, type StreamResponse, type Task } from "@a2a-js/sdk";
import type { AgentExecutionEvent } from "@a2a-js/sdk/server";
import { scriptOf, waitForStatus } from "./helpers/queue.js";
import { useA2aStack, userMessage } from "./helpers/a2a.js";
import { RunEventMapper, stateOf, taskOf, type RunEventIn, type RunSnapshot } from "../server/a2a/mapping.js";
import { createAgentRegistry } from "../server/agents/registry.js";
import { createOrchestrator } from "../server/agents/orchestrator.js";
import { unlimitedBudget } from "../server/agents/budget.js";
import { loadConfig } from "../server/config.js";

const S = TaskState;
const RUN = "11111111-1111-4111-8111-111111111111";
const CTX = "22222222-2222-4222-8222-222222222222";

/** An update in a form easy to compare. */
function brief(ev: AgentExecutionEvent): string {
  switch (ev.kind) {
    case "statusUpdate": {
      const m = ev.data.status?.message?.parts.map((p) => (p.content?.$case === "text" ? p.content.value : JSON.stringify(p.content?.value))).join("") ?? "";
      return `status ${TaskState[ev.data.status?.state ?? S.TASK_STATE_UNSPECIFIED]}${m ? ` "${m}"` : ""}`;
    }
    case "artifactUpdate": {
      const t = ev.data.artifact?.parts.map((p) => (p.content?.$case === "text" ? p.content.value : "")).join("") ?? "";
      return `artifact ${ev.data.artifact?.artifactId} "${t}"${ev.data.append ? " append" : " replace"}${ev.data.lastChunk ? " last" : ""}`;
    }
    default:
      return ev.kind;
  }
}

describe("the mapper, event by event", () => {
  it("maps every run event type, in order, with the retry as status updates and the next attempt replacing the text", async () => {
    const events: RunEventIn[] = [
      { seq: 1, attempt: 1, type: "status", data: { status: "running", attempt: 1, of: 4 } },
      { seq: 2, attempt: 1, type: "route", data: { agent: "assistant", reason: "rules: a general question" } },
      { seq: 3, attempt: 1, type: "text.delta", data: { text: "Par" } },
      { seq: 4, attempt: 1, type: "text.delta", data: { text: "tial" } },
      { seq: 5, attempt: 1, type: "status", data: { status: "retrying", attempt: 2, of: 4, until: "2026-01-01T00:00:00.000Z", reason: "provider timed out" } },
      { seq: 6, attempt: 2, type: "reset", data: { attempt: 2 } },
      { seq: 7, attempt: 2, type: "status", data: { status: "running", attempt: 2, of: 4 } },
      { seq: 8, attempt: 2, type: "tool.call", data: { id: "t1", name: "calculate", args: { expression: "6*7" } } },
      { seq: 9, attempt: 2, type: "tool.result", data: { id: "t1", name: "calculate", result: "42" } },
      { seq: 10, attempt: 2, type: "text.delta", data: { text: "It is " } },
      { seq: 11, attempt: 2, type: "text.delta", data: { text: "42." } },
      { seq: 12, attempt: 2, type: "status", data: { status: "waiting", until: "2026-01-01T00:00:01.000Z", reason: "rate limit" } },
      { seq: 13, attempt: 2, type: "usage", data: { promptTokens: 10, completionTokens: 4 } },
      { seq: 14, attempt: 2, type: "done", data: { messageId: "m-answer" } },
    ];
    const looked: string[] = [];
    const mapper = new RunEventMapper(RUN, CTX, false, async (id) => {
      looked.push(id);
      return "It is 42.";
    });
    const out: AgentExecutionEvent[] = [];
    for (const ev of events) out.push(...(await mapper.map(ev)));
    expect(out.map(brief)).toEqual([
      "status TASK_STATE_WORKING",
      'status TASK_STATE_WORKING "routed to assistant: rules: a general question"',
      'artifact answer "Par" replace',
      'artifact answer "tial" append',
      'status TASK_STATE_WORKING "retrying (attempt 2 of 4) after: provider timed out"',
      'status TASK_STATE_WORKING "attempt 2 starts over"',
      "status TASK_STATE_WORKING",
      'status TASK_STATE_WORKING "{"toolCall":{"id":"t1","name":"calculate","args":{"expression":"6*7"}}}"',
      'status TASK_STATE_WORKING "{"toolResult":{"id":"t1","name":"calculate","result":"42"}}"',
      'artifact answer "It is " replace',
      'artifact answer "42." append',
      'status TASK_STATE_WORKING "waiting until 2026-01-01T00:00:01.000Z: rate limit"',
      "status TASK_STATE_WORKING",
      'artifact answer "It is 42." replace last',
      "status TASK_STATE_COMPLETED",
    ]);
    expect(looked).toEqual(["m-answer"]);
    // Every update names its task, context and the run event it came from.
    for (const ev of out) {
      if (ev.kind !== "statusUpdate" && ev.kind !== "artifactUpdate") throw new Error(ev.kind);
      expect(ev.data.taskId).toBe(RUN);
      expect(ev.data.contextId).toBe(CTX);
    }
    const seqs = out.map((ev) => ((ev.data as unknown as { metadata: { esa: { seq: number } } }).metadata.esa.seq));
    expect(seqs).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 14]);
    const usage = out[12];
    expect(usage?.kind === "statusUpdate" && usage.data.metadata).toMatchObject({ esa: { event: "usage", usage: { promptTokens: 10, completionTokens: 4 } } });
  });

  it("failed and cancelled end the task FAILED and CANCELED; a stream resumed mid-attempt appends", async () => {
    const failed = await new RunEventMapper(RUN, CTX, true, async () => null).map({ seq: 9, attempt: 1, type: "failed", data: { code: "provider_error", message: "The provider failed" } });
    expect(failed.map(brief)).toEqual(['status TASK_STATE_FAILED "provider_error: The provider failed"']);
    const cancelled = await new RunEventMapper(RUN, CTX, true, async () => null).map({ seq: 3, attempt: 1, type: "cancelled", data: {} });
    expect(cancelled.map(brief)).toEqual(['status TASK_STATE_CANCELED "cancelled"']);
    const resumed = await new RunEventMapper(RUN, CTX, true, async () => null).map({ seq: 4, attempt: 1, type: "text.delta", data: { text: "more" } });
    expect(resumed.map(brief)).toEqual(['artifact answer "more" append']);
  });

  it("run statuses are task states; a queued run that has started before is still working", () => {
    expect(stateOf("queued", 0)).toBe(S.TASK_STATE_SUBMITTED);
    expect(stateOf("queued", 1)).toBe(S.TASK_STATE_WORKING);
    expect(stateOf("running", 1)).toBe(S.TASK_STATE_WORKING);
    expect(stateOf("succeeded", 1)).toBe(S.TASK_STATE_COMPLETED);
    expect(stateOf("failed", 3)).toBe(S.TASK_STATE_FAILED);
    expect(stateOf("cancelled", 0)).toBe(S.TASK_STATE_CANCELED);
    const snap: RunSnapshot = {
      runId: RUN,
      conversationId: CTX,
      status: "failed",
      attempt: 2,
      lastSeq: 9,
      userMessage: { id: "u1", content: "hi" },
      answer: null,
      partial: "half",
      agent: "assistant",
      routeReason: "r",
      errorCode: "provider_error",
      errorMessage: "down",
      usage: null,
      cancelRequested: false,
      updatedAt: new Date(0).toISOString(),
    };
    const t = taskOf(snap);
    expect(t.status?.state).toBe(S.TASK_STATE_FAILED);
    expect(t.status?.message?.parts[0]?.content).toEqual({ $case: "text", value: "provider_error: down" });
    expect(t.artifacts[0]?.parts[0]?.content).toEqual({ $case: "text", value: "half" });
    expect(t.metadata).toMatchObject({ esa: { lastSeq: 9, runStatus: "failed" } });
  });
});

const stateName = (s: TaskState | undefined) => (s === undefined ? "none" : TaskState[s]);

async function collect(stream: AsyncGenerator<StreamResponse>): Promise<StreamResponse[]> {
  const out: StreamResponse[] = [];
  for await (const r of stream) out.push(r);
  return out;
}

const esaOf = (r: StreamResponse) =>
  r.payload?.$case === "statusUpdate" || r.payload?.$case === "artifactUpdate" ? (r.payload.value.metadata as { esa: Record<string, unknown> }).esa : null;

describe("runs on the queue, streamed", () => {
  const a2a = useA2aStack();

  it("a retried run: retrying and reset are status updates, the new attempt's text replaces the old, COMPLETED last", async () => {
    const { token } = await a2a.stack.token();
    const client = await a2a.stack.client(token);
    const script = scriptOf({ text: ["Wrong"], fail: { code: "provider_error", message: "flaky", retryable: true } }, { text: ["Right"] });
    const events = await collect(client.sendMessageStream({ tenant: "", message: userMessage(script), configuration: undefined, metadata: undefined }));
    const esa = events.map(esaOf);
    const retrying = esa.findIndex((e) => e?.event === "status" && e.status === "retrying");
    const reset = esa.findIndex((e) => e?.event === "reset");
    expect(retrying).toBeGreaterThan(0);
    expect(reset).toBeGreaterThan(retrying);
    const at = (i: number) => events[i]?.payload;
    const retryUpdate = at(retrying);
    expect(retryUpdate?.$case === "statusUpdate" && stateName(retryUpdate.value.status?.state)).toBe("TASK_STATE_WORKING");
    // Text before the reset is the first attempt's; the first chunk after it replaces it.
    const firstAfter = events.slice(reset).find((r) => r.payload?.$case === "artifactUpdate");
    expect(firstAfter?.payload?.$case === "artifactUpdate" && firstAfter.payload.value.append).toBe(false);
    const last = events.at(-1)?.payload;
    expect(last?.$case === "statusUpdate" && stateName(last.value.status?.state)).toBe("TASK_STATE_COMPLETED");
    let text = "";
    for (const r of events) {
      if (r.payload?.$case !== "artifactUpdate") continue;
      const chunk = r.payload.value.artifact?.parts.map((p) => (p.content?.$case === "text" ? p.content.value : "")).join("") ?? "";
      text = r.payload.value.append ? text + chunk : chunk;
    }
    expect(text).toBe("Right");
    const id = events[0]?.payload?.$case === "task" ? events[0].payload.value.id : "";
    const row = await waitForStatus(a2a.db, id, ["succeeded"]);
    expect(row.failures).toBe(1);
  }, 30_000);

  it("a failed run ends FAILED with its error, as GetTask says too", async () => {
    const { token } = await a2a.stack.token();
    const client = await a2a.stack.client(token);
    const events = await collect(
      client.sendMessageStream({ tenant: "", message: userMessage(scriptOf({ text: ["no"], fail: { code: "bad_input", message: "cannot do that", retryable: false } })), configuration: undefined, metadata: undefined }),
    );
    const last = events.at(-1)?.payload;
    if (last?.$case !== "statusUpdate") throw new Error("no final status");
    expect(stateName(last.value.status?.state)).toBe("TASK_STATE_FAILED");
    expect(last.value.status?.message?.parts[0]?.content).toMatchObject({ $case: "text", value: expect.stringContaining("cannot do that") });
    const task = await client.getTask({ tenant: "", id: last.value.taskId });
    expect(stateName(task.status?.state)).toBe("TASK_STATE_FAILED");
    expect((await waitForStatus(a2a.db, task.id, ["failed"])).status).toBe("failed");
  });
});

describe("the real orchestrator and agents", () => {
  const a2a = useA2aStack({
    orchestrator: () => {
      const config = loadConfig({ NODE_ENV: "test" });
      return createOrchestrator(createAgentRegistry(config, { budget: unlimitedBudget }), config);
    },
  });

  it("the system endpoint routes a calculation to math (route status first), the math endpoint answers it", async () => {
    const { token } = await a2a.stack.token();
    const system = await a2a.stack.client(token);
    const events = await collect(system.sendMessageStream({ tenant: "", message: userMessage("what is 6*7?"), configuration: undefined, metadata: undefined }));
    const routed = events.map(esaOf).find((e) => e?.event === "route");
    expect(routed).toMatchObject({ agent: "math" });
    const last = events.at(-1)?.payload;
    expect(last?.$case === "statusUpdate" && stateName(last.value.status?.state)).toBe("TASK_STATE_COMPLETED");
    const math = await a2a.stack.client(token, "/a2a/agents/math/agent-card.json");
    const task = (await math.sendMessage({ tenant: "", message: userMessage("2+3"), configuration: undefined, metadata: undefined })) as Task;
    expect(stateName(task.status?.state)).toBe("TASK_STATE_COMPLETED");
    expect(task.artifacts[0]?.parts.map((p) => (p.content?.$case === "text" ? p.content.value : "")).join("")).toMatch(/\b5\b/);
    // The first math question loads mathjs: slow on a busy machine, not a speed check.
  }, 60_000);
});

/**
 * Runs as A2A tasks. A run's row (with its user message, its answer or the
 * text streamed so far) becomes a `Task`; each stored run event becomes A2A
 * status and artifact updates, in seq order:
 *
 * | run event            | A2A                                                           |
 * |----------------------|---------------------------------------------------------------|
 * | status running/queued/waiting/retrying | status WORKING (message says why, e.g. "retrying") |
 * | route                | status WORKING, message "routed to <agent>: <reason>"         |
 * | reset {attempt}      | status WORKING "attempt n starts over"; the next text chunk replaces the answer (append false) |
 * | text.delta           | artifact `answer` chunk (append true; false for an attempt's first) |
 * | tool.call, tool.result | status WORKING with a data part                             |
 * | usage                | status WORKING, metadata usage                                |
 * | done                 | artifact `answer`, the stored reply whole (append false, lastChunk), then status COMPLETED |
 * | failed               | status FAILED with the error code and message                 |
 * | cancelled            | status CANCELED                                               |
 *
 * Every update carries `metadata.esa = {event, seq, attempt}`: the run event it came from.
 */
import { Role, TaskState, type Artifact, type Message, type Part, type Task, type TaskStatus } from "@a2a-js/sdk";
import { AgentEvent, type AgentExecutionEvent } from "@a2a-js/sdk/server";
import type { RunStatus } from "../../shared/schema.js";
import type { RunEventType } from "../../shared/realtime.js";

/** The artifact holding the reply. */
export const ANSWER_ARTIFACT = "answer";

/** What a task is built from: one row, read in one statement (see taskStore.ts). */
export interface RunSnapshot {
  runId: string;
  conversationId: string;
  status: RunStatus;
  attempt: number;
  /** runs.last_seq at the read: the snapshot covers every event up to it. */
  lastSeq: number;
  userMessage: { id: string; content: string };
  /** The stored reply of a succeeded run. */
  answer: { id: string; content: string } | null;
  /** Text of the current attempt streamed so far (a running run). */
  partial: string;
  agent: string | null;
  routeReason: string | null;
  errorCode: string | null;
  errorMessage: string | null;
  usage: { promptTokens: number; completionTokens: number } | null;
  cancelRequested: boolean;
  updatedAt: string;
}

export const TERMINAL_STATES: ReadonlySet<TaskState> = new Set([TaskState.TASK_STATE_COMPLETED, TaskState.TASK_STATE_FAILED, TaskState.TASK_STATE_CANCELED]);

/** A run status as a task state. A queued run that has started before (a retry, a hand-back) is still working. */
export function stateOf(status: RunStatus, attempt: number): TaskState {
  switch (status) {
    case "queued":
      return attempt > 0 ? TaskState.TASK_STATE_WORKING : TaskState.TASK_STATE_SUBMITTED;
    case "running":
      return TaskState.TASK_STATE_WORKING;
    case "succeeded":
      return TaskState.TASK_STATE_COMPLETED;
    case "failed":
      return TaskState.TASK_STATE_FAILED;
    case "cancelled":
      return TaskState.TASK_STATE_CANCELED;
    default: {
      const unreachable: never = status;
      throw new Error(`unknown run status ${String(unreachable)}`);
    }
  }
}

export const textPart = (text: string): Part => ({ content: { $case: "text", value: text }, metadata: undefined, filename: "", mediaType: "text/plain" });
const dataPart = (value: unknown): Part => ({ content: { $case: "data", value }, metadata: undefined, filename: "", mediaType: "application/json" });

function agentMessage(runId: string, contextId: string, messageId: string, parts: Part[]): Message {
  return { messageId, contextId, taskId: runId, role: Role.ROLE_AGENT, parts, metadata: undefined, extensions: [], referenceTaskIds: [] };
}

function answerArtifact(text: string): Artifact {
  return { artifactId: ANSWER_ARTIFACT, name: "answer", description: "The agent's reply", parts: [textPart(text)], metadata: undefined, extensions: [] };
}

/** The task of a run as it stands in the snapshot. */
export function taskOf(s: RunSnapshot): Task {
  const state = stateOf(s.status, s.attempt);
  const status: TaskStatus = { state, message: undefined, timestamp: s.updatedAt };
  if (state === TaskState.TASK_STATE_FAILED) {
    status.message = agentMessage(s.runId, s.conversationId, `${s.runId}:failed`, [textPart(`${s.errorCode ?? "failed"}: ${s.errorMessage ?? ""}`)]);
  }
  const history: Message[] = [
    {
      messageId: s.userMessage.id,
      contextId: s.conversationId,
      taskId: s.runId,
      role: Role.ROLE_USER,
      parts: [textPart(s.userMessage.content)],
      metadata: undefined,
      extensions: [],
      referenceTaskIds: [],
    },
  ];
  if (s.answer) history.push(agentMessage(s.runId, s.conversationId, s.answer.id, [textPart(s.answer.content)]));
  const text = s.answer ? s.answer.content : s.partial;
  const artifacts = s.answer || s.partial !== "" ? [answerArtifact(text)] : [];
  return {
    id: s.runId,
    contextId: s.conversationId,
    status,
    artifacts,
    history,
    metadata: {
      esa: {
        runStatus: s.status,
        attempt: s.attempt,
        lastSeq: s.lastSeq,
        agent: s.agent,
        routeReason: s.routeReason,
        usage: s.usage,
        ...(s.cancelRequested ? { cancelRequested: true } : {}),
      },
    },
  };
}

/** One stored run event, parsed. */
export interface RunEventIn {
  seq: number;
  attempt: number;
  type: RunEventType;
  data: Record<string, unknown>;
}

/**
 * Maps one run's events to A2A updates, in order. Stateful: it knows whether
 * the answer artifact has text for the current attempt (the next chunk
 * appends) or not (the next chunk starts it afresh).
 */
export class RunEventMapper {
  private hasText: boolean;

  constructor(
    private readonly runId: string,
    private readonly contextId: string,
    /** The snapshot the stream continues from already shows text of the current attempt. */
    hasText: boolean,
    /** The stored reply of a finished run (its `done` event names it). */
    private readonly answerOf: (messageId: string) => Promise<string | null>,
  ) {
    this.hasText = hasText;
  }

  private status(ev: RunEventIn, state: TaskState, parts: Part[] | null, extra: Record<string, unknown> = {}): AgentExecutionEvent {
    return AgentEvent.statusUpdate({
      taskId: this.runId,
      contextId: this.contextId,
      status: {
        state,
        message: parts ? agentMessage(this.runId, this.contextId, `${this.runId}:${ev.seq}`, parts) : undefined,
        timestamp: new Date().toISOString(),
      },
      metadata: { esa: { event: ev.type, seq: ev.seq, attempt: ev.attempt, ...extra } },
    });
  }

  private chunk(ev: RunEventIn, text: string, append: boolean, lastChunk: boolean): AgentExecutionEvent {
    return AgentEvent.artifactUpdate({
      taskId: this.runId,
      contextId: this.contextId,
      artifact: answerArtifact(text),
      append,
      lastChunk,
      metadata: { esa: { event: ev.type, seq: ev.seq, attempt: ev.attempt } },
    });
  }

  async map(ev: RunEventIn): Promise<AgentExecutionEvent[]> {
    const d = ev.data;
    const str = (k: string) => (typeof d[k] === "string" ? (d[k] as string) : "");
    const WORKING = TaskState.TASK_STATE_WORKING;
    switch (ev.type) {
      case "status": {
        const s = str("status");
        const why =
          s === "retrying"
            ? `retrying (attempt ${String(d.attempt)} of ${String(d.of)}) after: ${str("reason")}`
            : s === "waiting"
              ? `waiting until ${str("until")}${d.reason ? `: ${str("reason")}` : ""}`
              : s === "queued"
                ? `back in the queue${d.reason ? ` (${str("reason")})` : ""}`
                : null;
        return [this.status(ev, WORKING, why ? [textPart(why)] : null, { status: s, ...d })];
      }
      case "route":
        return [this.status(ev, WORKING, [textPart(`routed to ${str("agent")}: ${str("reason")}`)], { agent: str("agent"), reason: str("reason") })];
      case "reset":
        // The attempt before is dropped: its text is replaced by the next chunk.
        this.hasText = false;
        return [this.status(ev, WORKING, [textPart(`attempt ${String(d.attempt)} starts over`)], { reset: d.attempt })];
      case "text.delta": {
        const append = this.hasText;
        this.hasText = true;
        return [this.chunk(ev, str("text"), append, false)];
      }
      case "tool.call":
        return [this.status(ev, WORKING, [dataPart({ toolCall: d })])];
      case "tool.result":
        return [this.status(ev, WORKING, [dataPart({ toolResult: d })])];
      case "usage":
        return [this.status(ev, WORKING, null, { usage: d })];
      case "done": {
        const answer = await this.answerOf(str("messageId"));
        const out: AgentExecutionEvent[] = [];
        if (answer !== null) out.push(this.chunk(ev, answer, false, true));
        out.push(this.status(ev, TaskState.TASK_STATE_COMPLETED, null, { messageId: str("messageId") }));
        return out;
      }
      case "failed":
        return [this.status(ev, TaskState.TASK_STATE_FAILED, [textPart(`${str("code")}: ${str("message")}`)], { code: str("code") })];
      case "cancelled":
        return [this.status(ev, TaskState.TASK_STATE_CANCELED, [textPart("cancelled")])];
      default: {
        const unreachable: never = ev.type;
        throw new Error(`unknown run event ${String(unreachable)}`);
      }
    }
  }
}

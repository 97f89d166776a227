/**
 * The A2A request handler of one endpoint (the orchestrator, or one agent).
 *
 * Send and get go through the SDK's DefaultRequestHandler with our executor
 * and task store (its validation, blocking vs `returnImmediately`, history
 * length and stream-order checks); before it runs, the message is posted the
 * chat's way (createMessageStore().post: user message, run and job in one
 * statement), so errors such as an unknown context or a full queue are
 * protocol errors, not failed tasks.
 *
 * Cancel and subscribe are ours: the SDK's versions only see executions whose
 * event bus lives in this process, while a run executes on whichever
 * instance took its job. Here cancel is the queue's requestCancel and
 * subscribe reads the run's log through the hub, from the snapshot's seq.
 */
import type {
  AgentCard,
  CancelTaskRequest,
  DeleteTaskPushNotificationConfigRequest,
  GetExtendedAgentCardRequest,
  GetTaskPushNotificationConfigRequest,
  GetTaskRequest,
  ListTaskPushNotificationConfigsRequest,
  ListTaskPushNotificationConfigsResponse,
  ListTasksRequest,
  ListTasksResponse,
  Message,
  SendMessageRequest,
  StreamResponse,
  SubscribeToTaskRequest,
  Task,
  TaskPushNotificationConfig,
} from "@a2a-js/sdk";
import { TaskState } from "@a2a-js/sdk";
import { DefaultRequestHandler, type A2ARequestHandler, type AgentExecutionEvent, type ServerCallContext } from "@a2a-js/sdk/server";
import { A2AError, RequestMalformedError, TaskNotCancelableError, TaskNotFoundError, UnsupportedOperationError } from "@a2a-js/sdk/errors";
import type { Pool } from "../db/pool.js";
import type { RunHub } from "../realtime/hub.js";
import type { MessageStore } from "../data/messages.js";
import type { ConversationStore } from "../data/conversations.js";
import { requestCancel } from "../queue/cancel.js";
import { isUuid } from "../auth/session.js";
import { SECOND } from "../config.js";
import { callerOf } from "./auth.js";
import { RunExecutor, POSTED_RUN, type PostedRun } from "./executor.js";
import { followRun } from "./follow.js";
import { TERMINAL_STATES, stateOf, taskOf, type RunSnapshot } from "./mapping.js";
import { createRunTaskStore, readSnapshot } from "./taskStore.js";

/** How long CancelTask waits for the run to settle before answering with it as it is. */
const CANCEL_WAIT_MS = 10 * SECOND;

export interface RunRequestHandlerDeps {
  pool: Pool;
  hub: RunHub;
  messages: MessageStore;
  conversations: ConversationStore;
  /** The card the SDK validates against (versions, streaming); URLs do not matter here. */
  card: AgentCard;
  /** The agent every message of this endpoint asks for; null: the orchestrator routes. */
  agent: string | null;
  maxMessageLength: number;
}

export function toStreamResponse(ev: AgentExecutionEvent): StreamResponse {
  switch (ev.kind) {
    case "task":
      return { payload: { $case: "task", value: ev.data } };
    case "message":
      return { payload: { $case: "message", value: ev.data } };
    case "statusUpdate":
      return { payload: { $case: "statusUpdate", value: ev.data } };
    case "artifactUpdate":
      return { payload: { $case: "artifactUpdate", value: ev.data } };
    default: {
      const unreachable: never = ev;
      throw new Error(`unknown event ${String(unreachable)}`);
    }
  }
}

/** The text of a message: its text parts, one per line. */
function textOf(message: Message): string {
  return message.parts
    .map((p) => (p.content?.$case === "text" ? p.content.value : null))
    .filter((t): t is string => t !== null)
    .join("\n");
}

export class RunRequestHandler implements A2ARequestHandler {
  private readonly inner: DefaultRequestHandler;

  constructor(private readonly deps: RunRequestHandlerDeps) {
    this.inner = new DefaultRequestHandler(deps.card, createRunTaskStore(deps.pool), new RunExecutor({ pool: deps.pool, hub: deps.hub }));
  }

  getAgentCard(): Promise<AgentCard> {
    return this.inner.getAgentCard();
  }

  getAuthenticatedExtendedAgentCard(params: GetExtendedAgentCardRequest, context: ServerCallContext): Promise<AgentCard> {
    return this.inner.getAuthenticatedExtendedAgentCard(params, context);
  }

  /** Checks the message and posts it as the chat does; the executor follows the run. */
  private async post(params: SendMessageRequest, context: ServerCallContext): Promise<void> {
    const userId = callerOf(context).userId;
    const message = params.message;
    if (!message) throw new RequestMalformedError("message is required");
    if (!message.messageId) throw new RequestMalformedError("message.messageId is required");
    if (message.taskId) {
      const existing = await readSnapshot(this.deps.pool, userId, message.taskId);
      if (!existing) throw new TaskNotFoundError(`Task not found: ${message.taskId}`);
      throw new UnsupportedOperationError(
        `Task ${message.taskId} answers one message and takes no more input; send a new message with contextId ${existing.conversationId} to continue the conversation`,
      );
    }
    const content = textOf(message);
    if (content.trim() === "") throw new RequestMalformedError("The message needs a text part");
    if (content.length > this.deps.maxMessageLength) {
      throw new RequestMalformedError(`The message is longer than ${this.deps.maxMessageLength} characters`);
    }
    let conversationId: string;
    let created = false;
    if (message.contextId) {
      const c = isUuid(message.contextId) ? await this.deps.conversations.get(userId, message.contextId.toLowerCase()) : undefined;
      if (!c) throw new RequestMalformedError(`contextId ${message.contextId} is not one of your conversations; omit it to start one`);
      conversationId = c.id;
    } else {
      conversationId = (await this.deps.conversations.create(userId, content.slice(0, 80))).id;
      created = true;
    }
    const posted = await this.deps.messages.post(userId, conversationId, content, this.deps.agent ?? undefined);
    // Refused: a conversation made for this message would stay empty.
    if (typeof posted === "string" && created) await this.deps.conversations.remove(userId, conversationId);
    if (posted === "not_found") throw new RequestMalformedError(`contextId ${conversationId} is not one of your conversations`);
    if (posted === "overloaded") throw new A2AError({ message: "Too many runs are waiting; try again shortly", metadata: { code: "overloaded", retryAfterSeconds: "5" } });
    const run: PostedRun = { runId: posted.run.id, conversationId };
    context.state.set(POSTED_RUN, run);
  }

  async sendMessage(params: SendMessageRequest, context: ServerCallContext): Promise<Message | Task> {
    await this.post(params, context);
    return this.inner.sendMessage(params, context);
  }

  async *sendMessageStream(params: SendMessageRequest, context: ServerCallContext): AsyncGenerator<StreamResponse, void, undefined> {
    await this.post(params, context);
    yield* this.inner.sendMessageStream(params, context);
  }

  getTask(params: GetTaskRequest, context: ServerCallContext): Promise<Task> {
    return this.inner.getTask(params, context);
  }

  listTasks(params: ListTasksRequest, context: ServerCallContext): Promise<ListTasksResponse> {
    return this.inner.listTasks(params, context);
  }

  private async snapshot(id: string, context: ServerCallContext): Promise<RunSnapshot> {
    if (!id || id.trim() === "") throw new RequestMalformedError("A task id is required");
    const snap = await readSnapshot(this.deps.pool, callerOf(context).userId, id);
    if (!snap) throw new TaskNotFoundError(`Task not found: ${id}`);
    return snap;
  }

  private follow(snap: RunSnapshot, context: ServerCallContext, signal: AbortSignal) {
    return followRun({
      hub: this.deps.hub,
      pool: this.deps.pool,
      userId: callerOf(context).userId,
      runId: snap.runId,
      contextId: snap.conversationId,
      after: snap.lastSeq,
      finished: TERMINAL_STATES.has(stateOf(snap.status, snap.attempt)),
      hasText: snap.partial !== "",
      signal,
    });
  }

  async cancelTask(params: CancelTaskRequest, context: ServerCallContext): Promise<Task> {
    const userId = callerOf(context).userId;
    const snap = await this.snapshot(params.id, context);
    const state = stateOf(snap.status, snap.attempt);
    if (state === TaskState.TASK_STATE_CANCELED) return taskOf(snap);
    if (TERMINAL_STATES.has(state)) throw new TaskNotCancelableError(`Task ${snap.runId} has already finished`);
    if (!(await requestCancel(this.deps.pool, userId, snap.runId))) throw new TaskNotFoundError(`Task not found: ${params.id}`);
    // A queued run is cancelled at once; a running one ends itself wherever
    // it runs (NOTIFY, or the poll): wait for its terminal event, bounded.
    const signal = AbortSignal.any([callerOf(context).signal, AbortSignal.timeout(CANCEL_WAIT_MS)]);
    for await (const ev of this.follow(snap, context, signal)) {
      if (ev.kind === "statusUpdate" && ev.data.status && TERMINAL_STATES.has(ev.data.status.state)) break;
    }
    const after = await this.snapshot(params.id, context);
    const now = stateOf(after.status, after.attempt);
    if (now === TaskState.TASK_STATE_COMPLETED || now === TaskState.TASK_STATE_FAILED) {
      throw new TaskNotCancelableError(`Task ${snap.runId} finished before the cancel reached it`);
    }
    // CANCELED, or still settling (metadata.esa.cancelRequested says so).
    return taskOf(after);
  }

  async *resubscribe(params: SubscribeToTaskRequest, context: ServerCallContext): AsyncGenerator<StreamResponse, void, undefined> {
    const snap = await this.snapshot(params.id, context);
    if (TERMINAL_STATES.has(stateOf(snap.status, snap.attempt))) {
      // As the spec asks; GetTask returns the finished task.
      throw new UnsupportedOperationError(`Task ${snap.runId} is in a terminal state and cannot be subscribed to; use GetTask`);
    }
    yield { payload: { $case: "task", value: taskOf(snap) } };
    for await (const ev of this.follow(snap, context, callerOf(context).signal)) yield toStreamResponse(ev);
  }

  createTaskPushNotificationConfig(params: TaskPushNotificationConfig, context: ServerCallContext): Promise<TaskPushNotificationConfig> {
    return this.inner.createTaskPushNotificationConfig(params, context);
  }

  getTaskPushNotificationConfig(params: GetTaskPushNotificationConfigRequest, context: ServerCallContext): Promise<TaskPushNotificationConfig> {
    return this.inner.getTaskPushNotificationConfig(params, context);
  }

  listTaskPushNotificationConfigs(params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext): Promise<ListTaskPushNotificationConfigsResponse> {
    return this.inner.listTaskPushNotificationConfigs(params, context);
  }

  deleteTaskPushNotificationConfig(params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext): Promise<void> {
    return this.inner.deleteTaskPushNotificationConfig(params, context);
  }
}

/**
 * The SDK's AgentExecutor for our runs. The run was posted (user message,
 * run and job in one statement, like the chat) by RunRequestHandler before
 * the SDK called `execute`; the queue executes it on whichever instance takes
 * the job. `execute` publishes the run as a task, then follows its events
 * through the run hub and publishes each as A2A updates until the terminal
 * one (or until the client goes away; the run goes on regardless).
 */
import type { AgentExecutor, ExecutionEventBus, RequestContext } from "@a2a-js/sdk/server";
import { AgentEvent } from "@a2a-js/sdk/server";
import type { Pool } from "../db/pool.js";
import type { RunHub } from "../realtime/hub.js";
import { callerOf } from "./auth.js";
import { followRun } from "./follow.js";
import { TERMINAL_STATES, stateOf, taskOf } from "./mapping.js";
import { pinTask, readSnapshot } from "./taskStore.js";

/** ServerCallContext.state key: the run RunRequestHandler posted for this call. */
export const POSTED_RUN = "esa.a2a.postedRun";

export interface PostedRun {
  runId: string;
  conversationId: string;
}

export class RunExecutor implements AgentExecutor {
  constructor(private readonly deps: { pool: Pool; hub: RunHub }) {}

  execute = async (ctx: RequestContext, bus: ExecutionEventBus): Promise<void> => {
    const posted = ctx.context.state.get(POSTED_RUN) as PostedRun | undefined;
    if (!posted) throw new Error("no run was posted for this call");
    const caller = callerOf(ctx.context);
    const snap = await readSnapshot(this.deps.pool, caller.userId, posted.runId);
    if (!snap) throw new Error(`run ${posted.runId} is gone`);
    const task = taskOf(snap);
    // The caller's own message (its messageId), so the SDK does not list it twice.
    const first = task.history[0];
    if (first) task.history[0] = { ...ctx.userMessage, taskId: snap.runId, contextId: snap.conversationId, messageId: ctx.userMessage.messageId || first.messageId };
    pinTask(ctx.context, task);
    bus.publish(AgentEvent.task(task));
    const state = stateOf(snap.status, snap.attempt);
    for await (const ev of followRun({
      hub: this.deps.hub,
      pool: this.deps.pool,
      userId: caller.userId,
      runId: snap.runId,
      contextId: snap.conversationId,
      after: snap.lastSeq,
      finished: TERMINAL_STATES.has(state),
      hasText: snap.partial !== "",
      signal: caller.signal,
    })) {
      bus.publish(ev);
    }
  };

  /**
   * Not reached: RunRequestHandler.cancelTask cancels through the queue's
   * requestCancel (the run may execute on another instance), and the
   * CANCELED update reaches every follower from the run's own events.
   */
  cancelTask = async (): Promise<void> => undefined;
}

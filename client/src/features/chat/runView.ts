/**
 * What the page shows of one run, folded from its stream events in `seq`
 * order (shared/realtime.ts). `reset {attempt}` drops the text of earlier
 * attempts; the connection has already dropped events seen before.
 */
import type { RunDto } from "../../api/client";
import type { EventFrame, RunEventPayload } from "../../../../shared/realtime";

export type RunPhase = "queued" | "running" | "waiting" | "retrying" | "succeeded" | "failed" | "cancelled";

export interface ToolUse {
  id: string;
  name: string;
  args: unknown;
  result?: unknown;
  error?: string;
  done: boolean;
}

export interface RunView {
  runId: string;
  conversationId: string;
  /** The user message the run answers. */
  userMessageId: string;
  phase: RunPhase;
  agent: string | null;
  routeReason: string | null;
  /** The attempt being shown (1-based) and how many may be made. */
  attempt: number;
  of: number | null;
  /** Why the run is retrying or waiting. */
  note: string | null;
  /** Until when a retry waits (ISO), when known. */
  until: string | null;
  text: string;
  tools: ToolUse[];
  error: { code: string; message: string } | null;
  usage: { promptTokens: number; completionTokens: number } | null;
  /** The stored assistant message, once `done`. */
  messageId: string | null;
  /** A stop was asked for and the run has not ended yet. */
  stopping: boolean;
}

export const isFinished = (r: Pick<RunView, "phase">) => r.phase === "succeeded" || r.phase === "failed" || r.phase === "cancelled";

export function newRunView(run: Pick<RunDto, "id" | "conversationId" | "messageId" | "agent" | "routeReason">): RunView {
  return {
    runId: run.id,
    conversationId: run.conversationId,
    userMessageId: run.messageId,
    phase: "queued",
    agent: run.agent,
    routeReason: run.routeReason,
    attempt: 1,
    of: null,
    note: null,
    until: null,
    text: "",
    tools: [],
    error: null,
    usage: null,
    messageId: null,
    stopping: false,
  };
}

const payload = <T extends EventFrame["event"]>(frame: EventFrame, _t: T) => (frame.data ?? {}) as RunEventPayload<T>;

/** The view after one event. Pure. */
export function applyRunEvent(view: RunView, frame: EventFrame): RunView {
  switch (frame.event) {
    case "status": {
      const d = payload(frame, "status");
      return {
        ...view,
        phase: isFinished(view) ? view.phase : d.status,
        attempt: d.attempt ?? view.attempt,
        of: d.of ?? view.of,
        note: d.reason ?? null,
        until: d.until ?? null,
      };
    }
    case "route": {
      const d = payload(frame, "route");
      return { ...view, agent: d.agent, routeReason: d.reason };
    }
    case "reset": {
      const d = payload(frame, "reset");
      return { ...view, text: "", tools: [], attempt: d.attempt, phase: isFinished(view) ? view.phase : "running", note: null, until: null };
    }
    case "text.delta": {
      const d = payload(frame, "text.delta");
      if (typeof d.text !== "string") return view;
      return { ...view, text: view.text + d.text, phase: view.phase === "queued" || view.phase === "retrying" ? "running" : view.phase };
    }
    case "tool.call": {
      const d = payload(frame, "tool.call");
      return { ...view, tools: [...view.tools, { id: d.id, name: d.name, args: d.args, done: false }] };
    }
    case "tool.result": {
      const d = payload(frame, "tool.result");
      return {
        ...view,
        tools: view.tools.map((t) => (t.id === d.id ? { ...t, result: d.result, ...(d.error ? { error: d.error } : {}), done: true } : t)),
      };
    }
    case "usage": {
      const d = payload(frame, "usage");
      return { ...view, usage: d };
    }
    case "done": {
      const d = payload(frame, "done");
      return { ...view, phase: "succeeded", messageId: d.messageId, stopping: false, note: null };
    }
    case "failed": {
      const d = payload(frame, "failed");
      return { ...view, phase: "failed", error: { code: d.code, message: d.message }, stopping: false, note: null };
    }
    case "cancelled":
      return { ...view, phase: "cancelled", stopping: false, note: null };
    default: {
      const unreachable: never = frame.event;
      void unreachable;
      return view;
    }
  }
}

import type { Logger } from "../ops/logger.js";
import type { Config } from "../config.js";

/** What an agent yields while it works; the queue stores each as a run event. */
export type AgentEvent =
  | { type: "text.delta"; text: string }
  | { type: "tool.call"; id: string; name: string; args: unknown }
  | { type: "tool.result"; id: string; name: string; result: unknown; error?: string }
  | { type: "usage"; promptTokens: number; completionTokens: number }
  | { type: "status"; status: "waiting"; until: string; reason?: string };

export interface ChatTurn {
  role: "user" | "assistant";
  content: string;
}

export interface AgentContext {
  /** Fires on timeout, cancel and shutdown; pass it to every long call. */
  signal: AbortSignal;
  log: Logger;
  /** The conversation's recent messages, oldest first, ending with the user's message. */
  history: ChatTurn[];
  config: Config;
  runId: string;
  /** The run's attempt, 1 on; 0 when the agent runs before its claim (see `Agent.pure`). */
  attempt: number;
}

export interface AgentInput {
  /** The user's message (a leading `@name` mention already removed). */
  content: string;
  /**
   * Set by the orchestrator when this agent answers in place of the one the
   * message would have gone to (e.g. hello for an unconfigured assistant).
   */
  fallbackFrom?: { agent: string; reason: string };
}

/** One thing an agent can do, as `GET /api/agents` shows it. */
export interface AgentSkill {
  id: string;
  name: string;
  description: string;
  examples?: string[];
}

export interface Agent {
  name: string;
  description: string;
  skills: AgentSkill[];
  /** Null when usable, else why not (e.g. "OPENAI_API_KEY is not set"). */
  unavailableReason(): string | null;
  /**
   * False when the agent never looks at `ctx.history` beyond the message it
   * is given: a run that asks for it by name does not read the conversation.
   * Absent means it may.
   */
  readsHistory?: boolean;
  /**
   * True when, asked for by name, its answer depends on the message alone and
   * running it has no effect but its events (no history, no provider, no
   * budget, no attempt number): an attempt may then run it before claiming
   * the run and, when it finishes at once, record the claim, its events and
   * the answer in one statement (runStatements.ts, claimAndSucceed). Running
   * it twice, or dropping a run of it, costs nothing but the time.
   */
  pure?: boolean;
  run(input: AgentInput, ctx: AgentContext): AsyncIterable<AgentEvent>;
}

/**
 * A failure an agent reports. `retryable` failures count toward the run's
 * retry budget; others fail the run at once. `retryAfterMs` is honoured.
 */
export class AgentError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly opts: { retryable: boolean; retryAfterMs?: number; cause?: unknown } = { retryable: true },
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "AgentError";
  }
}

/** The orchestrator's first event says who answers and why. */
export type RoutedEvent = AgentEvent | { type: "route"; agent: string; reason: string };

export interface Orchestrator {
  /** Names a message may request (the registry's agents). */
  agentNames(): readonly string[];
  /**
   * Agents that, asked for by name, run without the conversation's history:
   * they read none, and neither does the agent that answers in their place
   * when they are unavailable (hello, which reads none either).
   */
  historyFreeAgents(): readonly string[];
  /** Agents that, asked for by name, may run before the claim (`Agent.pure`); none when absent. */
  preClaimAgents?(): readonly string[];
  run(input: AgentInput & { requestedAgent: string | null }, ctx: AgentContext): AsyncIterable<RoutedEvent>;
}

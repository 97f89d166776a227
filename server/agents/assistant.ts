/**
 * The assistant: an OpenAI-compatible chat model, streamed, with the math
 * agent offered as a tool. Each provider request first takes a slot of the
 * shared budget (waiting, with a status event, when it is full).
 */
import type { Agent, AgentContext, AgentEvent, AgentInput, ChatTurn } from "./types.js";
import { AgentError } from "./types.js";
import type { ChatMessage, ChatProvider, ChatTool, ToolCall } from "./providers/openai.js";
import type { LlmBudget } from "./budget.js";
import { waitForBudget } from "./budget.js";
import type { MathEngine } from "./mathEngine.js";
import { MATH_DESCRIPTION } from "./math.js";

export const ASSISTANT_DESCRIPTION =
  "General questions, writing and explanations, answered by an OpenAI-compatible language model; uses the math agent for exact calculations.";

const SYSTEM_PROMPT =
  "You are the assistant of ESA Agents, a helpful and concise chat assistant. " +
  "For any calculation (arithmetic, big numbers, fractions, units, matrices, simplification, derivatives) call the `math` tool " +
  "instead of computing it yourself, then answer with its result.";

export const MATH_TOOL: ChatTool = {
  type: "function",
  function: {
    name: "math",
    description: `${MATH_DESCRIPTION} Takes one mathjs expression, e.g. "2^64", "5 km to mile", "det([1,2;3,4])", 'simplify("2x + 3x")', 'derivative("x^3", "x")'.`,
    parameters: {
      type: "object",
      properties: { expression: { type: "string", description: "A mathjs expression" } },
      required: ["expression"],
      additionalProperties: false,
    },
  },
};

export interface AssistantDeps {
  provider: ChatProvider;
  budget: LlmBudget;
  math: MathEngine;
  /** Model turns that may call tools before the model must answer. Default 4. */
  maxToolRounds?: number;
}

/** The conversation as chat messages; the last user turn carries the content the orchestrator gave (mention removed). */
export function toChatMessages(history: ChatTurn[], content: string): ChatMessage[] {
  const turns = history.map((t) => ({ role: t.role, content: t.content }));
  const last = turns[turns.length - 1];
  if (last?.role === "user") last.content = content;
  else turns.push({ role: "user", content });
  return [{ role: "system", content: SYSTEM_PROMPT }, ...turns];
}

/** Runs one tool call; errors become a result the model can read. */
async function runTool(call: ToolCall, math: MathEngine): Promise<{ args: unknown; result: string | null; error?: string }> {
  let args: unknown;
  try {
    args = call.arguments.trim() ? JSON.parse(call.arguments) : {};
  } catch {
    return { args: call.arguments, result: null, error: "The tool arguments are not valid JSON" };
  }
  if (call.name !== "math") return { args, result: null, error: `Unknown tool ${call.name}` };
  const expression = (args as { expression?: unknown } | null)?.expression;
  if (typeof expression !== "string") return { args, result: null, error: "Missing the expression argument" };
  const outcome = await math.evaluate(expression);
  return outcome.ok ? { args, result: outcome.result } : { args, result: null, error: outcome.error };
}

export function createAssistantAgent(deps: AssistantDeps): Agent {
  const maxToolRounds = deps.maxToolRounds ?? 4;
  return {
    name: "assistant",
    description: ASSISTANT_DESCRIPTION,
    skills: [
      { id: "chat", name: "Chat", description: "Answers questions and writes text with a language model", examples: ["Explain how a heat pump works"] },
      { id: "math-tool", name: "Math tool", description: "Hands calculations to the math agent", examples: ["What is 15% of 2^20 in words?"] },
    ],
    unavailableReason: () => deps.provider.unavailableReason(),
    async *run(input: AgentInput, ctx: AgentContext): AsyncGenerator<AgentEvent> {
      const unavailable = deps.provider.unavailableReason();
      if (unavailable) throw new AgentError("agent_unavailable", `The assistant is not available: ${unavailable}`, { retryable: false });
      const messages = toChatMessages(ctx.history, input.content);
      for (let round = 0; ; round++) {
        yield* waitForBudget(deps.budget, { runId: ctx.runId, signal: ctx.signal });
        const offerTools = round < maxToolRounds;
        let text = "";
        let calls: ToolCall[] = [];
        for await (const ev of deps.provider.streamChat({
          messages,
          ...(offerTools ? { tools: [MATH_TOOL] } : {}),
          signal: ctx.signal,
          log: ctx.log,
        })) {
          switch (ev.type) {
            case "text":
              text += ev.text;
              yield { type: "text.delta", text: ev.text };
              break;
            case "usage":
              yield { type: "usage", promptTokens: ev.promptTokens, completionTokens: ev.completionTokens };
              break;
            case "tool_calls":
              calls = ev.calls;
              break;
            case "finish":
              break;
            default: {
              const unreachable: never = ev;
              throw new Error(`unknown provider event ${JSON.stringify(unreachable)}`);
            }
          }
        }
        // Without tools on offer a stray tool call is not followed: the text is the answer.
        if (!calls.length || !offerTools) return;
        messages.push({
          role: "assistant",
          content: text || null,
          tool_calls: calls.map((c) => ({ id: c.id, type: "function", function: { name: c.name, arguments: c.arguments } })),
        });
        for (const call of calls) {
          const { args, result, error } = await runTool(call, deps.math);
          yield { type: "tool.call", id: call.id, name: call.name, args };
          yield { type: "tool.result", id: call.id, name: call.name, result, ...(error ? { error } : {}) };
          ctx.log.debug({ tool: call.name, ok: !error }, "tool call answered");
          messages.push({ role: "tool", tool_call_id: call.id, content: error ? `Error: ${error}` : (result ?? "") });
        }
      }
    },
  };
}

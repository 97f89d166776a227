/**
 * ROUTER=llm: the model picks the agent by the agents' descriptions, with a
 * forced `route` tool call. Any failure is the caller's cue to use the rules.
 */
import type { AgentContext } from "./types.js";
import type { AgentRegistry } from "./registry.js";
import type { ChatTool } from "./providers/openai.js";

export interface LlmRoute {
  agent: string;
  reason: string;
  usage?: { promptTokens: number; completionTokens: number };
}

function routeTool(names: string[]): ChatTool {
  return {
    type: "function",
    function: {
      name: "route",
      description: "Send the user's message to the agent best able to answer it.",
      parameters: {
        type: "object",
        properties: {
          agent: { type: "string", enum: names, description: "The agent's name" },
          reason: { type: "string", description: "Why this agent, in a few words" },
        },
        required: ["agent"],
        additionalProperties: false,
      },
    },
  };
}

/** Asks the model; throws on any failure (budget full, provider error, timeout, a bad or unknown choice). */
export async function routeWithLlm(
  registry: AgentRegistry,
  content: string,
  ctx: Pick<AgentContext, "signal" | "runId" | "log">,
  opts: { timeoutMs: number },
): Promise<LlmRoute> {
  const candidates = registry.listAgents().filter((a) => a.available);
  if (!candidates.length) throw new Error("no agent is available");
  // The router never waits for the budget: when it is full the rules decide at once.
  const slot = await registry.llm.budget.tryAcquire(ctx.runId);
  if (!slot.ok) throw new Error("the LLM budget is full");
  const list = candidates
    .map((a) => `- ${a.name}: ${a.description} Skills: ${a.skills.map((s) => s.description).join("; ")}.`)
    .join("\n");
  const signal = AbortSignal.any([ctx.signal, AbortSignal.timeout(opts.timeoutMs)]);
  let args = "";
  let usage: LlmRoute["usage"];
  for await (const ev of registry.llm.provider.streamChat({
    messages: [
      { role: "system", content: `Choose which agent answers the user's message. Call the route tool.\nAgents:\n${list}` },
      { role: "user", content },
    ],
    tools: [routeTool(candidates.map((a) => a.name))],
    toolChoice: { type: "function", function: { name: "route" } },
    signal,
    log: ctx.log,
  })) {
    if (ev.type === "tool_calls") args = ev.calls.find((c) => c.name === "route")?.arguments ?? "";
    if (ev.type === "usage") usage = { promptTokens: ev.promptTokens, completionTokens: ev.completionTokens };
  }
  const parsed = JSON.parse(args || "null") as { agent?: unknown; reason?: unknown } | null;
  const agent = typeof parsed?.agent === "string" ? parsed.agent : "";
  if (!candidates.some((a) => a.name === agent)) throw new Error(`the model chose an unknown agent "${agent.slice(0, 40)}"`);
  const why = typeof parsed?.reason === "string" ? parsed.reason.slice(0, 200) : "";
  return { agent, reason: `llm: ${why || `chose ${agent}`}`, ...(usage ? { usage } : {}) };
}

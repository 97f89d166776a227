/**
 * Routes each message to one agent and runs it. The requested agent or a
 * leading `@name` wins; else ROUTER=llm asks the model (falling back to the
 * rules on any error); else the rules: a calculation → math, a greeting →
 * hello, anything else → assistant, or hello explaining how to add an LLM.
 * The first event of every run is `route {agent, reason}`.
 */
import type { Config } from "../config.js";
import type { Agent, AgentContext, AgentInput, Orchestrator, RoutedEvent } from "./types.js";
import type { AgentRegistry } from "./registry.js";
import { isMathQuestion } from "./math.js";
import { routeWithLlm } from "./llmRouter.js";
import { redactSecrets } from "./providers/openai.js";

export interface OrchestratorDeps {
  /** How long the LLM router may take before the rules decide, ms. Default 10 s. */
  routerTimeoutMs?: number;
}

export interface Route {
  agent: string;
  reason: string;
  fallbackFrom?: AgentInput["fallbackFrom"];
  usage?: { promptTokens: number; completionTokens: number };
}

const GREETING = /^(?:hi|hello|hey|hiya|howdy|greetings|yo|hallo|hola|bonjour|good\s+(?:morning|afternoon|evening|day))\b/i;
const HELP = /^(?:help|what can you do|who are you|what are you)[\s?!.]*$/i;
const MENTION = /^\s*@([A-Za-z][\w-]*)(?=$|[\s,:;.!?])[\s,:;]*/;

export function isGreeting(text: string): boolean {
  const t = text.trim();
  return (GREETING.test(t) && t.split(/\s+/).length <= 6) || HELP.test(t);
}

/** A leading `@name` of a registered agent, and the content without it. */
export function parseMention(text: string, registry: AgentRegistry): { agent: Agent; content: string } | null {
  const m = MENTION.exec(text);
  const agent = m?.[1] ? registry.get(m[1].toLowerCase()) : undefined;
  return m && agent ? { agent, content: text.slice(m[0].length) } : null;
}

/**
 * The rules, for a message no one asked a particular agent for. Only a message
 * that may be a calculation asks the math engine (which loads mathjs on first
 * use); greetings and plain text are decided without it.
 */
export async function routeByRules(content: string, registry: AgentRegistry): Promise<Route> {
  if (registry.get("math") && (await isMathQuestion(content, registry.math))) return { agent: "math", reason: "rules: a calculation" };
  if (registry.get("hello") && isGreeting(content)) return { agent: "hello", reason: "rules: a greeting" };
  return choose(registry, "assistant", "rules: a general question");
}

/** `name` when it is available, else hello answering in its place and saying why. */
function choose(registry: AgentRegistry, name: string, why: string): Route {
  const agent = registry.get(name);
  const unavailable = agent ? agent.unavailableReason() : "no such agent";
  if (unavailable === null) return { agent: name, reason: why };
  return {
    agent: "hello",
    reason: `${why}, but ${name} is unavailable (${unavailable})`,
    fallbackFrom: { agent: name, reason: unavailable },
  };
}

/** The history as the agent sees it: its last user turn is the content it was given. */
function withContent(ctx: AgentContext, content: string): AgentContext {
  const history = ctx.history.slice();
  const last = history[history.length - 1];
  if (last?.role === "user") history[history.length - 1] = { role: "user", content };
  return { ...ctx, history };
}

export function createOrchestrator(registry: AgentRegistry, config: Config, deps: OrchestratorDeps = {}): Orchestrator {
  const routerTimeoutMs = deps.routerTimeoutMs ?? 10_000;

  async function route(input: AgentInput & { requestedAgent: string | null }, ctx: AgentContext): Promise<Route & { content: string }> {
    if (input.requestedAgent && registry.get(input.requestedAgent)) {
      return { ...choose(registry, input.requestedAgent, "requested"), content: input.content };
    }
    const mention = parseMention(input.content, registry);
    if (mention) return { ...choose(registry, mention.agent.name, `mentioned @${mention.agent.name}`), content: mention.content };
    if (config.openai.router === "llm" && registry.llm.provider.unavailableReason() === null) {
      try {
        return { ...(await routeWithLlm(registry, input.content, ctx, { timeoutMs: routerTimeoutMs })), content: input.content };
      } catch (err) {
        if (ctx.signal.aborted) throw ctx.signal.reason;
        // Provider errors arrive mapped and redacted; anything else is redacted here.
        const why = redactSecrets(err instanceof Error ? err.message : String(err), config.openai.apiKey);
        ctx.log.info({ why }, "llm router failed; using the rules");
        const rules = await routeByRules(input.content, registry);
        return { ...rules, reason: `${rules.reason} (the LLM router failed)`, content: input.content };
      }
    }
    return { ...(await routeByRules(input.content, registry)), content: input.content };
  }

  // A requested agent that is unavailable hands its runs to hello (choose): none go without history unless hello reads none.
  const historyFree = registry.get("hello")?.readsHistory === false ? registry.all().filter((a) => a.readsHistory === false).map((a) => a.name) : [];

  // Only while available: one that is not hands its runs to hello, whose answer then depends on why.
  const preClaim = () => registry.all().filter((a) => a.pure === true && a.unavailableReason() === null).map((a) => a.name);

  return {
    agentNames: () => registry.names(),
    historyFreeAgents: () => historyFree,
    preClaimAgents: preClaim,
    async *run(input, ctx): AsyncGenerator<RoutedEvent> {
      const r = await route(input, ctx);
      const agent = registry.get(r.agent);
      if (!agent) throw new Error(`routed to an unknown agent ${r.agent}`);
      ctx.log.debug({ agent: r.agent, reason: r.reason }, "routed");
      yield { type: "route", agent: r.agent, reason: r.reason };
      if (r.usage) yield { type: "usage", ...r.usage };
      yield* agent.run({ content: r.content, ...(r.fallbackFrom ? { fallbackFrom: r.fallbackFrom } : {}) }, withContent(ctx, r.content));
    },
  };
}

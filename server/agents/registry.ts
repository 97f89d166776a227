/**
 * The agents of this server, built once at boot: math and hello (offline,
 * always available) and the assistant (available when an LLM is configured).
 */
import type { Config } from "../config.js";
import type { Agent, AgentSkill } from "./types.js";
import type { LlmBudget } from "./budget.js";
import { createMathEngine, type MathEngine, type MathEngineOptions } from "./mathEngine.js";
import { createOpenAiProvider, type ChatProvider } from "./providers/openai.js";
import { createMathAgent } from "./math.js";
import { createHelloAgent } from "./hello.js";
import { createAssistantAgent } from "./assistant.js";

/** One agent as `GET /api/agents` and `/health` show it. */
export interface AgentInfo {
  name: string;
  description: string;
  skills: AgentSkill[];
  available: boolean;
  reason?: string;
}

export interface AgentRegistryDeps {
  /** The shared LLM budget (createLlmBudget on the pool; unlimitedBudget in tests). */
  budget: LlmBudget;
  /** Replaces the OpenAI provider built from config.openai (tests). */
  provider?: ChatProvider;
  /** Provider stall timeout, ms. Default 30 s. */
  idleTimeoutMs?: number;
  /** Replaces global fetch for the provider (tests). */
  fetch?: typeof fetch;
  math?: MathEngineOptions;
}

export interface AgentRegistry {
  get(name: string): Agent | undefined;
  names(): readonly string[];
  all(): readonly Agent[];
  listAgents(): AgentInfo[];
  /** What the orchestrator's LLM router uses: the same provider and budget as the assistant. */
  readonly llm: { provider: ChatProvider; budget: LlmBudget };
  readonly math: MathEngine;
}

export function describeAgent(agent: Agent): AgentInfo {
  const reason = agent.unavailableReason();
  return {
    name: agent.name,
    description: agent.description,
    skills: agent.skills,
    available: reason === null,
    ...(reason === null ? {} : { reason }),
  };
}

/** A registry over any agents (tests use it with stubs); `llm` and `math` as given. */
export function createRegistryOf(agents: Agent[], llm: AgentRegistry["llm"], math: MathEngine): AgentRegistry {
  const byName = new Map(agents.map((a) => [a.name, a]));
  if (byName.size !== agents.length) throw new Error("agent names must be unique");
  const names = Object.freeze(agents.map((a) => a.name));
  return {
    get: (name) => byName.get(name),
    names: () => names,
    all: () => agents,
    listAgents: () => agents.map(describeAgent),
    llm,
    math,
  };
}

export function createAgentRegistry(config: Config, deps: AgentRegistryDeps): AgentRegistry {
  const math = createMathEngine(deps.math);
  const provider =
    deps.provider ??
    createOpenAiProvider(config.openai, {
      ...(deps.idleTimeoutMs !== undefined ? { idleTimeoutMs: deps.idleTimeoutMs } : {}),
      ...(deps.fetch ? { fetch: deps.fetch } : {}),
    });
  // hello lists the agents it belongs with, so it reads them when it runs.
  const agents: Agent[] = [
    createMathAgent(math),
    createHelloAgent(() => agents.map(describeAgent)),
    createAssistantAgent({ provider, budget: deps.budget, math }),
  ];
  return createRegistryOf(agents, { provider, budget: deps.budget }, math);
}

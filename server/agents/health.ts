import type { HealthCheck } from "../ops/health.js";
import type { AgentRegistry } from "./registry.js";

/**
 * `/health` `checks.agents`: each agent as available or not, with the
 * reason. Not required and always "up": the offline agents answer with no
 * LLM configured, so an unconfigured assistant is information, not a fault.
 */
export function agentsHealthCheck(registry: Pick<AgentRegistry, "listAgents">): HealthCheck {
  return {
    name: "agents",
    required: false,
    run: async () => {
      const agents: Record<string, { available: boolean; reason?: string }> = {};
      for (const a of registry.listAgents()) agents[a.name] = { available: a.available, ...(a.reason ? { reason: a.reason } : {}) };
      return { status: "up", agents };
    },
  };
}

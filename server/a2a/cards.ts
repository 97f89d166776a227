/**
 * A2A agent cards: one for the orchestrator (the system as one agent, at
 * `/.well-known/agent-card.json`) and one per registry agent (at
 * `/a2a/agents/<name>/agent-card.json`). Skills come from the registry; every
 * card says it streams and that calls need an HTTP bearer JWT. URLs are
 * absolute, built from the request's protocol and host (trust proxy applies).
 */
import type { AgentCard, AgentInterface, AgentSkill as A2aSkill } from "@a2a-js/sdk";
import { duplicateInterfacesForLegacy } from "@a2a-js/sdk/compat/v0_3";
import type { AgentInfo } from "../agents/registry.js";

/** The endpoint name of the whole system: routes like the chat does. */
export const ORCHESTRATOR = "orchestrator";

/** The card extension that says whether an agent can answer now (and why not). */
export const AVAILABILITY_EXTENSION = "urn:esa-agents:a2a:availability:v1";

/** The security scheme every card names: the identity layer's HS256 tokens. */
export const BEARER_SCHEME = "bearer";

/** Paths under the public base URL, for one endpoint (`orchestrator` or an agent). */
export function endpointPaths(name: string): { jsonrpc: string; rest: string; card: string } {
  const root = name === ORCHESTRATOR ? "/a2a" : `/a2a/agents/${name}`;
  return {
    jsonrpc: `${root}/jsonrpc`,
    rest: `${root}/rest`,
    card: name === ORCHESTRATOR ? "/.well-known/agent-card.json" : `${root}/agent-card.json`,
  };
}

export interface CardOptions {
  /** `https://host` (no trailing slash). */
  baseUrl: string;
  version: string;
}

function interfaces(name: string, baseUrl: string): AgentInterface[] {
  const p = endpointPaths(name);
  const v1: AgentInterface[] = [
    { url: baseUrl + p.jsonrpc, protocolBinding: "JSONRPC", protocolVersion: "1.0", tenant: "" },
    { url: baseUrl + p.rest, protocolBinding: "HTTP+JSON", protocolVersion: "1.0", tenant: "" },
  ];
  // The same URLs also take v0.3 requests (the SDK's legacy compatibility),
  // which it accepts only when the card declares them.
  return duplicateInterfacesForLegacy(v1, ["JSONRPC", "HTTP+JSON"]);
}

function skillOf(agent: AgentInfo, s: AgentInfo["skills"][number], prefixed: boolean): A2aSkill {
  return {
    id: prefixed ? `${agent.name}.${s.id}` : s.id,
    name: s.name,
    description: agent.available ? s.description : `${s.description} (unavailable: ${agent.reason ?? "not configured"})`,
    tags: agent.available ? [agent.name] : [agent.name, "unavailable"],
    examples: s.examples ?? [],
    inputModes: [],
    outputModes: [],
    securityRequirements: [],
  };
}

function baseCard(name: string, description: string, opts: CardOptions): AgentCard {
  return {
    name,
    description,
    supportedInterfaces: interfaces(name, opts.baseUrl),
    provider: { organization: "ESA Agents", url: opts.baseUrl },
    version: opts.version,
    capabilities: { streaming: true, pushNotifications: false, extensions: [], extendedAgentCard: false },
    securitySchemes: {
      [BEARER_SCHEME]: {
        scheme: {
          $case: "httpAuthSecurityScheme",
          value: {
            scheme: "bearer",
            bearerFormat: "JWT",
            description: "HS256 JWT signed with the server's JWT_SECRET; subject = user id (npm run token -- <userId>). Every call but the cards needs it.",
          },
        },
      },
    },
    securityRequirements: [{ schemes: { [BEARER_SCHEME]: { list: [] } } }],
    defaultInputModes: ["text/plain"],
    defaultOutputModes: ["text/plain"],
    skills: [],
    signatures: [],
  };
}

/** The card of one registry agent. */
export function agentCard(agent: AgentInfo, opts: CardOptions): AgentCard {
  const card = baseCard(agent.name, agent.available ? agent.description : `${agent.description} (unavailable: ${agent.reason ?? "not configured"})`, opts);
  card.skills = agent.skills.map((s) => skillOf(agent, s, false));
  card.capabilities?.extensions.push({
    uri: AVAILABILITY_EXTENSION,
    description: "Whether this agent can answer now; when not, messages sent to it are answered by hello, which says why",
    required: false,
    params: agent.available ? { available: true } : { available: false, reason: agent.reason ?? "not configured" },
  });
  return card;
}

/** The card of the system: every agent's skills, routed per message. */
export function orchestratorCard(agents: AgentInfo[], opts: CardOptions): AgentCard {
  const names = agents.map((a) => a.name).join(", ");
  const card = baseCard(
    ORCHESTRATOR,
    `ESA Agents: each message is routed to one of its agents (${names}); a conversation is an A2A context.`,
    opts,
  );
  card.skills = agents.flatMap((a) => a.skills.map((s) => skillOf(a, s, true)));
  card.capabilities?.extensions.push({
    uri: AVAILABILITY_EXTENSION,
    description: "Which agents can answer now",
    required: false,
    params: { available: true, agents: Object.fromEntries(agents.map((a) => [a.name, a.available ? { available: true } : { available: false, reason: a.reason ?? "not configured" }])) },
  });
  return card;
}

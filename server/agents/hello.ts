/**
 * The hello agent: greets, says what the system can do (the registry's
 * agents, with why one is unavailable) and, when it answers in place of the
 * assistant, explains how to configure an LLM. Offline, always available.
 */
import type { Agent, AgentContext, AgentEvent, AgentInput } from "./types.js";
import type { AgentInfo } from "./registry.js";
import { streamWords } from "./stream.js";

export const HELLO_DESCRIPTION = "Greets you and explains what the agents here can do. Offline.";

export const NO_LLM_HELP =
  "No LLM is configured on this server, so I can only offer the offline agents. " +
  "To add one, set OPENAI_API_KEY (and OPENAI_BASE_URL to use an OpenAI-compatible server such as Ollama or vLLM, " +
  "OPENAI_MODEL to pick the model) and restart the server.";

function agentLines(agents: AgentInfo[]): string {
  return agents
    .map((a) => `- @${a.name}: ${a.description}${a.available ? "" : ` (unavailable: ${a.reason ?? "not configured"})`}`)
    .join("\n");
}

/** The reply text; exported for tests and for the UI's empty state. */
export function helloText(input: AgentInput, agents: AgentInfo[]): string {
  const list = agentLines(agents);
  if (input.fallbackFrom) {
    return `I can't answer that one myself. ${NO_LLM_HELP}\n\nHere is what I can do now:\n${list}\n\nStart a message with @name to ask an agent directly, e.g. "@math what is 2^64".`;
  }
  return `Hello! I'm the hello agent of ESA Agents. Here is who can help you:\n${list}\n\nAsk anything, or start a message with @name to ask an agent directly, e.g. "@math what is 2^64".`;
}

export function createHelloAgent(listAgents: () => AgentInfo[]): Agent {
  return {
    name: "hello",
    description: HELLO_DESCRIPTION,
    skills: [
      { id: "greet", name: "Greeting", description: "Says hello and lists the agents", examples: ["hello", "hi there"] },
      { id: "help", name: "Help", description: "Explains what the system can do and how to add an LLM", examples: ["what can you do?"] },
    ],
    unavailableReason: () => null,
    readsHistory: false,
    pure: true,
    async *run(input: AgentInput, ctx: AgentContext): AsyncGenerator<AgentEvent> {
      yield* streamWords(helloText(input, listAgents()), ctx.signal);
    },
  };
}

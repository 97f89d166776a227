/**
 * The registry, `GET /api/agents`, the `/health` agents check and the hello
 * agent.
 */
import { describe, it, expect, afterEach } from "vitest";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { loadConfig, type Env } from "../server/config.js";
import { createAgentRegistry } from "../server/agents/registry.js";
import { unlimitedBudget } from "../server/agents/budget.js";
import { createAgentsRouter } from "../server/agents/routes.js";
import { agentsHealthCheck } from "../server/agents/health.js";
import { createProbeHandler } from "../server/ops/health.js";
import { createLifecycle } from "../server/ops/lifecycle.js";
import type { AgentContext, AgentEvent } from "../server/agents/types.js";
import { startTestApp, type TestApp } from "./helpers/app.js";

const offline = () => createAgentRegistry(loadConfig({ NODE_ENV: "test" }), { budget: unlimitedBudget });
const online = (env: Env = { OPENAI_API_KEY: "sk-x" }) => createAgentRegistry(loadConfig({ NODE_ENV: "test", ...env }), { budget: unlimitedBudget });

let app: TestApp | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

function ctx(): AgentContext {
  return { signal: new AbortController().signal, log: pino({ level: "silent" }), history: [], config: loadConfig({ NODE_ENV: "test" }), runId: "r", attempt: 1 };
}

async function deltas(iter: AsyncIterable<AgentEvent>) {
  const out: string[] = [];
  for await (const ev of iter) if (ev.type === "text.delta") out.push(ev.text);
  return out;
}

describe("agent registry", () => {
  it("lists math, hello and assistant with description, skills and availability", () => {
    const agents = offline().listAgents();
    expect(agents.map((a) => a.name)).toEqual(["math", "hello", "assistant"]);
    for (const a of agents) {
      expect(a.description.length).toBeGreaterThan(10);
      expect(a.skills.length).toBeGreaterThan(0);
    }
    expect(agents.find((a) => a.name === "math")).toMatchObject({ available: true });
    expect(agents.find((a) => a.name === "math")).not.toHaveProperty("reason");
    expect(agents.find((a) => a.name === "assistant")).toMatchObject({ available: false, reason: "OPENAI_API_KEY is not set" });
  });

  it("the assistant is available with a key, or with a base URL alone", () => {
    expect(online().get("assistant")?.unavailableReason()).toBeNull();
    expect(online({ OPENAI_BASE_URL: "http://127.0.0.1:11434/v1" }).get("assistant")?.unavailableReason()).toBeNull();
  });

  it("GET /api/agents returns {agents} with available and the reason when not", async () => {
    app = await startTestApp({ apiRouters: [createAgentsRouter(offline())] });
    const res = await fetch(`${app.baseUrl}/api/agents`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { agents: { name: string; available: boolean; reason?: string; skills: unknown[] }[] };
    expect(body.agents.map((a) => [a.name, a.available, a.reason])).toEqual([
      ["math", true, undefined],
      ["hello", true, undefined],
      ["assistant", false, "OPENAI_API_KEY is not set"],
    ]);
    expect(body.agents[0]?.skills.length).toBeGreaterThan(0);
  });
});

describe("/health agents check", () => {
  it("reports each agent, and is up with only the offline agents", async () => {
    const check = agentsHealthCheck(offline());
    expect(check).toMatchObject({ name: "agents", required: false });
    expect(await check.run()).toEqual({
      status: "up",
      agents: {
        math: { available: true },
        hello: { available: true },
        assistant: { available: false, reason: "OPENAI_API_KEY is not set" },
      },
    });
  });

  it("/health stays healthy with no LLM configured", async () => {
    const lifecycle = createLifecycle();
    lifecycle.setPhase("ready");
    const probe = createProbeHandler({ lifecycle, metrics: () => undefined, version: "t", checks: () => [agentsHealthCheck(offline())], metricsRoute: null });
    const server = createServer((req, res) => {
      if (!probe(req, res)) res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/health`);
      const body = (await res.json()) as { status: string; checks: { agents: { status: string; agents: Record<string, { available: boolean }> } } };
      expect(res.status).toBe(200);
      expect(body.status).toBe("healthy");
      expect(body.checks.agents.status).toBe("up");
      expect(body.checks.agents.agents.assistant?.available).toBe(false);
    } finally {
      server.close();
    }
  });
});

describe("hello agent", () => {
  it("greets, lists the agents and streams word by word", async () => {
    const out = await deltas(offline().get("hello")!.run({ content: "hello" }, ctx()));
    const text = out.join("");
    expect(text).toMatch(/^Hello!/);
    for (const name of ["@math", "@hello", "@assistant"]) expect(text).toContain(name);
    expect(text).toContain("unavailable: OPENAI_API_KEY is not set");
    expect(out.length).toBeGreaterThan(20);
    expect(out.every((w) => /^\S+\s*$/.test(w))).toBe(true);
  });

  it("in place of the assistant, explains that no LLM is configured and how to add one", async () => {
    const text = (await deltas(offline().get("hello")!.run({ content: "tell me a story", fallbackFrom: { agent: "assistant", reason: "OPENAI_API_KEY is not set" } }, ctx()))).join("");
    expect(text).toMatch(/No LLM is configured/);
    expect(text).toContain("OPENAI_API_KEY");
    expect(text).toContain("OPENAI_BASE_URL");
  });
});

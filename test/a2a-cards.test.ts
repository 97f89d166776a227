/**
 * Issue 9, point 1: the system's card at /.well-known/agent-card.json (the
 * orchestrator) and one card and endpoint per registry agent, read by the
 * SDK's own resolver: skills from the registry, streaming, the bearer JWT
 * scheme, absolute URLs from the request's host and protocol, public, and an
 * unavailable agent (assistant with no OPENAI_API_KEY) marked so.
 */
import { describe, it, expect } from "vitest";
import { AgentCard, type Task } from "@a2a-js/sdk";
import { DefaultAgentCardResolver } from "@a2a-js/sdk/client";
import { scriptOf } from "./helpers/queue.js";
import { useA2aStack, userMessage } from "./helpers/a2a.js";
import { AVAILABILITY_EXTENSION } from "../server/a2a/cards.js";

// No OPENAI_API_KEY nor OPENAI_BASE_URL: the assistant is unavailable.
const a2a = useA2aStack();

const resolver = new DefaultAgentCardResolver();
const availability = (card: AgentCard) => card.capabilities?.extensions.find((e) => e.uri === AVAILABILITY_EXTENSION)?.params as { available: boolean; reason?: string } | undefined;

describe("the orchestrator's card", () => {
  it("is served at /.well-known/agent-card.json without a token and read by the SDK", async () => {
    const card = await resolver.resolve(a2a.stack.baseUrl);
    expect(card.name).toBe("orchestrator");
    expect(card.capabilities?.streaming).toBe(true);
    expect(card.supportedInterfaces.filter((i) => i.protocolVersion === "1.0").map((i) => [i.protocolBinding, i.url])).toEqual([
      ["JSONRPC", `${a2a.stack.baseUrl}/a2a/jsonrpc`],
      ["HTTP+JSON", `${a2a.stack.baseUrl}/a2a/rest`],
    ]);
    // v0.3 interfaces too, so the SDK's legacy compatibility accepts v0.3 calls.
    expect(card.supportedInterfaces.filter((i) => i.protocolVersion === "0.3").map((i) => i.protocolBinding).sort()).toEqual(["HTTP+JSON", "JSONRPC"]);
    // Every registry agent's skills, tagged with the agent.
    const expected = a2a.stack.registry.listAgents().flatMap((a) => a.skills.map((s) => `${a.name}.${s.id}`));
    expect(expected.length).toBeGreaterThan(2);
    expect(card.skills.map((s) => s.id)).toEqual(expected);
    // The auth scheme: HTTP bearer, JWT, required.
    const scheme = card.securitySchemes.bearer?.scheme;
    expect(scheme?.$case).toBe("httpAuthSecurityScheme");
    if (scheme?.$case === "httpAuthSecurityScheme") expect(scheme.value).toMatchObject({ scheme: "bearer", bearerFormat: "JWT" });
    expect(card.securityRequirements.map((r) => Object.keys(r.schemes))).toEqual([["bearer"]]);
  });

  it("is the protocol's JSON (oneof fields by name), with absolute URLs from the forwarded host and protocol", async () => {
    const r = await fetch(`${a2a.stack.baseUrl}/.well-known/agent-card.json`, { headers: { "a2a-version": "1.0", "x-forwarded-proto": "https", "x-forwarded-host": "agents.example.com" } });
    expect(r.status).toBe(200);
    expect(r.headers.get("cache-control")).toMatch(/max-age=\d+/);
    const json = (await r.json()) as { securitySchemes: Record<string, unknown>; supportedInterfaces: { url: string }[] };
    expect(json.securitySchemes).toEqual({ bearer: { httpAuthSecurityScheme: expect.objectContaining({ scheme: "bearer", bearerFormat: "JWT" }) } });
    // trust proxy is 1 hop by default: the forwarded values are the client's view.
    for (const i of json.supportedInterfaces) expect(i.url).toMatch(/^https:\/\/agents\.example\.com\/a2a\/(jsonrpc|rest)$/);
    const bad = await fetch(`${a2a.stack.baseUrl}/.well-known/agent-card.json`, { headers: { "x-forwarded-host": "evil.com/<script>" } });
    expect(bad.status).toBe(400);
  });

  it("a v0.3 client (no A2A-Version) gets the v0.3 card with the same skills and its url", async () => {
    const r = await fetch(`${a2a.stack.baseUrl}/.well-known/agent-card.json`);
    const card = (await r.json()) as { protocolVersion: string; url: string; capabilities: { streaming: boolean }; skills: { id: string }[]; securitySchemes: Record<string, { type: string; scheme: string }> };
    expect(card.protocolVersion).toMatch(/^0\.3/);
    expect(card.url).toBe(`${a2a.stack.baseUrl}/a2a/jsonrpc`);
    expect(card.capabilities.streaming).toBe(true);
    expect(card.skills.length).toBe(a2a.stack.registry.listAgents().flatMap((a) => a.skills).length);
    expect(card.securitySchemes.bearer).toMatchObject({ type: "http", scheme: "bearer" });
  });
});

describe("one card and endpoint per agent", () => {
  it("math, hello and assistant each have a card with their registry skills; the assistant is marked unavailable", async () => {
    const infos = a2a.stack.registry.listAgents();
    expect(infos.map((a) => a.name).sort()).toEqual(["assistant", "hello", "math"]);
    for (const info of infos) {
      const card = await resolver.resolve(a2a.stack.baseUrl, `/a2a/agents/${info.name}/agent-card.json`);
      expect(card.name).toBe(info.name);
      expect(card.skills.map((s) => s.id)).toEqual(info.skills.map((s) => s.id));
      expect(card.skills.map((s) => s.name)).toEqual(info.skills.map((s) => s.name));
      expect(card.capabilities?.streaming).toBe(true);
      expect(card.securitySchemes.bearer?.scheme?.$case).toBe("httpAuthSecurityScheme");
      expect(card.supportedInterfaces.find((i) => i.protocolBinding === "JSONRPC" && i.protocolVersion === "1.0")?.url).toBe(`${a2a.stack.baseUrl}/a2a/agents/${info.name}/jsonrpc`);
      // The same card under the agent's own well-known path (createFromUrl(<agent url>)).
      const wellKnown = await resolver.resolve(`${a2a.stack.baseUrl}/a2a/agents/${info.name}/`);
      expect(wellKnown.name).toBe(info.name);
      expect(availability(card)).toEqual(info.available ? { available: true } : { available: false, reason: info.reason });
    }
    const assistant = await resolver.resolve(a2a.stack.baseUrl, "/a2a/agents/assistant/agent-card.json");
    expect(availability(assistant)?.available).toBe(false);
    expect(availability(assistant)?.reason).toMatch(/OPENAI_API_KEY/);
    expect(assistant.description).toMatch(/unavailable/);
    expect(assistant.skills.every((s) => s.tags.includes("unavailable"))).toBe(true);
    const math = await resolver.resolve(a2a.stack.baseUrl, "/a2a/agents/math/agent-card.json");
    expect(availability(math)).toEqual({ available: true });
    // The orchestrator's card says which agents can answer.
    const system = await resolver.resolve(a2a.stack.baseUrl);
    expect((availability(system) as unknown as { agents: Record<string, { available: boolean }> }).agents).toMatchObject({
      math: { available: true },
      hello: { available: true },
      assistant: { available: false },
    });
  });

  it("an unknown agent has no card and no endpoint", async () => {
    expect((await fetch(`${a2a.stack.baseUrl}/a2a/agents/nobody/agent-card.json`, { headers: { "a2a-version": "1.0" } })).status).toBe(404);
    const { token } = await a2a.stack.token();
    const r = await fetch(`${a2a.stack.baseUrl}/a2a/agents/nobody/jsonrpc`, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: "{}" });
    expect(r.status).toBe(404);
  });

  it("a message to an agent's endpoint asks for that agent; the orchestrator's routes", async () => {
    const { token } = await a2a.stack.token();
    for (const name of ["math", "hello", "assistant"]) {
      const client = await a2a.stack.client(token, `/a2a/agents/${name}/agent-card.json`);
      const task = (await client.sendMessage({ tenant: "", message: userMessage(scriptOf({ text: [name] })), configuration: undefined, metadata: undefined })) as Task;
      const row = await a2a.db.pool.query<{ requested_agent: string | null }>("select requested_agent from runs where id = $1", [task.id]);
      expect(row.rows[0]?.requested_agent).toBe(name);
    }
  });
});

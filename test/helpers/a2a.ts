/**
 * The A2A surface in process on a test database: the app (createApp) with
 * the A2A router at the root, the run hub on its own LISTEN connection, and
 * the real job queue (graphile-worker) under its own instance id running the
 * given orchestrator, so a run goes the chat's way (post, queue, run_events,
 * hub). Clients are the SDK's own, with a bearer token.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Task } from "@a2a-js/sdk";
import { ClientFactory, ClientFactoryOptions, DefaultAgentCardResolver, JsonRpcTransportFactory, RestTransportFactory, type Client } from "@a2a-js/sdk/client";
import { loadConfig, type Config, type Env } from "../../server/config.js";
import { createMetrics } from "../../server/ops/metrics.js";
import { createLifecycle } from "../../server/ops/lifecycle.js";
import { createApp } from "../../server/app.js";
import { createListener, type Listener } from "../../server/db/listener.js";
import { createRunHub, type RunHub } from "../../server/realtime/hub.js";
import { createIdentity } from "../../server/auth/identity.js";
import { createJwt } from "../../server/auth/jwt.js";
import { createAgentRegistry, type AgentRegistry } from "../../server/agents/registry.js";
import { unlimitedBudget } from "../../server/agents/budget.js";
import type { Orchestrator } from "../../server/agents/types.js";
import { createA2aRouter } from "../../server/a2a/router.js";
import { TEST_JWT_SECRET, TEST_SESSION_SECRET } from "./dataApi.js";
import { createScriptedAgents, scriptOf, startTestQueue, useOnce, waitForStatus, type ScriptedAgents, type TestQueue } from "./queue.js";
import { createCapturedLogger } from "./logs.js";
import { createTestDatabase, type TestDatabase } from "./db.js";

export interface A2aStack {
  baseUrl: string;
  config: Config;
  registry: AgentRegistry;
  hub: RunHub;
  queue: TestQueue;
  logLines: Record<string, unknown>[];
  /** A new user's bearer token (the user is created on first use). */
  token(userId?: string): Promise<{ userId: string; token: string }>;
  /** The SDK client of one endpoint, resolved from its card (JSON-RPC unless `rest`). */
  client(token: string, cardPath?: string, opts?: { rest?: boolean }): Promise<Client>;
  close(): Promise<void>;
}

export async function startA2aStack(db: TestDatabase, orchestrator: Orchestrator, opts: { env?: Env } = {}): Promise<A2aStack> {
  const env: Env = {
    NODE_ENV: "test",
    LOG_LEVEL: "info",
    SESSION_SECRET: TEST_SESSION_SECRET,
    JWT_SECRET: TEST_JWT_SECRET,
    RETRY_ATTEMPTS: "3",
    ...opts.env,
  };
  const config = loadConfig(env);
  const { log, lines: logLines } = createCapturedLogger(config);
  const dataDir = mkdtempSync(path.join(tmpdir(), "esa-a2a-"));
  const listener: Listener = createListener({ url: db.url, log });
  listener.start();
  const hub = createRunHub({ pool: db.pool, listener, log, instanceId: `a2a-web-${randomUUID().slice(0, 8)}` });
  await hub.start();
  const identity = createIdentity({ config, log, pool: db.pool, dataDir });
  const registry = createAgentRegistry(config, { budget: unlimitedBudget });
  const router = createA2aRouter({ config, log, pool: db.pool, hub, identity, registry });
  const app = createApp({ config, log, metrics: createMetrics({ defaultMetrics: false }), lifecycle: createLifecycle(), rootRouters: [router] });
  const server: Server = createServer(app);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  // The queue is "another instance": its own pools, LISTEN and instance id.
  const queue = await startTestQueue(db, orchestrator, { env, listener: true });
  const jwt = createJwt(TEST_JWT_SECRET);

  return {
    baseUrl,
    config,
    registry,
    hub,
    queue,
    logLines,
    async token(userId = randomUUID()) {
      return { userId, token: await jwt.sign(userId, 3600) };
    },
    client: (token, cardPath, o) => a2aClient(baseUrl, token, cardPath, o),
    async close() {
      await queue.stop();
      await new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      });
      await hub.stop();
      await listener.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The SDK client of one endpoint of the server at `baseUrl`, resolved from its card with the bearer token (JSON-RPC unless `rest`). */
export async function a2aClient(baseUrl: string, token: string, cardPath?: string, o: { rest?: boolean } = {}): Promise<Client> {
  const fetchImpl: typeof fetch = (input, init) => {
    const headers = new Headers(init?.headers);
    headers.set("authorization", `Bearer ${token}`);
    return fetch(input, { ...init, headers });
  };
  const factory = new ClientFactory(
    ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
      transports: o.rest ? [new RestTransportFactory({ fetchImpl })] : [new JsonRpcTransportFactory({ fetchImpl })],
      preferredTransports: o.rest ? ["HTTP+JSON"] : ["JSONRPC"],
      cardResolver: new DefaultAgentCardResolver({ fetchImpl }),
    }),
  );
  return factory.createFromUrl(baseUrl, cardPath);
}

/** What useA2aStack gives a test: read its fields inside tests and hooks, once its beforeAll has run. */
export interface A2aFixture {
  readonly db: TestDatabase;
  /** The scripted agents the stack runs, unless `orchestrator` said otherwise. */
  readonly agents: ScriptedAgents;
  readonly stack: A2aStack;
}

/**
 * A migrated test database and an A2A stack on it, opened in a beforeAll and
 * closed in an afterAll of the calling scope (the file, or the describe it is
 * called in). The stack runs the scripted agents unless `orchestrator` builds
 * another (called in the beforeAll).
 */
export function useA2aStack(opts: { env?: Env; orchestrator?: () => Orchestrator } = {}): A2aFixture {
  const agents = createScriptedAgents();
  const get = useOnce(async (release) => {
    const db = await createTestDatabase({ migrate: true });
    release(() => db.drop());
    const stack = await startA2aStack(db, opts.orchestrator?.() ?? agents.orchestrator, { env: opts.env });
    release(() => stack.close());
    return { db, stack };
  });
  return {
    get db() {
      return get().db;
    },
    agents,
    get stack() {
      return get().stack;
    },
  };
}

/** A user message as the SDK's types want it. */
export function userMessage(text: string, extra: { contextId?: string; taskId?: string } = {}) {
  return {
    messageId: randomUUID(),
    contextId: extra.contextId ?? "",
    taskId: extra.taskId ?? "",
    role: 1 /* Role.ROLE_USER */,
    parts: [{ content: { $case: "text" as const, value: text }, metadata: undefined, filename: "", mediaType: "text/plain" }],
    metadata: undefined,
    extensions: [],
    referenceTaskIds: [],
  };
}

/**
 * A task whose scripted run hangs once it has said `text`: sent with
 * returnImmediately, and returned once its run is `running`.
 */
export async function startHeldTask(client: Client, db: TestDatabase, text: string): Promise<Task> {
  const task = (await client.sendMessage({
    tenant: "",
    message: userMessage(scriptOf({ text: [text], hang: true })),
    configuration: { acceptedOutputModes: [], taskPushNotificationConfig: undefined, returnImmediately: true },
    metadata: undefined,
  })) as Task;
  await waitForStatus(db, task.id, ["running"]);
  return task;
}

/** One raw JSON-RPC POST (fetch), for what the SDK client would not send. */
export async function rawRpc(url: string, body: string | object, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; text: string; json: unknown }> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    // Not JSON: left undefined for the test to see.
  }
  return { status: res.status, headers: res.headers, text, json };
}

/** The `data:` payloads of an SSE body, parsed. */
export function sseData(text: string): unknown[] {
  return text
    .split("\n\n")
    .map((block) => block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join(""))
    .filter((d) => d !== "")
    .map((d) => JSON.parse(d) as unknown);
}

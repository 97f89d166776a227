/**
 * What runs on the database once it is connected and migrated: the agents,
 * the user-data API, the LISTEN connection and the job queue. Called by
 * boot.ts; each acquisition registers its release (or drain) beside it.
 */
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { Router, type RequestHandler } from "express";
import type { BootDeps } from "./boot.js";
import type { Metrics } from "./ops/metrics.js";
import type { Pool } from "./db/pool.js";
import type { Autoscaler } from "./ops/autoscale.js";
import type { ApiRateLimiter } from "./http/middleware/security.js";
import { createCpuSampler, createMemorySampler } from "./ops/autoscale.js";
import { createListener, type Listener } from "./db/listener.js";
import { createLlmBudget } from "./agents/budget.js";
import { createAgentRegistry } from "./agents/registry.js";
import { createOrchestrator } from "./agents/orchestrator.js";
import { createAgentsRouter } from "./agents/routes.js";
import { agentsHealthCheck } from "./agents/health.js";
import { createDataApi } from "./http/routes/api.js";
import { messageStoreFor } from "./data/messages.js";
import { createIdentity } from "./auth/identity.js";
import { requestCancel } from "./queue/cancel.js";
import { createRunHub } from "./realtime/hub.js";
import { createRealtimeMetrics } from "./realtime/metrics.js";
import { refuseUpgrade } from "./realtime/refuse.js";
import { createRunEventsHandler } from "./realtime/sse.js";
import { startAgentQueue, type AgentQueue } from "./queue/index.js";
import { createLocalStartsHandle } from "./queue/localStart.js";
import { sleep } from "./ops/releasers.js";


/** Time kept back from the shutdown deadline for handing runs back and releasing. */
const HAND_BACK_RESERVE_MS = 2500;

export interface ServiceDeps extends BootDeps {
  metrics: Metrics;
  pool: Pool;
  /** DATABASE_URL, or the embedded database's. */
  databaseUrl: string;
  /** A session-mode connection pool (DATABASE_DIRECT_URL), else the main pool. */
  sessionPool: Pool;
  dbRoutes: { set(handler: RequestHandler): void };
  /** Root routes outside /api (A2A cards and endpoints), 503 until set. */
  rootRoutes: { set(handler: RequestHandler): void };
  autoscaler: Autoscaler;
  /** The app's API rate limit (boot.ts): WebSocket sends count against it too. */
  apiRateLimiter: ApiRateLimiter;
}

export async function startServices(deps: ServiceDeps): Promise<{ queue: AgentQueue | null; listener: Listener | null }> {
  const { config, log, lifecycle, releasers, pool, autoscaler } = deps;
  const instanceId = `${os.hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;

  const budget = createLlmBudget(pool, config.openai.rateLimit);
  const registry = createAgentRegistry(config, { budget });
  const orchestrator = createOrchestrator(registry, config);
  deps.addCheck(agentsHealthCheck(registry));

  // LISTEN needs a session connection: none through a transaction pooler
  // without a direct URL, where cancels, streams and the queue poll instead.
  const listenUrl = config.database.directUrl ?? (config.database.transactionPooler ? undefined : deps.databaseUrl);
  let listener: Listener | null = null;
  if (listenUrl) {
    listener = createListener({ url: listenUrl, log, onError: () => deps.metrics.backgroundErrors.inc({ loop: "listener" }) });
    listener.start();
    const l = listener;
    releasers.add("listener", () => l.stop());
  } else {
    log.info("no LISTEN connection (transaction pooler without DATABASE_DIRECT_URL): run streams, cancels and the queue poll");
  }

  // Run streams: one fan-out per process, shared by WebSocket and SSE.
  const hub = createRunHub({ pool, listener, log, metrics: deps.metrics, instanceId });
  await hub.start();
  releasers.add("realtime hub", () => hub.stop());
  const realtimeMetrics = createRealtimeMetrics(deps.metrics);
  const identity = createIdentity({ config, log, pool, dataDir: path.join(deps.rootDir, ".data") });

  const runEvents = createRunEventsHandler({ pool, hub, log, metrics: realtimeMetrics });
  releasers.addDrain("SSE streams", () => runEvents.drain());

  const api = Router();
  api.use(createAgentsRouter(registry));
  // One store for every way in that posts a message: the POST, A2A and the
  // WebSocket `send`. Its runs may start here at once once the queue runs (localStart.ts).
  const localStarts = createLocalStartsHandle();
  const messages = messageStoreFor(config, pool, localStarts);
  api.use(createDataApi({ config, log, pool, dataDir: path.join(deps.rootDir, ".data"), identity, agentNames: registry.names(), runEvents, messages }));
  deps.dbRoutes.set(api);
  // A2A (and the SDK under it, a few MiB of heap) loads on its first request:
  // the root routes pass on only A2A paths (boot.ts), and most instances serve none.
  let a2a: Promise<RequestHandler> | undefined;
  deps.rootRoutes.set((req, res, next) => {
    a2a ??= import("./a2a/router.js").then(({ createA2aRouter }) => createA2aRouter({ config, log, pool, hub, identity, registry, messages }));
    a2a.then(
      (router) => router(req, res, next),
      (err: unknown) => {
        a2a = undefined; // tried again by the next request
        next(err);
      },
    );
  });

  if (config.features.websockets) {
    // `ws` loads only here, off the path of the first page (see boot.ts).
    const { createRealtimeServer } = await import("./realtime/wsServer.js");
    const realtime = createRealtimeServer({
      config,
      log,
      pool,
      hub,
      metrics: realtimeMetrics,
      identify: identity.identify,
      cancelRun: (userId, runId) => requestCancel(pool, userId, runId),
      postMessage: (userId, conversationId, content, agent) => messages.post(userId, conversationId, content, agent),
      agentNames: registry.names(),
      rateLimiter: deps.apiRateLimiter,
    });
    deps.setUpgradeHandler(realtime.handleUpgrade);
    // Clients leave as soon as draining starts: they resume on another
    // instance, from the same log, while runs here finish or are handed back.
    releasers.addDrain("websocket clients", () => realtime.drain());
    releasers.add("websocket server", () => realtime.close());
    deps.addCheck({ name: "streams", required: false, run: async () => ({ status: "up", websockets: realtime.connections, sse: runEvents.open, runFeeds: hub.feeds }) });
  } else {
    deps.setUpgradeHandler((_req, socket) => refuseUpgrade(socket, 404, "not_found", "WebSockets are disabled on this server (ENABLE_WEBSOCKETS=false); use GET /api/runs/:id/events"));
    deps.addCheck({ name: "streams", required: false, run: async () => ({ status: "up", websockets: "disabled", sse: runEvents.open, runFeeds: hub.feeds }) });
  }

  const cpu = createCpuSampler();
  const memory = createMemorySampler();
  const observe = (queueDepth: number, liveInstances: number) =>
    autoscaler.observe({ queueDepth, p95ResponseMs: autoscaler.p95ResponseMs(), cpuPercent: cpu(), memoryPercent: memory(), liveInstances });

  let queue: AgentQueue | null = null;
  if (config.agents.enabled) {
    lifecycle.require("queue", "queue: starting");
    const graceMs = Math.max(500, config.server.shutdownTimeoutMs - config.server.shutdownDelayMs - HAND_BACK_RESERVE_MS);
    for (let delay = 250; !queue && !lifecycle.shutdownSignal.aborted; delay = Math.min(delay * 2, 5000)) {
      try {
        queue = await startAgentQueue({
          config,
          log,
          metrics: deps.metrics,
          pool,
          workerPool: deps.sessionPool,
          listener,
          orchestrator,
          instanceId,
          graceMs,
          // This instance's runs hand their events to its own subscribers at once (no NOTIFY round trip).
          onStoredEvents: (rows) => hub.publish(rows),
          onStats: (s) => observe(s.queued, s.liveInstances),
        });
      } catch (err) {
        lifecycle.setComponent("queue", false, `queue: ${err instanceof Error ? err.message : String(err)}`);
        log.warn({ err, retryInMs: delay }, "job queue did not start; retrying");
        await sleep(delay, lifecycle.shutdownSignal);
      }
    }
    if (!queue) return { queue, listener };
    const q = queue;
    localStarts.bind(q.localStarts);
    lifecycle.setComponent("queue", true);
    // A worker that ends by itself (not through the drain below) leaves this
    // instance running no jobs: /ready says so, so the platform replaces it.
    void q.ended.then(() => {
      if (lifecycle.phase !== "draining" && lifecycle.phase !== "stopped") lifecycle.setComponent("queue", false, "queue: the job worker stopped by itself; restart this instance");
    });
    releasers.addDrain("job queue", async () => {
      lifecycle.setComponent("queue", false, "queue: stopping");
      await q.stop();
    });
    deps.addCheck({
      name: "queue",
      required: true,
      run: async () => {
        const s = q.stats();
        return q.running ? { status: "up", instanceId, ...s } : { status: "down", error: "queue not running", instanceId, ...s };
      },
    });
  } else {
    const timer = setInterval(() => observe(0, 1), 2000);
    timer.unref();
    releasers.add("autoscale sampler", () => clearInterval(timer));
  }

  return { queue, listener };
}

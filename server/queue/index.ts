/**
 * The agent job queue, assembled: cancel delivery, the run executor,
 * graphile-worker, instance heartbeat and recovery, and the queue gauges.
 */
import type { Pool } from "../db/pool.js";
import type { Listener } from "../db/listener.js";
import type { Config } from "../config.js";
import type { Logger } from "../ops/logger.js";
import type { Metrics } from "../ops/metrics.js";
import type { Orchestrator } from "../agents/types.js";
import { createCancelWatch } from "./cancel.js";
import { createRunExecutor } from "./executeRun.js";
import { createRunNotifier } from "./runNotifier.js";
import type { StoredEventRow } from "./runEvents.js";
import { startQueue, type Queue } from "./runner.js";
import { createInstanceRegistry } from "./recovery.js";
import { createQueueMetrics } from "./metrics.js";
import { readQueueStats, type QueueStats } from "./stats.js";
import { createSlots } from "./slots.js";
import { LOCAL_START_DEFER_MS, type LocalStart, type LocalStarts } from "./localStart.js";

/** How long stop() waits for aborted attempts to write their hand-back, ms (inside the shutdown's hand-back reserve). */
const SETTLE_MS = 1500;

/** A timer that does not hold the process open. */
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

export interface AgentQueueDeps {
  config: Config;
  log: Logger;
  metrics: Metrics;
  /** App queries. */
  pool: Pool;
  /** graphile-worker's pool (a direct connection when DATABASE_DIRECT_URL is set). */
  workerPool: Pool;
  /** Null where LISTEN cannot work (a transaction pooler): everything polls. */
  listener: Listener | null;
  orchestrator: Orchestrator;
  instanceId: string;
  /** Told the events this instance's runs store, once committed (the realtime hub, for its local subscribers). */
  onStoredEvents?: (rows: StoredEventRow[]) => void;
  /** After stop() begins, how long running runs may finish before they are handed back, ms. */
  graceMs: number;
  /** Called with fresh queue stats every sampling interval (autoscaler). */
  onStats?: (stats: QueueStats) => void;
  statsIntervalMs?: number;
}

export async function startAgentQueue(deps: AgentQueueDeps) {
  const { config, log, pool } = deps;
  const queueMetrics = createQueueMetrics(deps.metrics);
  const cancels = createCancelWatch({ pool, listener: deps.listener, log });
  const notifier = createRunNotifier({
    pool,
    log,
    prepared: !config.database.transactionPooler,
    onError: () => deps.metrics.backgroundErrors.inc({ loop: "run-notify" }),
  });
  const executor = createRunExecutor({
    pool,
    config,
    log,
    instanceId: deps.instanceId,
    orchestrator: deps.orchestrator,
    cancels,
    notifier,
    metrics: queueMetrics,
    ...(deps.onStoredEvents ? { onStored: deps.onStoredEvents } : {}),
  });
  // The runs an attempt here is executing: the recovery sweep hands back this
  // instance's other "running" runs (their ending was lost with the database).
  const inFlight = new Map<string, Promise<unknown>>();
  // Runs started where they were posted: never "running" in the table, but stop() waits for them too.
  const postedInFlight = new Set<Promise<unknown>>();
  const slots = createSlots(config.agents.maxConcurrentJobs);
  const executeRun: typeof executor.executeRun = async (runId, opts) => {
    // graphile-worker runs as many jobs at once as there are slots, so this
    // waits only while runs started where they were posted hold some.
    const held = await slots.take(opts.shutdownSignal);
    const attempt = executor.executeRun(runId, opts);
    inFlight.set(runId, attempt);
    try {
      return await attempt;
    } finally {
      inFlight.delete(runId);
      if (held) slots.release();
    }
  };
  // From the worker's start until stop() begins (or the worker ends by itself).
  let accepting = false;
  const localStarts: LocalStarts = {
    reserve(agent) {
      if (!accepting || agent === undefined) return null;
      if (!deps.orchestrator.preClaimAgents?.().includes(agent) || !slots.tryTake()) return null;
      let held = true;
      const release = () => {
        if (held) slots.release();
        held = false;
      };
      const start: LocalStart = {
        deferMs: LOCAL_START_DEFER_MS,
        release,
        start(runId, jobId, content) {
          const run = executor
            .runPosted(runId, jobId, { agent, content })
            .then(
              (outcome) => queueMetrics.localStarts.inc({ outcome }),
              (err: unknown) => {
                // Its job, deferred, falls due on its own: the run is late, not lost.
                queueMetrics.localStarts.inc({ outcome: "error" });
                log.warn({ err, runId }, "run started where it was posted failed; its job runs it");
              },
            )
            .finally(() => {
              release();
              postedInFlight.delete(run);
            });
          postedInFlight.add(run);
        },
      };
      return start;
    },
  };
  const workerIds: string[] = [];
  const registry = createInstanceRegistry({
    pool,
    log,
    metrics: deps.metrics,
    instanceId: deps.instanceId,
    version: config.version,
    heartbeatMs: config.agents.heartbeatMs,
    recoveryAfterMs: config.agents.recoveryAfterMs,
    workerIds: () => workerIds,
    inFlightRunIds: () => [...inFlight.keys()],
  });
  // services.ts retries a failed start: leave no heartbeat loop or cancel poll behind.
  let queue: Queue;
  try {
    await registry.start();
    queue = await startQueue({
      pool: deps.workerPool,
      config,
      log,
      executeRun,
      graceMs: deps.graceMs,
      pollIntervalMs: deps.listener ? 2000 : 500,
      noPreparedStatements: deps.listener === null,
      onWorkerPoolId: (id) => {
        workerIds.push(id);
        registry.heartbeat().catch((err: unknown) => log.warn({ err }, "heartbeat with the worker pool id failed"));
      },
    });
  } catch (err) {
    cancels.stop();
    await registry.stop();
    throw err;
  }

  let last: QueueStats = { queued: 0, running: 0, oldestQueuedSeconds: 0, liveInstances: 1 };
  const sample = async () => {
    try {
      last = await readQueueStats(pool, config.agents.recoveryAfterMs);
      queueMetrics.queued.set(last.queued);
      queueMetrics.runningAll.set(last.running);
      queueMetrics.oldestQueued.set(last.oldestQueuedSeconds);
      deps.onStats?.(last);
    } catch (err) {
      deps.metrics.backgroundErrors.inc({ loop: "queue-stats" });
      log.debug({ err }, "queue stats sample failed");
    }
  };
  await sample();
  const sampler = setInterval(() => void sample(), deps.statsIntervalMs ?? 2000);
  sampler.unref();
  accepting = true;
  // A worker that ended by itself runs no job here: nor does this instance start runs where posted.
  void queue.ended.then(() => {
    accepting = false;
  });

  return {
    get running() {
      return queue.running;
    },
    /** Settles when the worker has ended: after stop(), or by itself (then /ready turns 503). */
    ended: queue.ended,
    stats: () => last,
    sweep: registry.sweep,
    /** Where runs may start at once, on this instance, when their message is posted here (localStart.ts). */
    localStarts,
    /** Stop fetching; running runs finish or are handed back; then leave. */
    async stop() {
      clearInterval(sampler);
      accepting = false;
      try {
        await queue.stop();
        // graphile-worker's stop can resolve while an aborted attempt is still
        // writing its hand-back: let those settle before the pool is ended.
        // Runs started where they were posted end within PRE_CLAIM_MS and a statement.
        const settling = [...inFlight.values(), ...postedInFlight];
        await Promise.race([Promise.allSettled(settling).then(() => notifier.flush()), sleep(SETTLE_MS)]);
      } finally {
        // Even when graphile-worker's shutdown fails: a heartbeat left running
        // would keep other instances from recovering what this one still holds.
        cancels.stop();
        await registry.stop();
      }
    },
  };
}

export type AgentQueue = Awaited<ReturnType<typeof startAgentQueue>>;

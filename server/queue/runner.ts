/**
 * graphile-worker in-process: `concurrency` runs at once, no signal handling
 * of its own (the composition root owns signals), and an AbortSignal per job
 * that the executor turns into an interruption on shutdown.
 */
import { EventEmitter, setMaxListeners } from "node:events";
import { run, Logger as WorkerLogger, type Runner, type Task, type WorkerEvents } from "graphile-worker";
import type { Pool } from "../db/pool.js";
import type { Logger } from "../ops/logger.js";
import type { Config } from "../config.js";
import { RUN_TASK, type RunPayload, type RunRequest } from "./enqueue.js";

export interface QueueDeps {
  /** The pool graphile-worker uses (direct connection when DATABASE_DIRECT_URL is set). */
  pool: Pool;
  config: Config;
  log: Logger;
  /** Runs one attempt of a run; resolves when the attempt has been recorded. */
  executeRun(
    runId: string,
    opts: { shutdownSignal: AbortSignal; jobAttempts: number; jobMaxAttempts: number; request?: RunRequest },
  ): Promise<void>;
  /** Told the pool's id once known: it is what graphile-worker locks jobs with. */
  onWorkerPoolId(id: string): void;
  /** Polling interval, ms; LISTEN makes new jobs start at once where it works. */
  pollIntervalMs?: number;
  noPreparedStatements?: boolean;
  /** After stop(), how long running jobs may finish before they are aborted, ms. */
  graceMs: number;
}

/** graphile-worker's log lines go through pino. */
function workerLogger(log: Logger): WorkerLogger {
  const child = log.child({ component: "graphile-worker" });
  return new WorkerLogger(() => (level, message, meta) => {
    const obj = meta ?? {};
    if (level === "error") child.error(obj, message);
    else if (level === "warning") child.warn(obj, message);
    else if (level === "info") child.info(obj, message);
    else child.debug(obj, message);
  });
}

export interface Queue {
  /** Stops fetching, lets running jobs finish for `graceMs`, then aborts them (they hand themselves back). */
  stop(): Promise<void>;
  readonly running: boolean;
  /** Settles when graphile-worker has ended, for any reason (stop(), or by itself). */
  readonly ended: Promise<void>;
}

export async function startQueue(deps: QueueDeps): Promise<Queue> {
  const { config, log } = deps;
  const events: WorkerEvents = new EventEmitter() as WorkerEvents;
  events.on("pool:create", ({ workerPool }) => deps.onWorkerPoolId(workerPool.id));
  events.on("job:error", ({ job, error }) => log.warn({ err: error, jobId: job.id, task: job.task_identifier }, "job failed; graphile-worker will retry it"));

  // graphile-worker gives every job of the pool the same abortSignal, and each
  // running run listens on it: past 10 at once Node would warn of a leak.
  let widened: AbortSignal | undefined;
  const task: Task = async (payload, helpers) => {
    if (widened !== helpers.abortSignal) {
      widened = helpers.abortSignal;
      setMaxListeners(config.agents.maxConcurrentJobs + 10, widened);
    }
    const { runId, agent, content } = (payload ?? {}) as RunPayload;
    if (typeof runId !== "string") {
      log.error({ payload }, "agent_run job without a runId; dropped");
      return;
    }
    await deps.executeRun(runId, {
      shutdownSignal: helpers.abortSignal,
      jobAttempts: helpers.job.attempts,
      jobMaxAttempts: helpers.job.max_attempts,
      // What addRunJobExpr adds for a run that asked for an agent by name.
      ...(typeof agent === "string" && typeof content === "string" ? { request: { agent, content } } : {}),
    });
  };

  let running = true;
  const runner: Runner = await run({
    pgPool: deps.pool,
    concurrency: config.agents.maxConcurrentJobs,
    noHandleSignals: true,
    pollInterval: deps.pollIntervalMs ?? 2000,
    noPreparedStatements: deps.noPreparedStatements ?? false,
    taskList: { [RUN_TASK]: task },
    logger: workerLogger(log),
    events,
    // How long running jobs may go on after stop() before their signal fires
    // (graphile-worker reads it once, at start).
    gracefulShutdownAbortTimeout: deps.graceMs,
  });
  let stopping = false;
  // graphile-worker also ends by itself, without rejecting (e.g. a `worker:migrate`
  // notification from another version installing its schema): /ready and /health must see it.
  const ended = runner.promise.then(
    () => {
      running = false;
      if (!stopping) log.error("job queue stopped by itself; this instance runs no jobs until restarted");
    },
    (err: unknown) => {
      running = false;
      log.error({ err }, "job queue stopped unexpectedly");
    },
  );

  return {
    get running() {
      return running;
    },
    ended,
    async stop() {
      stopping = true;
      running = false;
      await runner.stop();
    },
  };
}

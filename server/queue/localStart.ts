/**
 * Runs that start on the instance their message was posted to, without
 * waiting for graphile-worker to fetch their job.
 *
 * A run that asks by name for an agent that may run before its claim
 * (`Agent.pure`: its answer depends on the message alone) can start the
 * moment its message is committed: the instance that wrote it has the
 * message in hand. When that instance's queue runs and has a free slot (the
 * same `agents.maxConcurrentJobs` slots its worker's runs take), the message
 * POST reserves one, and the run's job is added as always, in the POST's
 * statement, but deferred by LOCAL_START_DEFER_MS. After the commit the agent
 * runs here; when it finishes within PRE_CLAIM_MS, one statement claims the
 * run, stores its events and answer and deletes the job
 * (executeRun.ts, runPosted). Otherwise the job is made due at once, and the
 * run goes through the queue like any other.
 *
 * Nothing depends on the instance living through this: if it dies after the
 * commit, the job is still there and any instance runs it once it is due.
 * Were the job fetched while the run still ran here (an instance stalled past
 * the deferral), the claim's conditions let only one of the two record it:
 * the one here claims only a run no attempt has taken yet.
 */

/**
 * How long the job of a run started here waits before a worker may fetch it,
 * ms: how late a run is, at worst, when the instance that took its message
 * dies before recording it (plus up to a poll interval: no NOTIFY comes when
 * the job falls due).
 */
export const LOCAL_START_DEFER_MS = 2000;

/** A reserved slot for one run, from before its message is written until it has run here. */
export interface LocalStart {
  /** How far the POST defers the run's job, ms. */
  readonly deferMs: number;
  /** The message (`content`), its run and the run's job (id `jobId`) are committed: run it here, now. */
  start(runId: string, jobId: string, content: string): void;
  /** Nothing was stored: the slot is free again. */
  release(): void;
}

export interface LocalStarts {
  /**
   * A slot to run here, as soon as it is stored, the run a message about to
   * be posted asks for (`agent`: the agent asked for by name, if any); null
   * when the run is to go through the queue.
   */
  reserve(agent: string | undefined): LocalStart | null;
}

/**
 * LocalStarts bound later: the message store is made before the queue starts
 * (services.ts). Until bound, and once unbound, every run goes through the queue.
 */
export function createLocalStartsHandle(): LocalStarts & { bind(starts: LocalStarts | null): void } {
  let current: LocalStarts | null = null;
  return {
    reserve: (agent) => current?.reserve(agent) ?? null,
    bind(starts) {
      current = starts;
    },
  };
}

/**
 * One attempt of one run: claim it, stream the orchestrator's events into
 * `run_events`, then finish it exactly once. The claim and each ending are one
 * statement each (runStatements.ts); events in between are written through
 * (createEventWriter), and what is still unwritten at the end goes into the
 * ending's statement. Failures count toward
 * `agents.retryAttempts` (our count, in `runs.failures`); interruptions
 * (shutdown) hand the run back without counting; a cancel ends it.
 */
import { isDatabaseUnavailable } from "../db/errors.js";
import type { Pool } from "../db/pool.js";
import type { Config } from "../config.js";
import type { Logger } from "../ops/logger.js";
import type { Orchestrator, RoutedEvent } from "../agents/types.js";
import { AgentError } from "../agents/types.js";
import type { RunEventType } from "../../shared/realtime.js";
import { createEventBuffer, createEventWriter, AttemptSuperseded, type RouteUpdate, type StoredEventRow, type Unwritten } from "./runEvents.js";
import { cancelUnstarted, claimAndSucceed, claimRun, endAttempt, jobDueNow, type ClaimedRun, type Ending, type EndResult } from "./runStatements.js";
import type { RunNotifier } from "./runNotifier.js";
import type { RunRequest } from "./enqueue.js";
import type { QueueMetrics } from "./metrics.js";

/** Why a run's signal fired. */
export type AbortKind = "cancel" | "shutdown" | "timeout";
export class RunAborted extends Error {
  constructor(readonly kind: AbortKind) {
    super(`run aborted: ${kind}`);
    this.name = "RunAborted";
  }
}

export interface CancelWatch {
  /** Calls `onCancel` when a cancel for the run is requested (LISTEN or polling). */
  watch(runId: string, onCancel: () => void): () => void;
}

export interface ExecutorDeps {
  pool: Pool;
  config: Config;
  log: Logger;
  instanceId: string;
  orchestrator: Orchestrator;
  cancels: CancelWatch;
  /** Announces stored events (the claim and the endings do not NOTIFY). */
  notifier: RunNotifier;
  /** Told the claim's and each write's events once committed: this instance's subscribers (the hub). */
  onStored?: (rows: StoredEventRow[]) => void;
  metrics?: QueueMetrics;
  /** How many past messages an agent sees. */
  historyLimit?: number;
}

/**
 * How long after its claim a run may go without a NOTIFY before the executor
 * sends one for the claim's events (see claimRun), ms. Most runs notify
 * sooner anyway: their first event is written at once, and a quick run's
 * ending carries everything. Short enough that a subscriber sees `running`
 * without a noticeable wait.
 */
export const CLAIM_NOTIFY_AFTER_MS = 50;

/** Backoff before retry n (1-based): 1 s, 2 s, 4 s … capped at 30 s. */
export const retryDelayMs = (failures: number) => Math.min(30_000, 1000 * 2 ** Math.max(0, failures - 1));

const NOTHING: Unwritten = { events: [], route: null };

/**
 * How long an agent that may run before its claim (`Agent.pure`) gets to
 * finish there, ms. One that has not is stopped and run again the usual way
 * (claim first), so a long computation shows `running` like any run.
 */
export const PRE_CLAIM_MS = 20;

/** Where an attempt's events go: the run's event writer, or an event buffer before the claim. */
interface EventSink {
  delta(text: string): void;
  event(type: RunEventType, data: unknown, route?: RouteUpdate): void;
}

/** What an attempt's events add up to: the agent that answers (the route's), its text and usage. */
interface Tally {
  agent: string;
  text: string;
  usage: { promptTokens: number; completionTokens: number; reported: boolean };
}

const newTally = (agent: string): Tally => ({ agent, text: "", usage: { promptTokens: 0, completionTokens: 0, reported: false } });

/** One orchestrator event into the sink and the tally. */
function record(ev: RoutedEvent, sink: EventSink, tally: Tally): void {
  switch (ev.type) {
    case "route":
      tally.agent = ev.agent;
      sink.event("route", { agent: ev.agent, reason: ev.reason }, { agent: ev.agent, reason: ev.reason });
      break;
    case "text.delta":
      tally.text += ev.text;
      sink.delta(ev.text);
      break;
    case "usage":
      tally.usage.promptTokens += ev.promptTokens;
      tally.usage.completionTokens += ev.completionTokens;
      tally.usage.reported = true;
      sink.event("usage", { promptTokens: ev.promptTokens, completionTokens: ev.completionTokens });
      break;
    case "tool.call":
      sink.event("tool.call", { id: ev.id, name: ev.name, args: ev.args });
      break;
    case "tool.result":
      sink.event("tool.result", { id: ev.id, name: ev.name, result: ev.result, ...(ev.error ? { error: ev.error } : {}) });
      break;
    case "status":
      sink.event("status", { status: ev.status, until: ev.until, ...(ev.reason ? { reason: ev.reason } : {}) });
      break;
    default: {
      const unreachable: never = ev;
      throw new Error(`unknown agent event ${JSON.stringify(unreachable)}`);
    }
  }
}

export function createRunExecutor(deps: ExecutorDeps) {
  const { pool, config, instanceId, orchestrator } = deps;
  const maxAttempts = config.agents.retryAttempts + 1;
  /** Named prepared statements, except through a transaction-mode pooler. */
  const prepared = !config.database.transactionPooler;

  async function executeRun(
    runId: string,
    opts: { shutdownSignal: AbortSignal; jobAttempts?: number; jobMaxAttempts?: number; request?: RunRequest },
  ) {
    if (opts.request && !opts.shutdownSignal.aborted && (await runBeforeClaim(runId, opts.request)) !== "gave_up") return;
    const claim = await claimRun(pool, runId, instanceId, {
      maxAttempts,
      historyLimit: deps.historyLimit ?? 20,
      prepared,
      historyFreeAgents: orchestrator.historyFreeAgents(),
    });
    if (!claim) {
      // Gone, finished, or cancelled before it started: nothing to run (a pending cancel is recorded).
      await cancelUnstarted(pool, runId, prepared);
      return;
    }
    const { run } = claim;
    const log = deps.log.child({ runId, attempt: run.attempt });
    try {
      deps.onStored?.(claim.events);
    } catch (err) {
      // Nothing is lost: the run's next NOTIFY brings the claim's events through the hub's read.
      log.warn({ err }, "handing the claim's events to local subscribers failed");
    }
    const started = performance.now();
    if (run.attempt === 1 && run.failures === 0) {
      deps.metrics?.startLatency.observe((Date.now() - new Date(run.created_at).getTime()) / 1000);
    }
    const controller = new AbortController();
    const abort = (kind: AbortKind) => {
      if (!controller.signal.aborted) controller.abort(new RunAborted(kind));
    };
    const onShutdown = () => abort("shutdown");
    if (opts.shutdownSignal.aborted) onShutdown();
    opts.shutdownSignal.addEventListener("abort", onShutdown, { once: true });
    const timeout = setTimeout(() => abort("timeout"), config.agents.jobTimeoutMs);
    const unwatch = deps.cancels.watch(runId, () => abort("cancel"));
    const writer = createEventWriter(pool, runId, run.attempt, { prepared, ...(deps.onStored ? { onStored: deps.onStored } : {}) });
    const tally = newTally(run.requested_agent ?? "unrouted");
    deps.metrics?.running.inc();
    // The claim's events (`status running`) are announced by the run's next
    // write, or by this when the agent has yielded nothing for a while (an LLM router deciding).
    let claimNotify: NodeJS.Timeout | null = setTimeout(() => {
      claimNotify = null;
      deps.notifier.announce(runId, claim.lastSeq);
    }, CLAIM_NOTIFY_AFTER_MS);
    const claimAnnounced = () => {
      if (claimNotify) clearTimeout(claimNotify);
      claimNotify = null;
    };

    try {
      const events = orchestrator.run(
        { content: claim.content, requestedAgent: run.requested_agent },
        { signal: controller.signal, log, history: claim.turns, config, runId, attempt: run.attempt },
      );
      for await (const ev of events) {
        if (controller.signal.aborted) break;
        // Whatever the event, it is written (with a NOTIFY) at once or with the ending.
        claimAnnounced();
        record(ev, writer, tally);
      }
      if (controller.signal.aborted) throw controller.signal.reason;
      const unwritten = await writer.close();
      const { agent, text, usage } = tally;
      const result = await end(run, unwritten, { kind: "succeeded", text, usage: usage.reported ? usage : null });
      const outcome = result === "ended" ? "succeeded" : result;
      if (outcome !== "superseded") deps.metrics?.finished(agent, outcome, (performance.now() - started) / 1000);
      log.info({ agent }, outcome === "succeeded" ? "run succeeded" : outcome === "cancelled" ? "run cancelled" : "run finished by another attempt");
    } catch (raw) {
      // What the writer had not written yet goes with the ending; after a failed write, nothing does.
      let unwritten = NOTHING;
      let superseded = raw instanceof AttemptSuperseded;
      try {
        unwritten = await writer.close();
      } catch (err) {
        if (err instanceof AttemptSuperseded) superseded = true;
        await writer.discard();
      }
      if (superseded) {
        // Another instance took the run over while this one was paused: stop, write nothing.
        abort("shutdown");
        deps.metrics?.finished(tally.agent, "superseded", (performance.now() - started) / 1000);
        log.warn("attempt superseded by a newer one; abandoned");
        return;
      }
      const reason = controller.signal.aborted ? controller.signal.reason : raw;
      await handleFailure(run, unwritten, reason, tally.agent, log, started);
    } finally {
      // Every way out wrote an ending (which notifies), or was superseded (nothing of this attempt counts).
      claimAnnounced();
      clearTimeout(timeout);
      unwatch();
      opts.shutdownSignal.removeEventListener("abort", onShutdown);
      deps.metrics?.running.dec();
    }
  }

  /**
   * A run started on the instance its message was posted to (localStart.ts),
   * right after the POST's commit, its job `jobId` deferred: run before its
   * claim, the job deleted with the claim. When the agent does not finish in
   * time, the job is made due now and the run goes through the queue. What
   * the run came to: "succeeded" here, "not_run" (cancelled or taken by
   * another attempt meanwhile) or "queued".
   */
  async function runPosted(runId: string, jobId: string, request: RunRequest): Promise<"succeeded" | "not_run" | "queued"> {
    const outcome = await runBeforeClaim(runId, request, jobId);
    if (outcome !== "gave_up") return outcome;
    await jobDueNow(pool, jobId, prepared);
    return "queued";
  }

  /**
   * A run that asked by name for an agent that may run before its claim
   * (`Agent.pure`), its message in the job: the agent runs first, from the
   * job's payload alone, and if it finishes within PRE_CLAIM_MS the claim,
   * its events and the answer are one statement (claimAndSucceed) instead of
   * a claim and an ending ("succeeded"; "not_run" when the run was not to be
   * run). "gave_up" when the attempt is to go the usual way: the agent is not
   * one of those, failed, or took longer (what it did is dropped; the usual
   * way runs it again and records what happens). With `postedJobId`, the run
   * started where it was posted (runPosted).
   */
  async function runBeforeClaim(runId: string, request: RunRequest, postedJobId?: string): Promise<"succeeded" | "not_run" | "gave_up"> {
    if (!orchestrator.preClaimAgents?.().includes(request.agent)) return "gave_up";
    const controller = new AbortController();
    const deadline = setTimeout(() => controller.abort(new RunAborted("timeout")), PRE_CLAIM_MS);
    const started = performance.now();
    const log = deps.log.child({ runId });
    const sink = createEventBuffer();
    const tally = newTally(request.agent);
    const consumed = (async () => {
      const events = orchestrator.run(
        { content: request.content, requestedAgent: request.agent },
        { signal: controller.signal, log, history: [{ role: "user", content: request.content }], config, runId, attempt: 0 },
      );
      for await (const ev of events) {
        if (controller.signal.aborted) return false;
        record(ev, sink, tally);
      }
      return !controller.signal.aborted;
    })();
    // The deadline ends the wait even when the agent does not watch its signal:
    // the loop above then stops at the agent's next step, in the background.
    const expired = new Promise<false>((resolve) => controller.signal.addEventListener("abort", () => resolve(false), { once: true }));
    let finished: boolean;
    try {
      finished = await Promise.race([consumed, expired]);
    } catch (err) {
      log.debug({ err }, "agent failed before the claim; running the run the usual way");
      finished = false;
    } finally {
      clearTimeout(deadline);
    }
    if (!finished) {
      controller.abort(new RunAborted("timeout"));
      consumed.catch(() => undefined);
      return "gave_up";
    }
    const { usage } = tally;
    const done = await claimAndSucceed(
      pool,
      runId,
      instanceId,
      { ...sink.take(), text: tally.text, usage: usage.reported ? usage : null, agentStartedAt: started },
      { maxAttempts, prepared, ...(postedJobId !== undefined ? { postedJobId } : {}) },
    );
    if (!done) {
      // Gone, finished, or cancelled before it started: a pending cancel is recorded.
      await cancelUnstarted(pool, runId, prepared);
      return "not_run";
    }
    deps.notifier.announce(runId, done.lastSeq);
    if (done.attempt === 1 && done.failures === 0) {
      // As started_at: from the attempt's start, before its agent ran.
      const agentStartedMs = Date.now() - (performance.now() - started);
      deps.metrics?.startLatency.observe((agentStartedMs - new Date(done.created_at).getTime()) / 1000);
    }
    deps.metrics?.finished(tally.agent, "succeeded", (performance.now() - started) / 1000);
    log.info({ agent: tally.agent, attempt: done.attempt }, "run succeeded");
    return "succeeded";
  }

  return { executeRun, runPosted };

  /** Ends the attempt (endAttempt) and announces what it stored. */
  async function end(run: ClaimedRun, unwritten: Unwritten, ending: Ending): Promise<EndResult> {
    const { result, lastSeq } = await endAttempt(pool, run.id, run.attempt, unwritten, ending, prepared);
    if (lastSeq !== null) deps.notifier.announce(run.id, lastSeq);
    return result;
  }

  async function handleFailure(run: ClaimedRun, unwritten: Unwritten, reason: unknown, agent: string, log: Logger, started: number) {
    const seconds = (performance.now() - started) / 1000;
    const endWith = (ending: Ending): Promise<EndResult> => end(run, unwritten, ending);
    const cancelled = () => {
      deps.metrics?.finished(agent, "cancelled", seconds);
      log.info("run cancelled");
    };
    // Another attempt owns the run now (it was recovered elsewhere): nothing of this one is recorded.
    const superseded = () => log.warn({ err: reason }, "run attempt ended after another took over; not recorded");
    if (reason instanceof RunAborted && reason.kind === "cancel") {
      if ((await endWith({ kind: "cancelled" })) === "superseded") return superseded();
      cancelled();
      return;
    }
    if ((reason instanceof RunAborted && reason.kind === "shutdown") || isDatabaseUnavailable(reason)) {
      // An interruption (shutdown, or the database connection lost mid-run):
      // back to the queue at once, not counted.
      const state = await endWith({ kind: "handback" });
      if (state === "cancelled") return cancelled();
      if (state === "superseded") return superseded();
      deps.metrics?.finished(agent, "interrupted", seconds);
      log.info({ err: reason instanceof RunAborted ? undefined : reason }, "run interrupted; handed back to the queue");
      return;
    }

    const { code, message, retryable, retryAfterMs } = classify(reason);
    const failures = run.failures + 1;
    if (retryable && failures < maxAttempts) {
      const delay = Math.max(retryAfterMs ?? 0, retryDelayMs(failures));
      const until = new Date(Date.now() + delay);
      const state = await endWith({
        kind: "retry",
        failures,
        code,
        message,
        until,
        status: { status: "retrying", attempt: failures + 1, of: maxAttempts, until: until.toISOString(), reason: message },
      });
      if (state === "cancelled") return cancelled();
      if (state === "superseded") return superseded();
      deps.metrics?.retried(agent);
      deps.metrics?.finished(agent, "retried", seconds);
      log.warn({ err: reason, code, failures, retryInMs: delay }, "run attempt failed; retrying");
      return;
    }
    const state = await endWith({ kind: "failed", failures, code, message });
    if (state === "cancelled") return cancelled();
    if (state === "superseded") return superseded();
    deps.metrics?.failed(agent, code);
    deps.metrics?.finished(agent, "failed", seconds);
    log.warn({ err: reason, code, failures }, "run failed");
  }
}

/** An error as the user sees it: a stable code and a message fit to show. */
export function classify(reason: unknown): { code: string; message: string; retryable: boolean; retryAfterMs?: number } {
  if (reason instanceof RunAborted && reason.kind === "timeout") {
    return { code: "timeout", message: "The agent took too long to answer", retryable: true };
  }
  if (reason instanceof AgentError) {
    return {
      code: reason.code,
      message: reason.message,
      retryable: reason.opts.retryable,
      ...(reason.opts.retryAfterMs !== undefined ? { retryAfterMs: reason.opts.retryAfterMs } : {}),
    };
  }
  return { code: "agent_error", message: "The agent failed unexpectedly", retryable: true };
}

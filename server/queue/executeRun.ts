/**
 * One attempt of one run: claim it, stream the orchestrator's events into
 * `run_events`, then finish it exactly once. Failures count toward
 * `agents.retryAttempts` (our count, in `runs.failures`); interruptions
 * (shutdown) hand the run back without counting; a cancel ends it.
 */
import type { PoolClient } from "pg";
import type { Pool } from "../db/pool.js";
import type { Config } from "../config.js";
import type { Logger } from "../ops/logger.js";
import type { Orchestrator, ChatTurn } from "../agents/types.js";
import { AgentError } from "../agents/types.js";
import { appendEvents, createEventWriter, AttemptSuperseded } from "./runEvents.js";
import { withTransaction } from "../db/transaction.js";
import { scheduleRunSql } from "./enqueue.js";
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
  metrics?: QueueMetrics;
  /** How many past messages an agent sees. */
  historyLimit?: number;
}

interface ClaimedRun {
  id: string;
  user_id: string;
  conversation_id: string;
  message_id: string;
  requested_agent: string | null;
  attempt: number;
  failures: number;
  created_at: Date;
}

/** Backoff before retry n (1-based): 1 s, 2 s, 4 s … capped at 30 s. */
export const retryDelayMs = (failures: number) => Math.min(30_000, 1000 * 2 ** Math.max(0, failures - 1));

export function createRunExecutor(deps: ExecutorDeps) {
  const { pool, config, instanceId, orchestrator } = deps;
  const maxAttempts = config.agents.retryAttempts + 1;

  /** Marks a queued or running run cancelled (once) and writes its terminal event, in `client`'s transaction. */
  async function markCancelled(client: PoolClient, runId: string, attempt: number): Promise<boolean> {
    const r = await client.query(
      `update runs set status = 'cancelled', finished_at = now(), updated_at = now()
       where id = $1 and status in ('queued', 'running') returning id`,
      [runId],
    );
    if (r.rowCount) await appendEvents(client, runId, attempt, [{ type: "cancelled", data: {} }]);
    return Boolean(r.rowCount);
  }

  /** Marks a run cancelled (once) and writes its terminal event. */
  const finishCancelled = (runId: string, attempt: number) => transaction((client) => markCancelled(client, runId, attempt));

  async function history(run: ClaimedRun): Promise<{ content: string; turns: ChatTurn[] }> {
    const limit = deps.historyLimit ?? 20;
    const r = await pool.query<{ id: string; role: "user" | "assistant"; content: string }>(
      `select id, role, content from (
         select id, role, content, created_at from messages
         where conversation_id = $1 and created_at <= (select created_at from messages where id = $2)
         order by created_at desc, id desc limit $3
       ) m order by created_at, id`,
      [run.conversation_id, run.message_id, limit],
    );
    const own = r.rows.find((m) => m.id === run.message_id);
    return { content: own?.content ?? "", turns: r.rows.map(({ role, content }) => ({ role, content })) };
  }

  return async function executeRun(runId: string, opts: { shutdownSignal: AbortSignal; jobAttempts?: number; jobMaxAttempts?: number }) {
    const claimed = await pool.query<ClaimedRun>(
      `update runs set status = 'running', attempt = attempt + 1, instance_id = $2,
         started_at = coalesce(started_at, now()), updated_at = now()
       where id = $1 and status in ('queued', 'running') and cancel_requested_at is null
       returning id, user_id, conversation_id, message_id, requested_agent, attempt, failures, created_at`,
      [runId, instanceId],
    );
    const run = claimed.rows[0];
    if (!run) {
      // Gone, finished, or cancelled before it started: nothing to run.
      const pending = await pool.query<{ attempt: number }>(
        `select attempt from runs where id = $1 and status in ('queued', 'running') and cancel_requested_at is not null`,
        [runId],
      );
      const row = pending.rows[0];
      if (row) await finishCancelled(runId, row.attempt);
      return;
    }
    const log = deps.log.child({ runId, attempt: run.attempt });
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
    const writer = createEventWriter(pool, runId, run.attempt);
    let agent = run.requested_agent ?? "unrouted";
    deps.metrics?.running.inc();

    try {
      if (run.attempt > 1) await writer.event("reset", { attempt: run.attempt });
      await writer.event("status", { status: "running", attempt: run.failures + 1, of: maxAttempts });
      const { content, turns } = await history(run);
      let text = "";
      const usage = { promptTokens: 0, completionTokens: 0, reported: false };
      const events = orchestrator.run(
        { content, requestedAgent: run.requested_agent },
        { signal: controller.signal, log, history: turns, config, runId, attempt: run.attempt },
      );
      for await (const ev of events) {
        if (controller.signal.aborted) break;
        switch (ev.type) {
          case "route":
            agent = ev.agent;
            await pool.query("update runs set agent = $2, route_reason = $3, updated_at = now() where id = $1", [runId, ev.agent, ev.reason]);
            await writer.event("route", { agent: ev.agent, reason: ev.reason });
            break;
          case "text.delta":
            text += ev.text;
            writer.delta(ev.text);
            break;
          case "usage":
            usage.promptTokens += ev.promptTokens;
            usage.completionTokens += ev.completionTokens;
            usage.reported = true;
            await writer.event("usage", { promptTokens: ev.promptTokens, completionTokens: ev.completionTokens });
            break;
          case "tool.call":
            await writer.event("tool.call", { id: ev.id, name: ev.name, args: ev.args });
            break;
          case "tool.result":
            await writer.event("tool.result", { id: ev.id, name: ev.name, result: ev.result, ...(ev.error ? { error: ev.error } : {}) });
            break;
          case "status":
            await writer.event("status", { status: ev.status, until: ev.until, ...(ev.reason ? { reason: ev.reason } : {}) });
            break;
          default: {
            const unreachable: never = ev;
            throw new Error(`unknown agent event ${JSON.stringify(unreachable)}`);
          }
        }
      }
      if (controller.signal.aborted) throw controller.signal.reason;
      await writer.flush();
      const outcome = await finishSucceeded(run, text, usage.reported ? usage : null);
      if (outcome !== "superseded") deps.metrics?.finished(agent, outcome, (performance.now() - started) / 1000);
      log.info({ agent }, outcome === "succeeded" ? "run succeeded" : outcome === "cancelled" ? "run cancelled" : "run finished by another attempt");
    } catch (raw) {
      writer.discard();
      await writer.flush().catch(() => undefined);
      if (raw instanceof AttemptSuperseded) {
        // Another instance took the run over while this one was paused: stop, write nothing.
        abort("shutdown");
        deps.metrics?.finished(agent, "superseded", (performance.now() - started) / 1000);
        log.warn("attempt superseded by a newer one; abandoned");
        return;
      }
      const reason = controller.signal.aborted ? controller.signal.reason : raw;
      await handleFailure(run, reason, agent, log, started);
    } finally {
      clearTimeout(timeout);
      unwatch();
      opts.shutdownSignal.removeEventListener("abort", onShutdown);
      deps.metrics?.running.dec();
    }
  };

  /**
   * The assistant message, the run's success and its `done` event: one
   * transaction. A cancel requested meanwhile wins (no message); another
   * attempt having taken over (the run was recovered) leaves it alone.
   */
  async function finishSucceeded(
    run: ClaimedRun,
    text: string,
    usage: { promptTokens: number; completionTokens: number } | null,
  ): Promise<"succeeded" | "cancelled" | "superseded"> {
    return transaction(async (client) => {
      const state = await settleable(client, run);
      if (state !== "running") return state;
      const r = await client.query<{ agent: string | null }>(
        `update runs set status = 'succeeded', finished_at = now(), updated_at = now(),
           prompt_tokens = $2, completion_tokens = $3, error_code = null, error_message = null
         where id = $1 returning agent`,
        [run.id, usage?.promptTokens ?? null, usage?.completionTokens ?? null],
      );
      const m = await client.query<{ id: string }>(
        `insert into messages (conversation_id, user_id, role, content, run_id, agent)
         values ($1, $2, 'assistant', $3, $4, $5)
         on conflict (run_id) do nothing returning id`,
        [run.conversation_id, run.user_id, text, run.id, r.rows[0]?.agent ?? null],
      );
      const messageId = m.rows[0]?.id ?? (await client.query<{ id: string }>("select id from messages where run_id = $1", [run.id])).rows[0]?.id;
      await appendEvents(client, run.id, run.attempt, [{ type: "done", data: { messageId } }]);
      return "succeeded";
    });
  }

  /**
   * Locks the run and says how this attempt may end it: "running" when it is
   * still this attempt's to settle; "cancelled" when a cancel was requested
   * (the run is marked cancelled here: a cancel that arrives while an attempt
   * ends wins over its answer, retry, hand-back or failure); "superseded"
   * when another attempt owns it now (recovered elsewhere) or it is over.
   */
  async function settleable(client: PoolClient, run: ClaimedRun): Promise<"running" | "cancelled" | "superseded"> {
    const r = await client.query<{ cancel: boolean }>(
      `select cancel_requested_at is not null as cancel from runs
       where id = $1 and attempt = $2 and status = 'running' for update`,
      [run.id, run.attempt],
    );
    const row = r.rows[0];
    if (!row) return "superseded";
    if (row.cancel) {
      await markCancelled(client, run.id, run.attempt);
      return "cancelled";
    }
    return "running";
  }

  async function handleFailure(run: ClaimedRun, reason: unknown, agent: string, log: Logger, started: number) {
    const seconds = (performance.now() - started) / 1000;
    const cancelled = () => {
      deps.metrics?.finished(agent, "cancelled", seconds);
      log.info("run cancelled");
    };
    // Another attempt owns the run now (it was recovered elsewhere): nothing of this one is recorded.
    const superseded = () => log.warn({ err: reason }, "run attempt ended after another took over; not recorded");
    if (reason instanceof RunAborted && reason.kind === "cancel") {
      await finishCancelled(run.id, run.attempt);
      cancelled();
      return;
    }
    if (reason instanceof RunAborted && reason.kind === "shutdown") {
      // An interruption: back to the queue at once, not counted.
      const state = await transaction(async (client) => {
        const s = await settleable(client, run);
        if (s !== "running") return s;
        await client.query(`update runs set status = 'queued', instance_id = null, updated_at = now() where id = $1`, [run.id]);
        await appendEvents(client, run.id, run.attempt, [{ type: "status", data: { status: "queued", reason: "interrupted" } }]);
        await client.query(scheduleRunSql, [run.id, new Date()]);
        return s;
      });
      if (state === "cancelled") return cancelled();
      if (state === "superseded") return superseded();
      deps.metrics?.finished(agent, "interrupted", seconds);
      log.info("run interrupted by shutdown; handed back to the queue");
      return;
    }

    const { code, message, retryable, retryAfterMs } = classify(reason);
    const failures = run.failures + 1;
    if (retryable && failures < maxAttempts) {
      const delay = Math.max(retryAfterMs ?? 0, retryDelayMs(failures));
      const until = new Date(Date.now() + delay);
      const state = await transaction(async (client) => {
        const s = await settleable(client, run);
        if (s !== "running") return s;
        await client.query(
          `update runs set status = 'queued', failures = $2, error_code = $3, error_message = $4,
             instance_id = null, updated_at = now()
           where id = $1`,
          [run.id, failures, code, message],
        );
        await appendEvents(client, run.id, run.attempt, [
          { type: "status", data: { status: "retrying", attempt: failures + 1, of: maxAttempts, until: until.toISOString(), reason: message } },
        ]);
        await client.query(scheduleRunSql, [run.id, until]);
        return s;
      });
      if (state === "cancelled") return cancelled();
      if (state === "superseded") return superseded();
      deps.metrics?.retried(agent);
      deps.metrics?.finished(agent, "retried", seconds);
      log.warn({ err: reason, code, failures, retryInMs: delay }, "run attempt failed; retrying");
      return;
    }
    const state = await transaction(async (client) => {
      const s = await settleable(client, run);
      if (s !== "running") return s;
      await client.query(
        `update runs set status = 'failed', failures = $2, error_code = $3, error_message = $4,
           finished_at = now(), updated_at = now()
         where id = $1`,
        [run.id, failures, code, message],
      );
      await appendEvents(client, run.id, run.attempt, [{ type: "failed", data: { code, message } }]);
      return s;
    });
    if (state === "cancelled") return cancelled();
    if (state === "superseded") return superseded();
    deps.metrics?.failed(agent, code);
    deps.metrics?.finished(agent, "failed", seconds);
    log.warn({ err: reason, code, failures }, "run failed");
  }

  function transaction<T>(fn: (client: PoolClient) => Promise<T>): Promise<T> {
    return withTransaction(pool, fn);
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

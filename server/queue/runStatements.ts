/**
 * The statements that start and end an attempt, one round trip each. A
 * single statement is atomic, so the claim (with its first events and the
 * conversation history) and every ending (the run's new state, the events
 * not yet written, the terminal event, the answer, the retry's job and the
 * NOTIFY) need no BEGIN/COMMIT around them. `runs.last_seq` hands out the
 * events' seq in the same update that changes the run, and the update's
 * `attempt` and `status` conditions are what lock out a superseded attempt.
 *
 * The claim and the endings do not NOTIFY: see {@link claimRun} and runNotifier.ts.
 *
 * A data-modifying CTE (the event inserts) runs to completion whether or not
 * the query reads it; a SELECT CTE runs only when read, hence the
 * `count(*) from j` that makes a retry's add_job happen.
 *
 * With `prepared` (not behind a transaction-mode pooler) they are named
 * statements: parsed once per connection, and past the first executions
 * planned once, which for these CTEs costs as much as running them.
 */
import { statement, type Pool } from "../db/pool.js";
import type { ChatTurn } from "../agents/types.js";
import { RUN_EVENTS_CHANNEL, STORED_AT_SQL, type PendingEvent, type StoredEventRow, type Unwritten } from "./runEvents.js";
import { JOB_MAX_ATTEMPTS, RUN_TASK } from "./enqueue.js";

export interface ClaimedRun {
  id: string;
  user_id: string;
  conversation_id: string;
  message_id: string;
  requested_agent: string | null;
  attempt: number;
  failures: number;
  created_at: Date;
}

/**
 * $1 run id, $2 instance id, $3 attempts allowed in all, $4 history length,
 * $5 agents that read no history. Marks the run running for a new attempt,
 * writes `reset {attempt}` (from the second attempt on) and `status running`,
 * and reads the run's message and the conversation up to it: one row, or
 * none when the run is not to be run. A run that asked by name for an agent
 * of $5 gets no history: its conversation is not read at all.
 *
 * Its commit does not wait for the WAL flush (synchronous_commit off for this
 * transaction). Nothing it writes is lost by that, only possibly redone: the
 * job's fetch before it was flushed, so a database crash that lost the claim
 * leaves the run queued with its job, and the next claim, of the same attempt
 * number, writes the same events with the same seqs (a subscriber that saw
 * them sees nothing new or different). Every later write of the run is
 * flushed, and takes the claim with it. A flushed claim is a flush more for
 * every run, each one queueing ahead of the message POSTs, whose commits are
 * flushed one at a time (they notify: runNotifier.ts).
 */
const CLAIM_SQL = `
with c as (
  update runs set status = 'running', attempt = attempt + 1, instance_id = $2,
    started_at = coalesce(started_at, now()), updated_at = now(),
    last_seq = last_seq + case when attempt > 0 then 2 else 1 end
  where id = $1 and status in ('queued', 'running') and cancel_requested_at is null
    and set_config('synchronous_commit', 'off', true) is not null
  returning id, user_id, conversation_id, message_id, requested_agent, attempt, failures, created_at, last_seq
), ev as (
  insert into run_events (run_id, seq, attempt, type, data, created_at)
  select c.id, c.last_seq - 2 + e.ord, c.attempt, e.type, e.data, clock_timestamp()
  from c cross join lateral (values
    (1, 'reset', jsonb_build_object('attempt', c.attempt)),
    (2, 'status', jsonb_build_object('status', 'running', 'attempt', c.failures + 1, 'of', $3::int))
  ) as e(ord, type, data)
  where e.ord = 2 or c.attempt > 1
  returning seq, type, data, created_at
), own as (
  select m.conversation_id, m.created_at, m.content from c join messages m on m.id = c.message_id
), h as (
  -- Lateral, so the conversation and the run's message are index bounds: a
  -- backward scan of messages_conversation_created_idx that stops after $4
  -- rows. As a plain join the planner bounded only created_at and read every
  -- older message of every conversation.
  select m.id, m.role, m.content, m.created_at
  from c
  join own on c.requested_agent is null or c.requested_agent <> all($5::text[])
  cross join lateral (
    select m.id, m.role, m.content, m.created_at from messages m
    where m.conversation_id = own.conversation_id and m.created_at <= own.created_at
    order by m.created_at desc, m.id desc
    limit $4
  ) m
)
select c.id, c.user_id, c.conversation_id, c.message_id, c.requested_agent, c.attempt, c.failures, c.created_at,
  c.last_seq, (select content from own) as content,
  (select json_agg(json_build_object('role', h.role, 'content', h.content) order by h.created_at, h.id) from h) as history,
  (select json_agg(json_build_object('seq', ev.seq, 'type', ev.type, 'data', ev.data::text, 'stored_at', ${STORED_AT_SQL("ev.created_at")}) order by ev.seq) from ev) as events
from c`;

export interface Claim {
  run: ClaimedRun;
  /** The seq of the claim's last event (`status running`), for the executor to announce (runNotifier.ts). */
  lastSeq: number;
  /** The run's own message. */
  content: string;
  /** The conversation up to and including it, oldest first; the message alone when no history was read. */
  turns: ChatTurn[];
  /** The claim's events as stored (`reset` from the second attempt on, `status running`). */
  events: StoredEventRow[];
}

/**
 * Claims the run for a new attempt on this instance; null when it is gone,
 * over, or cancelled before it started.
 *
 * The claim sends no NOTIFY (a notifying commit holds PostgreSQL's notify lock
 * through its WAL flush: runNotifier.ts). Its events reach subscribers with
 * the run's next notification, which for almost every run comes at once (its
 * first event's write, or its ending); the executor announces them on its
 * own when none came soon (CLAIM_NOTIFY_AFTER_MS).
 */
export async function claimRun(
  pool: Pool,
  runId: string,
  instanceId: string,
  opts: { maxAttempts: number; historyLimit: number; prepared: boolean; historyFreeAgents?: readonly string[] },
): Promise<Claim | null> {
  const r = await pool.query<
    ClaimedRun & { last_seq: number; content: string | null; history: ChatTurn[] | null; events: Omit<StoredEventRow, "run_id" | "attempt">[] | null }
  >(
    statement(
      "esa_run_claim",
      CLAIM_SQL,
      [runId, instanceId, opts.maxAttempts, opts.historyLimit, opts.historyFreeAgents ?? []],
      opts.prepared,
    ),
  );
  const row = r.rows[0];
  if (!row) return null;
  const { history, last_seq: lastSeq, events, content, ...run } = row;
  const text = content ?? "";
  return {
    run,
    lastSeq,
    content: text,
    // Not read (an agent that reads none): the run's own message alone.
    turns: history ?? [{ role: "user", content: text }],
    events: (events ?? []).map((e) => ({ ...e, run_id: run.id, attempt: run.attempt })),
  };
}

/**
 * The CTEs `m` and `mid` that write a run's answer exactly once: the
 * assistant message from the run row `from` (rows it yields, filtered by
 * `where`), the text $`textParam`, and `mid`, the answer's id whether this
 * statement wrote it or an earlier one did (messages_run_id_unique). $1 is the
 * run id.
 */
const answerCtes = (from: string, textParam: number, where = "true") => `m as (
  insert into messages (conversation_id, user_id, role, content, run_id, agent)
  select ${from}.conversation_id, ${from}.user_id, 'assistant', $${textParam}::text, $1, ${from}.agent from ${from} where ${where}
  on conflict (run_id) where run_id is not null do nothing
  returning id
), mid as (
  select coalesce((select id from m), (select id from messages where run_id = $1)) as id
)`;

/**
 * $1 run id, $2 instance id, $3 attempts allowed in all, $4/$5 the events'
 * types and data (the agent's, in order), $6/$7 the route (agent, reason),
 * $8/$9 usage, $10 the answer, $11 how long before this statement the
 * attempt started, ms (a duration on the instance's monotonic clock, never its
 * wall clock). An attempt whose agent ran before its claim
 * (`Agent.pure`) and has finished: the claim and the success ending in one
 * statement. Under the claim's conditions (the run is open and no cancel was
 * requested) the run becomes this attempt's and succeeds; its events are what
 * the claim, the agent and the ending would have written one after the other
 * (`reset` from the second attempt on, `status running`, the agent's, `done`),
 * under consecutive seqs. No row: the run is not to be run (gone, over, or
 * cancelled before it started), and nothing was written. Like the endings, it
 * sends no NOTIFY (runNotifier.ts).
 *
 * `started_at` is when the attempt started: this statement's start less $11.
 * (A claim's is the claim's start, just before its agent starts; here the
 * agent ran before this statement, which the database's clock cannot see.
 * PostgreSQL starts the statement after the instance sent it, so the time is
 * never before the attempt's real start; `created_at` bounds it all the same.)
 *
 * `posted`: the run started on the instance its message was posted to
 * (localStart.ts), $12 its job. Only a run no attempt has taken yet is
 * claimed, and its job, deferred by the POST, is deleted with it.
 */
const claimAndSucceedSql = (posted: boolean) => `
with c as (
  update runs set status = 'succeeded', attempt = attempt + 1, instance_id = $2,
    started_at = coalesce(started_at, greatest(created_at, now() - make_interval(secs => $11::float8 / 1000))),
    finished_at = now(), updated_at = now(),
    last_seq = last_seq + case when attempt > 0 then 2 else 1 end + cardinality($4::text[]) + 1,
    agent = coalesce($6::text, agent), route_reason = coalesce($7::text, route_reason),
    prompt_tokens = $8::int, completion_tokens = $9::int, error_code = null, error_message = null
  where id = $1 and ${posted ? "status = 'queued' and attempt = 0" : "status in ('queued', 'running')"} and cancel_requested_at is null
  returning id, conversation_id, user_id, agent, attempt, failures, created_at, last_seq
), ${answerCtes("c", 10)}, ev as (
  insert into run_events (run_id, seq, attempt, type, data, created_at)
  select c.id, c.last_seq - cardinality(a.types) + t.ord, c.attempt, t.type, t.data, clock_timestamp()
  from c cross join lateral (
    select
      (case when c.attempt > 1 then array['reset'] else array[]::text[] end) || array['status'] || $4::text[] || array['done'] as types,
      (case when c.attempt > 1 then array[jsonb_build_object('attempt', c.attempt)] else array[]::jsonb[] end)
        || array[jsonb_build_object('status', 'running', 'attempt', c.failures + 1, 'of', $3::int)]
        || $5::jsonb[]
        || array[jsonb_build_object('messageId', (select id from mid))] as data
  ) a cross join lateral unnest(a.types, a.data) with ordinality as t(type, data, ord)
)${
  posted
    ? `, j as (
  -- Unless a worker holds it (complete_jobs deletes only unlocked jobs).
  select graphile_worker.complete_jobs(array[$12::bigint]) from c
)
select c.attempt, c.failures, c.created_at, c.last_seq, (select count(*) from j)::int as jobs from c`
    : `
select c.attempt, c.failures, c.created_at, c.last_seq from c`
}`;
const CLAIM_AND_SUCCEED_SQL = claimAndSucceedSql(false);
const CLAIM_AND_SUCCEED_POSTED_SQL = claimAndSucceedSql(true);

/** What claimAndSucceed recorded. */
export interface ClaimedAndSucceeded {
  attempt: number;
  failures: number;
  created_at: Date;
  lastSeq: number;
}

/** See CLAIM_AND_SUCCEED_SQL; null when the run is not to be run. */
export async function claimAndSucceed(
  pool: Pool,
  runId: string,
  instanceId: string,
  done: {
    events: PendingEvent[];
    route: { agent: string; reason: string } | null;
    text: string;
    usage: { promptTokens: number; completionTokens: number } | null;
    /** When the attempt started: performance.now() on this instance. */
    agentStartedAt: number;
  },
  /** `postedJobId`: the run's job, when it started where it was posted (see claimAndSucceedSql). */
  opts: { maxAttempts: number; prepared: boolean; postedJobId?: string },
): Promise<ClaimedAndSucceeded | null> {
  const values = [
    runId,
    instanceId,
    opts.maxAttempts,
    done.events.map((e) => e.type),
    done.events.map((e) => JSON.stringify(e.data ?? {})),
    done.route?.agent ?? null,
    done.route?.reason ?? null,
    done.usage?.promptTokens ?? null,
    done.usage?.completionTokens ?? null,
    done.text,
    // Taken last, just before the statement is sent.
    Math.max(0, performance.now() - done.agentStartedAt),
  ];
  const posted = opts.postedJobId !== undefined;
  if (opts.postedJobId !== undefined) values.push(opts.postedJobId);
  const r = await pool.query<{ attempt: number; failures: number; created_at: Date; last_seq: number }>(
    posted
      ? statement("esa_run_claim_succeed_posted", CLAIM_AND_SUCCEED_POSTED_SQL, values, opts.prepared)
      : statement("esa_run_claim_succeed", CLAIM_AND_SUCCEED_SQL, values, opts.prepared),
  );
  const row = r.rows[0];
  return row ? { attempt: row.attempt, failures: row.failures, created_at: row.created_at, lastSeq: row.last_seq } : null;
}

/**
 * $1 a job deferred by its message's POST (localStart.ts): due now, unless a
 * worker holds it already, with graphile-worker's NOTIFY so that an idle
 * worker fetches it at once (as add_job's would). Its payload is that
 * notification's: a job count, and a random number that keeps PostgreSQL
 * from folding two of them in one transaction into one.
 */
const JOB_DUE_NOW_SQL = `
with j as (select id from graphile_worker.reschedule_jobs(array[$1::bigint], run_at := now()))
select pg_notify('jobs:insert', json_build_object('r', random(), 'count', 1)::text) from j`;

/** See JOB_DUE_NOW_SQL; false when a worker holds the job, or it is gone. */
export async function jobDueNow(pool: Pool, jobId: string, prepared: boolean): Promise<boolean> {
  const r = await pool.query(statement("esa_job_due_now", JOB_DUE_NOW_SQL, [jobId], prepared));
  return Boolean(r.rowCount);
}

/**
 * $1 run id. A run a cancel was requested for before any attempt took it:
 * cancelled, with its terminal event. False when there is nothing to cancel.
 */
const CANCEL_UNSTARTED_SQL = `
with r as (
  update runs set status = 'cancelled', finished_at = now(), updated_at = now(), last_seq = last_seq + 1
  where id = $1 and status in ('queued', 'running') and cancel_requested_at is not null
  returning attempt, last_seq
), ev as (
  insert into run_events (run_id, seq, attempt, type, data, created_at)
  select $1, r.last_seq, r.attempt, 'cancelled', '{}'::jsonb, clock_timestamp() from r
  returning seq
)
select (select count(*) from ev)::int as events, pg_notify('${RUN_EVENTS_CHANNEL}', $1::text || ':' || r.last_seq) as notified from r`;

export async function cancelUnstarted(pool: Pool, runId: string, prepared: boolean): Promise<boolean> {
  const r = await pool.query(statement("esa_run_cancel_unstarted", CANCEL_UNSTARTED_SQL, [runId], prepared));
  return Boolean(r.rowCount);
}

/** How an attempt ends. */
export type Ending =
  | { kind: "succeeded"; text: string; usage: { promptTokens: number; completionTokens: number } | null }
  | { kind: "retry"; failures: number; code: string; message: string; until: Date; status: Record<string, unknown> }
  | { kind: "handback" }
  | { kind: "failed"; failures: number; code: string; message: string }
  | { kind: "cancelled" };

/** "ended": the ending was recorded; "cancelled": a cancel requested meanwhile won; "superseded": the attempt no longer owns the run. */
export type EndResult = "ended" | "cancelled" | "superseded";

interface EndingSql {
  status: "succeeded" | "queued" | "failed" | "cancelled";
  /** Columns set when no cancel was requested (a cancel leaves them as they are). */
  set: Record<string, string>;
  /** Whether finished_at is set (a queued run is not finished, unless a cancel wins). */
  finishes: boolean;
  terminalType: string;
  /** SQL for the terminal event's data; may use the CTE `mid` (succeeded). */
  terminalData: string;
  /** `run_at` of the job put back on the queue. */
  runAt?: string;
  params: unknown[];
}

/** Per ending: its columns and terminal event, parameters from $7 on. */
function endingSql(e: Ending): EndingSql {
  switch (e.kind) {
    case "succeeded":
      return {
        status: "succeeded",
        set: { prompt_tokens: "$7::int", completion_tokens: "$8::int", error_code: "null", error_message: "null" },
        finishes: true,
        terminalType: "done",
        terminalData: "jsonb_build_object('messageId', (select id from mid))",
        params: [e.usage?.promptTokens ?? null, e.usage?.completionTokens ?? null, e.text],
      };
    case "retry":
      return {
        status: "queued",
        set: { failures: "$7::int", error_code: "$8::text", error_message: "$9::text", instance_id: "null" },
        finishes: false,
        terminalType: "status",
        terminalData: "$10::jsonb",
        runAt: "$11::timestamptz",
        params: [e.failures, e.code, e.message, JSON.stringify(e.status), e.until],
      };
    case "handback":
      return {
        status: "queued",
        set: { instance_id: "null" },
        finishes: false,
        terminalType: "status",
        terminalData: `jsonb_build_object('status', 'queued', 'reason', 'interrupted')`,
        runAt: "now()",
        params: [],
      };
    case "failed":
      return {
        status: "failed",
        set: { failures: "$7::int", error_code: "$8::text", error_message: "$9::text" },
        finishes: true,
        terminalType: "failed",
        terminalData: "jsonb_build_object('code', $8::text, 'message', $9::text)",
        params: [e.failures, e.code, e.message],
      };
    case "cancelled":
      return { status: "cancelled", set: {}, finishes: true, terminalType: "cancelled", terminalData: "'{}'::jsonb", params: [] };
    default: {
      const unreachable: never = e;
      throw new Error(`unknown ending ${JSON.stringify(unreachable)}`);
    }
  }
}

const whenNoCancel = (col: string, expr: string) => `${col} = case when cancel_requested_at is null then ${expr} else ${col} end`;

/**
 * $1 run id, $2 attempt, $3/$4 the unwritten events' types and data, $5/$6 an
 * unwritten route (agent, reason), then the ending's own. Only while the run
 * is this attempt's and running; a cancel requested meanwhile wins over any
 * ending (the run is cancelled, with a `cancelled` terminal event, and no
 * answer is written).
 */
function endSql(s: EndingSql): string {
  const set = [
    `status = case when cancel_requested_at is null then '${s.status}' else 'cancelled' end`,
    s.finishes ? "finished_at = now()" : "finished_at = case when cancel_requested_at is null then finished_at else now() end",
    "updated_at = now()",
    "last_seq = last_seq + cardinality($3::text[]) + 1",
    "agent = coalesce($5::text, agent)",
    "route_reason = coalesce($6::text, route_reason)",
    ...Object.entries(s.set).map(([col, expr]) => whenNoCancel(col, expr)),
  ];
  const answer =
    s.status === "succeeded"
      ? `, ${answerCtes("r", 9, "r.status = 'succeeded'")}`
      : "";
  const job = s.runAt
    ? `, j as (
  select graphile_worker.add_job('${RUN_TASK}', json_build_object('runId', $1::text), job_key := $1::text,
    run_at := ${s.runAt}, max_attempts := ${JOB_MAX_ATTEMPTS}, job_key_mode := 'replace')
  from r where r.status = 'queued'
)`
    : "";
  return `
with r as (
  update runs set ${set.join(",\n    ")}
  where id = $1 and attempt = $2 and status = 'running'
  returning status, last_seq, conversation_id, user_id, agent
)${answer}, ev as (
  insert into run_events (run_id, seq, attempt, type, data, created_at)
  select $1, r.last_seq - cardinality($3::text[]) - 1 + t.ord, $2, t.type, t.data, clock_timestamp()
  from r cross join lateral unnest(
    $3::text[] || (case when r.status = 'cancelled' then 'cancelled' else '${s.terminalType}' end)::text,
    $4::jsonb[] || (case when r.status = 'cancelled' then '{}'::jsonb else ${s.terminalData} end)
  ) with ordinality as t(type, data, ord)
)${job}
select r.status, r.last_seq, ${s.runAt ? "(select count(*) from j)::int" : "0"} as jobs
from r`;
}

const endSqlCache = new Map<string, string>();

/**
 * Ends the attempt in one statement: the events it had not written yet, its
 * ending (answer, success and usage; retry or hand-back with the job put
 * back; failure; cancel) and the terminal event. It sends no NOTIFY (see
 * runNotifier.ts): `lastSeq` is what the caller announces once it resolves,
 * null when nothing was written.
 */
export async function endAttempt(
  pool: Pool,
  runId: string,
  attempt: number,
  unwritten: Unwritten,
  ending: Ending,
  prepared: boolean,
): Promise<{ result: EndResult; lastSeq: number | null }> {
  const s = endingSql(ending);
  let text = endSqlCache.get(ending.kind);
  if (!text) endSqlCache.set(ending.kind, (text = endSql(s)));
  const events: PendingEvent[] = unwritten.events;
  const values = [
    runId,
    attempt,
    events.map((e) => e.type),
    events.map((e) => JSON.stringify(e.data ?? {})),
    unwritten.route?.agent ?? null,
    unwritten.route?.reason ?? null,
    ...s.params,
  ];
  const r = await pool.query<{ status: string; last_seq: number }>(statement(`esa_run_end_${ending.kind}`, text, values, prepared));
  const row = r.rows[0];
  if (!row) return { result: "superseded", lastSeq: null };
  return { result: row.status === "cancelled" && ending.kind !== "cancelled" ? "cancelled" : "ended", lastSeq: row.last_seq };
}

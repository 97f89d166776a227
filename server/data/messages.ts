import { OPEN_RUN_SQL, type Message, type Run } from "../../shared/schema.js";
import type { MessageDto, Page, RunDto } from "../../shared/api.js";
import type { Config } from "../config.js";
import { statement, type Pool } from "../db/pool.js";
import { decodeCursor, encodeCursor } from "./cursor.js";
import { toRunDto } from "./runs.js";
import { addRunJobExpr } from "../queue/enqueue.js";
import type { LocalStarts } from "../queue/localStart.js";

export const toMessageDto = (m: Message): MessageDto => ({
  id: m.id,
  conversationId: m.conversationId,
  role: m.role,
  content: m.content,
  runId: m.runId,
  agent: m.agent,
  createdAt: m.createdAt.toISOString(),
});

/** snake_case row_to_json output → the Drizzle row shape. */
type Json = Record<string, unknown>;
const d = (v: unknown) => (v === null || v === undefined ? null : new Date(v as string));
const messageFromJson = (j: Json): Message => ({
  id: j.id as string,
  conversationId: j.conversation_id as string,
  userId: j.user_id as string,
  role: j.role as Message["role"],
  content: j.content as string,
  runId: (j.run_id as string | null) ?? null,
  agent: (j.agent as string | null) ?? null,
  createdAt: d(j.created_at) as Date,
});
const runFromJson = (j: Json): Run => ({
  id: j.id as string,
  userId: j.user_id as string,
  conversationId: j.conversation_id as string,
  messageId: j.message_id as string,
  requestedAgent: (j.requested_agent as string | null) ?? null,
  agent: (j.agent as string | null) ?? null,
  routeReason: (j.route_reason as string | null) ?? null,
  status: j.status as Run["status"],
  attempt: j.attempt as number,
  failures: j.failures as number,
  errorCode: (j.error_code as string | null) ?? null,
  errorMessage: (j.error_message as string | null) ?? null,
  promptTokens: (j.prompt_tokens as number | null) ?? null,
  completionTokens: (j.completion_tokens as number | null) ?? null,
  instanceId: (j.instance_id as string | null) ?? null,
  lastSeq: (j.last_seq as number | undefined) ?? 0,
  cancelRequestedAt: d(j.cancel_requested_at),
  createdAt: d(j.created_at) as Date,
  startedAt: d(j.started_at),
  finishedAt: d(j.finished_at),
  updatedAt: d(j.updated_at) as Date,
});

/**
 * The user message, its run and the run's job, written by one statement: all
 * or nothing. Nothing is written when `$5` runs are already queued (load
 * shedding); the row says so. `message` is null when the conversation is not
 * the caller's or the queue is full. The job is due `$6` ms from now: 0, or,
 * for a run that starts on this instance at once, the deferral that keeps
 * workers off it meanwhile (localStart.ts); `job_id` is its id.
 */
export const POST_MESSAGE_SQL = `
with depth as (
  select count(*)::int as n from (select 1 from runs where ${OPEN_RUN_SQL} and status = 'queued' limit $5) q
), c as (
  update conversations set updated_at = now()
  where id = $1 and user_id = $2 and (select n from depth) < $5
  returning id
), m as (
  insert into messages (conversation_id, user_id, role, content)
  select c.id, $2, 'user', $3 from c
  returning *
), r as (
  insert into runs (user_id, conversation_id, message_id, requested_agent)
  select $2, m.conversation_id, m.id, $4 from m
  returning *
), j as (
  -- Generic plans inside add_job for this transaction only: by default
  -- PL/pgSQL re-plans each of add_jobs' statements on every call (a custom
  -- plan for a one-element array always looks cheaper than the generic one),
  -- which was more than half of add_job's time. The condition runs before the
  -- target list, so the setting is in place when add_job starts.
  select ${addRunJobExpr("r.id", { agentExpr: "r.requested_agent", contentExpr: "$3" }, "now() + make_interval(secs => $6::float8 / 1000)")} as job from r
  where set_config('plan_cache_mode', 'force_generic_plan', true) is not null
)
select (select n from depth) as depth, (select row_to_json(m) from m) as message,
  (select row_to_json(r) from r) as run, (select (job).id::text from j) as job_id`;

export type PostResult = { message: MessageDto; run: RunDto } | "not_found" | "overloaded";

/** Seconds after which an `overloaded` refusal may be retried (the POST's Retry-After, the `send` error's message). */
export const OVERLOADED_RETRY_AFTER_S = 5;

/** A row of {@link pageQuery}: all null but the conversation id when the conversation holds no message on this page. */
interface PageRow {
  id: string | null;
  role: Message["role"] | null;
  content: string | null;
  run_id: string | null;
  agent: string | null;
  created_at: Date | null;
}

const messageDtoFromRow = (m: PageRow, conversationId: string): MessageDto => ({
  id: m.id as string,
  conversationId,
  role: m.role as Message["role"],
  content: m.content as string,
  runId: m.run_id,
  agent: m.agent,
  createdAt: (m.created_at as Date).toISOString(),
});

// The conversation row (caller's only) left-joined to the page of its
// messages: no row means 404, one row of nulls an empty page. The messages
// part is the keyset range on messages_conversation_created_idx (the row
// comparison is an index bound, see the conversation list); it reads at most
// limit + 1 index entries. Two statements, not one with "$3 is null or …":
// a generic plan of that could not use the cursor as an index bound.
const PAGE_COLUMNS = `m.id, m.role, m.content, m.run_id, m.agent, m.created_at`;
const PAGE_SQL = (afterCursor: boolean) => `select ${PAGE_COLUMNS}
from "conversations" c left join lateral (
  select "id", "role", "content", "run_id", "agent", "created_at" from "messages"
  where "conversation_id" = $1 and "user_id" = $2${afterCursor ? ` and ("created_at", "id") > ($4::timestamptz, $5::uuid)` : ""}
  order by "created_at" asc, "id" asc
  limit $3
) m on true
where c.id = $1 and c.user_id = $2`;
const FIRST_PAGE_SQL = PAGE_SQL(false);
const LATER_PAGE_SQL = PAGE_SQL(true);

/** The message page statement, named unless `prepared` is false (see `statement`). */
export function pageQuery(userId: string, conversationId: string, limit: number, after: { at: Date; id: string } | null, prepared: boolean) {
  const values: unknown[] = after ? [conversationId, userId, limit + 1, after.at.toISOString(), after.id] : [conversationId, userId, limit + 1];
  const text = after ? LATER_PAGE_SQL : FIRST_PAGE_SQL;
  return statement(after ? "messages_page_after" : "messages_page", text, values, prepared);
}

export interface MessageStoreOptions {
  /** Queued runs beyond which new messages are refused. */
  maxQueueDepth: number;
  /** Named prepared statements on the hot reads. Default true; false behind a transaction-mode pooler. */
  prepared?: boolean;
  /** Where a run may start at once on this instance (localStart.ts); without it every run goes through the queue. */
  localStarts?: LocalStarts;
}

export function createMessageStore(pool: Pool, opts: MessageStoreOptions) {
  return {
    async post(userId: string, conversationId: string, content: string, agent: string | undefined): Promise<PostResult> {
      const here = opts.localStarts?.reserve(agent) ?? null;
      const values = [conversationId, userId, content, agent ?? null, opts.maxQueueDepth, here?.deferMs ?? 0];
      let row: { depth: number; message: Json | null; run: Json | null; job_id: string | null } | undefined;
      try {
        // Named: planning this CTE with add_job costs about as much as running it.
        const r = await pool.query<NonNullable<typeof row>>(statement("messages_post", POST_MESSAGE_SQL, values, opts.prepared ?? true));
        row = r.rows[0];
      } catch (err) {
        // Whether it was committed is unknown: if it was, its job falls due after the deferral.
        here?.release();
        throw err;
      }
      if (row?.message && row.run) {
        const run = runFromJson(row.run);
        if (here && row.job_id) here.start(run.id, row.job_id, content);
        else here?.release();
        return { message: toMessageDto(messageFromJson(row.message)), run: toRunDto(run) };
      }
      here?.release();
      return row && row.depth >= opts.maxQueueDepth ? "overloaded" : "not_found";
    },

    /**
     * Oldest first, or null when the conversation is not the caller's: the
     * ownership check and the page are one statement (see {@link pageQuery}).
     */
    async page(userId: string, conversationId: string, limit: number, cursor: string | undefined): Promise<Page<MessageDto> | null> {
      const after = cursor ? decodeCursor(cursor) : null;
      const r = await pool.query<PageRow>(pageQuery(userId, conversationId, limit, after, opts.prepared ?? true));
      // No row: no such conversation of the caller's. One row of nulls: no message (on this page).
      if (r.rows.length === 0) return null;
      const rows = r.rows[0]?.id === null ? [] : r.rows;
      const more = rows.length > limit;
      const n = more ? limit : rows.length;
      const items = new Array<MessageDto>(n);
      for (let i = 0; i < n; i++) items[i] = messageDtoFromRow(rows[i] as PageRow, conversationId);
      const last = rows[n - 1];
      return { items, nextCursor: more && last ? encodeCursor(last.created_at as Date, last.id as string) : null };
    },
  };
}

export type MessageStore = ReturnType<typeof createMessageStore>;

/**
 * The store as every way in that posts a message uses it (the message POST,
 * the WebSocket `send`, A2A): the configured queue depth limit, and named
 * statements unless behind a transaction-mode pooler.
 */
export const messageStoreFor = (config: Config, pool: Pool, localStarts?: LocalStarts): MessageStore =>
  createMessageStore(pool, { maxQueueDepth: config.agents.maxQueueDepth, prepared: !config.database.transactionPooler, ...(localStarts ? { localStarts } : {}) });

import { and, asc, eq, sql } from "drizzle-orm";
import { messages, type Message, type Run } from "../../shared/schema.js";
import type { MessageDto, Page, RunDto } from "../../shared/api.js";
import type { Db } from "./db.js";
import type { Pool } from "../db/pool.js";
import { decodeCursor, encodeCursor } from "./cursor.js";
import { toRunDto } from "./runs.js";
import { addRunJobExpr } from "../queue/enqueue.js";

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
 * the caller's or the queue is full.
 */
export const POST_MESSAGE_SQL = `
with depth as (
  select count(*)::int as n from (select 1 from runs where status = 'queued' limit $5) q
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
  select ${addRunJobExpr("r.id")} as job from r
)
select (select n from depth) as depth, (select row_to_json(m) from m) as message,
  (select row_to_json(r) from r) as run, (select count(*) from j)::int as jobs`;

export type PostResult = { message: MessageDto; run: RunDto } | "not_found" | "overloaded";

/** `maxQueueDepth`: queued runs beyond which new messages are refused. */
export function createMessageStore(db: Db, pool: Pool, opts: { maxQueueDepth: number }) {
  return {
    async post(userId: string, conversationId: string, content: string, agent: string | undefined): Promise<PostResult> {
      const r = await pool.query<{ depth: number; message: Json | null; run: Json | null }>(POST_MESSAGE_SQL, [
        conversationId,
        userId,
        content,
        agent ?? null,
        opts.maxQueueDepth,
      ]);
      const row = r.rows[0];
      if (row?.message && row.run) return { message: toMessageDto(messageFromJson(row.message)), run: toRunDto(runFromJson(row.run)) };
      return row && row.depth >= opts.maxQueueDepth ? "overloaded" : "not_found";
    },

    /** Oldest first. The caller must have checked the conversation is theirs. */
    async list(userId: string, conversationId: string, limit: number, cursor: string | undefined): Promise<Page<MessageDto>> {
      const after = cursor ? decodeCursor(cursor) : null;
      const rows = await db
        .select()
        .from(messages)
        .where(
          and(
            eq(messages.conversationId, conversationId),
            eq(messages.userId, userId),
            // A row comparison: an index range (see the conversation list).
            after ? sql`(${messages.createdAt}, ${messages.id}) > (${after.at.toISOString()}::timestamptz, ${after.id}::uuid)` : undefined,
          ),
        )
        .orderBy(asc(messages.createdAt), asc(messages.id))
        .limit(limit + 1);
      const more = rows.length > limit;
      const items = rows.slice(0, limit);
      const last = items.at(-1);
      return { items: items.map(toMessageDto), nextCursor: more && last ? encodeCursor(last.createdAt, last.id) : null };
    },
  };
}

export type MessageStore = ReturnType<typeof createMessageStore>;

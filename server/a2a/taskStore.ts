/**
 * The SDK's TaskStore on PostgreSQL: a task IS a run (table `runs`), read
 * with its user message and its reply or the text streamed so far, scoped to
 * the caller; another user's run is "not found". Nothing is written here:
 * runs, messages and run_events are written by the chat's own path (post
 * message, the queue), so `save` only keeps the SDK's working copy of a task
 * for the one request that is following it (see `pinTask`), never across
 * requests or instances.
 */
import type { ListTasksRequest, ListTasksResponse, Task } from "@a2a-js/sdk";
import type { ServerCallContext, TaskStore } from "@a2a-js/sdk/server";
import type { Pool } from "../db/pool.js";
import { isUuid } from "../auth/session.js";
import type { RunStatus } from "../../shared/schema.js";
import { callerOf } from "./auth.js";
import { stateOf, taskOf, type RunSnapshot } from "./mapping.js";

/**
 * One statement, one snapshot: the run, its user message, its reply, and the
 * text deltas of its current attempt (after the last reset) up to last_seq,
 * so a stream may continue from `last_seq` with nothing missed or repeated.
 */
const SNAPSHOT_SQL = `
select r.id, r.conversation_id, r.status, r.attempt, r.last_seq, r.agent, r.route_reason,
  r.error_code, r.error_message, r.prompt_tokens, r.completion_tokens,
  r.cancel_requested_at is not null as cancel_requested, r.updated_at,
  um.id as user_message_id, um.content as user_content,
  am.id as answer_id, am.content as answer_content,
  case when am.id is null then (
    select coalesce(string_agg(e.data->>'text', '' order by e.seq), '') from run_events e
    where e.run_id = r.id and e.type = 'text.delta' and e.seq <= r.last_seq
      and e.seq > coalesce((select max(x.seq) from run_events x where x.run_id = r.id and x.type = 'reset' and x.seq <= r.last_seq), 0)
  ) else '' end as partial
from runs r
join messages um on um.id = r.message_id
left join messages am on am.run_id = r.id and am.role = 'assistant'
where r.id = any($1::uuid[]) and r.user_id = $2`;

interface SnapshotRow {
  id: string;
  conversation_id: string;
  status: RunStatus;
  attempt: number;
  last_seq: number;
  agent: string | null;
  route_reason: string | null;
  error_code: string | null;
  error_message: string | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  cancel_requested: boolean;
  updated_at: Date;
  user_message_id: string;
  user_content: string;
  answer_id: string | null;
  answer_content: string | null;
  partial: string;
}

const toSnapshot = (r: SnapshotRow): RunSnapshot => ({
  runId: r.id,
  conversationId: r.conversation_id,
  status: r.status,
  attempt: r.attempt,
  lastSeq: r.last_seq,
  userMessage: { id: r.user_message_id, content: r.user_content },
  answer: r.answer_id !== null ? { id: r.answer_id, content: r.answer_content ?? "" } : null,
  partial: r.partial,
  agent: r.agent,
  routeReason: r.route_reason,
  errorCode: r.error_code,
  errorMessage: r.error_message,
  usage: r.prompt_tokens !== null || r.completion_tokens !== null ? { promptTokens: r.prompt_tokens ?? 0, completionTokens: r.completion_tokens ?? 0 } : null,
  cancelRequested: r.cancel_requested,
  updatedAt: r.updated_at.toISOString(),
});

/** The caller's runs by id, as snapshots (missing or not theirs: absent). */
export async function readSnapshots(pool: Pool, userId: string, runIds: string[]): Promise<RunSnapshot[]> {
  const ids = runIds.filter(isUuid).map((id) => id.toLowerCase());
  if (ids.length === 0) return [];
  const r = await pool.query<SnapshotRow>(SNAPSHOT_SQL, [ids, userId]);
  return r.rows.map(toSnapshot);
}

export async function readSnapshot(pool: Pool, userId: string, runId: string): Promise<RunSnapshot | null> {
  return (await readSnapshots(pool, userId, [runId]))[0] ?? null;
}

/** The reply a `done` event names, if it is the caller's. */
export async function readAnswer(pool: Pool, userId: string, runId: string, messageId: string): Promise<string | null> {
  if (!isUuid(messageId)) return null;
  const r = await pool.query<{ content: string }>("select content from messages where id = $1 and run_id = $2 and user_id = $3", [messageId, runId, userId]);
  return r.rows[0]?.content ?? null;
}

/** ListTasks looks at the caller's newest runs only, this many. */
const LIST_WINDOW = 1000;

const PINNED = "esa.a2a.pinnedTasks";

function pins(context: ServerCallContext): Map<string, Task> | undefined {
  return context.state.get(PINNED) as Map<string, Task> | undefined;
}

/**
 * Within this request, the SDK's view of `task` is the one the executor
 * publishes and the SDK's own merges of its updates: the database snapshot
 * was read once, at the seq the stream continues from. Reading it again per
 * event would cost a query per text chunk and, worse, could show text the
 * stream is about to send as chunks (the client would see it twice).
 */
export function pinTask(context: ServerCallContext, task: Task): void {
  let map = pins(context);
  if (!map) context.state.set(PINNED, (map = new Map()));
  map.set(task.id, structuredClone(task));
}

export function createRunTaskStore(pool: Pool): TaskStore {
  return {
    async load(taskId, context) {
      const pinned = pins(context)?.get(taskId);
      if (pinned) return structuredClone(pinned);
      const snap = await readSnapshot(pool, callerOf(context).userId, taskId);
      return snap ? taskOf(snap) : undefined;
    },

    async save(task, context) {
      const map = pins(context);
      if (map?.has(task.id)) map.set(task.id, structuredClone(task));
    },

    async list(params: ListTasksRequest, context: ServerCallContext): Promise<ListTasksResponse> {
      const userId = callerOf(context).userId;
      const pageSize = params.pageSize ?? 50;
      const offset = /^\d{1,9}$/.test(params.pageToken) ? Number(params.pageToken) : 0;
      const where: string[] = ["user_id = $1"];
      const args: unknown[] = [userId];
      if (params.contextId) {
        if (!isUuid(params.contextId)) return { tasks: [], nextPageToken: "", pageSize, totalSize: 0 };
        args.push(params.contextId.toLowerCase());
        where.push(`conversation_id = $${args.length}`);
      }
      const ids = await pool.query<{ id: string; status: RunStatus; attempt: number }>(
        `select id, status, attempt from runs where ${where.join(" and ")}
         order by created_at desc, id desc limit ${LIST_WINDOW}`,
        args,
      );
      // The state filter needs the mapping (queued after an attempt is WORKING): applied here.
      const matching = ids.rows.filter((r) => !params.status || stateOf(r.status, r.attempt) === params.status);
      const page = matching.slice(offset, offset + pageSize);
      const snaps = await readSnapshots(pool, userId, page.map((r) => r.id));
      const byId = new Map(snaps.map((s) => [s.runId, s]));
      const tasks = page.flatMap((r) => {
        const s = byId.get(r.id);
        if (!s) return [];
        const t = taskOf(s);
        if (!params.includeArtifacts) t.artifacts = [];
        return [t];
      });
      const next = offset + pageSize < matching.length ? String(offset + pageSize) : "";
      return { tasks, nextPageToken: next, pageSize, totalSize: matching.length };
    },
  };
}

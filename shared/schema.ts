/**
 * The database tables (Drizzle). drizzle-kit generates `migrations/` from this
 * file; a landed migration is never edited.
 */
import { sql } from "drizzle-orm";
import {
  pgTable,
  uuid,
  text,
  timestamp,
  integer,
  jsonb,
  bigint,
  primaryKey,
  index,
  uniqueIndex,
  check,
} from "drizzle-orm/pg-core";

const createdAt = () => timestamp("created_at", { withTimezone: true, precision: 3 }).notNull().defaultNow();

/** Anonymous identities behind the signed session cookie. */
export const users = pgTable("users", {
  id: uuid("id").primaryKey().default(sql`gen_random_uuid()`),
  createdAt: createdAt(),
  lastSeenAt: timestamp("last_seen_at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
});

export const conversations = pgTable(
  "conversations",
  {
    id: uuid("id").primaryKey().default(sql`gen_random_uuid()`),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    title: text("title").notNull().default("New conversation"),
    createdAt: createdAt(),
    updatedAt: timestamp("updated_at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
  },
  // Ascending on purpose: the list's `order by updated_at desc, id desc` is a
  // backward scan of it. A `.desc()` column is DESC NULLS LAST in drizzle-kit,
  // which cannot serve that ORDER BY (DESC means NULLS FIRST): a sort every time.
  (t) => [index("conversations_user_updated_idx").on(t.userId, t.updatedAt, t.id)],
);

export const RUN_STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"] as const;

/**
 * SQL for "the run is open" (queued or running): runs_open_idx's predicate.
 * A query for open runs says it in these words, or the planner cannot use
 * that index (it does not reason from the check that ties it to the status).
 */
export const OPEN_RUN_SQL = "finished_at is null";
export type RunStatus = (typeof RUN_STATUSES)[number];

export const runs = pgTable(
  "runs",
  {
    id: uuid("id").primaryKey().default(sql`gen_random_uuid()`),
    /** The conversation's owner (no foreign key of its own: see {@link messages}.userId). */
    userId: uuid("user_id").notNull(),
    conversationId: uuid("conversation_id")
      .notNull()
      .references(() => conversations.id, { onDelete: "cascade" }),
    /** The user message this run answers. */
    messageId: uuid("message_id").notNull(),
    /** Requested agent (null: the orchestrator routes). */
    requestedAgent: text("requested_agent"),
    agent: text("agent"),
    routeReason: text("route_reason"),
    status: text("status", { enum: RUN_STATUSES }).notNull().default("queued"),
    /** Attempts started, interruptions included. */
    attempt: integer("attempt").notNull().default(0),
    /** Attempts that failed (provider errors, timeouts); interruptions do not count. */
    failures: integer("failures").notNull().default(0),
    errorCode: text("error_code"),
    errorMessage: text("error_message"),
    promptTokens: integer("prompt_tokens"),
    completionTokens: integer("completion_tokens"),
    instanceId: text("instance_id"),
    /** The last `run_events.seq` handed out for this run. */
    lastSeq: integer("last_seq").notNull().default(0),
    cancelRequestedAt: timestamp("cancel_requested_at", { withTimezone: true, precision: 3 }),
    createdAt: createdAt(),
    startedAt: timestamp("started_at", { withTimezone: true, precision: 3 }),
    finishedAt: timestamp("finished_at", { withTimezone: true, precision: 3 }),
    updatedAt: timestamp("updated_at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
  },
  (t) => [
    index("runs_conversation_idx").on(t.conversationId, t.createdAt),
    index("runs_user_idx").on(t.userId, t.createdAt),
    // Open runs only (queued or running: finished_at is null, which the check
    // below ties to the status). Keyed on neither status nor anything the claim
    // sets, so a claim is a HOT update that writes no index entry; a finished
    // run leaves this index, which stays the size of the queue.
    index("runs_open_idx").on(t.createdAt).where(sql.raw(OPEN_RUN_SQL)),
    check("runs_finished_iff_over", sql`(${t.status} in ('queued', 'running')) = (${t.finishedAt} is null)`),
  ],
);

export const MESSAGE_ROLES = ["user", "assistant"] as const;

export const messages = pgTable(
  "messages",
  {
    id: uuid("id").primaryKey().default(sql`gen_random_uuid()`),
    conversationId: uuid("conversation_id")
      .notNull()
      .references(() => conversations.id, { onDelete: "cascade" }),
    /**
     * The conversation's owner, copied from it when the row is written. No
     * foreign key to users: the conversation's already ties the row to its
     * owner (deleting a user deletes their conversations, and these with
     * them), and a second one made every insert lock the user's row too, the
     * one row all of a user's concurrent writes share.
     */
    userId: uuid("user_id").notNull(),
    role: text("role", { enum: MESSAGE_ROLES }).notNull(),
    content: text("content").notNull(),
    /** Set on assistant messages: exactly one per run. */
    runId: uuid("run_id").references(() => runs.id, { onDelete: "cascade" }),
    agent: text("agent"),
    createdAt: createdAt(),
  },
  (t) => [
    index("messages_conversation_created_idx").on(t.conversationId, t.createdAt, t.id),
    // Assistant messages only: exactly one per run.
    uniqueIndex("messages_run_id_unique").on(t.runId).where(sql`run_id is not null`),
  ],
);

/** The durable stream log: every event of every run, in order. */
export const runEvents = pgTable(
  "run_events",
  {
    runId: uuid("run_id")
      .notNull()
      .references(() => runs.id, { onDelete: "cascade" }),
    seq: integer("seq").notNull(),
    attempt: integer("attempt").notNull(),
    type: text("type").notNull(),
    data: jsonb("data").notNull().default({}),
    createdAt: createdAt(),
  },
  (t) => [primaryKey({ columns: [t.runId, t.seq] })],
);

/** Liveness of every instance; a silent one is recovered by the others. */
export const instances = pgTable("instances", {
  id: text("id").primaryKey(),
  startedAt: timestamp("started_at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
  heartbeatAt: timestamp("heartbeat_at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
  version: text("version").notNull(),
  /** Set when another instance declared it dead and released its jobs. */
  deadAt: timestamp("dead_at", { withTimezone: true, precision: 3 }),
  pid: bigint("pid", { mode: "number" }),
  /** graphile-worker pool ids whose job locks this instance holds; released when it is declared dead. */
  workerIds: text("worker_ids").array().notNull().default(sql`'{}'::text[]`),
});

/**
 * The shared LLM request budget: one row per provider request in the window,
 * across all instances (openai.rateLimit). Old rows are pruned as it goes.
 */
export const llmRequests = pgTable(
  "llm_requests",
  {
    id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
    at: timestamp("at", { withTimezone: true, precision: 3 }).notNull().defaultNow(),
    runId: uuid("run_id"),
  },
  (t) => [index("llm_requests_at_idx").on(t.at)],
);

export type User = typeof users.$inferSelect;
export type Conversation = typeof conversations.$inferSelect;
export type Message = typeof messages.$inferSelect;
export type Run = typeof runs.$inferSelect;
export type RunEvent = typeof runEvents.$inferSelect;
export type Instance = typeof instances.$inferSelect;

/**
 * Request and response schemas of the HTTP API (zod). Shared by the server,
 * which validates with them, and the client, which types its calls with them.
 * Request bodies are strict: unknown fields are rejected.
 */
import { z } from "zod";
import { RUN_STATUSES } from "./schema.js";

/** The agents a message may name. The agents issue replaces this with the registry. */
export const AGENT_NAMES = ["math", "hello", "assistant"] as const;
export type AgentName = (typeof AGENT_NAMES)[number];

export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 100;
export const MAX_TITLE_LENGTH = 200;

/** PostgreSQL `text` cannot hold U+0000: refused as input rather than failing the insert with a 500. */
const hasNoNul = (s: string) => !s.includes("\u0000");

const title = z
  .string()
  .trim()
  .min(1, "title must not be empty")
  .max(MAX_TITLE_LENGTH, `title must be at most ${MAX_TITLE_LENGTH} characters`)
  .refine(hasNoNul, "title must not contain NUL characters");

export const CreateConversationBody = z.strictObject({ title: title.optional() });
export const UpdateConversationBody = z.strictObject({ title });

/** Message content bounds are configurable (MAX_MESSAGE_LENGTH), so the schema is built per server. */
export function createMessageBody(maxLength: number, agents: readonly string[] = AGENT_NAMES) {
  return z.strictObject({
    content: z
      .string({ error: "content must be a string" })
      .min(1, "content must not be empty")
      .max(maxLength, `content must be at most ${maxLength} characters`)
      .refine((s) => s.trim().length > 0, "content must not be blank")
      .refine(hasNoNul, "content must not contain NUL characters"),
    agent: z
      .string()
      .refine((a) => agents.includes(a), { message: `agent must be one of: ${agents.join(", ")}` })
      .optional(),
  });
}

export const PageQuery = z.strictObject({
  limit: z.coerce
    .number({ error: "limit must be a number" })
    .int("limit must be a whole number")
    .min(1, "limit must be at least 1")
    .max(MAX_PAGE_SIZE, `limit must be at most ${MAX_PAGE_SIZE}`)
    .default(DEFAULT_PAGE_SIZE),
  cursor: z.string().max(200).optional(),
});

export interface SessionResponse {
  userId: string;
}

export interface ConversationDto {
  id: string;
  title: string;
  createdAt: string;
  updatedAt: string;
}

export interface MessageDto {
  id: string;
  conversationId: string;
  role: "user" | "assistant";
  content: string;
  runId: string | null;
  agent: string | null;
  createdAt: string;
}

export type RunStatusDto = (typeof RUN_STATUSES)[number];

export interface RunDto {
  id: string;
  conversationId: string;
  messageId: string;
  status: RunStatusDto;
  requestedAgent: string | null;
  agent: string | null;
  routeReason: string | null;
  attempt: number;
  failures: number;
  error: { code: string; message: string } | null;
  usage: { promptTokens: number; completionTokens: number } | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

export interface Page<T> {
  items: T[];
  /** Pass as `cursor` for the next page; null on the last. */
  nextCursor: string | null;
}

export interface PostMessageResponse {
  message: MessageDto;
  run: RunDto;
}

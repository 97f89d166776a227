/**
 * The stream protocol: run events as stored in `run_events` and sent over
 * WebSocket (`/ws`) and Server-Sent Events (`GET /api/runs/:id/events`), and
 * the client's messages. One zod discriminated union per direction.
 *
 * Resume: a client remembers the last `seq` it has shown per run and sends it
 * as `after` when it subscribes again; the server replays exactly the events
 * after it and then goes live, never sending a `seq` twice on one
 * subscription. A `reset {attempt}` event means the run started over: drop the
 * text shown for earlier attempts.
 *
 * Sending a message: `send {requestId, conversationId, content, agent?}` does
 * what POST /api/conversations/:id/messages does (same checks, same 202 body)
 * and subscribes the connection to the new run from seq 0 in the same step,
 * so the run's first events are live on the socket however soon they come.
 * The answer is `sent {requestId, message, run}`, which precedes every event
 * frame of that run, or an `error` carrying the `requestId`; nothing is stored
 * on an error. Each `send` counts against the API rate limit as the POST
 * would. A socket that closes before either arrives leaves the outcome
 * unknown: the client reloads the conversation rather than sending again.
 */
import { z } from "zod";
import type { MessageDto, RunDto } from "./api.js";

/** The WebSocket endpoint on the main port. */
export const WS_PATH = "/ws";

/** Event payloads by type (the `data` column of run_events). */
export const RunEventData = {
  status: z.object({
    status: z.enum(["queued", "running", "waiting", "retrying"]),
    until: z.string().optional(),
    attempt: z.number().optional(),
    of: z.number().optional(),
    reason: z.string().optional(),
  }),
  route: z.object({ agent: z.string(), reason: z.string() }),
  reset: z.object({ attempt: z.number() }),
  "text.delta": z.object({ text: z.string() }),
  "tool.call": z.object({ id: z.string(), name: z.string(), args: z.unknown() }),
  "tool.result": z.object({ id: z.string(), name: z.string(), result: z.unknown(), error: z.string().optional() }),
  usage: z.object({ promptTokens: z.number(), completionTokens: z.number() }),
  done: z.object({ messageId: z.string() }),
  failed: z.object({ code: z.string(), message: z.string() }),
  cancelled: z.object({}),
} as const;

export type RunEventType = keyof typeof RunEventData;
export const RUN_EVENT_TYPES = Object.keys(RunEventData) as RunEventType[];
export const RunEventTypeSchema = z.enum(RUN_EVENT_TYPES as [RunEventType, ...RunEventType[]]);
/** After one of these nothing more is written for the run; the server ends the subscription. */
export const TERMINAL_EVENT_TYPES: ReadonlySet<RunEventType> = new Set(["done", "failed", "cancelled"]);
export const isTerminalEvent = (t: string): boolean => TERMINAL_EVENT_TYPES.has(t as RunEventType);

export type RunEventPayload<T extends RunEventType = RunEventType> = z.infer<(typeof RunEventData)[T]>;

/** Run statuses as `subscribed` reports them. */
export const RUN_STATUS_VALUES = ["queued", "running", "succeeded", "failed", "cancelled"] as const;

/** A run id: a UUID, compared lower-cased. */
const RunId = z.string().uuid();
const Seq = z.number().int().min(0).max(2 ** 31 - 1);
/** Chosen by the client for a `send`, echoed in its answer. */
export const MAX_REQUEST_ID_LENGTH = 64;
const RequestId = z.string().min(1).max(MAX_REQUEST_ID_LENGTH);

// ---------------------------------------------------------------- client → server

export const ClientMessage = z.discriminatedUnion("type", [
  /** Start (or restart) the run's stream with the events after `after` (0: from the start). */
  z.strictObject({ type: z.literal("subscribe"), runId: RunId, after: Seq.default(0) }),
  z.strictObject({ type: z.literal("unsubscribe"), runId: RunId }),
  /** Same as POST /api/runs/:id/cancel; the outcome arrives as a `cancelled` event. */
  z.strictObject({ type: z.literal("cancel"), runId: RunId }),
  /**
   * Store a message and start its run, as POST /api/conversations/:id/messages,
   * and subscribe to that run from seq 0. `content` and `agent` are checked by
   * the server with the POST's own rules (createMessageBody), and a
   * `conversationId` that is not a UUID names nothing (not_found), as in the
   * POST's path: so both are loose here.
   */
  z.strictObject({
    type: z.literal("send"),
    requestId: RequestId,
    conversationId: z.string(),
    content: z.unknown().optional(),
    agent: z.unknown().optional(),
  }),
]);
export type ClientMessage = z.infer<typeof ClientMessage>;

// ---------------------------------------------------------------- server → client

/** The `code` of an `error` frame. */
export const REALTIME_ERROR_CODES = [
  /** Not JSON, not an object, unknown `type` or bad fields. */
  "bad_request",
  /** No such run, or not the caller's. */
  "not_found",
  /**
   * Too many messages on this connection (the message was dropped), or a
   * `send` past the API rate limit, which counts a client's sends and HTTP
   * requests together (nothing was stored; the message says when to retry).
   */
  "rate_limited",
  /** The connection has as many subscriptions as it may hold. */
  "too_many_subscriptions",
  /** A `send` refused because too many runs are waiting (the POST's 503); retry in a few seconds. */
  "overloaded",
  "internal",
] as const;
export type RealtimeErrorCode = (typeof REALTIME_ERROR_CODES)[number];

export const EventFrame = z.strictObject({
  type: z.literal("event"),
  runId: RunId,
  /** Per run, increasing, assigned by the database. */
  seq: Seq,
  attempt: z.number().int(),
  event: RunEventTypeSchema,
  data: z.unknown(),
});
export type EventFrame = z.infer<typeof EventFrame>;

/** The POST's 202 body parts (shared/api.ts), built by the same code; only their shape is checked here. */
const isDto = (v: unknown) => typeof v === "object" && v !== null && typeof (v as { id?: unknown }).id === "string";

export const ServerMessage = z.discriminatedUnion("type", [
  EventFrame,
  /** A `send` stored its message and started its run; the run's events follow on this socket, from seq 1. */
  z.strictObject({ type: z.literal("sent"), requestId: RequestId, message: z.custom<MessageDto>(isDto), run: z.custom<RunDto>(isDto) }),
  /** The subscription is registered; events after `after` follow. `lastSeq` is the run's last seq when it was checked. */
  z.strictObject({ type: z.literal("subscribed"), runId: RunId, after: Seq, lastSeq: Seq, status: z.enum(RUN_STATUS_VALUES) }),
  /** The subscription ended: asked for, or the run reached a terminal event (`reason: "finished"`). */
  z.strictObject({ type: z.literal("unsubscribed"), runId: RunId, reason: z.enum(["requested", "finished"]) }),
  /** `runId`: the run a subscribe, unsubscribe or cancel named. `requestId`: the `send` it answers (nothing was stored). */
  z.strictObject({ type: z.literal("error"), code: z.enum(REALTIME_ERROR_CODES), message: z.string(), runId: RunId.optional(), requestId: RequestId.optional() }),
]);
export type ServerMessage = z.infer<typeof ServerMessage>;

/** Back-compat name for the event frame. */
export type RunEventMessage = EventFrame;

/** WebSocket close codes the server uses (RFC 6455 §7.4.1 and the IANA registry). */
export const CLOSE_CODES = {
  /** Too many malformed or unknown frames. */
  policyViolation: 1008,
  /** A frame above the 64 KB limit. */
  messageTooBig: 1009,
  /** The instance is shutting down: reconnect (to another instance) and resume. */
  serviceRestart: 1012,
  /** The client read too slowly; resume with `after` later. */
  tryAgainLater: 1013,
} as const;

/**
 * Text of a stream, as a client shows it: `text.delta` appended, `reset`
 * dropping what earlier attempts wrote.
 */
export function applyTextEvent(text: string, frame: Pick<EventFrame, "event" | "data">): string {
  switch (frame.event) {
    case "reset":
      return "";
    case "text.delta": {
      const delta = (frame.data as { text?: unknown } | null)?.text;
      return typeof delta === "string" ? text + delta : text;
    }
    case "status":
    case "route":
    case "tool.call":
    case "tool.result":
    case "usage":
    case "done":
    case "failed":
    case "cancelled":
      return text;
    default: {
      const unreachable: never = frame.event;
      throw new Error(`unknown event type ${String(unreachable)}`);
    }
  }
}

/**
 * The stream protocol: run events as stored in `run_events` and sent over
 * WebSocket and SSE, and the client's messages. One zod discriminated union
 * per direction.
 */
import { z } from "zod";

/** Event payloads by type (the `data` column of run_events). */
export const RunEventData = {
  status: z.object({ status: z.enum(["queued", "running", "waiting", "retrying"]), until: z.string().optional(), attempt: z.number().optional(), of: z.number().optional(), reason: z.string().optional() }),
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
export const TERMINAL_EVENT_TYPES: ReadonlySet<RunEventType> = new Set(["done", "failed", "cancelled"]);

export type RunEventPayload<T extends RunEventType = RunEventType> = z.infer<(typeof RunEventData)[T]>;

/** A stored event as the server sends it. */
export interface RunEventMessage {
  type: "event";
  runId: string;
  seq: number;
  attempt: number;
  event: RunEventType;
  data: unknown;
}

export const ClientMessage = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("subscribe"), runId: z.string().uuid(), after: z.number().int().min(0).default(0) }),
  z.strictObject({ type: z.literal("unsubscribe"), runId: z.string().uuid() }),
  z.strictObject({ type: z.literal("cancel"), runId: z.string().uuid() }),
]);
export type ClientMessage = z.infer<typeof ClientMessage>;

export type ServerMessage = RunEventMessage | { type: "error"; code: string; message: string; runId?: string };

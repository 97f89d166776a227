/** Streaming helpers shared by the offline agents. */
import type { AgentEvent } from "./types.js";

/**
 * Yields `text` as one `text.delta` per word (each with the whitespace that
 * follows it), so offline answers stream like a model's. Stops with the
 * signal's reason when it fires.
 */
export function* streamWords(text: string, signal: AbortSignal): Generator<AgentEvent> {
  const lead = /^\s+/.exec(text)?.[0];
  if (lead) yield { type: "text.delta", text: lead };
  for (const word of text.match(/\S+\s*/g) ?? []) {
    signal.throwIfAborted();
    yield { type: "text.delta", text: word };
  }
}

/**
 * A run's events after a seq, as A2A updates, through the process's run hub
 * (realtime/hub.ts, runStream.ts): the same replay-then-live path as the
 * WebSocket and SSE streams, so a run executing on any instance streams here.
 * Ends after the terminal event, when `signal` fires, or with an error when
 * the log cannot be read.
 */
import type { AgentExecutionEvent } from "@a2a-js/sdk/server";
import type { Pool } from "../db/pool.js";
import type { RunHub, StoredEvent } from "../realtime/hub.js";
import { openRunStream } from "../realtime/runStream.js";
import { RunEventMapper, type RunEventIn } from "./mapping.js";
import { readAnswer } from "./taskStore.js";

export interface FollowOptions {
  hub: RunHub;
  pool: Pool;
  userId: string;
  runId: string;
  contextId: string;
  /** The snapshot's last seq: events after it follow. */
  after: number;
  /** The run was finished at the snapshot. */
  finished: boolean;
  /** The snapshot shows text of the current attempt (the next chunk appends). */
  hasText: boolean;
  signal: AbortSignal;
}

function parse(e: StoredEvent): RunEventIn {
  const frame = JSON.parse(e.frame) as { data?: unknown };
  const data = frame.data && typeof frame.data === "object" ? (frame.data as Record<string, unknown>) : {};
  return { seq: e.seq, attempt: e.attempt, type: e.type, data };
}

export async function* followRun(opts: FollowOptions): AsyncGenerator<AgentExecutionEvent, void, undefined> {
  const mapper = new RunEventMapper(opts.runId, opts.contextId, opts.hasText, (messageId) => readAnswer(opts.pool, opts.userId, opts.runId, messageId));
  const queue: StoredEvent[] = [];
  let ended = false;
  let failure: unknown = null;
  let wake: (() => void) | null = null;
  const poke = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  const stream = openRunStream({
    hub: opts.hub,
    runId: opts.runId,
    after: opts.after,
    knownSeq: opts.after,
    finishedAtCheck: opts.finished,
    sink: {
      send(event) {
        queue.push(event);
        poke();
        return true;
      },
      finished() {
        ended = true;
        poke();
      },
      failed(err) {
        failure = err;
        ended = true;
        poke();
      },
    },
  });
  opts.signal.addEventListener("abort", poke, { once: true });
  try {
    for (;;) {
      while (queue.length > 0) {
        const next = queue.shift() as StoredEvent;
        for (const ev of await mapper.map(parse(next))) yield ev;
      }
      if (failure) throw failure instanceof Error ? failure : new Error(String(failure));
      if (ended || opts.signal.aborted) return;
      await new Promise<void>((r) => (wake = r));
    }
  } finally {
    opts.signal.removeEventListener("abort", poke);
    stream.close();
  }
}

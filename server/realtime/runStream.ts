/**
 * One subscriber's view of one run, the same for WebSocket and SSE: register
 * for live events first, then replay `seq > after` from `run_events`, then go
 * live; every seq is sent once and in order. Live events that arrive during
 * the replay wait in a buffer; a gap in the live seqs (which the database's
 * ordering should never produce) is filled by another replay rather than
 * trusted.
 */
import { isTerminalEvent } from "../../shared/realtime.js";
import type { RunHub, StoredEvent } from "./hub.js";

/** Events per replay query. */
export const REPLAY_PAGE = 500;

export interface RunStreamSink {
  /**
   * Sends one event. `live`: it came from the live feed (its delivery time
   * means something). Returns false when the transport gave up (a slow or
   * closed client): the stream then stops.
   */
  send(event: StoredEvent, live: boolean): boolean;
  /** The terminal event was sent, or the run had already finished before `after`. */
  finished(): void;
  /** Reading the log failed; the stream is closed. */
  failed(err: unknown): void;
}

export interface RunStreamOptions {
  hub: RunHub;
  runId: string;
  /** The last seq the client has; 0 for everything. */
  after: number;
  /** runs.last_seq as read when the caller's ownership was checked. */
  knownSeq: number;
  /** The run had reached a terminal status when it was checked: everything it will ever write is stored. */
  finishedAtCheck: boolean;
  /** The replay's first page (events after `after`, at most REPLAY_PAGE), when the caller read it already. */
  firstPage?: StoredEvent[];
  sink: RunStreamSink;
  /** Test hook: called after each replay page is sent, before the stream looks at live events. */
  afterReplayPage?: () => Promise<void>;
}

export interface RunStream {
  /** The last seq sent. */
  readonly sent: number;
  close(): void;
}

export function openRunStream(opts: RunStreamOptions): RunStream {
  const { hub, runId, sink } = opts;
  let sent = opts.after;
  let replaying = true;
  let closed = false;
  let pending: StoredEvent[] = [];
  let firstPage = opts.firstPage;

  const close = () => {
    if (closed) return;
    closed = true;
    pending = [];
    unsubscribe();
  };

  /** Sends `event` if it is the next one; false when the stream must stop. */
  function emit(event: StoredEvent, live: boolean): "sent" | "skipped" | "gap" | "stop" {
    if (event.seq <= sent) return "skipped";
    if (event.seq > sent + 1) return "gap";
    sent = event.seq;
    if (!sink.send(event, live)) {
      close();
      return "stop";
    }
    if (isTerminalEvent(event.type)) {
      close();
      sink.finished();
      return "stop";
    }
    return "sent";
  }

  async function replay() {
    try {
      for (;;) {
        // Awaited even when given: the sink is never called before openRunStream returns.
        const page = await (firstPage ?? hub.read(runId, sent, REPLAY_PAGE));
        firstPage = undefined;
        if (closed) return;
        for (const event of page) {
          const r = emit(event, false);
          if (r === "stop") return;
          // The log has no holes; a page always continues from `sent`.
          if (r === "gap") throw new Error(`run ${runId}: replay expected seq ${sent + 1}, read ${event.seq}`);
        }
        if (opts.afterReplayPage) await opts.afterReplayPage();
        if (closed) return;
        if (page.length < REPLAY_PAGE) break;
      }
      if (opts.finishedAtCheck && sent >= opts.knownSeq) {
        // Finished before `after`: the terminal event is not coming again.
        close();
        sink.finished();
        return;
      }
      // Live from here on: what arrived meanwhile, in order. No await between
      // here and `replaying = false`, so nothing slips in between.
      const buffered = pending.sort((a, b) => a.seq - b.seq);
      pending = [];
      replaying = false;
      for (let i = 0; i < buffered.length; i++) {
        const r = emit(buffered[i] as StoredEvent, true);
        if (r === "stop") return;
        if (r === "gap") {
          replaying = true;
          pending.push(...buffered.slice(i));
          return await replay();
        }
      }
    } catch (err) {
      if (closed) return;
      close();
      sink.failed(err);
    }
  }

  /** A live seq beyond the next one: read the missing ones from the log first. */
  function startReplay(first: StoredEvent) {
    replaying = true;
    pending.push(first);
    void replay();
  }

  const unsubscribe = hub.subscribe(runId, opts.knownSeq, {
    deliver(event) {
      if (closed) return;
      if (replaying) {
        pending.push(event);
        return;
      }
      if (emit(event, true) === "gap") startReplay(event);
    },
  });
  void replay();

  return {
    get sent() {
      return sent;
    },
    close,
  };
}

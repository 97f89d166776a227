/**
 * Commands from the bench to the WebSocket client child (wsClients.ts) over
 * the IPC channel, and its replies. Sockets live in named groups (one per
 * server under test), so several servers' sockets can stay open while only
 * one group is subscribed.
 */

export type ClientCommand =
  /** Opens `count` sockets to `url` (with `cookie`), `concurrency` handshakes at a time. */
  | { cmd: "connect"; group: string; url: string; cookie?: string; count: number; concurrency: number }
  /** Every socket of the group sends `subscribe {runId, after}` and waits for `subscribed`. */
  | { cmd: "subscribe"; group: string; runId: string; after: number; concurrency: number }
  /** Every socket sends `unsubscribe {runId}` and waits for `unsubscribed`. */
  | { cmd: "unsubscribe"; group: string; runId: string }
  /** Starts (clearing what was kept) or stops keeping `event` frames: seq, receive time, `sentAt` if any. */
  | { cmd: "record"; group: string; on: boolean }
  /**
   * Latencies of the kept frames: receive time − `stored` time of their seq
   * (frames of other seqs ignored), or − the frame's own `sentAt` for seqs ≥
   * `fromSeq`.
   */
  | { cmd: "summary"; group: string; stored?: [seq: number, at: number][]; fromSeq?: number }
  | { cmd: "close"; group: string }
  /** Frames kept so far (while recording). */
  | { cmd: "frames"; group: string };

export type Request = ClientCommand & { id: number };

export interface LatencySummary {
  sockets: number;
  events: number;
  /** Frames expected (sockets × events) and received among them. */
  expected: number;
  received: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  /** Per event, the first and the last socket to get it: the fan-out spread. */
  firstSocketP50: number;
  lastSocketP50: number;
  lastSocketP99: number;
  /** Sockets of the group the server closed meanwhile, by close code. */
  closes: Record<string, number>;
}

export type Reply =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: string };

/**
 * The WebSocket clients of the issue 6 rows, in their own process (bundled by
 * esbuild, run under plain node, pinned to the load core), so the cost of
 * reading 1,000 sockets never lands on the server's core or the bench's loop.
 * Driven over IPC (protocol.ts).
 *
 * A received frame is stamped first (wallClock.ts), before anything else is
 * done with it, and only `seq` (and a baseline's `sentAt`) is read out of it,
 * with no JSON parse: the client's own cost per frame stays as small as it can.
 */
import WebSocket from "ws";
import { calibrateWallClock, wallNow } from "../issue5/wallClock.js";
import type { ClientCommand, LatencySummary, Reply, Request } from "./protocol.js";

interface Group {
  sockets: WebSocket[];
  /** Waiters for a control frame per socket (subscribed / unsubscribed / error). */
  waiting: Map<WebSocket, (frame: string) => void>;
  recording: boolean;
  n: number;
  seqs: Float64Array;
  times: Float64Array;
  sentAts: Float64Array;
  closes: Record<string, number>;
}

const groups = new Map<string, Group>();

const SEQ = Buffer.from('"seq":');
const SENT_AT = Buffer.from('"sentAt":');
const EVENT_PREFIX = Buffer.from('{"type":"event"');

/** The number right after `key` in the frame, or NaN. */
function numberAfter(buf: Buffer, key: Buffer): number {
  const i = buf.indexOf(key);
  if (i === -1) return Number.NaN;
  let j = i + key.length;
  const start = j;
  for (; j < buf.length; j++) {
    const c = buf[j] as number;
    // digits, '.', '-', 'e', '+'
    if (!((c >= 48 && c <= 57) || c === 46 || c === 45 || c === 101 || c === 43)) break;
  }
  return Number(buf.toString("latin1", start, j));
}

function group(name: string): Group {
  let g = groups.get(name);
  if (!g) {
    const cap = 1 << 16;
    g = { sockets: [], waiting: new Map(), recording: false, n: 0, seqs: new Float64Array(cap), times: new Float64Array(cap), sentAts: new Float64Array(cap), closes: {} };
    groups.set(name, g);
  }
  return g;
}

function keep(g: Group, seq: number, t: number, sentAt: number) {
  if (g.n === g.seqs.length) {
    const grow = (a: Float64Array) => {
      const b = new Float64Array(a.length * 2);
      b.set(a);
      return b;
    };
    g.seqs = grow(g.seqs);
    g.times = grow(g.times);
    g.sentAts = grow(g.sentAts);
  }
  g.seqs[g.n] = seq;
  g.times[g.n] = t;
  g.sentAts[g.n] = sentAt;
  g.n++;
}

function openSocket(g: Group, url: string, cookie: string | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, headers: cookie ? { cookie } : {} });
    ws.binaryType = "nodebuffer";
    let open = false;
    ws.on("message", (data: Buffer) => {
      const t = wallNow();
      if (data.length > EVENT_PREFIX.length && data.compare(EVENT_PREFIX, 0, EVENT_PREFIX.length, 0, EVENT_PREFIX.length) === 0) {
        if (g.recording) keep(g, numberAfter(data, SEQ), t, numberAfter(data, SENT_AT));
        return;
      }
      const waiter = g.waiting.get(ws);
      if (waiter) {
        g.waiting.delete(ws);
        waiter(data.toString("utf8"));
      }
    });
    ws.on("unexpected-response", (_req, res) => {
      reject(new Error(`upgrade refused: ${res.statusCode ?? 0}`));
      ws.terminate();
    });
    ws.on("error", (err) => {
      if (!open) reject(err);
    });
    ws.on("open", () => {
      open = true;
      g.sockets.push(ws);
      resolve();
    });
    ws.on("close", (code) => {
      if (!open) return;
      g.closes[String(code)] = (g.closes[String(code)] ?? 0) + 1;
      const i = g.sockets.indexOf(ws);
      if (i !== -1) g.sockets.splice(i, 1);
    });
  });
}

/** Runs `fn` over `items`, `limit` at a time. */
async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Sends `msg` on a socket and waits for its next control frame; it must start with `expect`. */
function exchange(g: Group, ws: WebSocket, msg: unknown, expect: string, timeoutMs = 15_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      g.waiting.delete(ws);
      reject(new Error(`no ${expect} within ${timeoutMs} ms`));
    }, timeoutMs);
    g.waiting.set(ws, (frame) => {
      clearTimeout(timer);
      if (frame.startsWith(expect)) resolve();
      else reject(new Error(`expected ${expect}, got ${frame.slice(0, 200)}`));
    });
    ws.send(JSON.stringify(msg));
  });
}

function quantileSorted(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  const a = sorted[lo] as number;
  const b = sorted[hi] as number;
  return a + (b - a) * (pos - lo);
}

const r3 = (n: number) => Math.round(n * 1000) / 1000;

function summary(g: Group, stored: [number, number][] | undefined, fromSeq: number | undefined): LatencySummary {
  const ref = new Map<number, number>(stored ?? []);
  const lat = new Float64Array(g.n);
  const first = new Map<number, number>();
  const last = new Map<number, number>();
  let m = 0;
  for (let i = 0; i < g.n; i++) {
    const seq = g.seqs[i] as number;
    let base: number | undefined;
    if (stored) base = ref.get(seq);
    else if (fromSeq !== undefined && seq >= fromSeq) base = g.sentAts[i];
    if (base === undefined || !Number.isFinite(base)) continue;
    const d = (g.times[i] as number) - base;
    lat[m++] = d;
    first.set(seq, Math.min(first.get(seq) ?? Infinity, d));
    last.set(seq, Math.max(last.get(seq) ?? -Infinity, d));
  }
  const sorted = lat.subarray(0, m).sort();
  const firsts = Float64Array.from(first.values()).sort();
  const lasts = Float64Array.from(last.values()).sort();
  const events = stored ? ref.size : first.size;
  return {
    sockets: g.sockets.length,
    events,
    expected: events * g.sockets.length,
    received: m,
    p50: r3(quantileSorted(sorted, 0.5)),
    p90: r3(quantileSorted(sorted, 0.9)),
    p99: r3(quantileSorted(sorted, 0.99)),
    p999: r3(quantileSorted(sorted, 0.999)),
    max: r3(quantileSorted(sorted, 1)),
    firstSocketP50: r3(quantileSorted(firsts, 0.5)),
    lastSocketP50: r3(quantileSorted(lasts, 0.5)),
    lastSocketP99: r3(quantileSorted(lasts, 0.99)),
    closes: { ...g.closes },
  };
}

async function handle(c: ClientCommand): Promise<unknown> {
  const g = group(c.group);
  switch (c.cmd) {
    case "connect": {
      const t0 = performance.now();
      await pool(Array.from({ length: c.count }, (_, i) => i), c.concurrency, () => openSocket(g, c.url, c.cookie));
      return { sockets: g.sockets.length, ms: Math.round(performance.now() - t0) };
    }
    case "subscribe": {
      const t0 = performance.now();
      await pool([...g.sockets], c.concurrency, (ws) => exchange(g, ws, { type: "subscribe", runId: c.runId, after: c.after }, '{"type":"subscribed"'));
      return { ms: Math.round(performance.now() - t0) };
    }
    case "unsubscribe":
      await pool([...g.sockets], 200, (ws) => exchange(g, ws, { type: "unsubscribe", runId: c.runId }, '{"type":"unsubscribed"'));
      return {};
    case "record":
      if (c.on) {
        calibrateWallClock();
        g.n = 0;
      }
      g.recording = c.on;
      return { frames: g.n };
    case "summary":
      return summary(g, c.stored, c.fromSeq);
    case "frames":
      return { frames: g.n };
    case "close": {
      const sockets = g.sockets.splice(0);
      await Promise.all(
        sockets.map(
          (ws) =>
            new Promise<void>((resolve) => {
              const timer = setTimeout(() => {
                ws.terminate();
                resolve();
              }, 5000);
              ws.once("close", () => {
                clearTimeout(timer);
                resolve();
              });
              ws.close();
            }),
        ),
      );
      groups.delete(c.group);
      return { closed: sockets.length };
    }
    default: {
      const unreachable: never = c;
      throw new Error(`unknown command ${JSON.stringify(unreachable)}`);
    }
  }
}

const reply = (r: Reply) => process.send?.(r);

process.on("message", (msg: Request) => {
  handle(msg).then(
    (result) => reply({ id: msg.id, ok: true, result }),
    (err: unknown) => reply({ id: msg.id, ok: false, error: err instanceof Error ? err.message : String(err) }),
  );
});
// The bench went away: so do we.
process.on("disconnect", () => process.exit(0));
process.on("SIGTERM", () => process.exit(0));

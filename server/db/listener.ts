import pg from "pg";
import type { Logger } from "../ops/logger.js";
import { clientConfigFromUrl } from "./pool.js";
import { sleep } from "../ops/releasers.js";

export type NotificationHandler = (payload: string) => void;

/**
 * One LISTEN connection per process, shared by every channel. It reconnects
 * with backoff when the connection dies (database restart, pg_terminate_backend);
 * `onReconnect` lets users catch up on what they may have missed meanwhile.
 */
export function createListener(opts: { url: string; log: Logger; onError?: () => void }) {
  const handlers = new Map<string, Set<NotificationHandler>>();
  const reconnectHooks = new Set<() => void>();
  let client: pg.Client | null = null;
  let stopped = false;
  let connected = false;
  let loop: Promise<void> | null = null;
  /** Cuts a reconnect backoff short when stop() is called. */
  const stopping = new AbortController();

  async function connectOnce(): Promise<void> {
    // A bounded connect: an unreachable host must not hold up a reconnect loop or stop().
    const c = new pg.Client({ ...clientConfigFromUrl(opts.url), application_name: "esa-agents-listen", keepAlive: true, connectionTimeoutMillis: 10_000 });
    const lost = new Promise<void>((resolve) => {
      c.on("error", (err) => {
        opts.log.warn({ err }, "LISTEN connection failed");
        resolve();
      });
      c.on("end", () => resolve());
    });
    c.on("notification", (n) => {
      const set = handlers.get(n.channel);
      if (!set) return;
      for (const h of set) {
        try {
          h(n.payload ?? "");
        } catch (err) {
          opts.log.error({ err, channel: n.channel }, "notification handler failed");
        }
      }
    });
    await c.connect();
    for (const ch of handlers.keys()) await c.query(`listen ${pg.escapeIdentifier(ch)}`);
    client = c;
    connected = true;
    // stop() while connecting found no client to end: end it here.
    if (stopped) void c.end().catch(() => undefined);
    else for (const hook of reconnectHooks) hook();
    await lost;
    connected = false;
    client = null;
    await c.end().catch(() => undefined);
  }

  async function run() {
    let delay = 100;
    while (!stopped) {
      try {
        await connectOnce();
        delay = 100;
      } catch (err) {
        opts.log.warn({ err, retryInMs: delay }, "LISTEN connection could not be made; retrying");
        opts.onError?.();
      }
      if (stopped) break;
      await sleep(delay, stopping.signal);
      delay = Math.min(delay * 2, 5000);
    }
  }

  return {
    start() {
      loop ??= run();
    },
    get connected() {
      return connected;
    },
    async on(channel: string, handler: NotificationHandler) {
      let set = handlers.get(channel);
      if (!set) {
        set = new Set();
        handlers.set(channel, set);
        if (client) await client.query(`listen ${pg.escapeIdentifier(channel)}`).catch(() => undefined);
      }
      set.add(handler);
      return () => set.delete(handler);
    },
    /** Called after every (re)connect: catch up by reading the tables. */
    onReconnect(hook: () => void) {
      reconnectHooks.add(hook);
      return () => reconnectHooks.delete(hook);
    },
    /** Ends the connection (tests use it to simulate a lost LISTEN connection). */
    async dropConnection() {
      await client?.end().catch(() => undefined);
    },
    async stop() {
      stopped = true;
      stopping.abort();
      await client?.end().catch(() => undefined);
      await loop;
    },
  };
}

export type Listener = ReturnType<typeof createListener>;

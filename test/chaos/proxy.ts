/**
 * A small round-robin TCP load balancer on loopback for the chaos run: each
 * client connection goes to the next backend whose `/ready` said 200 at the
 * last health check (every `checkEveryMs`), like a load balancer that stops
 * routing to a draining instance. When no backend is ready (the database is
 * restarting) it falls back to any registered backend, so requests still
 * reach an instance and get its answer. A refused connection moves on to the
 * next backend. Bytes are piped as is, so WebSocket upgrades work.
 */
import { createServer, connect, type Server, type Socket } from "node:net";
import type { AddressInfo } from "node:net";

export interface Backend {
  port: number;
  /** Set by the health check. */
  ready: boolean;
}

export interface Proxy {
  port: number;
  url: string;
  add(port: number): void;
  remove(port: number): void;
  backends(): readonly Backend[];
  /** Client connections accepted so far. */
  readonly accepted: number;
  close(): Promise<void>;
}

async function isReady(port: number, timeoutMs: number): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/ready`, { signal: AbortSignal.timeout(timeoutMs), headers: { connection: "close" } });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

export async function startProxy(opts: { checkEveryMs?: number } = {}): Promise<Proxy> {
  const checkEveryMs = opts.checkEveryMs ?? 200;
  const backends: Backend[] = [];
  const sockets = new Set<Socket>();
  let next = 0;
  let accepted = 0;

  /** Backends in the order to try: ready ones round-robin, then the others. */
  function candidates(): Backend[] {
    const n = backends.length;
    if (n === 0) return [];
    const start = next++ % n;
    const rotated = [...backends.slice(start), ...backends.slice(0, start)];
    return [...rotated.filter((b) => b.ready), ...rotated.filter((b) => !b.ready)];
  }

  function pipeTo(client: Socket, tries: Backend[]) {
    const b = tries.shift();
    if (!b) {
      client.destroy();
      return;
    }
    const upstream = connect({ host: "127.0.0.1", port: b.port });
    sockets.add(upstream);
    let connected = false;
    upstream.once("connect", () => {
      connected = true;
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
    upstream.on("error", () => {
      if (!connected) return; // handled by close below
      client.destroy();
    });
    upstream.once("close", () => {
      sockets.delete(upstream);
      if (!connected && !client.destroyed) pipeTo(client, tries);
      else client.destroy();
    });
    client.once("close", () => upstream.destroy());
  }

  const server: Server = createServer({ pauseOnConnect: true }, (client) => {
    accepted++;
    sockets.add(client);
    client.on("error", () => undefined);
    client.once("close", () => sockets.delete(client));
    client.setNoDelay(true);
    pipeTo(client, candidates());
  });

  let checking = false;
  const timer = setInterval(() => {
    if (checking) return;
    checking = true;
    void Promise.all(
      backends.map(async (b) => {
        b.ready = await isReady(b.port, Math.max(500, checkEveryMs * 4));
      }),
    ).finally(() => (checking = false));
  }, checkEveryMs);
  timer.unref();

  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    add(p) {
      if (!backends.some((b) => b.port === p)) backends.push({ port: p, ready: true });
    },
    remove(p) {
      const i = backends.findIndex((b) => b.port === p);
      if (i !== -1) backends.splice(i, 1);
    },
    backends: () => backends,
    get accepted() {
      return accepted;
    },
    close: () =>
      new Promise<void>((resolve) => {
        clearInterval(timer);
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

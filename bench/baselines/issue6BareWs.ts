/**
 * Baseline of issue 6: a bare `ws` server on 127.0.0.1:$PORT, set up like the
 * app's (noServer behind node:http's `upgrade`, permessage-deflate off, 64 KB
 * max payload, no client tracking), nothing else: no authentication, no
 * database. A socket that sends `subscribe` gets `subscribed` and from then on
 * every broadcast; `unsubscribe` stops it.
 *
 * `GET /broadcast?count=N&intervalMs=20` sends N frames, one every interval:
 * each is an event frame of the app's shape (`text.delta`, 32 characters)
 * plus `sentAt`, the wall-clock time (wallClock.ts) taken before the first
 * socket is written, made into bytes once and sent to every subscribed socket
 * in turn, as the app does. It answers when the last one is out.
 * `GET /` answers 200 (the readiness probe).
 */
import { createServer } from "node:http";
import { WebSocketServer, type WebSocket } from "ws";
import { calibrateWallClock, wallNow } from "../rows/issue5/wallClock.js";

const port = Number(process.env.PORT);
const RUN_ID = "00000000-0000-4000-8000-000000000006";
const TEXT = "abcdefghijklmnopqrstuvwxyz012345";

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 64 * 1024, clientTracking: false });
const subscribed = new Set<WebSocket>();

function onConnection(ws: WebSocket) {
  ws.on("error", () => undefined);
  ws.on("close", () => subscribed.delete(ws));
  ws.on("message", (data: Buffer) => {
    let msg: { type?: string; runId?: string; after?: number };
    try {
      msg = JSON.parse(data.toString("utf8")) as typeof msg;
    } catch {
      ws.send(JSON.stringify({ type: "error", code: "bad_request", message: "Frame is not valid JSON" }));
      return;
    }
    const runId = msg.runId ?? RUN_ID;
    if (msg.type === "subscribe") {
      subscribed.add(ws);
      ws.send(JSON.stringify({ type: "subscribed", runId, after: msg.after ?? 0, lastSeq: 0, status: "running" }));
    } else if (msg.type === "unsubscribe") {
      subscribed.delete(ws);
      ws.send(JSON.stringify({ type: "unsubscribed", runId, reason: "requested" }));
    }
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

async function broadcast(count: number, intervalMs: number): Promise<{ sent: number; sockets: number; lateTicks: number }> {
  calibrateWallClock();
  const t0 = performance.now();
  let late = 0;
  for (let seq = 1; seq <= count; seq++) {
    const due = t0 + (seq - 1) * intervalMs;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    else if (seq > 1) late++;
    const sentAt = wallNow();
    const frame = Buffer.from(
      `{"type":"event","runId":"${RUN_ID}","seq":${seq},"attempt":1,"event":"text.delta","data":{"text":"${TEXT}"},"sentAt":${sentAt}}`,
    );
    for (const ws of subscribed) ws.send(frame, { binary: false });
  }
  return { sent: count, sockets: subscribed.size, lateTicks: late };
}

const server = createServer((req, res) => {
  const url = new URL(req.url ?? "/", "http://127.0.0.1");
  if (url.pathname === "/broadcast") {
    const count = Number(url.searchParams.get("count") ?? 0);
    const intervalMs = Number(url.searchParams.get("intervalMs") ?? 20);
    broadcast(count, intervalMs).then(
      (r) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(r)),
      (err: unknown) => res.writeHead(500).end(String(err)),
    );
    return;
  }
  res.writeHead(200, { "content-type": "text/plain" }).end("ok");
});
server.on("upgrade", (req, socket, head) => {
  socket.on("error", () => undefined);
  wss.handleUpgrade(req, socket, head, onConnection);
});
server.listen(port, "127.0.0.1");
process.on("SIGTERM", () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
});

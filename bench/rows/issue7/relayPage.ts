/**
 * The first-token baseline: the shortest honest path from a streaming
 * provider to a painted token, with nothing of the app in it. Bare node:http
 * and ws in their own process: it reads the provider's SSE stream
 * (`<providerUrl>`, `data: <text>` lines, as the app reads the fake's) and
 * forwards each line as one WebSocket text frame to every page; the page
 * (served at `/`) appends it to `#out` as text. No database, no framework, no
 * React. Run by tsx from firstToken.ts: `tsx relayPage.ts <providerUrl>`;
 * prints `listening <port>`.
 */
import { createServer, get } from "node:http";
import { WebSocketServer, type WebSocket } from "ws";

const providerUrl = process.argv[2];
if (!providerUrl) {
  console.error("usage: tsx relayPage.ts <providerUrl>");
  process.exit(2);
}

const PAGE = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>relay</title></head>
<body><main><h1>relay</h1><div id="out"></div></main><script>
const ws = new WebSocket("ws://" + location.host + "/ws");
ws.onopen = () => { document.body.dataset.ws = "open"; };
ws.onmessage = (e) => { const p = document.createElement("p"); p.textContent = e.data; document.getElementById("out").appendChild(p); };
</script></body></html>`;

const clients = new Set<WebSocket>();
const server = createServer((req, res) => {
  if ((req.url ?? "/") === "/") res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" }).end(PAGE);
  else res.writeHead(404).end();
});
const wss = new WebSocketServer({ server, path: "/ws", perMessageDeflate: false });
wss.on("connection", (ws) => {
  clients.add(ws);
  ws.on("close", () => clients.delete(ws));
  ws.on("error", () => clients.delete(ws));
});

get(providerUrl, (res) => {
  res.setEncoding("utf8");
  let buf = "";
  res.on("data", (chunk: string) => {
    buf += chunk;
    let end: number;
    while ((end = buf.indexOf("\n\n")) !== -1) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const data = event.startsWith("data: ") ? event.slice(6) : null;
      if (data !== null) for (const ws of clients) ws.send(data);
    }
  });
}).on("error", (err) => {
  console.error(`relay: provider stream failed: ${err.message}`);
  process.exit(1);
});

server.listen(0, "127.0.0.1", () => {
  const addr = server.address();
  process.stdout.write(`listening ${typeof addr === "object" && addr ? addr.port : 0}\n`);
});
process.on("SIGTERM", () => {
  for (const ws of clients) ws.terminate();
  server.close(() => process.exit(0));
  server.closeAllConnections();
});

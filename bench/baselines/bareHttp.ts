/**
 * Baseline: a bare `node:http` server on 127.0.0.1:$PORT answering every GET
 * with the same JSON shape and headers as the real `/live` probe
 * (server/ops/health.ts). Nothing else: no framework, no logging.
 */
import { createServer } from "node:http";

const port = Number(process.env.PORT);

const server = createServer((_req, res) => {
  const text = JSON.stringify({ alive: true, timestamp: new Date().toISOString(), pid: process.pid, uptime: process.uptime() });
  res.writeHead(200, {
    "content-type": "application/json; charset=utf-8",
    "cache-control": "no-store",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
});
server.listen(port, "127.0.0.1");
process.on("SIGTERM", () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
});

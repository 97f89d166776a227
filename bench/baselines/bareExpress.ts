/**
 * Baseline: bare Express 5 (defaults, no middleware) on 127.0.0.1:$PORT with
 * one route, `GET $ROUTE` (default /api/meta), answering $BODY (JSON) the way
 * the real route does: `res.type("application/json").send(body)`.
 */
import express from "express";

const port = Number(process.env.PORT);
const route = process.env.ROUTE ?? "/api/meta";
const body = process.env.BODY ?? "{}";

const app = express();
app.get(route, (_req, res) => {
  res.type("application/json").send(body);
});
const server = app.listen(port, "127.0.0.1");
process.on("SIGTERM", () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
});

/**
 * Baseline for issue 3: bare Express 5 with a `pg` pool (20 connections, the
 * server's default MAX_CONNECTIONS) on $DATABASE_URL, 127.0.0.1:$PORT. Each
 * route sends the one statement the real route sends and answers its rows, with
 * nothing around it: no identity, CSRF, validation, rate limit, helmet,
 * compression or logging.
 *
 * - `POST /api/conversations/:id/messages` (express.json()): the server's own
 *   message statement (`POST_MESSAGE_SQL`: queue-depth check, message, run and
 *   job in one statement) for user $USER_ID with $MAX_QUEUE_DEPTH; answers 202
 *   with the statement's `row_to_json` message and run as they come.
 * - `POST /insert/:id`: a plain one-row `insert into messages … returning *`
 *   (context: what the run and job add to the statement).
 * - `GET /api/conversations/:id/messages?limit=n`: the list select the server
 *   sends (same columns, filter, order and limit + 1), mapped to the same JSON
 *   the server answers ({items, nextCursor}; nextCursor only matters past the
 *   page, which the bench never reaches).
 * - `GET /probe`: 200 once the database answers.
 */
import express from "express";
import pg from "pg";
import { POST_MESSAGE_SQL } from "../../server/data/messages.js";

const port = Number(process.env.PORT);
const userId = process.env.USER_ID ?? "";
const maxQueueDepth = Number(process.env.MAX_QUEUE_DEPTH ?? "500");
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 20 });
pool.on("error", () => undefined);

const LIST_SQL =
  'select "id", "conversation_id", "user_id", "role", "content", "run_id", "agent", "created_at" from "messages" ' +
  'where ("messages"."conversation_id" = $1 and "messages"."user_id" = $2) ' +
  'order by "messages"."created_at" asc, "messages"."id" asc limit $3';

interface MessageRow {
  id: string;
  conversation_id: string;
  user_id: string;
  role: string;
  content: string;
  run_id: string | null;
  agent: string | null;
  created_at: Date;
}

const app = express();

app.get("/probe", async (_req, res) => {
  await pool.query("select 1");
  res.json({ ok: true });
});

app.post("/api/conversations/:id/messages", express.json(), async (req, res) => {
  const { content, agent } = req.body as { content: string; agent?: string };
  // $6: the job due now (deferred only for a run that starts where posted, which needs a queue).
  const r = await pool.query<{ message: unknown; run: unknown }>(POST_MESSAGE_SQL, [req.params.id, userId, content, agent ?? null, maxQueueDepth, 0]);
  const row = r.rows[0];
  if (!row?.message) {
    res.status(404).json({ error: { code: "not_found", message: "no message written" } });
    return;
  }
  res.status(202).json({ message: row.message, run: row.run });
});

app.post("/insert/:id", express.json(), async (req, res) => {
  const { content } = req.body as { content: string };
  const r = await pool.query("insert into messages (conversation_id, user_id, role, content) values ($1, $2, 'user', $3) returning *", [
    req.params.id,
    userId,
    content,
  ]);
  res.status(202).json({ message: r.rows[0] });
});

app.get("/api/conversations/:id/messages", async (req, res) => {
  const limit = Number(req.query.limit ?? 20);
  const r = await pool.query<MessageRow>(LIST_SQL, [req.params.id, userId, limit + 1]);
  const items = r.rows.slice(0, limit).map((m) => ({
    id: m.id,
    conversationId: m.conversation_id,
    role: m.role,
    content: m.content,
    runId: m.run_id,
    agent: m.agent,
    createdAt: m.created_at.toISOString(),
  }));
  res.json({ items, nextCursor: r.rows.length > limit ? "more" : null });
});

const server = app.listen(port, "127.0.0.1");
process.on("SIGTERM", () => {
  server.close();
  server.closeAllConnections();
  void pool.end().finally(() => process.exit(0));
});

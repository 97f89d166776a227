import { Router, type Request } from "express";
import type { Config } from "../../config.js";
import { CreateConversationBody, UpdateConversationBody, PageQuery, createMessageBody, AGENT_NAMES } from "../../../shared/api.js";
import type { SessionResponse } from "../../../shared/api.js";
import { callerOf } from "../../auth/middleware.js";
import { isUuid } from "../../auth/session.js";
import { AppError, notFound } from "../errors.js";
import { parseInput } from "../validate.js";
import { toConversationDto, type ConversationStore } from "../../data/conversations.js";
import { OVERLOADED_RETRY_AFTER_S, type MessageStore } from "../../data/messages.js";
import { toRunDto, type RunStore } from "../../data/runs.js";

export interface ChatRouteDeps {
  config: Config;
  conversations: ConversationStore;
  messages: MessageStore;
  runs: RunStore;
  /** Agent names a message may ask for. */
  agentNames?: readonly string[];
  /** Requests a run's cancel; false when the run is not the caller's. */
  cancelRun(userId: string, runId: string): Promise<boolean>;
}

/** A path id that is not a UUID names nothing: 404, never a database error. */
function idParam(req: Request, name = "id"): string {
  const v = req.params[name];
  if (typeof v !== "string" || !isUuid(v)) throw notFound();
  return v.toLowerCase();
}

/**
 * Session, conversations, messages and runs. Mounted behind `authenticate`
 * and the CSRF guard; every store call is scoped to the caller.
 */
export function createChatRouter(deps: ChatRouteDeps): Router {
  const { conversations, messages, runs } = deps;
  const MessageBody = createMessageBody(deps.config.security.maxMessageLength, deps.agentNames ?? AGENT_NAMES);
  const r = Router();

  r.get("/session", (req, res) => {
    const body: SessionResponse = { userId: callerOf(req).id };
    res.json(body);
  });

  r.post("/conversations", async (req, res) => {
    const body = parseInput(CreateConversationBody, req.body, "body");
    const c = await conversations.create(callerOf(req).id, body.title);
    res.status(201).json(toConversationDto(c));
  });

  r.get("/conversations", async (req, res) => {
    const q = parseInput(PageQuery, req.query, "query");
    res.json(await conversations.list(callerOf(req).id, q.limit, q.cursor));
  });

  r.get("/conversations/:id", async (req, res) => {
    const c = await conversations.get(callerOf(req).id, idParam(req));
    if (!c) throw notFound("Conversation not found");
    res.json(toConversationDto(c));
  });

  r.patch("/conversations/:id", async (req, res) => {
    const id = idParam(req);
    const body = parseInput(UpdateConversationBody, req.body, "body");
    const c = await conversations.rename(callerOf(req).id, id, body.title);
    if (!c) throw notFound("Conversation not found");
    res.json(toConversationDto(c));
  });

  r.delete("/conversations/:id", async (req, res) => {
    const removed = await conversations.remove(callerOf(req).id, idParam(req));
    if (!removed) throw notFound("Conversation not found");
    res.status(204).end();
  });

  r.get("/conversations/:id/messages", async (req, res) => {
    const id = idParam(req);
    const q = parseInput(PageQuery, req.query, "query");
    const page = await messages.page(callerOf(req).id, id, q.limit, q.cursor);
    if (!page) throw notFound("Conversation not found");
    res.json(page);
  });

  r.post("/conversations/:id/messages", async (req, res) => {
    const id = idParam(req);
    const body = parseInput(MessageBody, req.body, "body");
    const posted = await messages.post(callerOf(req).id, id, body.content, body.agent);
    if (posted === "not_found") throw notFound("Conversation not found");
    if (posted === "overloaded") {
      // The message is written for the user: shown, unlike other 5xx messages.
      throw new AppError("overloaded", 503, "Too many runs are waiting; try again shortly", { expose: true, headers: { "retry-after": String(OVERLOADED_RETRY_AFTER_S) } });
    }
    res.status(202).json(posted);
  });

  r.post("/runs/:id/cancel", async (req, res) => {
    const id = idParam(req);
    const userId = callerOf(req).id;
    if (!(await deps.cancelRun(userId, id))) throw notFound("Run not found");
    const run = await runs.get(userId, id);
    if (!run) throw notFound("Run not found");
    res.json(toRunDto(run));
  });

  r.get("/runs/:id", async (req, res) => {
    const run = await runs.get(callerOf(req).id, idParam(req));
    if (!run) throw notFound("Run not found");
    res.json(toRunDto(run));
  });

  return r;
}

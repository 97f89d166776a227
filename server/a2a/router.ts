/**
 * The A2A surface, mounted at the root (outside /api) by the deferred root
 * router once the database is ready:
 *
 * | path | what |
 * |---|---|
 * | `GET /.well-known/agent-card.json` | the orchestrator's card (public) |
 * | `POST /a2a/jsonrpc`, `/a2a/rest/...` | the orchestrator: JSON-RPC and HTTP+JSON (bearer) |
 * | `GET /a2a/agents/<name>/agent-card.json` (also `…/<name>/.well-known/agent-card.json`) | one agent's card (public) |
 * | `POST /a2a/agents/<name>/jsonrpc`, `/a2a/agents/<name>/rest/...` | that agent (bearer) |
 *
 * Transports, card serving and v0.3 compatibility are the SDK's Express
 * handlers; a request without `A2A-Version` (or with 0.3) is a v0.3 one.
 */
import { Router, type Request, type RequestHandler } from "express";
import { AgentCard } from "@a2a-js/sdk";
import { agentCardHandler, jsonRpcHandler, restHandler } from "@a2a-js/sdk/server/express";
import { legacyAgentCardRouter } from "@a2a-js/sdk/compat/v0_3/server/express";
import type { Config } from "../config.js";
import type { Logger } from "../ops/logger.js";
import type { Pool } from "../db/pool.js";
import type { RunHub } from "../realtime/hub.js";
import type { Identity } from "../auth/identity.js";
import { describeAgent, type AgentRegistry } from "../agents/registry.js";
import { createDb } from "../data/db.js";
import { createConversationStore } from "../data/conversations.js";
import { messageStoreFor, type MessageStore } from "../data/messages.js";
import { badRequest } from "../http/errors.js";
import { a2aUserBuilder, requireBearer } from "./auth.js";
import { ORCHESTRATOR, agentCard, endpointPaths, orchestratorCard } from "./cards.js";
import { RunRequestHandler } from "./requestHandler.js";

export interface A2aDeps {
  config: Config;
  log: Logger;
  pool: Pool;
  hub: RunHub;
  identity: Identity;
  registry: AgentRegistry;
  /** Shared with the message POST and the WebSocket `send` (default: a new one). */
  messages?: MessageStore;
}

/** Cards may be cached this long by clients and proxies, seconds. */
const CARD_MAX_AGE_S = 300;
/** Card handlers kept per public base URL (Host values are the client's: bounded). */
const MAX_CACHED_BASES = 16;

/** `proto://host` of the request as the client addressed it (trust proxy applies). */
function publicBase(req: Request): string {
  const host = req.host;
  if (!host || !/^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/.test(host)) throw badRequest("A valid Host header is required");
  return `${req.protocol}://${host}`;
}

export function createA2aRouter(deps: A2aDeps): Router {
  const { config, pool, hub, identity, registry } = deps;
  const db = createDb(pool);
  const conversations = createConversationStore(db);
  const messages = deps.messages ?? messageStoreFor(config, pool);
  const router = Router();
  const auth = requireBearer(identity);

  const cardOf = (name: string, baseUrl: string) => {
    const opts = { baseUrl, version: config.version };
    if (name === ORCHESTRATOR) return orchestratorCard(registry.listAgents(), opts);
    const agent = registry.get(name);
    if (!agent) throw new Error(`no agent ${name}`);
    return agentCard(describeAgent(agent), opts);
  };

  for (const name of [ORCHESTRATOR, ...registry.names()]) {
    const paths = endpointPaths(name);
    const handler = new RunRequestHandler({
      pool,
      hub,
      messages,
      conversations,
      card: cardOf(name, ""),
      agent: name === ORCHESTRATOR ? null : name,
      maxMessageLength: config.security.maxMessageLength,
    });
    const options = { requestHandler: handler, userBuilder: a2aUserBuilder, legacyCompat: { enabled: true } };
    router.use(paths.jsonrpc, auth, jsonRpcHandler(options));
    router.use(paths.rest, auth, restHandler(options));

    // The card names absolute URLs, so it depends on the request's host.
    const byBase = new Map<string, RequestHandler[]>();
    const serveCard: RequestHandler = (req, res, next) => {
      const base = publicBase(req);
      let handlers = byBase.get(base);
      if (!handlers) {
        if (byBase.size >= MAX_CACHED_BASES) byBase.clear();
        const card = cardOf(name, base);
        handlers = [
          // v0.3 clients (no A2A-Version, or 0.3) get the SDK's v0.3 rendering.
          legacyAgentCardRouter({ agentCardProvider: async () => card, cache: { maxAge: CARD_MAX_AGE_S } }),
          // v1.0: the card in the protocol's JSON form (oneof fields by name).
          // The handler JSON.stringifies what it gets: the ProtoJSON object, not the TS shape.
          agentCardHandler({ agentCardProvider: async () => AgentCard.toJSON(card) as AgentCard, cache: { maxAge: CARD_MAX_AGE_S } }),
        ];
        byBase.set(base, handlers);
      }
      const [legacy, v1] = handlers as [RequestHandler, RequestHandler];
      // Each is a router answering GET "/": hand it the card path as its root.
      const url = req.url;
      req.url = "/";
      const restore = (err?: unknown) => {
        req.url = url;
        next(err);
      };
      void legacy(req, res, (err?: unknown) => {
        if (err && err !== "router") return restore(err);
        void v1(req, res, restore);
      });
    };
    router.get(paths.card, serveCard);
    if (name !== ORCHESTRATOR) router.get(`/a2a/agents/${name}/.well-known/agent-card.json`, serveCard);
  }
  return router;
}

import { Router } from "express";
import type { AgentRegistry } from "./registry.js";

/** GET /api/agents: the agents with `available`, and the reason when not. Public and cheap (no database). */
export function createAgentsRouter(registry: Pick<AgentRegistry, "listAgents">): Router {
  const router = Router();
  router.get("/agents", (_req, res) => {
    res.set("cache-control", "no-store").json({ agents: registry.listAgents() });
  });
  return router;
}

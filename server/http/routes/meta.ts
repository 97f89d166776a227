import { Router } from "express";
import type { AppDeps } from "../../app.js";

/** GET /api/meta: what this server is; public and cheap (no database). */
export function createMetaRouter(deps: Pick<AppDeps, "config">): Router {
  const body = JSON.stringify({
    name: "esa-agents",
    version: deps.config.version,
    features: {
      agents: deps.config.features.agents,
      websockets: deps.config.features.websockets,
      fileUploads: deps.config.features.fileUploads,
    },
  });
  const router = Router();
  router.get("/meta", (_req, res) => {
    res.type("application/json").send(body);
  });
  return router;
}

import type { RequestHandler } from "express";
import type { AppDeps } from "../../app.js";

/**
 * GET /api/meta: what this server is; public and cheap (no database). A
 * handler, not a Router: the app mounts it as one route, so requests for
 * other /api paths do not enter and leave a router of its own.
 */
export function createMetaHandler(deps: Pick<AppDeps, "config">): RequestHandler {
  const body = JSON.stringify({
    name: "esa-agents",
    version: deps.config.version,
    features: {
      agents: deps.config.features.agents,
      websockets: deps.config.features.websockets,
      fileUploads: deps.config.features.fileUploads,
    },
  });
  return (_req, res) => {
    res.type("application/json").send(body);
  };
}

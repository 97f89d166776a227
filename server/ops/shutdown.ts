import type { Server } from "node:http";
import type { Config } from "../config.js";
import type { Logger } from "./logger.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Releasers } from "./releasers.js";
import { sleep } from "./releasers.js";

interface ShutdownDeps {
  config: Config;
  log: Logger;
  lifecycle: Lifecycle;
  releasers: Releasers;
  server: Server;
  exit?: (code: number) => void;
}

/** Time kept back from the deadline for releasing resources after HTTP drains. */
const RELEASE_RESERVE_MS = 1500;

/**
 * DESIGN.md's shutdown order: draining (/ready 503 at once), wait for the load
 * balancer, stop accepting, let in-flight requests finish, release resources
 * last-in-first-out, exit 0, all under a force-exit timer. A second signal
 * exits 1 at once.
 */
export function createShutdown(deps: ShutdownDeps) {
  const { config, log, lifecycle, releasers, server } = deps;
  const exit = deps.exit ?? ((code: number) => process.exit(code));
  let started = false;

  return function shutdown(signal: string) {
    if (started) {
      log.warn({ signal }, "second signal; exiting now");
      log.flush();
      exit(1);
      return;
    }
    started = true;
    const deadline = Date.now() + config.server.shutdownTimeoutMs;
    lifecycle.setPhase("draining");
    log.info({ signal, delayMs: config.server.shutdownDelayMs }, "shutting down");
    const force = setTimeout(() => {
      log.error({ timeoutMs: config.server.shutdownTimeoutMs }, "shutdown timed out; exiting");
      log.flush();
      exit(1);
    }, config.server.shutdownTimeoutMs);
    force.unref();

    void (async () => {
      await sleep(config.server.shutdownDelayMs);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      // In-flight requests finish (their responses carry `connection: close`);
      // sockets still open when the budget runs out are cut.
      const budget = Math.max(0, deadline - Date.now() - RELEASE_RESERVE_MS);
      const timer = setInterval(() => server.closeIdleConnections(), 100);
      // The queue stops fetching and its running runs get until the deadline, alongside HTTP.
      const drained = releasers.drainAll();
      await Promise.race([closed, sleep(budget)]);
      clearInterval(timer);
      server.closeAllConnections();
      await Promise.race([drained, sleep(Math.max(0, deadline - Date.now() - RELEASE_RESERVE_MS))]);
      await releasers.releaseAll();
      lifecycle.setPhase("stopped");
      log.info("shutdown complete");
      log.flush();
      clearTimeout(force);
      exit(0);
    })().catch((err: unknown) => {
      log.error({ err }, "shutdown failed");
      log.flush();
      exit(1);
    });
  };
}

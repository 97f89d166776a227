/**
 * Everything after the port is open: metrics, the app, then the database
 * (embedded when no DATABASE_URL), migrations and the database monitor.
 * Loaded lazily by index.ts. A step that fails for a reason outside the process
 * is retried with backoff while /ready and /health say why.
 */
import path from "node:path";
import { existsSync } from "node:fs";
import type { Server, IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { Config } from "./config.js";
import type { Logger } from "./ops/logger.js";
import type { Lifecycle } from "./ops/lifecycle.js";
import type { Releasers } from "./ops/releasers.js";
import { sleep } from "./ops/releasers.js";
import { createMetrics, type Metrics } from "./ops/metrics.js";
import type { HealthCheck } from "./ops/health.js";
import { startMetricsServer } from "./ops/metricsServer.js";
import { createApp } from "./app.js";
import { createApiRateLimiter } from "./http/middleware/security.js";
import { createStaticHandlers, createDevHandlers, type StaticHandlers } from "./static.js";
import { createDeferredRouter, DB_ROUTE_PREFIXES, A2A_ROUTE_PREFIXES } from "./http/routes/deferred.js";
import { createClientMetricsRouter } from "./http/routes/clientMetrics.js";
import { createAutoscaler } from "./ops/autoscale.js";
import type { EmbeddedPostgres } from "./db/embedded.js";

/** Takes an http `upgrade` (WebSocket) request: answers it or hands it to `ws`. */
export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void | Promise<void>;

export interface BootDeps {
  config: Config;
  log: Logger;
  lifecycle: Lifecycle;
  releasers: Releasers;
  server: Server;
  rootDir: string;
  addCheck(check: HealthCheck): void;
  setMetrics(metrics: Metrics): void;
  setApp(handler: (req: IncomingMessage, res: ServerResponse) => void): void;
  /** Upgrades are refused with 503 until one is set (and the process is ready). */
  setUpgradeHandler(handler: UpgradeHandler): void;
}

/** Retries `fn` with capped exponential backoff until it succeeds or shutdown starts. */
async function retry<T>(
  what: string,
  fn: () => Promise<T>,
  deps: { log: Logger; lifecycle: Lifecycle; component: string },
): Promise<T | undefined> {
  let delay = 250;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (deps.lifecycle.shutdownSignal.aborted) return undefined;
      const message = err instanceof Error ? err.message : String(err);
      deps.lifecycle.setComponent(deps.component, false, `${what}: ${message}`);
      deps.log.warn({ err, attempt, retryInMs: delay }, `${what} failed; retrying`);
      await sleep(delay, deps.lifecycle.shutdownSignal);
      if (deps.lifecycle.shutdownSignal.aborted) return undefined;
      delay = Math.min(delay * 2, 5000);
    }
  }
}

export async function boot(deps: BootDeps): Promise<void> {
  const { config, log, lifecycle, releasers, server, rootDir } = deps;
  const metrics = createMetrics();
  deps.setMetrics(metrics);
  lifecycle.require("database", "database: connecting");
  lifecycle.require("migrations", "migrations: not yet checked");

  // The embedded PostgreSQL takes most of a second to start in its own
  // process: begin at once, while the app below is built.
  const embeddedOptions = {
    dataDir: config.database.embeddedDir ?? path.join(rootDir, ".data", "postgres"),
    port: config.database.embeddedPort,
    log,
  };
  let starting: Promise<EmbeddedPostgres> | undefined = config.database.url
    ? undefined
    : import("./db/embedded.js").then((m) => m.startEmbeddedPostgres(embeddedOptions));
  // Registered before the start completes, and it waits for a start in
  // progress: a signal during initdb or startup must not leave postgres
  // running behind the exited process.
  if (starting) {
    // Its failure is handled by the retry below; until then it must not count as unhandled.
    starting.catch(() => undefined);
    releasers.add("embedded postgres", async () => {
      const started = await starting?.catch(() => undefined);
      await started?.stop();
    });
  }

  // Static bundle: production serves dist/public; dev runs Vite's middleware.
  let staticHandlers: StaticHandlers | undefined;
  if (config.env === "development") {
    staticHandlers = await createDevHandlers(rootDir, server);
    const close = staticHandlers.close;
    if (close) releasers.add("vite", close);
  } else {
    const publicDir = path.join(rootDir, "dist", "public");
    if (existsSync(path.join(publicDir, "index.html"))) {
      staticHandlers = await createStaticHandlers(publicDir, config.features.cacheTtlSeconds);
    } else {
      log.warn({ publicDir }, "no client bundle found; run npm run build");
    }
  }

  if (config.monitoring.metricsEnabled && config.monitoring.metricsPort > 0) {
    releasers.add("metrics listener", startMetricsServer({ config, log, lifecycle, metrics }));
  }

  const autoscaler = createAutoscaler({ config: config.autoscaling, metrics });
  deps.addCheck(autoscaler.healthCheck());
  // Routes that need the database answer 503 until it is connected and migrated.
  const dbRoutes = createDeferredRouter(DB_ROUTE_PREFIXES);
  const rootRoutes = createDeferredRouter(A2A_ROUTE_PREFIXES);
  // One API rate limit for the process: /api requests and WebSocket sends
  // (services.ts) count against the same budget per client.
  const apiRateLimiter = createApiRateLimiter(config);
  const app = createApp({
    config,
    log,
    metrics,
    lifecycle,
    apiRateLimiter,
    // Client metrics need no database; the rest waits for it.
    apiRouters: [createClientMetricsRouter(metrics), dbRoutes.router],
    rootRouters: [rootRoutes.router],
    onResponse: (ms) => autoscaler.recordResponse(ms),
    ...(staticHandlers ? { staticHandlers } : {}),
  });
  deps.setApp(app as unknown as (req: IncomingMessage, res: ServerResponse) => void);

  // The database modules (pg, drizzle) load only now: the app above answers
  // `/` while they do, which keeps the first page well inside Replit's check.
  const [{ createPool }, { runMigrations, pendingMigrations }, { startEmbeddedPostgres }, { monitorDatabase }] = await Promise.all([
    import("./db/pool.js"),
    import("./db/migrate.js"),
    import("./db/embedded.js"),
    import("./db/monitor.js"),
  ]);

  // Database: embedded when no DATABASE_URL (config refuses that in a Replit deployment).
  let url = config.database.url;
  if (!url) {
    let first = starting;
    const embedded = await retry(
      "embedded PostgreSQL start",
      () => {
        // The first attempt is the one begun above; later ones start afresh.
        const attempt = first ?? startEmbeddedPostgres(embeddedOptions);
        first = undefined;
        starting = attempt;
        return attempt;
      },
      { log, lifecycle, component: "database" },
    );
    if (!embedded) return;
    url = embedded.url;
  }

  const pool = createPool(config.database, url, log);
  releasers.add("database pool", () => pool.end());
  deps.addCheck({
    name: "database",
    required: true,
    async run() {
      const started = performance.now();
      await pool.query("select 1");
      return { status: "up", latencyMs: Math.round((performance.now() - started) * 10) / 10, totalConnections: pool.totalCount, idleConnections: pool.idleCount, waiting: pool.waitingCount };
    },
  });

  const ok = await retry("database connection", () => pool.query("select 1"), { log, lifecycle, component: "database" });
  if (!ok) return;
  lifecycle.setComponent("database", true);
  const stopMonitor = monitorDatabase(pool, { lifecycle, log, metrics, intervalMs: 1000 });
  releasers.add("database monitor", stopMonitor);

  // Migrations, LISTEN and the job queue need a session connection: the direct
  // URL when DATABASE_URL is a transaction pooler.
  const directPool = config.database.directUrl
    ? createPool(config.database, config.database.directUrl, log, { max: config.agents.maxConcurrentJobs + 4, applicationName: "esa-agents-direct" })
    : null;
  if (directPool) releasers.add("direct database pool", () => directPool.end());
  const sessionPool = directPool ?? pool;

  const migrationsDir = path.join(rootDir, "migrations");
  if (config.database.migrateOnStart) {
    const done = await retry("migrations", () => runMigrations(sessionPool, migrationsDir, log).then(() => true), {
      log,
      lifecycle,
      component: "migrations",
    });
    if (!done) return;
  } else {
    const checked = await retry(
      "migration check",
      async () => {
        const pending = await pendingMigrations(pool, migrationsDir);
        if (pending) throw new Error(pending);
        return true;
      },
      { log, lifecycle, component: "migrations" },
    );
    if (!checked) return;
  }
  lifecycle.setComponent("migrations", true);
  deps.addCheck({
    name: "migrations",
    required: true,
    run: async () => {
      const s = lifecycle.components().migrations;
      return s?.ok ? { status: "up" } : { status: "down", error: s?.error ?? "not applied" };
    },
  });

  // Loaded only now: agents (mathjs), the queue and the stream server are not needed to answer `/`.
  const { startServices } = await import("./services.js");
  await startServices({ ...deps, metrics, pool, sessionPool, dbRoutes, rootRoutes, autoscaler, apiRateLimiter, databaseUrl: url });

  if (lifecycle.phase === "starting") {
    lifecycle.setPhase("ready");
    log.info({ uptimeMs: Math.round(process.uptime() * 1000) }, "ready");
  }
}

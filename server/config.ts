/**
 * The only reader of `process.env`. Parses the environment into a complete,
 * frozen {@link Config}; a bad value is reported as one line per variable and
 * the process never gets further (see `loadConfigOrExit`).
 *
 * Defaults follow the production config in DESIGN.md.
 */
import { z } from "zod";

export const SECOND = 1000;
export const MINUTE = 60 * SECOND;

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Env strings → booleans; only the usual spellings are accepted. */
const bool = (fallback: boolean) =>
  z
    .enum(["true", "false", "1", "0", "yes", "no", "on", "off"], {
      error: "must be true or false",
    })
    .optional()
    .transform((v) => (v === undefined ? fallback : ["true", "1", "yes", "on"].includes(v)));

/** A whole number within [min, max]; the message names the range. */
const int = (fallback: number, min: number, max = Number.MAX_SAFE_INTEGER) =>
  z
    .string()
    .optional()
    .transform((v, ctx) => {
      if (v === undefined || v === "") return fallback;
      const n = Number(v);
      if (!/^-?\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
        ctx.addIssue({
          code: "custom",
          message:
            max === Number.MAX_SAFE_INTEGER
              ? `must be a whole number >= ${min}`
              : `must be a whole number from ${min} to ${max}`,
        });
        return z.NEVER;
      }
      return n;
    });

const optionalString = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === "" ? undefined : v.trim()));

const postgresUrl = optionalString.refine(
  (v) => v === undefined || /^postgres(ql)?:\/\//.test(v),
  { message: "must be a postgres:// or postgresql:// URL" },
);

const urlList = optionalString.transform((v, ctx) => {
  if (v === undefined) return [] as string[];
  const out: string[] = [];
  for (const raw of v.split(",")) {
    const item = raw.trim();
    if (!item) continue;
    try {
      const u = new URL(item);
      if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("scheme");
      out.push(u.origin);
    } catch {
      ctx.addIssue({ code: "custom", message: `must be a comma-separated list of http(s) origins; "${item}" is not one` });
      return z.NEVER;
    }
  }
  return out;
});

const EnvSchema = z.object({
  NODE_ENV: z.enum(["production", "development", "test"], { error: "must be production, development or test" }).default("development"),
  PORT: int(5000, 0, 65535),
  HOST: z.string().min(1).default("0.0.0.0"),
  TRUST_PROXY: int(1, 0, 32),
  REQUEST_TIMEOUT_MS: int(30 * SECOND, 1000),
  KEEP_ALIVE_TIMEOUT_MS: int(65 * SECOND, 1000),
  BODY_LIMIT_BYTES: int(1024 * 1024, 1024),
  SHUTDOWN_DELAY_MS: int(-1, 0, 5 * MINUTE),
  SHUTDOWN_TIMEOUT_MS: int(10 * SECOND, 500, 10 * MINUTE),
  REPLIT_DEPLOYMENT: optionalString,
  APP_VERSION: optionalString,

  DATABASE_URL: postgresUrl,
  DATABASE_DIRECT_URL: postgresUrl,
  DATABASE_TRANSACTION_POOLER: bool(false),
  MAX_CONNECTIONS: int(20, 1, 1000),
  DB_IDLE_TIMEOUT_MS: int(10 * SECOND, 0),
  DB_CONNECT_TIMEOUT_MS: int(5 * SECOND, 100),
  DB_STATEMENT_TIMEOUT_MS: int(30 * SECOND, 0),
  MIGRATE_ON_START: bool(true),
  EMBEDDED_PG_DIR: optionalString,
  EMBEDDED_PG_PORT: int(54329, 1, 65535),

  ENABLE_AGENTS: bool(true),
  MAX_CONCURRENT_JOBS: int(10, 1, 500),
  JOB_TIMEOUT_MS: int(60 * SECOND, 100),
  RETRY_ATTEMPTS: int(3, 0, 50),
  MAX_QUEUE_DEPTH: int(500, 1),
  HEARTBEAT_MS: int(5 * SECOND, 100),
  RECOVERY_AFTER_MS: int(30 * SECOND, 500),

  OPENAI_API_KEY: optionalString,
  OPENAI_BASE_URL: optionalString.refine((v) => v === undefined || /^https?:\/\//.test(v), {
    message: "must be an http(s) URL",
  }),
  OPENAI_MODEL: z.string().min(1).default("gpt-4o-mini"),
  OPENAI_MAX_TOKENS: int(2000, 1, 1_000_000),
  OPENAI_RATE_LIMIT_MAX: int(100, 1),
  OPENAI_RATE_LIMIT_WINDOW_MS: int(60 * SECOND, 1000),
  ROUTER: z.enum(["rules", "llm"], { error: "must be rules or llm" }).default("rules"),

  AUTOSCALE_MIN_INSTANCES: int(1, 0, 1000),
  AUTOSCALE_MAX_INSTANCES: int(10, 1, 1000),
  AUTOSCALE_TARGET_CPU: int(70, 1, 100),
  AUTOSCALE_TARGET_MEMORY: int(80, 1, 100),
  AUTOSCALE_UP_AFTER_MS: int(60 * SECOND, 0),
  AUTOSCALE_DOWN_AFTER_MS: int(300 * SECOND, 0),
  AUTOSCALE_QUEUE_DEPTH: int(50, 1),
  AUTOSCALE_RESPONSE_TIME_MS: int(2000, 1),

  SESSION_SECRET: optionalString.refine((v) => v === undefined || v.length >= 32, {
    message: "must be at least 32 characters",
  }),
  JWT_SECRET: optionalString.refine((v) => v === undefined || v.length >= 32, {
    message: "must be at least 32 characters",
  }),
  CORS_ORIGINS: urlList,
  ENABLE_CSRF: bool(true),
  RATE_LIMIT_MAX: int(100, 1),
  RATE_LIMIT_WINDOW_MS: int(15 * MINUTE, 1000),
  MAX_MESSAGE_LENGTH: int(10_000, 1, 1_000_000),

  LOG_LEVEL: z.enum(LOG_LEVELS, { error: `must be one of ${LOG_LEVELS.join(", ")}` }).optional(),
  ENABLE_METRICS: bool(true),
  METRICS_PORT: int(0, 0, 65535),
  METRICS_TOKEN: optionalString,

  ENABLE_WEBSOCKETS: bool(true),
  ENABLE_FILE_UPLOADS: bool(false),
  CACHE_TTL: int(3600, 0),
});

export type Env = Record<string, string | undefined>;

/** Every environment variable the config reads, in the schema's order (README documents each). */
export const ENV_VARIABLES: readonly string[] = Object.freeze(Object.keys(EnvSchema.shape));

/** Variables whose values never appear in an error line (secrets, or URLs that carry a password). */
const SECRET_VARIABLES = new Set(["DATABASE_URL", "DATABASE_DIRECT_URL", "OPENAI_API_KEY", "SESSION_SECRET", "JWT_SECRET", "METRICS_TOKEN"]);

/** What an error line shows of the value it rejects. */
function shown(key: string, value: string | undefined): string {
  if (SECRET_VARIABLES.has(key)) return `a value of ${value?.length ?? 0} characters, not shown`;
  return `got ${JSON.stringify(value ?? "")}`;
}

function buildConfig(e: z.output<typeof EnvSchema>) {
  const production = e.NODE_ENV === "production";
  const replitDeployment = e.REPLIT_DEPLOYMENT === "1" || e.REPLIT_DEPLOYMENT === "true";
  return {
    env: e.NODE_ENV,
    production,
    replitDeployment,
    version: e.APP_VERSION ?? "0.1.0",
    server: {
      /** TCP port; 0 picks a free one (tests). Default 5000. */
      port: e.PORT,
      host: e.HOST,
      /** Number of proxy hops whose X-Forwarded-* headers are trusted. Default 1. */
      trustProxy: e.TRUST_PROXY,
      /** Socket inactivity and whole-request receive timeout, ms. Default 30 s. */
      requestTimeoutMs: e.REQUEST_TIMEOUT_MS,
      /** Idle keep-alive socket lifetime, ms; above the load balancer's 60 s. Default 65 s. */
      keepAliveTimeoutMs: e.KEEP_ALIVE_TIMEOUT_MS,
      /** JSON body limit, bytes. Default 1 MiB. */
      bodyLimitBytes: e.BODY_LIMIT_BYTES,
      /** Wait after /ready turns 503 so the load balancer stops routing, ms. Default 3 s in production, 0 otherwise. */
      shutdownDelayMs: e.SHUTDOWN_DELAY_MS >= 0 ? e.SHUTDOWN_DELAY_MS : production ? 3 * SECOND : 0,
      /** Hard deadline for a graceful shutdown, ms. Default 10 s. */
      shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
    },
    database: {
      url: e.DATABASE_URL,
      /** Used for LISTEN and migrations when the main URL is a transaction pooler. */
      directUrl: e.DATABASE_DIRECT_URL,
      /**
       * DATABASE_URL is a transaction-mode pooler (PgBouncer, a Neon -pooler
       * host): no LISTEN and no prepared statements through it; without
       * DATABASE_DIRECT_URL everything polls. Default false.
       */
      transactionPooler: e.DATABASE_TRANSACTION_POOLER,
      maxConnections: e.MAX_CONNECTIONS,
      idleTimeoutMs: e.DB_IDLE_TIMEOUT_MS,
      connectTimeoutMs: e.DB_CONNECT_TIMEOUT_MS,
      statementTimeoutMs: e.DB_STATEMENT_TIMEOUT_MS,
      migrateOnStart: e.MIGRATE_ON_START,
      /** Embedded PostgreSQL data folder when DATABASE_URL is unset. Default .data/postgres. */
      embeddedDir: e.EMBEDDED_PG_DIR,
      embeddedPort: e.EMBEDDED_PG_PORT,
    },
    agents: {
      enabled: e.ENABLE_AGENTS,
      maxConcurrentJobs: e.MAX_CONCURRENT_JOBS,
      jobTimeoutMs: e.JOB_TIMEOUT_MS,
      retryAttempts: e.RETRY_ATTEMPTS,
      maxQueueDepth: e.MAX_QUEUE_DEPTH,
      heartbeatMs: e.HEARTBEAT_MS,
      recoveryAfterMs: e.RECOVERY_AFTER_MS,
    },
    openai: {
      apiKey: e.OPENAI_API_KEY,
      baseUrl: e.OPENAI_BASE_URL,
      model: e.OPENAI_MODEL,
      maxTokens: e.OPENAI_MAX_TOKENS,
      rateLimit: { maxRequests: e.OPENAI_RATE_LIMIT_MAX, windowMs: e.OPENAI_RATE_LIMIT_WINDOW_MS },
      router: e.ROUTER,
    },
    autoscaling: {
      minInstances: e.AUTOSCALE_MIN_INSTANCES,
      maxInstances: e.AUTOSCALE_MAX_INSTANCES,
      targetCpuPercent: e.AUTOSCALE_TARGET_CPU,
      targetMemoryPercent: e.AUTOSCALE_TARGET_MEMORY,
      scaleUpAfterMs: e.AUTOSCALE_UP_AFTER_MS,
      scaleDownAfterMs: e.AUTOSCALE_DOWN_AFTER_MS,
      queueDepthThreshold: e.AUTOSCALE_QUEUE_DEPTH,
      responseTimeThresholdMs: e.AUTOSCALE_RESPONSE_TIME_MS,
    },
    security: {
      sessionSecret: e.SESSION_SECRET,
      jwtSecret: e.JWT_SECRET,
      corsOrigins: e.CORS_ORIGINS,
      csrf: e.ENABLE_CSRF,
      rateLimit: { max: e.RATE_LIMIT_MAX, windowMs: e.RATE_LIMIT_WINDOW_MS },
      maxMessageLength: e.MAX_MESSAGE_LENGTH,
    },
    monitoring: {
      logLevel: e.LOG_LEVEL ?? (production ? "warn" : "info"),
      /** Pretty logs only under `npm run dev`. */
      prettyLogs: e.NODE_ENV === "development",
      metricsEnabled: e.ENABLE_METRICS,
      /** 0 serves /metrics on the main port. */
      metricsPort: e.METRICS_PORT,
      metricsToken: e.METRICS_TOKEN,
    },
    features: {
      agents: e.ENABLE_AGENTS,
      websockets: e.ENABLE_WEBSOCKETS,
      fileUploads: e.ENABLE_FILE_UPLOADS,
      /** Cache-Control max-age for unhashed static files, seconds. Default 3600. */
      cacheTtlSeconds: e.CACHE_TTL,
    },
  };
}

export type Config = ReturnType<typeof buildConfig>;

export class ConfigError extends Error {
  constructor(readonly lines: string[]) {
    super(lines.join("\n"));
    this.name = "ConfigError";
  }
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === "object") {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

/**
 * Parses an environment into a frozen Config or throws ConfigError listing
 * every bad variable. A variable set to the empty string counts as unset (a
 * blank secret or `.env` line means "use the default", not "invalid").
 */
export function loadConfig(env: Env): Config {
  const given: Env = {};
  for (const key of ENV_VARIABLES) {
    const v = env[key];
    if (v !== undefined && v.trim() !== "") given[key] = v;
  }
  const parsed = EnvSchema.safeParse(given);
  const lines: string[] = [];
  if (!parsed.success) {
    const seen = new Set<string>();
    for (const issue of parsed.error.issues) {
      const key = String(issue.path[0] ?? "env");
      if (seen.has(key)) continue;
      seen.add(key);
      lines.push(`${key}: ${issue.message} (${shown(key, env[key])})`);
    }
    throw new ConfigError(lines);
  }
  const config = buildConfig(parsed.data);
  if (config.replitDeployment && !config.database.url) {
    lines.push("DATABASE_URL: required in a Replit deployment (REPLIT_DEPLOYMENT=1); instances there are ephemeral, so the embedded database cannot be used");
  }
  if (config.replitDeployment && !config.security.sessionSecret) {
    lines.push("SESSION_SECRET: required in a Replit deployment (REPLIT_DEPLOYMENT=1): every instance must sign sessions with the same secret (32+ characters)");
  }
  if (config.autoscaling.minInstances > config.autoscaling.maxInstances) {
    lines.push("AUTOSCALE_MIN_INSTANCES: must not exceed AUTOSCALE_MAX_INSTANCES");
  }
  if (lines.length) throw new ConfigError(lines);
  return deepFreeze(config);
}

/** For the composition root: one line per bad variable on stderr, exit 1, no stack. */
export function loadConfigOrExit(env: Env = process.env): Config {
  try {
    return loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const line of err.lines) process.stderr.write(`config error: ${line}\n`);
      process.exit(1);
    }
    throw err;
  }
}

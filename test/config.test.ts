/**
 * server/config.ts: the production config of DESIGN.md with its defaults, each
 * overridable by its variable; boot errors from the built server; the only
 * reader of process.env. Also the deployment files that repeat its facts
 * (.replit, README, .ci/run).
 */
import { describe, it, expect, beforeAll } from "vitest";
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { loadConfig, ConfigError, ENV_VARIABLES, SECOND, MINUTE, type Config, type Env } from "../server/config.js";
import { ROOT } from "./helpers/paths.js";
import { spawnServer } from "./helpers/spawnServer.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


const SECRET_32 = "0123456789abcdef0123456789abcdef-secret";
const PG_URL = "postgres://app:pw@db.example.com:5432/app?sslmode=require";

function configError(env: Env): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.lines;
    throw err;
  }
  throw new Error(`expected a ConfigError for ${JSON.stringify(env)}`);
}

describe("loadConfig defaults (DESIGN.md's production config)", () => {
  const c = loadConfig({});

  it("server: port 5000 on 0.0.0.0, one trusted proxy hop, 30 s timeout, 65 s keep-alive", () => {
    expect(c.server).toEqual({
      port: 5000,
      host: "0.0.0.0",
      trustProxy: 1,
      requestTimeoutMs: 30 * SECOND,
      keepAliveTimeoutMs: 65 * SECOND,
      bodyLimitBytes: 1024 * 1024,
      shutdownDelayMs: 0,
      shutdownTimeoutMs: 10 * SECOND,
    });
  });

  it("database: 20 connections, idle 10 s, connect 5 s, statement 30 s, migrations at boot", () => {
    expect(c.database).toEqual({
      url: undefined,
      directUrl: undefined,
      transactionPooler: false,
      maxConnections: 20,
      idleTimeoutMs: 10 * SECOND,
      connectTimeoutMs: 5 * SECOND,
      statementTimeoutMs: 30 * SECOND,
      migrateOnStart: true,
      embeddedDir: undefined,
      embeddedPort: 54329,
    });
  });

  it("agents: 10 concurrent jobs, 60 s job timeout, 3 retries", () => {
    expect(c.agents).toEqual({
      enabled: true,
      maxConcurrentJobs: 10,
      jobTimeoutMs: 60 * SECOND,
      retryAttempts: 3,
      maxQueueDepth: 500,
      heartbeatMs: 5 * SECOND,
      recoveryAfterMs: 30 * SECOND,
    });
  });

  it("openai: 2000 max tokens, 100 requests per 60 s, no key", () => {
    expect(c.openai).toEqual({
      apiKey: undefined,
      baseUrl: undefined,
      model: "gpt-4o-mini",
      maxTokens: 2000,
      rateLimit: { maxRequests: 100, windowMs: 60 * SECOND },
      router: "rules",
    });
  });

  it("autoscaling: 1..10 instances, CPU 70 %, memory 80 %, up 60 s, down 300 s, queue 50, 2 s", () => {
    expect(c.autoscaling).toEqual({
      minInstances: 1,
      maxInstances: 10,
      targetCpuPercent: 70,
      targetMemoryPercent: 80,
      scaleUpAfterMs: 60 * SECOND,
      scaleDownAfterMs: 300 * SECOND,
      queueDepthThreshold: 50,
      responseTimeThresholdMs: 2 * SECOND,
    });
  });

  it("security: API rate limit 100 per 15 min, no CORS origins, CSRF on, no secrets", () => {
    expect(c.security).toEqual({
      sessionSecret: undefined,
      jwtSecret: undefined,
      corsOrigins: [],
      csrf: true,
      rateLimit: { max: 100, windowMs: 15 * MINUTE },
      maxMessageLength: 10_000,
    });
  });

  it("monitoring and features: info logs outside production, metrics on the main port, CACHE_TTL 3600 s", () => {
    expect(c.monitoring).toEqual({
      logLevel: "info",
      prettyLogs: true,
      metricsEnabled: true,
      metricsPort: 0,
      metricsToken: undefined,
    });
    expect(c.features).toEqual({ agents: true, websockets: true, fileUploads: false, cacheTtlSeconds: 3600 });
    expect(c).toMatchObject({ env: "development", production: false, replitDeployment: false, version: "0.1.0" });
  });

  it("LOG_LEVEL is warn in production and info otherwise; pretty logs only in development", () => {
    const prod = loadConfig({ NODE_ENV: "production" });
    expect(prod.production).toBe(true);
    expect(prod.monitoring.logLevel).toBe("warn");
    expect(prod.monitoring.prettyLogs).toBe(false);
    expect(prod.server.shutdownDelayMs).toBe(3 * SECOND);
    const test = loadConfig({ NODE_ENV: "test" });
    expect(test.monitoring.logLevel).toBe("info");
    expect(test.monitoring.prettyLogs).toBe(false);
    expect(loadConfig({ NODE_ENV: "development" }).monitoring.logLevel).toBe("info");
    expect(loadConfig({ NODE_ENV: "production", LOG_LEVEL: "info" }).monitoring.logLevel).toBe("info");
  });

  it("an empty variable counts as unset", () => {
    const blank = loadConfig({ NODE_ENV: "", PORT: "", LOG_LEVEL: " ", ENABLE_METRICS: "", ROUTER: "", HOST: "", DATABASE_URL: "" });
    expect(blank.env).toBe("development");
    expect(blank.server.port).toBe(5000);
    expect(blank.server.host).toBe("0.0.0.0");
    expect(blank.monitoring.logLevel).toBe("info");
    expect(blank.monitoring.metricsEnabled).toBe(true);
    expect(blank.openai.router).toBe("rules");
    expect(blank.database.url).toBeUndefined();
  });
});

interface Row {
  /** Value to set. */
  set: string;
  get(c: Config): unknown;
  /** What `get` returns with the variable set. */
  expected: unknown;
  /** What `get` returns with nothing set. */
  fallback: unknown;
  /** What the README's default column must show; null: not checked. Default: `fallback` in backticks. */
  doc?: string | null;
  /** Other variables the value needs to be valid. */
  with?: Env;
}

/** Every variable config.ts reads, one override each. A variable missing here fails "covers every variable". */
const ROWS: Record<string, Row> = {
  NODE_ENV: { set: "production", get: (c) => c.env, expected: "production", fallback: "development" },
  PORT: { set: "8080", get: (c) => c.server.port, expected: 8080, fallback: 5000 },
  HOST: { set: "127.0.0.1", get: (c) => c.server.host, expected: "127.0.0.1", fallback: "0.0.0.0" },
  TRUST_PROXY: { set: "2", get: (c) => c.server.trustProxy, expected: 2, fallback: 1 },
  REQUEST_TIMEOUT_MS: { set: "45000", get: (c) => c.server.requestTimeoutMs, expected: 45_000, fallback: 30_000 },
  KEEP_ALIVE_TIMEOUT_MS: { set: "70000", get: (c) => c.server.keepAliveTimeoutMs, expected: 70_000, fallback: 65_000 },
  BODY_LIMIT_BYTES: { set: "2048", get: (c) => c.server.bodyLimitBytes, expected: 2048, fallback: 1_048_576 },
  SHUTDOWN_DELAY_MS: { set: "1500", get: (c) => c.server.shutdownDelayMs, expected: 1500, fallback: 0, doc: "`3000`" },
  SHUTDOWN_TIMEOUT_MS: { set: "20000", get: (c) => c.server.shutdownTimeoutMs, expected: 20_000, fallback: 10_000 },
  REPLIT_DEPLOYMENT: { set: "1", get: (c) => c.replitDeployment, expected: true, fallback: false, doc: null, with: { DATABASE_URL: PG_URL, SESSION_SECRET: "s".repeat(32) } },
  APP_VERSION: { set: "1.2.3", get: (c) => c.version, expected: "1.2.3", fallback: "0.1.0" },
  DATABASE_URL: { set: PG_URL, get: (c) => c.database.url, expected: PG_URL, fallback: undefined },
  DATABASE_DIRECT_URL: { set: "postgresql://app:pw@direct.example.com/app", get: (c) => c.database.directUrl, expected: "postgresql://app:pw@direct.example.com/app", fallback: undefined },
  DATABASE_TRANSACTION_POOLER: { set: "true", get: (c) => c.database.transactionPooler, expected: true, fallback: false },
  MAX_CONNECTIONS: { set: "7", get: (c) => c.database.maxConnections, expected: 7, fallback: 20 },
  DB_IDLE_TIMEOUT_MS: { set: "2000", get: (c) => c.database.idleTimeoutMs, expected: 2000, fallback: 10_000 },
  DB_CONNECT_TIMEOUT_MS: { set: "1500", get: (c) => c.database.connectTimeoutMs, expected: 1500, fallback: 5000 },
  DB_STATEMENT_TIMEOUT_MS: { set: "0", get: (c) => c.database.statementTimeoutMs, expected: 0, fallback: 30_000 },
  MIGRATE_ON_START: { set: "false", get: (c) => c.database.migrateOnStart, expected: false, fallback: true },
  EMBEDDED_PG_DIR: { set: "/var/lib/esa-pg", get: (c) => c.database.embeddedDir, expected: "/var/lib/esa-pg", fallback: undefined, doc: "`.data/postgres`" },
  EMBEDDED_PG_PORT: { set: "6543", get: (c) => c.database.embeddedPort, expected: 6543, fallback: 54329 },
  ENABLE_AGENTS: { set: "false", get: (c) => [c.agents.enabled, c.features.agents], expected: [false, false], fallback: [true, true], doc: "`true`" },
  MAX_CONCURRENT_JOBS: { set: "4", get: (c) => c.agents.maxConcurrentJobs, expected: 4, fallback: 10 },
  JOB_TIMEOUT_MS: { set: "120000", get: (c) => c.agents.jobTimeoutMs, expected: 120_000, fallback: 60_000 },
  RETRY_ATTEMPTS: { set: "0", get: (c) => c.agents.retryAttempts, expected: 0, fallback: 3 },
  MAX_QUEUE_DEPTH: { set: "25", get: (c) => c.agents.maxQueueDepth, expected: 25, fallback: 500 },
  HEARTBEAT_MS: { set: "1000", get: (c) => c.agents.heartbeatMs, expected: 1000, fallback: 5000 },
  RECOVERY_AFTER_MS: { set: "10000", get: (c) => c.agents.recoveryAfterMs, expected: 10_000, fallback: 30_000 },
  OPENAI_API_KEY: { set: "sk-test-key", get: (c) => c.openai.apiKey, expected: "sk-test-key", fallback: undefined },
  OPENAI_BASE_URL: { set: "http://localhost:11434/v1", get: (c) => c.openai.baseUrl, expected: "http://localhost:11434/v1", fallback: undefined },
  OPENAI_MODEL: { set: "gpt-4.1", get: (c) => c.openai.model, expected: "gpt-4.1", fallback: "gpt-4o-mini" },
  OPENAI_MAX_TOKENS: { set: "512", get: (c) => c.openai.maxTokens, expected: 512, fallback: 2000 },
  OPENAI_RATE_LIMIT_MAX: { set: "5", get: (c) => c.openai.rateLimit.maxRequests, expected: 5, fallback: 100 },
  OPENAI_RATE_LIMIT_WINDOW_MS: { set: "1000", get: (c) => c.openai.rateLimit.windowMs, expected: 1000, fallback: 60_000 },
  ROUTER: { set: "llm", get: (c) => c.openai.router, expected: "llm", fallback: "rules" },
  AUTOSCALE_MIN_INSTANCES: { set: "2", get: (c) => c.autoscaling.minInstances, expected: 2, fallback: 1 },
  AUTOSCALE_MAX_INSTANCES: { set: "4", get: (c) => c.autoscaling.maxInstances, expected: 4, fallback: 10 },
  AUTOSCALE_TARGET_CPU: { set: "50", get: (c) => c.autoscaling.targetCpuPercent, expected: 50, fallback: 70 },
  AUTOSCALE_TARGET_MEMORY: { set: "90", get: (c) => c.autoscaling.targetMemoryPercent, expected: 90, fallback: 80 },
  AUTOSCALE_UP_AFTER_MS: { set: "30000", get: (c) => c.autoscaling.scaleUpAfterMs, expected: 30_000, fallback: 60_000 },
  AUTOSCALE_DOWN_AFTER_MS: { set: "600000", get: (c) => c.autoscaling.scaleDownAfterMs, expected: 600_000, fallback: 300_000 },
  AUTOSCALE_QUEUE_DEPTH: { set: "100", get: (c) => c.autoscaling.queueDepthThreshold, expected: 100, fallback: 50 },
  AUTOSCALE_RESPONSE_TIME_MS: { set: "500", get: (c) => c.autoscaling.responseTimeThresholdMs, expected: 500, fallback: 2000 },
  SESSION_SECRET: { set: SECRET_32, get: (c) => c.security.sessionSecret, expected: SECRET_32, fallback: undefined },
  JWT_SECRET: { set: SECRET_32, get: (c) => c.security.jwtSecret, expected: SECRET_32, fallback: undefined },
  CORS_ORIGINS: {
    set: "https://a.example, https://b.example:8443/path",
    get: (c) => c.security.corsOrigins,
    expected: ["https://a.example", "https://b.example:8443"],
    fallback: [],
    doc: null,
  },
  ENABLE_CSRF: { set: "false", get: (c) => c.security.csrf, expected: false, fallback: true },
  RATE_LIMIT_MAX: { set: "10", get: (c) => c.security.rateLimit.max, expected: 10, fallback: 100 },
  RATE_LIMIT_WINDOW_MS: { set: "60000", get: (c) => c.security.rateLimit.windowMs, expected: 60_000, fallback: 900_000 },
  MAX_MESSAGE_LENGTH: { set: "500", get: (c) => c.security.maxMessageLength, expected: 500, fallback: 10_000 },
  LOG_LEVEL: { set: "debug", get: (c) => c.monitoring.logLevel, expected: "debug", fallback: "info", doc: "`warn`" },
  ENABLE_METRICS: { set: "false", get: (c) => c.monitoring.metricsEnabled, expected: false, fallback: true },
  METRICS_PORT: { set: "9091", get: (c) => c.monitoring.metricsPort, expected: 9091, fallback: 0 },
  METRICS_TOKEN: { set: "metrics-token", get: (c) => c.monitoring.metricsToken, expected: "metrics-token", fallback: undefined },
  ENABLE_WEBSOCKETS: { set: "false", get: (c) => c.features.websockets, expected: false, fallback: true },
  ENABLE_FILE_UPLOADS: { set: "true", get: (c) => c.features.fileUploads, expected: true, fallback: false },
  CACHE_TTL: { set: "60", get: (c) => c.features.cacheTtlSeconds, expected: 60, fallback: 3600 },
};

describe("loadConfig overrides", () => {
  it("covers every variable config.ts reads", () => {
    expect(Object.keys(ROWS).sort()).toEqual([...ENV_VARIABLES].sort());
  });

  it.each(Object.entries(ROWS))("%s overrides its default", (name, row) => {
    expect(row.get(loadConfig({ ...row.with }))).toEqual(row.fallback);
    expect(row.get(loadConfig({ ...row.with, [name]: row.set }))).toEqual(row.expected);
  });

  it("accepts the usual spellings of booleans", () => {
    for (const v of ["true", "1", "yes", "on"]) expect(loadConfig({ ENABLE_FILE_UPLOADS: v }).features.fileUploads).toBe(true);
    for (const v of ["false", "0", "no", "off"]) expect(loadConfig({ ENABLE_METRICS: v }).monitoring.metricsEnabled).toBe(false);
  });
});

describe("loadConfig errors", () => {
  it.each([
    ["PORT", "abc", /^PORT: must be a whole number from 0 to 65535 \(got "abc"\)$/],
    ["PORT", "70000", /^PORT: must be a whole number from 0 to 65535/],
    ["PORT", "80.5", /^PORT: must be a whole number/],
    ["LOG_LEVEL", "loud", /^LOG_LEVEL: must be one of fatal, error, warn, info, debug, trace, silent \(got "loud"\)$/],
    ["MAX_CONNECTIONS", "0", /^MAX_CONNECTIONS: must be a whole number from 1 to 1000 \(got "0"\)$/],
    ["NODE_ENV", "prod", /^NODE_ENV: must be production, development or test/],
    ["ENABLE_METRICS", "maybe", /^ENABLE_METRICS: must be true or false/],
    ["ROUTER", "magic", /^ROUTER: must be rules or llm/],
    ["CORS_ORIGINS", "https://ok.example,ftp://bad.example", /^CORS_ORIGINS: must be a comma-separated list of http\(s\) origins/],
    ["OPENAI_BASE_URL", "localhost:11434", /^OPENAI_BASE_URL: must be an http\(s\) URL/],
    ["AUTOSCALE_TARGET_CPU", "150", /^AUTOSCALE_TARGET_CPU: must be a whole number from 1 to 100/],
  ])("%s=%s is one line naming the variable and what is allowed", (name, value, line) => {
    const lines = configError({ [name]: value });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(line);
  });

  it("lists every bad variable, one line each, in one error", () => {
    const lines = configError({ PORT: "abc", LOG_LEVEL: "loud", MAX_CONNECTIONS: "0", TRUST_PROXY: "-1" });
    expect(lines.map((l) => l.split(":")[0]).sort()).toEqual(["LOG_LEVEL", "MAX_CONNECTIONS", "PORT", "TRUST_PROXY"]);
  });

  it("never repeats a secret or a database URL in an error line", () => {
    const lines = configError({
      SESSION_SECRET: "too-short-session-secret",
      JWT_SECRET: "too-short-jwt-secret",
      DATABASE_URL: "mysql://root:hunter2@db/app",
    });
    expect(lines).toHaveLength(3);
    expect(lines.join("\n")).not.toMatch(/too-short|hunter2/);
    expect(lines.find((l) => l.startsWith("SESSION_SECRET:"))).toMatch(/at least 32 characters/);
    expect(lines.find((l) => l.startsWith("DATABASE_URL:"))).toMatch(/postgres:\/\//);
  });

  it("a Replit deployment without DATABASE_URL is a boot error", () => {
    expect(configError({ REPLIT_DEPLOYMENT: "1", SESSION_SECRET: "s".repeat(32) })).toEqual([
      expect.stringMatching(/^DATABASE_URL: required in a Replit deployment/),
    ]);
  });

  it("a Replit deployment without SESSION_SECRET is a boot error; elsewhere it may be unset", () => {
    expect(configError({ REPLIT_DEPLOYMENT: "1", DATABASE_URL: PG_URL })).toEqual([
      expect.stringMatching(/^SESSION_SECRET: required in a Replit deployment/),
    ]);
    expect(loadConfig({ DATABASE_URL: PG_URL }).security.sessionSecret).toBeUndefined();
  });

  it("AUTOSCALE_MIN_INSTANCES may not exceed AUTOSCALE_MAX_INSTANCES", () => {
    expect(configError({ AUTOSCALE_MIN_INSTANCES: "5", AUTOSCALE_MAX_INSTANCES: "2" })).toEqual([
      expect.stringMatching(/^AUTOSCALE_MIN_INSTANCES: /),
    ]);
  });
});

describe("the Config object", () => {
  it("is frozen all the way down", () => {
    const c = loadConfig({ CORS_ORIGINS: "https://a.example" });
    const objects: unknown[] = [];
    const walk = (o: unknown) => {
      if (o && typeof o === "object") {
        objects.push(o);
        Object.values(o).forEach(walk);
      }
    };
    walk(c);
    expect(objects.length).toBeGreaterThan(10);
    for (const o of objects) expect(Object.isFrozen(o)).toBe(true);
    expect(() => {
      (c.server as { port: number }).port = 1;
    }).toThrow(TypeError);
    expect(() => {
      (c.security.corsOrigins as string[]).push("https://evil.example");
    }).toThrow(TypeError);
    expect(c.server.port).toBe(5000);
  });

  it("does not read process.env: only the env it is given", () => {
    const before = process.env.PORT;
    process.env.PORT = "6123";
    try {
      expect(loadConfig({}).server.port).toBe(5000);
    } finally {
      if (before === undefined) delete process.env.PORT;
      else process.env.PORT = before;
    }
  });
});

describe("process.env", () => {
  const READS_ENV = /process\s*\.\s*env\b|process\s*\[\s*["'`]env["'`]\s*\]|\{[^}]*\benv\b[^}]*\}\s*=\s*process\b/;

  function filesUnder(dir: string): string[] {
    return readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
      const p = path.join(dir, d.name);
      return d.isDirectory() ? filesUnder(p) : [p];
    });
  }

  it("is mentioned by no file under server/ but server/config.ts", () => {
    const files = filesUnder(path.join(ROOT, "server"));
    expect(files.length).toBeGreaterThan(10);
    const readers = files.filter((f) => READS_ENV.test(readFileSync(f, "utf8"))).map((f) => path.relative(ROOT, f));
    expect(readers).toEqual(["server/config.ts"]);
  });
});

describe("the built server with a bad config", () => {

  /** Spawns dist/index.js; fails the test if it is still running after 10 s. */
  async function boot(env: Env) {
    const server = await spawnServer({
      // Should the config let it through, an unreachable database keeps the
      // embedded one from starting; the timeout then fails the test.
      env: { DATABASE_URL: "postgres://esa:esa@127.0.0.1:9/esa?sslmode=disable", ...env },
      waitListening: false,
    });
    const outcome = await Promise.race([server.exited, sleep(10_000).then(() => null)]);
    if (!outcome) {
      await server.stop();
      throw new Error(`still running 10 s after start with ${JSON.stringify(env)}; stdout: ${server.stdout().slice(0, 500)}`);
    }
    const lines = server.stderr().split("\n").filter((l) => l.trim() !== "");
    return { ...outcome, stdout: server.stdout(), stderr: server.stderr(), lines };
  }

  function expectCleanFailure(r: Awaited<ReturnType<typeof boot>>, vars: string[]) {
    expect(r.signal).toBeNull();
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe("");
    expect(r.stderr).not.toMatch(/^\s*at /m);
    expect(r.stderr).not.toMatch(/Error:|\.js:\d+/);
    expect(r.lines).toHaveLength(vars.length);
    for (const v of vars) expect(r.lines.filter((l) => l.includes(`${v}:`))).toHaveLength(1);
  }

  it("PORT=abc: exits non-zero with one line naming PORT and its range", async () => {
    const r = await boot({ PORT: "abc" });
    expectCleanFailure(r, ["PORT"]);
    expect(r.lines[0]).toMatch(/PORT: must be a whole number from 0 to 65535/);
  });

  it("LOG_LEVEL=loud: one line naming LOG_LEVEL and the levels allowed", async () => {
    const r = await boot({ LOG_LEVEL: "loud" });
    expectCleanFailure(r, ["LOG_LEVEL"]);
    expect(r.lines[0]).toMatch(/LOG_LEVEL: must be one of fatal, error, warn, info, debug, trace, silent/);
  });

  it("MAX_CONNECTIONS=0: one line naming MAX_CONNECTIONS and its range", async () => {
    const r = await boot({ MAX_CONNECTIONS: "0" });
    expectCleanFailure(r, ["MAX_CONNECTIONS"]);
    expect(r.lines[0]).toMatch(/MAX_CONNECTIONS: must be a whole number from 1 to 1000/);
  });

  it("two bad at once: two lines, one per variable", async () => {
    const r = await boot({ PORT: "abc", LOG_LEVEL: "loud" });
    expectCleanFailure(r, ["PORT", "LOG_LEVEL"]);
  });

  it("a bad secret is named, never printed", async () => {
    const r = await boot({ SESSION_SECRET: "short-but-secret", MAX_CONNECTIONS: "0" });
    expectCleanFailure(r, ["SESSION_SECRET", "MAX_CONNECTIONS"]);
    expect(r.stderr).not.toContain("short-but-secret");
  });
});

/**
 * Just enough TOML for .replit: comments, [table], [[array of tables]],
 * `key = value` with strings, integers, booleans and single-line arrays of
 * those. Anything else throws, so a malformed file fails the test.
 */
function parseToml(text: string): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  let table = root;
  const value = (raw: string, lineNo: number): unknown => {
    const v = raw.trim();
    if (/^"([^"\\]|\\.)*"$/.test(v)) return JSON.parse(v);
    if (/^-?\d+$/.test(v)) return Number(v);
    if (v === "true" || v === "false") return v === "true";
    if (v.startsWith("[") && v.endsWith("]")) {
      const inner = v.slice(1, -1).trim();
      if (!inner) return [];
      const items = inner.match(/"(?:[^"\\]|\\.)*"|[^,\s][^,]*/g) ?? [];
      return items.map((i) => value(i, lineNo));
    }
    throw new Error(`.replit line ${lineNo}: cannot read value ${v}`);
  };
  text.split("\n").forEach((line, i) => {
    const s = line.replace(/\s+#[^"]*$/, "").trim();
    if (!s || s.startsWith("#")) return;
    let m: RegExpMatchArray | null;
    if ((m = s.match(/^\[\[\s*([\w.-]+)\s*\]\]$/))) {
      const list = (root[m[1] as string] ??= []) as Record<string, unknown>[];
      table = {};
      list.push(table);
    } else if ((m = s.match(/^\[\s*([\w.-]+)\s*\]$/))) {
      table = {};
      root[m[1] as string] = table;
    } else if ((m = s.match(/^([\w.-]+|"[^"]+")\s*=\s*(.+)$/))) {
      const key = (m[1] as string).replace(/^"|"$/g, "");
      if (key in table) throw new Error(`.replit line ${i + 1}: duplicate key ${key}`);
      table[key] = value(m[2] as string, i + 1);
    } else {
      throw new Error(`.replit line ${i + 1}: cannot parse ${s}`);
    }
  });
  return root;
}

const command = (v: unknown) => (Array.isArray(v) ? v.join(" ") : v);

describe(".replit", () => {
  let replit: Record<string, unknown> = {};
  let scripts: Record<string, string> = {};
  beforeAll(() => {
    replit = parseToml(readFileSync(path.join(ROOT, ".replit"), "utf8"));
    scripts = (JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts;
  });

  it("deploys on Autoscale: build with npm run build, run with npm start", () => {
    const deployment = replit.deployment as Record<string, unknown>;
    expect(deployment.deploymentTarget).toBe("autoscale");
    expect(command(deployment.build)).toBe("npm run build");
    expect(command(deployment.run)).toBe("npm start");
    expect(scripts.build).toBeTruthy();
    expect(scripts.start).toMatch(/NODE_ENV=production node dist\/index\.js/);
  });

  it("exposes exactly one port: 5000 (the default PORT) → 80, with PORT=5000 in [env]", () => {
    expect(replit.ports).toEqual([{ localPort: 5000, externalPort: 80 }]);
    expect((replit.env as Record<string, unknown>).PORT).toBe("5000");
    expect(loadConfig({}).server.port).toBe(5000);
  });

  it("runs the workspace on Node 20 with npm run dev", () => {
    expect(replit.modules).toContain("nodejs-20");
    expect(command(replit.run)).toBe("npm run dev");
    expect(scripts.dev).toMatch(/server\/index\.ts/);
  });
});

describe("README", () => {
  let readme = "";
  beforeAll(() => {
    readme = readFileSync(path.join(ROOT, "README.md"), "utf8");
  });

  it("opens with the two commands for a bare machine", () => {
    const firstScreen = readme.split("\n").slice(0, 40).join("\n");
    expect(firstScreen).toContain("npm ci && npm run build && npm start");
    expect(firstScreen).toContain("npm ci && npm test");
  });

  it.each([...ENV_VARIABLES])("documents %s with its default", (name) => {
    const row = readme.split("\n").find((l) => l.startsWith(`| \`${name}\` |`));
    expect(row, `README has no table row for ${name}`).toBeDefined();
    const r = ROWS[name];
    const doc = r?.doc === undefined ? (r?.fallback === undefined ? null : `\`${String(r.fallback)}\``) : r.doc;
    if (doc) expect(row).toContain(doc);
  });

  it("documents no variable config.ts does not read", () => {
    const known = new Set(ENV_VARIABLES);
    const documented = [...readme.matchAll(/^\| `([A-Z][A-Z0-9_]+)` \|/gm)].map((m) => m[1] as string);
    expect(documented.filter((n) => !known.has(n))).toEqual([]);
  });
});

describe(".ci/run", () => {
  const file = path.join(ROOT, ".ci", "run");

  it("is an executable bash script that stops on the first failure", () => {
    expect(statSync(file).mode & 0o111).not.toBe(0);
    const text = readFileSync(file, "utf8");
    expect(text.split("\n")[0]).toMatch(/^#!.*\bbash\b/);
    expect(text).toMatch(/^set -euo pipefail$/m);
  });

  it("installs with npm ci, then runs the README's test command", () => {
    const commands = readFileSync(file, "utf8")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith("#"));
    const install = commands.findIndex((l) => l.startsWith("npm ci --no-audit --no-fund"));
    expect(install).toBeGreaterThanOrEqual(0);
    expect(commands.at(-1)).toMatch(/^(exec )?npm test\b/);
    expect(readFileSync(path.join(ROOT, "README.md"), "utf8")).toContain("npm test");
  });
});

/**
 * The agent job queue in-process for tests: startAgentQueue on a test
 * database with a scripted Orchestrator. A message's content is its script
 * (JSON), so a run's behaviour is fixed before its id is known; the
 * orchestrator records every call (attempt, start, abort, end) and how many
 * ran at once. useQueueFixture opens the usual set (database, data API, a
 * user's conversation, optionally a queue) for a test file; useOnce is the
 * before/after hook pair under it and the other helpers' fixtures.
 */
import { randomBytes } from "node:crypto";
import { beforeAll, afterAll, expect } from "vitest";
import { loadConfig, type Config, type Env } from "../../server/config.js";
import { createMetrics, type Metrics } from "../../server/ops/metrics.js";
import { createPool, type Pool } from "../../server/db/pool.js";
import { createListener, type Listener } from "../../server/db/listener.js";
import { startAgentQueue, type AgentQueue } from "../../server/queue/index.js";
import type { QueueStats } from "../../server/queue/stats.js";
import { createLocalStartsHandle } from "../../server/queue/localStart.js";
import { AgentError, type Orchestrator, type RoutedEvent } from "../../server/agents/types.js";
import { startDataApi, type Client, type DataApi } from "./dataApi.js";
import { createTestDatabase, type TestDatabase } from "./db.js";
import { createCapturedLogger } from "./logs.js";

/** What the scripted agent does in one attempt, in this order. */
export interface Step {
  /** Waits until the test opens this gate (ScriptedAgents.open). */
  gate?: string;
  /** Text deltas. */
  text?: string[];
  /** Pause before each delta, ms; without it the deltas come all at once. */
  delayMs?: number;
  /** Pause after the text, ms. */
  holdMs?: number;
  /** Waits until the run's signal fires. */
  hang?: boolean;
  /** Awaits the test's hook of this name (ScriptedAgents.hook) with the run id. */
  hook?: string;
  usage?: { promptTokens: number; completionTokens: number };
  /** Ends the attempt with this AgentError. */
  fail?: { code: string; message: string; retryable: boolean; retryAfterMs?: number };
}

/**
 * A message content that scripts its run: step i is attempt i + 1; the last
 * step repeats. A run before its claim (attempt 0, a pure agent) takes step 1.
 */
export const scriptOf = (...steps: Step[]) => JSON.stringify({ steps });

export interface AgentCall {
  runId: string;
  attempt: number;
  /** performance.now() at the call. */
  startedAt: number;
  /** Date.now() at the call. */
  startedAtMs: number;
  /** performance.now() when the run's signal fired. */
  abortedAt?: number;
  abortReason?: unknown;
  /** Date.now() when the scripted failure was thrown. */
  failedAtMs?: number;
  endedAt?: number;
  outcome?: "done" | "failed" | "aborted";
}

/** Rejects with the signal's reason when it fires first. */
function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err as Error);
      },
    );
  });
}

const sleep = (ms: number, signal: AbortSignal) => abortable(new Promise<void>((r) => setTimeout(r, ms)), signal);

/**
 * The scripted agent, named `agentName`. `pure`: it may run before its claim
 * (`Agent.pure`; the POST must ask for it by name, so name it after an agent
 * the API accepts, e.g. hello).
 */
export function createScriptedAgents(agentName = "scripted", opts: { pure?: boolean } = {}) {
  const calls: AgentCall[] = [];
  const hooks = new Map<string, (runId: string) => Promise<void>>();
  const gates = new Map<string, { promise: Promise<void>; open: () => void }>();
  let running = 0;
  let maxRunning = 0;
  const gate = (name: string) => {
    let g = gates.get(name);
    if (!g) {
      let open!: () => void;
      const promise = new Promise<void>((r) => (open = r));
      g = { promise, open };
      gates.set(name, g);
    }
    return g;
  };

  const orchestrator: Orchestrator = {
    agentNames: () => [agentName],
    historyFreeAgents: () => [],
    preClaimAgents: () => (opts.pure ? [agentName] : []),
    async *run(input, ctx): AsyncGenerator<RoutedEvent> {
      const call: AgentCall = { runId: ctx.runId, attempt: ctx.attempt, startedAt: performance.now(), startedAtMs: Date.now() };
      calls.push(call);
      running++;
      maxRunning = Math.max(maxRunning, running);
      const onAbort = () => {
        call.abortedAt = performance.now();
        call.abortReason = ctx.signal.reason;
      };
      ctx.signal.addEventListener("abort", onAbort, { once: true });
      try {
        const { steps } = JSON.parse(input.content) as { steps: Step[] };
        const step = steps[Math.min(Math.max(ctx.attempt, 1), steps.length) - 1] ?? {};
        yield { type: "route", agent: agentName, reason: "scripted by the test" };
        if (step.gate) await abortable(gate(step.gate).promise, ctx.signal);
        for (const text of step.text ?? []) {
          if (step.delayMs) await sleep(step.delayMs, ctx.signal);
          yield { type: "text.delta", text };
        }
        if (step.holdMs) await sleep(step.holdMs, ctx.signal);
        if (step.hang) await abortable(new Promise<never>(() => undefined), ctx.signal);
        if (step.hook) {
          const fn = hooks.get(step.hook);
          if (!fn) throw new Error(`no hook ${step.hook}`);
          await fn(ctx.runId);
        }
        if (step.usage) yield { type: "usage", ...step.usage };
        if (step.fail) {
          call.failedAtMs = Date.now();
          const { code, message, ...opts } = step.fail;
          throw new AgentError(code, message, opts);
        }
        call.outcome = "done";
      } catch (err) {
        call.outcome = ctx.signal.aborted ? "aborted" : "failed";
        throw err;
      } finally {
        running--;
        call.endedAt = performance.now();
        ctx.signal.removeEventListener("abort", onAbort);
      }
    },
  };

  return {
    orchestrator,
    calls,
    callsFor: (runId: string) => calls.filter((c) => c.runId === runId),
    /** Lets every run waiting on `name` go on (now or when it gets there). */
    open: (name: string) => gate(name).open(),
    /** What a step with `hook: name` runs. */
    hook: (name: string, fn: (runId: string) => Promise<void>) => void hooks.set(name, fn),
    get running() {
      return running;
    },
    get maxRunning() {
      return maxRunning;
    },
  };
}

export type ScriptedAgents = ReturnType<typeof createScriptedAgents>;

export interface TestQueueOptions {
  /** Config env on top of NODE_ENV=test. */
  env?: Env;
  /** LISTEN through createListener (true) or none: cancels and jobs poll (default false). */
  listener?: boolean;
  graceMs?: number;
  metrics?: Metrics;
  onStats?: (stats: QueueStats) => void;
  statsIntervalMs?: number;
}

export interface TestQueue {
  queue: AgentQueue;
  config: Config;
  metrics: Metrics;
  instanceId: string;
  listener: Listener | null;
  logLines: Record<string, unknown>[];
  /** Stops the queue (runs finish or are handed back), then the listener and pools. Once. */
  stop(): Promise<void>;
}

/** startAgentQueue on `db` with its own pools, as services.ts wires it. */
export async function startTestQueue(db: TestDatabase, orchestrator: Orchestrator, opts: TestQueueOptions = {}): Promise<TestQueue> {
  const config = loadConfig({ NODE_ENV: "test", LOG_LEVEL: "info", ...opts.env });
  const { log, lines: logLines } = createCapturedLogger(config);
  const metrics = opts.metrics ?? createMetrics({ defaultMetrics: false });
  const max = config.agents.maxConcurrentJobs + 4;
  const pool: Pool = createPool(config.database, db.url, log, { max, applicationName: "test-queue" });
  const workerPool: Pool = createPool(config.database, db.url, log, { max, applicationName: "test-queue-worker" });
  let listener: Listener | null = null;
  if (opts.listener) {
    listener = createListener({ url: db.url, log });
    listener.start();
  }
  const instanceId = `test-${process.pid}-${randomBytes(3).toString("hex")}`;
  const queue = await startAgentQueue({
    config,
    log,
    metrics,
    pool,
    workerPool,
    listener,
    orchestrator,
    instanceId,
    graceMs: opts.graceMs ?? 2000,
    ...(opts.onStats ? { onStats: opts.onStats } : {}),
    ...(opts.statsIntervalMs ? { statsIntervalMs: opts.statsIntervalMs } : {}),
  });
  let stopping: Promise<void> | undefined;
  return {
    queue,
    config,
    metrics,
    instanceId,
    listener,
    logLines,
    stop: () =>
      (stopping ??= (async () => {
        await queue.stop();
        await listener?.stop();
        await pool.end();
        await workerPool.end();
      })()),
  };
}

/** Registers a release, run in the afterAll last-in-first-out. */
export type Release = (fn: () => Promise<void>) => void;

/**
 * What a test file opens once: `open` runs in a beforeAll of the calling
 * scope (the file, or the describe it is called in) and registers a release
 * next to each thing it acquires; the afterAll runs them last-in-first-out,
 * so what was acquired before a failure is released too. The returned
 * function gives what `open` made; it throws when called before that
 * beforeAll has run (or when `open` failed).
 */
export function useOnce<T>(open: (release: Release) => Promise<T>): () => T {
  let opened: { value: T } | undefined;
  const releases: (() => Promise<void>)[] = [];
  beforeAll(async () => {
    opened = { value: await open((fn) => releases.push(fn)) };
  });
  afterAll(async () => {
    for (const fn of releases.splice(0).reverse()) await fn();
  });
  return () => {
    if (!opened) throw new Error("useOnce: read before its beforeAll has run");
    return opened.value;
  };
}

export interface QueueFixture {
  readonly db: TestDatabase;
  readonly api: DataApi;
  /** The orchestrator's scripted agents (the queue's, and those of queues a test starts on fx.agents.orchestrator). */
  readonly agents: ScriptedAgents;
  /** A client of `api` (a user) and a conversation of its. */
  readonly client: Client;
  readonly conv: string;
  /** The queue started on the agents with `opts.queue`; throws when the fixture has none. */
  readonly q: TestQueue;
  /**
   * With `localStarts`, what the API's message store starts runs here with:
   * bound to the queue's (services.ts's wiring); a test may bind another.
   */
  readonly localStarts: ReturnType<typeof createLocalStartsHandle>;
}

/**
 * A migrated test database, the data API on it (with `api.env`), a user's
 * conversation and, with `queue`, a queue running the scripted agents: opened
 * in a beforeAll and closed (queue, API, database) in an afterAll of the
 * calling scope.
 */
export function useQueueFixture(
  opts: { api?: { env?: Env }; queue?: TestQueueOptions; agent?: { name: string; pure?: boolean }; localStarts?: boolean } = {},
): QueueFixture {
  const agents = opts.agent ? createScriptedAgents(opts.agent.name, { pure: opts.agent.pure ?? false }) : createScriptedAgents();
  const localStarts = createLocalStartsHandle();
  const get = useOnce(async (release) => {
    const db = await createTestDatabase({ migrate: true });
    release(() => db.drop());
    const api = await startDataApi(db, { ...opts.api, ...(opts.localStarts ? { localStarts } : {}) });
    release(() => api.close());
    const client = api.client();
    const conv = await newConversation(client);
    let q: TestQueue | undefined;
    if (opts.queue) {
      const started = await startTestQueue(db, agents.orchestrator, opts.queue);
      release(() => started.stop());
      q = started;
      localStarts.bind(started.queue.localStarts);
    }
    return { db, api, client, conv, q };
  });
  return {
    get db() {
      return get().db;
    },
    get api() {
      return get().api;
    },
    agents,
    get client() {
      return get().client;
    },
    get conv() {
      return get().conv;
    },
    get q() {
      const { q } = get();
      if (!q) throw new Error("useQueueFixture: no queue (opts.queue)");
      return q;
    },
    get localStarts() {
      if (!opts.localStarts) throw new Error("useQueueFixture: runs do not start where posted (opts.localStarts)");
      return localStarts;
    },
  };
}

/** Polls `fn` until it returns something other than undefined/false; fails after `timeoutMs` saying `what`. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 20_000, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The value of sample `name` (e.g. `x_count` of a histogram) with exactly these labels in `metrics`' registry; 0 when absent. */
export async function metricSample(metrics: Metrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const base = name.replace(/_(count|sum|bucket)$/, "");
  const metric = metrics.registry.getSingleMetric(base);
  if (!metric) throw new Error(`no metric ${name}`);
  const { values } = await metric.get();
  const want = JSON.stringify(Object.entries(labels).sort());
  const hit = values.find((v) => ((v as { metricName?: string }).metricName ?? base) === name && JSON.stringify(Object.entries(v.labels).sort()) === want);
  return hit?.value ?? 0;
}

/**
 * A run's counters are updated just after its status is written: waits until
 * the sample reaches `expected`, then asserts it is exactly that.
 */
export async function expectMetricSettled(metrics: Metrics, name: string, labels: Record<string, string>, expected: number): Promise<void> {
  await waitFor(`${name}${JSON.stringify(labels)}`, async () => (await metricSample(metrics, name, labels)) >= expected).catch(() => undefined);
  expect(await metricSample(metrics, name, labels)).toBe(expected);
}

export interface RunRow {
  id: string;
  status: string;
  attempt: number;
  failures: number;
  agent: string | null;
  route_reason: string | null;
  error_code: string | null;
  error_message: string | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  instance_id: string | null;
  last_seq: number;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  cancel_requested_at: Date | null;
}

export async function runRow(db: TestDatabase, id: string): Promise<RunRow> {
  const r = await db.pool.query<RunRow>("select * from runs where id = $1", [id]);
  const row = r.rows[0];
  if (!row) throw new Error(`no run ${id}`);
  return row;
}

/** Waits until the run is in one of `statuses`; returns its row. */
export const waitForStatus = (db: TestDatabase, id: string, statuses: string[], timeoutMs?: number) =>
  waitFor(`run ${id} to be ${statuses.join(" or ")}`, async () => {
    const row = await runRow(db, id);
    return statuses.includes(row.status) ? row : undefined;
  }, timeoutMs);

export interface EventRow {
  seq: number;
  attempt: number;
  type: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- event payloads are checked field by field
  data: any;
}

export async function runEvents(db: TestDatabase, id: string): Promise<EventRow[]> {
  const r = await db.pool.query<EventRow>("select seq, attempt, type, data from run_events where run_id = $1 order by seq", [id]);
  return r.rows;
}

export async function assistantMessages(db: TestDatabase, runId: string): Promise<{ id: string; content: string; agent: string | null }[]> {
  const r = await db.pool.query<{ id: string; content: string; agent: string | null }>(
    "select id, content, agent from messages where run_id = $1 and role = 'assistant'",
    [runId],
  );
  return r.rows;
}

/** The graphile-worker jobs keyed by the run id (at most one). */
export async function jobsOf(db: TestDatabase, runId: string): Promise<{ id: string; run_at: Date; attempts: number; locked_at: Date | null }[]> {
  const r = await db.pool.query<{ id: string; run_at: Date; attempts: number; locked_at: Date | null }>(
    "select id::text, run_at, attempts, locked_at from graphile_worker.jobs where key = $1",
    [runId],
  );
  return r.rows;
}

/**
 * Waits until the run has no job. A finished attempt's job is completed by
 * graphile-worker just after the task returns, so after the run's status.
 */
export const waitForNoJob = (db: TestDatabase, runId: string) =>
  waitFor(`run ${runId}'s job to be gone`, async () => (await jobsOf(db, runId)).length === 0);

/** A new conversation of `client`'s; returns its id. */
export async function newConversation(client: Client): Promise<string> {
  const res = await client.post("/api/conversations", { title: "queue test" });
  if (res.status !== 201) throw new Error(`conversation: ${res.status} ${res.text}`);
  return (res.body as { id: string }).id;
}

/** POSTs a message (asking for `agent` by name when given); returns the 202 body's run id and message id. */
export async function postRun(client: Client, conversationId: string, content: string, agent?: string): Promise<{ runId: string; messageId: string; status: string }> {
  const res = await client.post(`/api/conversations/${conversationId}/messages`, agent ? { content, agent } : { content });
  if (res.status !== 202) throw new Error(`message: ${res.status} ${res.text}`);
  const body = res.body as { message: { id: string }; run: { id: string; status: string } };
  return { runId: body.run.id, messageId: body.message.id, status: body.run.status };
}

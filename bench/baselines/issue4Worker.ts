/**
 * Baseline for issue 4: graphile-worker alone, as the server runs it (`run()`,
 * concurrency $CONCURRENCY (10), LISTEN, 2 s poll, signals not handled, log
 * lines dropped like the server's at warn) with a no-op task, on
 * $DATABASE_URL in the server's own `graphile_worker` schema, which the server
 * has migrated already: start this after the server. (A schema of its own
 * would not isolate it: graphile-worker's NOTIFY channels are per database,
 * not per schema, and installing a second schema sends `worker:migrate`,
 * which makes the server's worker shut itself down.) Each side's adds wake
 * the other's idle worker for one empty fetch, alike in both directions. A
 * pg pool of 20, the server's default. Driven over HTTP on 127.0.0.1:$PORT:
 *
 * - `GET /probe`: 200 once the runner is up.
 * - `POST /drain?n=N&inflight=K`: adds N no-op jobs with `addJob` from K
 *   concurrent submitters and answers `{ms, n}`, from just before the first
 *   add until the N-th job has succeeded.
 * - `POST /latency?n=N&spacingMs=S`: adds one job every S ms and answers
 *   `{samplesMs}`: for each, task start (Node clock) minus the job's
 *   `created_at` (set by the database on add), ms.
 */
import http from "node:http";
import pg from "pg";
import { Logger, run, type Job, type Runner, type WorkerEvents } from "graphile-worker";
import { EventEmitter } from "node:events";

const port = Number(process.env.PORT);
const concurrency = Number(process.env.CONCURRENCY ?? "10");
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 20 });
pool.on("error", () => undefined);

const quiet = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") process.stderr.write(`${level}: ${message}\n`);
});

/** Per batch: jobs succeeded so far and who waits for the last. */
interface Batch {
  n: number;
  done: number;
  resolve: () => void;
  startedMs?: number[];
}
const batches = new Map<string, Batch>();
const batchOf = (job: Job) => (job.payload as { b?: string } | null)?.b;

const events: WorkerEvents = new EventEmitter() as WorkerEvents;
events.on("job:success", ({ job }) => {
  const id = batchOf(job);
  const b = id === undefined ? undefined : batches.get(id);
  if (b && ++b.done === b.n) b.resolve();
});

let runner: Runner | undefined;
let seq = 0;

function newBatch(n: number, latency: boolean): { id: string; b: Batch; finished: Promise<void> } {
  const id = `b${++seq}`;
  let resolve!: () => void;
  const finished = new Promise<void>((r) => (resolve = r));
  const b: Batch = { n, done: 0, resolve, ...(latency ? { startedMs: [] } : {}) };
  batches.set(id, b);
  return { id, b, finished };
}

async function drain(n: number, inflight: number): Promise<{ ms: number; n: number }> {
  const r = runner;
  if (!r) throw new Error("runner not started");
  const { id, finished } = newBatch(n, false);
  let next = 0;
  const t0 = performance.now();
  const submitter = async () => {
    while (next < n) {
      next++;
      await r.addJob("noop", { b: id });
    }
  };
  await Promise.all(Array.from({ length: Math.min(inflight, n) }, submitter));
  await finished;
  const ms = performance.now() - t0;
  batches.delete(id);
  return { ms, n };
}

async function latency(n: number, spacingMs: number): Promise<{ samplesMs: number[] }> {
  const r = runner;
  if (!r) throw new Error("runner not started");
  const { id, b, finished } = newBatch(n, true);
  const t0 = performance.now();
  const adds: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const wait = t0 + i * spacingMs - performance.now();
    if (wait > 0) await new Promise((res) => setTimeout(res, wait));
    adds.push(r.addJob("noop", { b: id }));
  }
  await Promise.all(adds);
  await finished;
  batches.delete(id);
  return { samplesMs: b.startedMs ?? [] };
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? "/", "http://127.0.0.1");
  const reply = (status: number, body: unknown) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  };
  if (url.pathname === "/probe") return reply(runner ? 200 : 503, { ready: Boolean(runner) });
  const n = Number(url.searchParams.get("n") ?? "0");
  let work: Promise<unknown> | undefined;
  if (req.method === "POST" && url.pathname === "/drain") work = drain(n, Number(url.searchParams.get("inflight") ?? "10"));
  else if (req.method === "POST" && url.pathname === "/latency") work = latency(n, Number(url.searchParams.get("spacingMs") ?? "25"));
  if (!work) return reply(404, { error: "not found" });
  work.then(
    (body) => reply(200, body),
    (err: unknown) => reply(500, { error: err instanceof Error ? err.message : String(err) }),
  );
});

async function main() {
  runner = await run({
    pgPool: pool,
    concurrency,
    noHandleSignals: true,
    pollInterval: 2000,
    logger: quiet,
    events,
    taskList: {
      noop: async (_payload, helpers) => {
        const id = batchOf(helpers.job);
        const b = id === undefined ? undefined : batches.get(id);
        b?.startedMs?.push(performance.timeOrigin + performance.now() - helpers.job.created_at.getTime());
      },
    },
  });
  server.listen(port, "127.0.0.1");
}

process.on("SIGTERM", () => {
  server.close();
  server.closeAllConnections();
  void (async () => {
    try {
      await runner?.stop();
      await pool.end();
    } finally {
      process.exit(0);
    }
  })();
});

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
});

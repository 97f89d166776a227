/**
 * Helpers for issue 4's rows: submitting hello runs through the API, waiting
 * for them in the database, the worker baseline's HTTP controls, and the
 * server's start-latency histogram from /metrics.
 */
import pg from "pg";
import { sleep } from "../../lib/http.js";
import { KeepAlivePoster } from "../../lib/keepAlivePoster.js";
import { jsonHeaders, messagesPath, postMessage, type Session } from "../issue3/api.js";
import { OPEN_RUN_SQL } from "../../../shared/schema.js";

/** The no-op stand-in: the hello agent, offline and short. */
export const HELLO = { content: "hi", agent: "hello" } as const;

/** A client of the bench database for reading `runs` (not the server's pool). */
export async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, application_name: "esa-bench" });
  client.on("error", () => undefined);
  await client.connect();
  return client;
}

/**
 * Waits until every run in `ids` has finished; throws when one did not
 * succeed or `timeoutMs` passes. Resolves with `performance.now()` at the poll
 * that saw the last one (polls every `pollMs`).
 *
 * With `onlyRuns` (the database holds no runs but the bench's, and every
 * earlier batch has finished), it polls the count of runs not finished, which
 * reads only those (runs_open_idx), and checks `ids` once at the end: a
 * poll of every id probed a thousand index entries each time, every 5 ms, on
 * the PostgreSQL whose CPU the trial measures (the worker baseline counts its
 * jobs in its own process, at no such cost).
 */
export async function waitSucceeded(db: pg.Client, ids: readonly string[], timeoutMs: number, pollMs = 5, onlyRuns = false): Promise<number> {
  const until = performance.now() + timeoutMs;
  if (onlyRuns) {
    for (;;) {
      const r = await db.query<{ open: number }>(`select count(*)::int as open from runs where ${OPEN_RUN_SQL}`);
      const at = performance.now();
      if (r.rows[0]?.open === 0) {
        await waitSucceeded(db, ids, 0);
        return at;
      }
      if (at > until) break;
      await sleep(pollMs);
    }
  }
  for (;;) {
    const r = await db.query<{ ok: number; bad: number; why: string | null }>(
      `select count(*) filter (where status = 'succeeded')::int as ok,
              count(*) filter (where status in ('failed', 'cancelled'))::int as bad,
              max(error_code || ': ' || coalesce(error_message, '')) as why
       from runs where id = any($1::uuid[])`,
      [ids],
    );
    const at = performance.now();
    const row = r.rows[0];
    if (row && row.bad > 0) throw new Error(`${row.bad} of ${ids.length} runs did not succeed (${row.why ?? "no error recorded"})`);
    if (row && row.ok === ids.length) return at;
    if (at > until) {
      const states = await db.query<{ status: string; n: number }>("select status, count(*)::int as n from runs where id = any($1::uuid[]) group by status", [ids]);
      const seen = states.rows.map((x) => `${x.n} ${x.status}`).join(", ");
      throw new Error(`only ${row?.ok ?? 0} of ${ids.length} runs succeeded within ${timeoutMs} ms (${seen})`);
    }
    await sleep(pollMs);
  }
}

/**
 * Posts `n` hello messages, `inflight` at a time, spread over `conversations`;
 * resolves with the run ids. The requests are what a browser sends (cookie,
 * JSON body), each submitter on a keep-alive connection of its own, through
 * KeepAlivePoster: on a small machine the load generator's CPU is taken from
 * the server and PostgreSQL it measures (the worker baseline adds its jobs
 * in-process, at no such cost), and node:http cost this process about ten
 * times as much per request (fetch, thirty times).
 */
export async function submitRuns(session: Session, conversations: readonly string[], n: number, inflight: number): Promise<string[]> {
  const url = new URL(session.baseUrl);
  const body = Buffer.from(JSON.stringify(HELLO));
  const posters = Array.from({ length: Math.min(inflight, n) }, (_, k) => {
    const conversation = conversations[k % conversations.length] ?? "";
    const request = KeepAlivePoster.build("POST", messagesPath(conversation), url.host, jsonHeaders(session), body);
    return { conversation, poster: new KeepAlivePoster(url.hostname, Number(url.port), request) };
  });
  const ids: string[] = [];
  let next = 0;
  const submitter = async ({ conversation, poster }: (typeof posters)[number]) => {
    while (next < n) {
      next++;
      const res = await poster.send();
      if (res.status !== 202) throw new Error(`POST ${messagesPath(conversation)} answered ${res.status}: ${res.body.slice(0, 300)}`);
      ids.push((JSON.parse(res.body) as { run: { id: string } }).run.id);
    }
  };
  try {
    await Promise.all(posters.map(submitter));
  } finally {
    for (const p of posters) p.poster.close();
  }
  return ids;
}

/** Posts one hello message every `spacingMs`; resolves with the run ids once all are answered. */
export async function submitSpaced(
  session: Session,
  conversation: string,
  n: number,
  spacingMs: number,
  body: { content: string; agent?: string } = HELLO,
): Promise<string[]> {
  const t0 = performance.now();
  const posts: Promise<string>[] = [];
  for (let i = 0; i < n; i++) {
    const wait = t0 + i * spacingMs - performance.now();
    if (wait > 0) await sleep(wait);
    posts.push(postMessage(session, conversation, body).then((r) => r.run.id));
  }
  return Promise.all(posts);
}

/** `runs.started_at − runs.created_at`, ms, both set by the database (millisecond columns). */
export async function startLatencies(db: pg.Client, ids: readonly string[]): Promise<number[]> {
  const r = await db.query<{ ms: number }>(
    `select (extract(epoch from started_at - created_at) * 1000)::float8 as ms from runs where id = any($1::uuid[]) and started_at is not null`,
    [ids],
  );
  if (r.rows.length !== ids.length) throw new Error(`${ids.length - r.rows.length} of ${ids.length} runs never started`);
  return r.rows.map((x) => x.ms);
}

async function postJson<T>(url: string): Promise<T> {
  const res = await fetch(url, { method: "POST", signal: AbortSignal.timeout(60_000) });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`POST ${url} answered ${res.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text) as T;
}

/** The baseline drains `n` no-op jobs added `inflight` at a time: ms from the first add to the last success. */
export const workerDrain = (baseUrl: string, n: number, inflight: number) => postJson<{ ms: number; n: number }>(`${baseUrl}/drain?n=${n}&inflight=${inflight}`);

/** The baseline adds one no-op job every `spacingMs`: add → task start, ms. */
export const workerLatency = (baseUrl: string, n: number, spacingMs: number) =>
  postJson<{ samplesMs: number[] }>(`${baseUrl}/latency?n=${n}&spacingMs=${spacingMs}`);

/** Cumulative bucket counts of an unlabelled Prometheus histogram: upper bound (s) → count, +Inf included. */
export type Buckets = Map<number, number>;

export async function scrapeHistogram(baseUrl: string, name: string): Promise<Buckets> {
  const res = await fetch(`${baseUrl}/metrics`);
  const text = await res.text();
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}: ${text.slice(0, 200)}`);
  const out: Buckets = new Map();
  const re = new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\S+)$`, "gm");
  for (const m of text.matchAll(re)) out.set(m[1] === "+Inf" ? Infinity : Number(m[1]), Number(m[2]));
  if (out.size === 0) throw new Error(`no ${name} histogram in /metrics`);
  return out;
}

/** after − before, per bucket. */
export function bucketDelta(before: Buckets, after: Buckets): Buckets {
  const out: Buckets = new Map();
  for (const [le, n] of after) out.set(le, n - (before.get(le) ?? 0));
  return out;
}

/**
 * The q-quantile of a cumulative histogram, interpolated linearly within its
 * bucket as Prometheus' histogram_quantile does (0 is the lower edge of the
 * first bucket). Seconds; NaN when empty.
 */
export function histogramQuantile(buckets: Buckets, q: number): number {
  const sorted = [...buckets].sort((a, b) => a[0] - b[0]);
  const total = sorted.at(-1)?.[1] ?? 0;
  if (total === 0) return Number.NaN;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, count] of sorted) {
    if (count >= rank) {
      if (le === Infinity) return prevLe;
      return prevLe + ((le - prevLe) * (rank - prevCount)) / Math.max(1, count - prevCount);
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

/**
 * Issue 3: `POST /api/conversations/:id/messages` through the full stack
 * (identity cookie, CSRF check, validation, the one statement writing message,
 * run and job, the DTOs) against bare Express 5 with `pg` sending the very
 * same statement (`POST_MESSAGE_SQL`) and answering its rows, 10 connections,
 * on the same fresh database.
 *
 * The server runs with ENABLE_AGENTS=false: this row measures taking
 * messages, not executing runs (issue 4's rows do that). With the queue on,
 * hello runs would share the server's core with the requests measured, and
 * ten at a time they cannot keep up with the POST rate anyway. The statement
 * still writes message + run + job and checks the queue depth, on both sides.
 *
 * That depth check counts the queued runs (`limit MAX_QUEUE_DEPTH`), all of
 * them once MAX_QUEUE_DEPTH is raised far enough that nothing is shed, so
 * with no worker draining them each POST costs more than the last (measured
 * while writing this row: about 2 ms per count at 20,000 queued runs, and
 * 20-28 % fewer POSTs/s than from an empty queue). To keep
 * the sides comparable, the bench empties the queue before every load (deletes
 * the queued runs and their jobs, then VACUUM): each starts from the idle
 * queue a draining worker would leave. Same rounds as the other load rows
 * (B T, T B, B T; best round of each side). Both sides post into one
 * conversation each, so the statement's `update conversations` serialises
 * them on that row alike.
 *
 * An info line compares with the same bare server doing a one-row
 * `insert into messages` instead (one short load after the rounds): what the
 * statement's depth check, run, job and conversation update cost.
 */
import type { BenchRow } from "../../lib/types.js";
import type { LoadResult } from "../../lib/load.js";
import { comparisonMeasurements } from "../../lib/compare.js";
import { connect } from "../issue4/runs.js";
import { createConversation, explainFailure, jsonHeaders, messagesPath, openSession, postMessage, spawnOwnServer, stopServer } from "./api.js";

const CONNECTIONS = 10;
const GOAL = 0.6;
const MAX_QUEUE_DEPTH = "100000000";
const BODY = JSON.stringify({ content: "How long until the next bus to the airport?" });

export const postMessagesRow: BenchRow = {
  name: "issue3-post",
  issue: 3,
  description: `POST /api/conversations/:id/messages req/s and p99 at ${CONNECTIONS} connections, vs bare Express 5 + pg sending the same statement`,
  async run(ctx) {
    const { server, databaseUrl } = await spawnOwnServer(ctx, "bench_issue3_post", { ENABLE_AGENTS: "false", MAX_QUEUE_DEPTH });
    const db = await connect(databaseUrl);
    let served = 0;
    try {
      return await explainFailure(server, async () => {
        const session = await openSession(server.baseUrl);
        const mine = await createConversation(session, "server");
        const theirs = await createConversation(session, "baseline");
        const bare = await ctx.spawnBaseline("issue3ExpressPg", { DATABASE_URL: databaseUrl, USER_ID: session.userId, MAX_QUEUE_DEPTH }, "/probe");
        try {
          const real = await postMessage(session, mine.id, JSON.parse(BODY) as { content: string });
          const check = await fetch(`${bare.baseUrl}${messagesPath(theirs.id)}`, { method: "POST", headers: { "content-type": "application/json" }, body: BODY });
          if (check.status !== 202) throw new Error(`bare Express answered ${check.status}: ${(await check.text()).slice(0, 300)}`);
          const bareBody = (await check.json()) as { message: { content: string }; run: { status: string } };
          if (bareBody.message.content !== real.message.content || bareBody.run.status !== "queued" || real.run.status !== "queued") {
            throw new Error(`unexpected answers: server ${JSON.stringify(real).slice(0, 200)}, bare ${JSON.stringify(bareBody).slice(0, 200)}`);
          }

          const emptyQueue = async () => {
            const runs = await db.query("delete from runs where status = 'queued'");
            await db.query("delete from graphile_worker._private_jobs");
            await db.query("vacuum (analyze) runs, messages, graphile_worker._private_jobs");
            return runs.rowCount ?? 0;
          };
          // One header set for both sides: the baseline ignores the cookie.
          const shape = { connections: CONNECTIONS, method: "POST" as const, headers: jsonHeaders(session), body: BODY };
          const targets = {
            measured: { url: `${server.baseUrl}${messagesPath(mine.id)}`, pid: server.pid },
            baseline: { url: `${bare.baseUrl}${messagesPath(theirs.id)}`, pid: bare.pid },
          };
          const { warmupMs, durationMs, rounds } = ctx.timing;
          const results = { measured: [] as LoadResult[], baseline: [] as LoadResult[] };
          const queuedAfter = { measured: [] as number[], baseline: [] as number[] };
          await emptyQueue();
          for (let i = 0; i < rounds; i++) {
            const order = i % 2 === 0 ? (["baseline", "measured"] as const) : (["measured", "baseline"] as const);
            for (const which of order) {
              const { url, pid } = targets[which];
              const r = await ctx.load({ ...shape, url, warmupMs, durationMs }, { serverPid: pid });
              const queued = await emptyQueue();
              results[which].push(r);
              if (which === "measured") served += r.requests2xx + r.warmupRequests2xx;
              queuedAfter[which].push(queued);
              const cpu = r.serverCpu ? `, server ${r.serverCpu.usPerRequest} µs CPU/req at ${Math.round(r.serverCpu.utilisation * 100)} % of a core` : "";
              ctx.progress(`${which.padEnd(8)} POST: ${Math.round(r.rps)} req/s, p99 ${r.latencyMs.p99} ms${cpu}, load generator at ${Math.round(r.generatorUtilisation * 100)} %; ${queued} runs queued at the end`);
            }
          }
          // Context, once: the same bare server with a one-row insert into messages instead of the statement.
          const plain = await ctx.load({ ...shape, url: `${bare.baseUrl}/insert/${theirs.id}`, warmupMs: warmupMs / 2, durationMs: durationMs / 2 }, { serverPid: bare.pid });
          await emptyQueue();
          ctx.progress(`plain insert POST: ${Math.round(plain.rps)} req/s, p99 ${plain.latencyMs.p99} ms`);
          const best = (rs: LoadResult[]) => rs.reduce((a, b) => (b.rps > a.rps ? b : a));
          const lines = comparisonMeasurements({
            subject: "POST …/messages",
            connections: CONNECTIONS,
            baselineLabel: "bare Express 5 + pg, same statement",
            comparison: { measured: best(results.measured), baseline: best(results.baseline), rounds: results },
            rpsGoal: { kind: "ratioAtLeast", ratio: GOAL },
            p99Goal: { kind: "ratioAtMost", ratio: Math.round((1 / GOAL) * 100) / 100 },
            details: { queuedRunsAtEndOfEachLoad: queuedAfter, responseSample: real },
          });
          // The generic note blames other processes when a side is short of CPU; here both wait on PostgreSQL.
          const busy = (r: LoadResult) => Math.round((r.serverCpu?.utilisation ?? 1) * 100);
          const m = best(results.measured);
          const b = best(results.baseline);
          const first = lines[0];
          if (first && (busy(m) < 80 || busy(b) < 80)) {
            first.notes = [
              `POST …/messages: the server used ${busy(m)} % of a core and the baseline ${busy(b)} % in their best rounds, the generator ${Math.round(m.generatorUtilisation * 100)} %: ` +
                "both mostly wait on PostgreSQL (the statement, and its update of the one conversation row, which the 10 clients take in turn), so req/s is the database's; the CPU/req line is the app's own cost",
            ];
          }
          lines.push({
            name: `POST …/messages req/s @${CONNECTIONS}c vs a plain insert`,
            measured: { value: best(results.measured).rps, unit: "req/s" },
            baseline: { value: plain.rps, unit: "req/s", label: "bare Express 5 + pg, one-row insert into messages" },
            goal: { kind: "info" },
            details: { plain },
          });
          return lines;
        } finally {
          await bare.stop();
        }
      });
    } finally {
      await db.end().catch(() => undefined);
      await stopServer(ctx, server, { label: "server under POST …/messages", units: served });
    }
  },
};

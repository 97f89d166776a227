/**
 * Issue 3: `GET /api/conversations/:id/messages?limit=50` on a conversation of
 * 50 messages through the full stack (identity cookie, query validation, and
 * one prepared statement that checks the conversation is the caller's and
 * selects the page) against bare Express 5 sending the list select alone with
 * `pg` and answering the same JSON, 10 connections, on
 * the same fresh database. No `accept-encoding` is sent (autocannon sends
 * none), so neither side compresses.
 */
import type { BenchRow } from "../../lib/types.js";
import { comparisonMeasurements, loadAgainstBaseline } from "../../lib/compare.js";
import { createConversation, explainFailure, getJson, messagesPath, openSession, postMessage, spawnOwnServer, stopServer } from "./api.js";

const CONNECTIONS = 10;
const GOAL = 0.6;
const MESSAGES = 50;

export const getMessagesRow: BenchRow = {
  name: "issue3-get",
  issue: 3,
  description: `GET /api/conversations/:id/messages (${MESSAGES} messages) req/s at ${CONNECTIONS} connections, vs bare Express 5 + pg sending the same select`,
  async run(ctx) {
    const { server, databaseUrl } = await spawnOwnServer(ctx, "bench_issue3_get", { ENABLE_AGENTS: "false" });
    let served = 0;
    try {
      return await explainFailure(server, async () => {
        const session = await openSession(server.baseUrl);
        const conversation = await createConversation(session, "fifty messages");
        for (let i = 0; i < MESSAGES; i++) {
          await postMessage(session, conversation.id, { content: `Message ${i + 1}: ${"lorem ipsum dolor sit amet ".repeat(1 + (i % 7))}`.trim() });
        }
        const path = `${messagesPath(conversation.id)}?limit=${MESSAGES}`;
        const bare = await ctx.spawnBaseline("issue3ExpressPg", { DATABASE_URL: databaseUrl, USER_ID: session.userId }, "/probe");
        try {
          const real = JSON.stringify(await getJson(session, path));
          const check = await fetch(`${bare.baseUrl}${path}`);
          const bareBody = await check.text();
          if (check.status !== 200 || bareBody !== real) {
            throw new Error(`bare Express answers ${check.status} ${bareBody.slice(0, 200)}…, the server ${real.slice(0, 200)}…`);
          }
          const items = (JSON.parse(real) as { items: unknown[] }).items.length;
          if (items !== MESSAGES) throw new Error(`the page holds ${items} messages, not ${MESSAGES}`);
          const comparison = await loadAgainstBaseline(
            ctx,
            { connections: CONNECTIONS, headers: { cookie: session.cookie } },
            { measured: { url: `${server.baseUrl}${path}`, pid: server.pid }, baseline: { url: `${bare.baseUrl}${path}`, pid: bare.pid } },
          );
          for (const r of comparison.rounds.measured) served += r.requests2xx + r.warmupRequests2xx;
          return comparisonMeasurements({
            subject: `GET …/messages (${MESSAGES})`,
            connections: CONNECTIONS,
            baselineLabel: "bare Express 5 + pg, same select",
            comparison,
            rpsGoal: { kind: "ratioAtLeast", ratio: GOAL },
            details: { responseBytes: Buffer.byteLength(real) },
          });
        } finally {
          await bare.stop();
        }
      });
    } finally {
      await stopServer(ctx, server, { label: "server under GET …/messages", units: served });
    }
  },
};

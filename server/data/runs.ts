import { and, eq } from "drizzle-orm";
import { runs, type Run } from "../../shared/schema.js";
import type { RunDto } from "../../shared/api.js";
import type { Db } from "./db.js";

export const toRunDto = (r: Run): RunDto => ({
  id: r.id,
  conversationId: r.conversationId,
  messageId: r.messageId,
  status: r.status,
  requestedAgent: r.requestedAgent,
  agent: r.agent,
  routeReason: r.routeReason,
  attempt: r.attempt,
  failures: r.failures,
  error: r.errorCode ? { code: r.errorCode, message: r.errorMessage ?? "" } : null,
  usage: r.promptTokens !== null || r.completionTokens !== null ? { promptTokens: r.promptTokens ?? 0, completionTokens: r.completionTokens ?? 0 } : null,
  createdAt: r.createdAt.toISOString(),
  startedAt: r.startedAt?.toISOString() ?? null,
  finishedAt: r.finishedAt?.toISOString() ?? null,
});

export function createRunStore(db: Db) {
  return {
    async get(userId: string, id: string): Promise<Run | undefined> {
      const [row] = await db
        .select()
        .from(runs)
        .where(and(eq(runs.id, id), eq(runs.userId, userId)));
      return row;
    },
  };
}

export type RunStore = ReturnType<typeof createRunStore>;

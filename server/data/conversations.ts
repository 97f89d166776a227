import { and, desc, eq, sql } from "drizzle-orm";
import { conversations, type Conversation } from "../../shared/schema.js";
import type { ConversationDto, Page } from "../../shared/api.js";
import type { Db } from "./db.js";
import { decodeCursor, encodeCursor } from "./cursor.js";

export const toConversationDto = (c: Conversation): ConversationDto => ({
  id: c.id,
  title: c.title,
  createdAt: c.createdAt.toISOString(),
  updatedAt: c.updatedAt.toISOString(),
});

/** Every function takes the caller's id: no query reaches another user's rows. */
export function createConversationStore(db: Db) {
  return {
    async create(userId: string, title: string | undefined): Promise<Conversation> {
      const [row] = await db
        .insert(conversations)
        .values({ userId, ...(title ? { title } : {}) })
        .returning();
      if (!row) throw new Error("conversation insert returned no row");
      return row;
    },

    async get(userId: string, id: string): Promise<Conversation | undefined> {
      const [row] = await db
        .select()
        .from(conversations)
        .where(and(eq(conversations.id, id), eq(conversations.userId, userId)));
      return row;
    },

    /** Newest first by last activity. */
    async list(userId: string, limit: number, cursor: string | undefined): Promise<Page<ConversationDto>> {
      const after = cursor ? decodeCursor(cursor) : null;
      const rows = await db
        .select()
        .from(conversations)
        .where(
          and(
            eq(conversations.userId, userId),
            // A row comparison, not `a < x or (a = x and id < y)`: PostgreSQL
            // turns it into an index range, so a late page starts where the
            // cursor points instead of filtering every newer row.
            after ? sql`(${conversations.updatedAt}, ${conversations.id}) < (${after.at.toISOString()}::timestamptz, ${after.id}::uuid)` : undefined,
          ),
        )
        .orderBy(desc(conversations.updatedAt), desc(conversations.id))
        .limit(limit + 1);
      const more = rows.length > limit;
      const items = rows.slice(0, limit);
      const last = items.at(-1);
      return { items: items.map(toConversationDto), nextCursor: more && last ? encodeCursor(last.updatedAt, last.id) : null };
    },

    async rename(userId: string, id: string, title: string): Promise<Conversation | undefined> {
      const [row] = await db
        .update(conversations)
        .set({ title, updatedAt: sql`now()` })
        .where(and(eq(conversations.id, id), eq(conversations.userId, userId)))
        .returning();
      return row;
    },

    /** Deletes the conversation; its messages, runs and run events go with it (FK cascade). */
    async remove(userId: string, id: string): Promise<boolean> {
      const rows = await db
        .delete(conversations)
        .where(and(eq(conversations.id, id), eq(conversations.userId, userId)))
        .returning({ id: conversations.id });
      return rows.length > 0;
    },
  };
}

export type ConversationStore = ReturnType<typeof createConversationStore>;

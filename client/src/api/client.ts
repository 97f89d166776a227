/**
 * The HTTP API, typed with shared/api.ts (type-only imports: the zod schemas
 * stay on the server and out of the bundle).
 */
import type { ConversationDto, MessageDto, Page, PostMessageResponse, RunDto, SessionResponse } from "../../../shared/api";
import { request } from "./http";

export interface AgentSkill {
  id: string;
  name: string;
  description: string;
  examples: string[];
}

/** An entry of GET /api/agents (server/agents/routes.ts). */
export interface AgentInfo {
  name: string;
  description: string;
  skills: AgentSkill[];
  available: boolean;
  reason?: string;
}

const enc = encodeURIComponent;

export const api = {
  session: (signal?: AbortSignal) => request<SessionResponse>("/api/session", signal ? { signal } : {}),
  agents: () => request<{ agents: AgentInfo[] }>("/api/agents").then((r) => r.agents),

  listConversations: (cursor?: string | null) =>
    request<Page<ConversationDto>>(`/api/conversations?limit=50${cursor ? `&cursor=${enc(cursor)}` : ""}`),
  createConversation: (title?: string) => request<ConversationDto>("/api/conversations", { method: "POST", body: title ? { title } : {} }),
  renameConversation: (id: string, title: string) => request<ConversationDto>(`/api/conversations/${enc(id)}`, { method: "PATCH", body: { title } }),
  deleteConversation: (id: string) => request<void>(`/api/conversations/${enc(id)}`, { method: "DELETE" }),

  listMessages: (conversationId: string, cursor?: string | null) =>
    request<Page<MessageDto>>(`/api/conversations/${enc(conversationId)}/messages?limit=100${cursor ? `&cursor=${enc(cursor)}` : ""}`),
  /** The message POST; while the WebSocket is open the store sends over it instead (RealtimeConnection.sendMessage). */
  postMessage: (conversationId: string, content: string, agent?: string) =>
    request<PostMessageResponse>(`/api/conversations/${enc(conversationId)}/messages`, { method: "POST", body: agent ? { content, agent } : { content } }),

  getRun: (id: string) => request<RunDto>(`/api/runs/${enc(id)}`),
  cancelRun: (id: string) => request<RunDto>(`/api/runs/${enc(id)}/cancel`, { method: "POST" }),
};

export type { ConversationDto, MessageDto, PostMessageResponse, RunDto };

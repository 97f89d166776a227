/**
 * The chat's state and the actions on it: conversations, the messages of
 * those opened, and the runs being shown. One instance per page (main.tsx),
 * read by components through useSyncExternalStore; every update replaces
 * the state object, so components compare by identity.
 */
import { useSyncExternalStore } from "react";
import { api, type AgentInfo, type ConversationDto, type MessageDto, type PostMessageResponse, type RunDto } from "../../api/client";
import { ApiError, describeError } from "../../api/http";
import { SendOutcomeUnknown, SendRefused, type RealtimeConnection } from "../../realtime/connection";
import { getRoute, navigate } from "../../router";
import { applyRunEvent, isFinished, newRunView, type RunView } from "./runView";
import { runMemory } from "./runMemory";

export const DEFAULT_TITLE = "New conversation";
/** After an unanswered `send`, how long to wait before the second look for its message, ms. */
const UNANSWERED_SEND_GRACE_MS = 1500;

export interface Thread {
  status: "loading" | "ready" | "error";
  messages: MessageDto[];
  error: string | null;
}

export interface Notice {
  id: number;
  text: string;
}

export interface ChatState {
  /** Session and first lists loaded. */
  status: "loading" | "ready" | "error";
  error: string | null;
  agents: AgentInfo[];
  conversations: ConversationDto[];
  /** More conversations to load (cursor), or null. */
  conversationsCursor: string | null;
  currentId: string | null;
  threads: Readonly<Record<string, Thread>>;
  runs: Readonly<Record<string, RunView>>;
  notice: Notice | null;
}

/** A title from a first message: its first line, cut at a word near 60 characters. */
export function titleFrom(content: string): string {
  const line = content.replace(/^\s*@[A-Za-z][\w-]*[\s,:;]*/, "").trim().split("\n")[0]?.trim() ?? "";
  if (!line) return DEFAULT_TITLE;
  if (line.length <= 60) return line;
  const cut = line.slice(0, 60);
  const space = cut.lastIndexOf(" ");
  return `${(space > 30 ? cut.slice(0, space) : cut).trimEnd()}…`;
}

export class ChatStore {
  private state: ChatState = {
    status: "loading",
    error: null,
    agents: [],
    conversations: [],
    conversationsCursor: null,
    currentId: null,
    threads: {},
    runs: {},
    notice: null,
  };
  private readonly listeners = new Set<() => void>();
  private readonly unwatch = new Map<string, () => void>();
  private noticeSeq = 0;
  private noticeTimer: number | null = null;

  constructor(private readonly realtime: RealtimeConnection) {}

  getState = (): ChatState => this.state;

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  private set(patch: Partial<ChatState>) {
    this.state = { ...this.state, ...patch };
    for (const fn of this.listeners) fn();
  }

  private setThread(id: string, thread: Thread) {
    this.set({ threads: { ...this.state.threads, [id]: thread } });
  }

  private setRun(runId: string, update: (v: RunView) => RunView) {
    const v = this.state.runs[runId];
    if (v) this.set({ runs: { ...this.state.runs, [runId]: update(v) } });
  }

  notify(text: string) {
    if (this.noticeTimer !== null) clearTimeout(this.noticeTimer);
    this.set({ notice: { id: ++this.noticeSeq, text } });
    this.noticeTimer = window.setTimeout(() => this.dismissNotice(), 8000);
  }

  dismissNotice = () => {
    if (this.noticeTimer !== null) clearTimeout(this.noticeTimer);
    this.noticeTimer = null;
    if (this.state.notice) this.set({ notice: null });
  };

  // ------------------------------------------------------------ loading

  /** The session (which the WebSocket upgrade needs), then agents and conversations. */
  async init(): Promise<void> {
    for (let delay = 500; ; delay = Math.min(delay * 2, 8000)) {
      try {
        await api.session();
        break;
      } catch (err) {
        // 503 while the server starts (database not ready): wait and ask again.
        if (err instanceof ApiError && (err.status === 503 || err.status === 0)) {
          this.set({ status: "loading", error: err.message });
          await new Promise((r) => setTimeout(r, delay));
          continue;
        }
        this.set({ status: "error", error: describeError(err) });
        return;
      }
    }
    this.realtime.start();
    const [agents, page] = await Promise.allSettled([api.agents(), api.listConversations()]);
    if (page.status === "rejected") {
      this.set({ status: "error", error: describeError(page.reason) });
      return;
    }
    this.set({
      status: "ready",
      error: null,
      agents: agents.status === "fulfilled" ? agents.value : [],
      conversations: page.value.items,
      conversationsCursor: page.value.nextCursor,
    });
    if (this.state.currentId) void this.loadThread(this.state.currentId);
  }

  async loadMoreConversations(): Promise<void> {
    const cursor = this.state.conversationsCursor;
    if (!cursor) return;
    try {
      const page = await api.listConversations(cursor);
      const known = new Set(this.state.conversations.map((c) => c.id));
      this.set({ conversations: [...this.state.conversations, ...page.items.filter((c) => !known.has(c.id))], conversationsCursor: page.nextCursor });
    } catch (err) {
      this.notify(`Could not load more conversations: ${describeError(err)}`);
    }
  }

  /** Shows a conversation (null: a new, not yet created one). */
  open(id: string | null) {
    if (id === this.state.currentId) return;
    this.set({ currentId: id });
    // Loaded again on every visit (another tab may have written to it); what is known stays on screen meanwhile.
    if (id && this.state.status === "ready" && this.state.threads[id]?.status !== "loading") void this.loadThread(id);
  }

  private async loadThread(id: string): Promise<void> {
    const before = this.state.threads[id];
    this.setThread(id, { status: "loading", messages: before?.messages ?? [], error: null });
    try {
      const messages: MessageDto[] = [];
      let cursor: string | null = null;
      for (let pages = 0; pages < 20; pages++) {
        const page: { items: MessageDto[]; nextCursor: string | null } = await api.listMessages(id, cursor);
        messages.push(...page.items);
        cursor = page.nextCursor;
        if (!cursor) break;
      }
      // A message sent while the list was on its way is kept.
      const fetched = new Set(messages.map((m) => m.id));
      const sentMeanwhile = (this.state.threads[id]?.messages ?? []).filter((m) => !fetched.has(m.id) && !before?.messages.some((b) => b.id === m.id));
      const merged = sentMeanwhile.length ? [...messages, ...sentMeanwhile].sort((a, b) => a.createdAt.localeCompare(b.createdAt)) : messages;
      this.setThread(id, { status: "ready", messages: merged, error: null });
      this.resumeRuns(id, merged);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        runMemory.forgetConversation(id);
        this.setThread(id, { status: "error", messages: [], error: "This conversation does not exist, or is not yours." });
        return;
      }
      this.setThread(id, { status: "error", messages: before?.messages ?? [], error: describeError(err) });
    }
  }

  /**
   * Runs this browser started in the conversation that have no assistant
   * message: still streaming (after a reload), or failed or stopped. Their
   * streams are replayed from the start, which rebuilds exactly what was shown.
   */
  private resumeRuns(conversationId: string, messages: MessageDto[]) {
    const answered = new Set(messages.filter((m) => m.role === "assistant" && m.runId).map((m) => m.runId));
    const asked = new Set(messages.filter((m) => m.role === "user").map((m) => m.id));
    const remembered = runMemory.forConversation(conversationId);
    runMemory.forget(remembered.filter((r) => answered.has(r.runId) || !asked.has(r.userMessageId)).map((r) => r.runId));
    const runs = { ...this.state.runs };
    const resume: string[] = [];
    for (const r of remembered) {
      if (answered.has(r.runId) || !asked.has(r.userMessageId) || runs[r.runId]) continue;
      runs[r.runId] = newRunView({ id: r.runId, conversationId, messageId: r.userMessageId, agent: null, routeReason: null });
      resume.push(r.runId);
    }
    if (resume.length === 0) return;
    this.set({ runs });
    for (const runId of resume) this.watchRun(runId, 0);
  }

  // ------------------------------------------------------------ runs

  /** `subscribed`: the server holds the subscription already (the run of a socket `send`). */
  private watchRun(runId: string, after: number, subscribed = false) {
    this.unwatch.get(runId)?.();
    const stop = this.realtime.watch(
      runId,
      {
        onEvent: (frame) => {
          this.setRun(runId, (v) => applyRunEvent(v, frame));
          const v = this.state.runs[runId];
          if (v && isFinished(v)) {
            this.unwatch.delete(runId);
            if (v.phase === "succeeded") runMemory.forget([runId]);
          }
        },
        onError: (code, message) => {
          this.unwatch.delete(runId);
          if (code === "not_found") {
            runMemory.forget([runId]);
            const { [runId]: _gone, ...rest } = this.state.runs;
            this.set({ runs: rest });
            return;
          }
          this.setRun(runId, (v) => ({ ...v, phase: "failed", error: { code, message } }));
        },
      },
      after,
      { subscribed },
    );
    this.unwatch.set(runId, stop);
  }

  private addRun(run: RunDto, subscribed: boolean) {
    this.set({ runs: { ...this.state.runs, [run.id]: newRunView(run) } });
    runMemory.remember({ runId: run.id, conversationId: run.conversationId, userMessageId: run.messageId });
    this.watchRun(run.id, 0, subscribed);
  }

  /** The run of the conversation still going, if any. */
  activeRun(conversationId: string | null): RunView | null {
    if (!conversationId) return null;
    for (const v of Object.values(this.state.runs)) if (v.conversationId === conversationId && !isFinished(v)) return v;
    return null;
  }

  async stop(runId: string): Promise<void> {
    const v = this.state.runs[runId];
    if (!v || isFinished(v)) return;
    this.setRun(runId, (x) => ({ ...x, stopping: true }));
    if (this.realtime.cancel(runId)) return;
    try {
      const run = await api.cancelRun(runId);
      if (run.status === "cancelled") this.setRun(runId, (x) => (isFinished(x) ? x : { ...x, phase: "cancelled", stopping: false }));
    } catch (err) {
      this.setRun(runId, (x) => ({ ...x, stopping: false }));
      this.notify(`Could not stop the answer: ${describeError(err)}`);
    }
  }

  // ------------------------------------------------------------ writing

  /** Sends a message in the current conversation (creating it first on the start page). False when it was not sent. */
  async send(content: string, agent: string | null): Promise<boolean> {
    // The address is the truth: it changes at once, the rendered page a moment later.
    const route = getRoute();
    let id = route.page === "chat" ? route.conversationId : this.state.currentId;
    try {
      if (!id) {
        const c = await api.createConversation(titleFrom(content));
        this.set({ conversations: [c, ...this.state.conversations], threads: { ...this.state.threads, [c.id]: { status: "ready", messages: [], error: null } } });
        id = c.id;
        this.set({ currentId: id });
        navigate(`/c/${id}`);
      }
      const conversationId = id;
      const known = new Set((this.state.threads[conversationId]?.messages ?? []).map((m) => m.id));
      const post = async () => {
        const posted = await api.postMessage(conversationId, content, agent ?? undefined);
        this.accept(conversationId, posted, false);
        return posted;
      };
      // Over the socket when it is open: the run is subscribed in the same step, so its first tokens are live.
      const overSocket = this.realtime.sendMessage({ conversationId, content, ...(agent ? { agent } : {}) }, (posted) => this.accept(conversationId, posted, true));
      let posted: PostMessageResponse;
      try {
        posted = await (overSocket ?? post());
      } catch (err) {
        if (err instanceof SendOutcomeUnknown) return await this.settleUnanswered(conversationId, content, known, err.reason);
        // Refused before anything was stored because this socket is busy, or
        // by a server that does not know `send`: the POST does the same.
        if (!(err instanceof SendRefused && (err.unread || err.code === "too_many_subscriptions" || err.code === "rate_limited"))) throw err;
        posted = await post();
      }
      this.bump(conversationId);
      const conv = this.state.conversations.find((c) => c.id === conversationId);
      const first = !(this.state.threads[conversationId]?.messages ?? []).some((m) => m.id !== posted.message.id);
      if (conv && conv.title === DEFAULT_TITLE && first) void this.rename(conversationId, titleFrom(content), true);
      return true;
    } catch (err) {
      const code = err instanceof ApiError || err instanceof SendRefused ? err.code : null;
      this.notify(code === "overloaded" ? "The server is busy; try again in a few seconds." : `Not sent: ${describeError(err)}`);
      return false;
    }
  }

  /**
   * A stored message and its run: shown, remembered, streamed. For a socket
   * `send` this runs as its answer is read, before the run's first event.
   */
  private accept(conversationId: string, { message, run }: PostMessageResponse, subscribed: boolean) {
    const thread = this.state.threads[conversationId];
    // Already there when a reload after an unanswered send found it first.
    if (!thread?.messages.some((m) => m.id === message.id)) {
      this.setThread(conversationId, { status: thread?.status ?? "ready", messages: [...(thread?.messages ?? []), message], error: thread?.error ?? null });
    }
    if (!this.state.runs[run.id]) this.addRun(run, subscribed);
  }

  /**
   * A socket `send` that got no answer (the socket closed first): stored or
   * not, only the server knows, and sending again could store it twice. The
   * conversation is reloaded: it shows the message if it was stored.
   */
  private async settleUnanswered(conversationId: string, content: string, known: ReadonlySet<string>, reason: "closed" | "timeout"): Promise<boolean> {
    const find = async () => {
      await this.loadThread(conversationId);
      const thread = this.state.threads[conversationId];
      return { thread, stored: thread?.status === "ready" ? thread.messages.find((m) => m.role === "user" && !known.has(m.id) && m.content === content) : undefined };
    };
    let { thread, stored } = await find();
    // A post the server had under way when the socket closed commits a moment later: look once more before saying it was not.
    if (!stored && thread?.status === "ready") {
      await new Promise((r) => setTimeout(r, UNANSWERED_SEND_GRACE_MS));
      ({ thread, stored } = await find());
    }
    if (!stored) {
      // Closed and still not there: not sent. Timed out: a slow server may
      // still store it (its late answer would show it): say so.
      this.notify(
        reason === "closed" && thread?.status === "ready"
          ? "Not sent: the connection dropped before the server answered. Send it again."
          : "The server did not confirm the message; it may not have been sent. Check the conversation before sending it again.",
      );
      return false;
    }
    this.bump(conversationId);
    // Its run is unknown here (a message does not name its run), unless the answer came late after all.
    if (!Object.values(this.state.runs).some((r) => r.userMessageId === stored.id)) {
      this.notify("Your message was sent, but its answer cannot be followed live; it will show here when it is ready.");
      void this.awaitAnswer(conversationId, stored.id);
    }
    return true;
  }

  /** Reloads the conversation now and then until the message has an answer after it (its run's stream cannot be followed). */
  private async awaitAnswer(conversationId: string, userMessageId: string) {
    for (let delay = 1000, waited = 0; waited < 120_000; waited += delay, delay = Math.min(delay * 2, 8000)) {
      await new Promise((r) => setTimeout(r, delay));
      const thread = this.state.threads[conversationId];
      if (!thread || thread.status === "error" || Object.values(this.state.runs).some((r) => r.userMessageId === userMessageId)) return;
      const i = thread.messages.findIndex((m) => m.id === userMessageId);
      if (i === -1 || thread.messages.slice(i + 1).some((m) => m.role === "assistant")) return;
      if (thread.status === "ready") await this.loadThread(conversationId);
    }
  }

  /** Moves a conversation to the top of the list (it was just written to). */
  private bump(id: string) {
    const list = this.state.conversations;
    const i = list.findIndex((c) => c.id === id);
    if (i <= 0) return;
    const c = list[i];
    if (!c) return;
    this.set({ conversations: [{ ...c, updatedAt: new Date().toISOString() }, ...list.slice(0, i), ...list.slice(i + 1)] });
  }

  async newConversation(): Promise<void> {
    try {
      const c = await api.createConversation();
      this.set({
        conversations: [c, ...this.state.conversations],
        threads: { ...this.state.threads, [c.id]: { status: "ready", messages: [], error: null } },
        currentId: c.id,
      });
      navigate(`/c/${c.id}`);
    } catch (err) {
      this.notify(`Could not create a conversation: ${describeError(err)}`);
    }
  }

  async rename(id: string, title: string, quiet = false): Promise<boolean> {
    const t = title.trim();
    if (!t) return false;
    try {
      const c = await api.renameConversation(id, t.slice(0, 200));
      this.set({ conversations: this.state.conversations.map((x) => (x.id === id ? c : x)) });
      return true;
    } catch (err) {
      if (!quiet) this.notify(`Could not rename: ${describeError(err)}`);
      return false;
    }
  }

  async remove(id: string): Promise<void> {
    try {
      await api.deleteConversation(id);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) {
        this.notify(`Could not delete: ${describeError(err)}`);
        return;
      }
    }
    const runs: Record<string, RunView> = {};
    for (const [k, v] of Object.entries(this.state.runs)) {
      if (v.conversationId === id) this.unwatch.get(k)?.();
      else runs[k] = v;
    }
    runMemory.forgetConversation(id);
    const { [id]: _gone, ...threads } = this.state.threads;
    this.set({ conversations: this.state.conversations.filter((c) => c.id !== id), threads, runs });
    if (this.state.currentId === id) navigate("/");
  }
}

export function useChat<T>(store: ChatStore, select: (s: ChatState) => T): T {
  return useSyncExternalStore(store.subscribe, () => select(store.getState()));
}

import { useLayoutEffect, useMemo, useRef, type ReactNode } from "react";
import { useServices } from "../../context";
import type { MessageDto } from "../../api/client";
import { AssistantMessage } from "./AssistantMessage";
import type { RunView } from "./runView";
import { useChat } from "./store";

function UserMessage({ message }: { message: MessageDto }) {
  return (
    <article className="msg msg-user" data-message-id={message.id} aria-label="You said">
      <div className="bubble">{message.content}</div>
    </article>
  );
}

/**
 * The messages of a conversation, oldest first, with each run's answer after
 * the message it answers: the stored message once it exists, the live run
 * (streaming, failed or stopped) until then. A live region, so screen readers
 * hear the answer as it arrives.
 */
export function MessageList({ conversationId, empty }: { conversationId: string; empty: ReactNode }) {
  const { chat } = useServices();
  const thread = useChat(chat, (s) => s.threads[conversationId]);
  const runs = useChat(chat, (s) => s.runs);
  const scroller = useRef<HTMLDivElement>(null);
  const inner = useRef<HTMLDivElement>(null);
  const pinned = useRef(true);
  /** Where following last scrolled to: its own scroll event says nothing about the reader. */
  const autoTop = useRef(-1);

  const items = useMemo(() => {
    const messages = thread?.messages ?? [];
    const answered = new Set(messages.map((m) => m.runId).filter((id): id is string => id !== null));
    const pending = new Map<string, RunView[]>();
    for (const r of Object.values(runs)) {
      if (r.conversationId !== conversationId || answered.has(r.runId)) continue;
      pending.set(r.userMessageId, [...(pending.get(r.userMessageId) ?? []), r]);
    }
    const out: ReactNode[] = [];
    for (const m of messages) {
      if (m.role === "user") {
        out.push(<UserMessage key={m.id} message={m} />);
        for (const r of pending.get(m.id) ?? []) out.push(<AssistantMessage key={r.runId} content={null} agent={null} run={r} />);
      } else {
        out.push(<AssistantMessage key={m.runId ?? m.id} content={m.content} agent={m.agent} run={m.runId ? (runs[m.runId] ?? null) : null} runId={m.runId} />);
      }
    }
    return out;
  }, [thread, runs, conversationId]);

  // Follow the answer while the reader is at the bottom; leave them be when they scrolled up.
  // From a ResizeObserver, which runs in the rendering step after layout: reading
  // scrollHeight in a layout effect forced a synchronous layout inside every streamed
  // token's render (measured in a Chromium trace), once per WebSocket frame instead of
  // once per painted frame, and before the token could be painted.
  useLayoutEffect(() => {
    const el = scroller.current;
    const content = inner.current;
    if (!el || !content) return;
    const follow = new ResizeObserver(() => {
      if (!pinned.current) return;
      el.scrollTop = el.scrollHeight;
      autoTop.current = el.scrollTop;
    });
    follow.observe(content);
    return () => follow.disconnect();
  }, []);

  // Another conversation: to its end, in the next frame's animation callback,
  // which runs before that frame's layout and paint (so no frame shows the old
  // position). Read here, in the route change's commit, scrollHeight forced a
  // layout of a page that the same task was still changing (measured in a
  // Chromium trace: the largest piece of app time after sending a first message).
  useLayoutEffect(() => {
    pinned.current = true;
    const el = scroller.current;
    if (!el) return;
    const frame = requestAnimationFrame(() => {
      el.scrollTop = el.scrollHeight;
      autoTop.current = el.scrollTop;
    });
    return () => cancelAnimationFrame(frame);
  }, [conversationId]);

  return (
    <div
      className="thread"
      ref={scroller}
      onScroll={(e) => {
        const el = e.currentTarget;
        // The event of a scroll made by following arrives a frame later, when more
        // tokens may have grown the thread past the threshold: it must not unpin.
        if (Math.abs(el.scrollTop - autoTop.current) < 1) return;
        pinned.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
        if (!pinned.current) autoTop.current = -1;
      }}
    >
      {thread?.status === "error" && (
        <p className="thread-error" role="alert">
          {thread.error}
        </p>
      )}
      {thread?.status === "loading" && thread.messages.length === 0 && <p className="thread-loading">Loading messages…</p>}
      {thread?.status === "ready" && items.length === 0 && empty}
      <div className="thread-inner" ref={inner} role="log" aria-live="polite" aria-label="Messages">
        {items}
      </div>
    </div>
  );
}

import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { useServices } from "../../context";
import { navigate } from "../../router";
import { ActivityIcon, CloseIcon, MenuIcon, PlusIcon } from "../../ui/icons";
import { ConnectionIndicator } from "../connection/ConnectionIndicator";
import { OfflineBanner } from "../connection/OfflineBanner";
import { agentTone } from "./AssistantMessage";
import { Composer, type ComposerHandle } from "./Composer";
import { ConversationList } from "./ConversationList";
import { MessageList } from "./MessageList";
import { isFinished, type RunView } from "./runView";
import { useChat } from "./store";

function Welcome({ onExample }: { onExample: (text: string) => void }) {
  const { chat } = useServices();
  const agents = useChat(chat, (s) => s.agents);
  return (
    <section className="welcome" aria-labelledby="welcome-title">
      <h2 id="welcome-title">What can I help with?</h2>
      <p className="welcome-sub">Ask anything. A router picks the agent that fits, or start with @name to choose one.</p>
      {agents.length > 0 && (
        <ul className="agent-cards">
          {agents.map((a) => (
            <li key={a.name} className="agent-card" data-tone={agentTone(a.name)} data-available={a.available}>
              <h3>
                <span className="agent-dot" aria-hidden="true" />@{a.name}
                {!a.available && <span className="badge badge-muted">unavailable</span>}
              </h3>
              <p>{a.available ? a.description : (a.reason ?? a.description)}</p>
              <div className="examples">
                {a.skills
                  .flatMap((s) => s.examples.slice(0, 1))
                  .slice(0, 2)
                  .map((ex) => (
                    <button key={ex} type="button" className="chip" onClick={() => onExample(`@${a.name} ${ex}`)} disabled={!a.available}>
                      {ex}
                    </button>
                  ))}
              </div>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

/** The conversation's last run still going, if any. */
function activeRunOf(runs: Readonly<Record<string, RunView>>, conversationId: string): RunView | null {
  let active: RunView | null = null;
  for (const r of Object.values(runs)) if (r.conversationId === conversationId && !isFinished(r)) active = r;
  return active;
}

export function ChatPage({ conversationId }: { conversationId: string | null }) {
  const { chat } = useServices();
  const status = useChat(chat, (s) => s.status);
  const error = useChat(chat, (s) => s.error);
  const notice = useChat(chat, (s) => s.notice);
  const conversation = useChat(chat, (s) => (conversationId ? s.conversations.find((c) => c.id === conversationId) : undefined));
  // Only what the composer needs of the running answer, as plain values: selecting
  // `s.runs` re-rendered the whole page (sidebar, composer) on every streamed token.
  const activeRunId = useChat(chat, (s) => (conversationId ? activeRunOf(s.runs, conversationId)?.runId ?? null : null));
  const stopping = useChat(chat, (s) => (activeRunId ? s.runs[activeRunId]?.stopping === true : false));
  const active = useMemo(() => (activeRunId ? { runId: activeRunId, stopping } : null), [activeRunId, stopping]);
  const [drawer, setDrawer] = useState(false);
  // Stable, so the memoized conversation items do not all render with every change.
  const closeDrawer = useCallback(() => setDrawer(false), []);
  const composer = useRef<ComposerHandle>(null);

  useEffect(() => chat.open(conversationId), [chat, conversationId]);

  const title = conversationId ? (conversation?.title ?? "Conversation") : "New conversation";
  useEffect(() => {
    document.title = `${title} · ESA Agents`;
  }, [title]);

  const welcome = <Welcome onExample={(t) => composer.current?.fill(t)} />;
  return (
    <div className="chat-layout" data-drawer={drawer || undefined}>
      <a
        href="#composer-input"
        className="skip-link"
        onClick={(e) => {
          e.preventDefault();
          composer.current?.focus();
        }}
      >
        Skip to the message box
      </a>
      <aside className="sidebar" id="sidebar" aria-label="Conversations">
        <div className="sidebar-head">
          <a
            href="/"
            className="brand"
            onClick={(e) => {
              e.preventDefault();
              navigate("/");
              setDrawer(false);
            }}
          >
            <span className="brand-mark" aria-hidden="true">
              E
            </span>
            ESA Agents
          </a>
          <button type="button" className="icon-btn drawer-close" aria-label="Close the conversation list" onClick={() => setDrawer(false)}>
            <CloseIcon />
          </button>
        </div>
        <button
          type="button"
          className="btn btn-primary new-chat"
          onClick={() => {
            setDrawer(false);
            void chat.newConversation();
          }}
        >
          <PlusIcon />
          New chat
        </button>
        <nav className="conv-nav" aria-label="Your conversations">
          <ConversationList onOpen={closeDrawer} />
        </nav>
        <a
          href="/status"
          className="sidebar-foot"
          onClick={(e) => {
            e.preventDefault();
            navigate("/status");
          }}
        >
          <ActivityIcon />
          System status
        </a>
      </aside>
      <div className="drawer-backdrop" onClick={() => setDrawer(false)} aria-hidden="true" />
      <main className="chat-main">
        <header className="chat-header">
          <button type="button" className="icon-btn drawer-open" aria-label="Open the conversation list" aria-expanded={drawer} aria-controls="sidebar" onClick={() => setDrawer(true)}>
            <MenuIcon />
          </button>
          <h1 className="chat-title">{title}</h1>
          <ConnectionIndicator />
        </header>
        <OfflineBanner />
        {notice && (
          <div className="notice" role="alert">
            <span>{notice.text}</span>
            <button type="button" className="icon-btn" aria-label="Dismiss" onClick={chat.dismissNotice}>
              <CloseIcon />
            </button>
          </div>
        )}
        {status === "error" ? (
          <div className="thread">
            <p className="thread-error" role="alert">
              Cannot start: {error}
            </p>
          </div>
        ) : status === "loading" ? (
          <div className="thread">
            <p className="thread-loading">{error ? `Waiting for the server: ${error}` : "Loading…"}</p>
          </div>
        ) : conversationId ? (
          <MessageList conversationId={conversationId} empty={welcome} />
        ) : (
          <div className="thread">{welcome}</div>
        )}
        <Composer ref={composer} active={active} />
      </main>
    </div>
  );
}

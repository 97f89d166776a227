import { memo, useEffect, useRef, useState, type KeyboardEvent, type MouseEvent } from "react";
import { useServices } from "../../context";
import { navigate } from "../../router";
import { PencilIcon, TrashIcon } from "../../ui/icons";
import type { ConversationDto } from "../../api/client";
import { useChat } from "./store";

function RenameForm({ conversation, onDone }: { conversation: ConversationDto; onDone: () => void }) {
  const { chat } = useServices();
  const [title, setTitle] = useState(conversation.title);
  const input = useRef<HTMLInputElement>(null);
  const done = useRef(false);
  useEffect(() => {
    input.current?.focus();
    input.current?.select();
  }, []);
  const save = async () => {
    if (done.current) return;
    done.current = true;
    if (title.trim() && title.trim() !== conversation.title) await chat.rename(conversation.id, title);
    onDone();
  };
  const onKeyDown = (e: KeyboardEvent<HTMLInputElement>) => {
    if (e.key === "Escape") {
      e.preventDefault();
      done.current = true;
      onDone();
    }
  };
  return (
    <form
      className="conv-rename"
      onSubmit={(e) => {
        e.preventDefault();
        void save();
      }}
    >
      <label className="sr-only" htmlFor={`rename-${conversation.id}`}>
        Conversation title
      </label>
      <input
        id={`rename-${conversation.id}`}
        ref={input}
        value={title}
        maxLength={200}
        onChange={(e) => setTitle(e.target.value)}
        onKeyDown={onKeyDown}
        onBlur={() => void save()}
      />
    </form>
  );
}

/** Memoized: sending a message re-orders the list, and only the items that changed need to render. */
const ConversationItem = memo(function ConversationItem({ conversation, current, onOpen }: { conversation: ConversationDto; current: boolean; onOpen: () => void }) {
  const { chat } = useServices();
  const [mode, setMode] = useState<"view" | "rename" | "delete">("view");
  const href = `/c/${conversation.id}`;
  const open = (e: MouseEvent<HTMLAnchorElement>) => {
    if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    navigate(href);
    onOpen();
  };

  if (mode === "rename") {
    return (
      <li className="conv" data-current={current || undefined}>
        <RenameForm conversation={conversation} onDone={() => setMode("view")} />
      </li>
    );
  }
  if (mode === "delete") {
    return (
      <li className="conv conv-confirm" data-current={current || undefined}>
        <span className="conv-confirm-text">Delete “{conversation.title}”?</span>
        <span className="conv-confirm-actions">
          <button type="button" className="btn btn-danger btn-small" onClick={() => void chat.remove(conversation.id)} autoFocus>
            Delete
          </button>
          <button type="button" className="btn btn-ghost btn-small" onClick={() => setMode("view")}>
            Cancel
          </button>
        </span>
      </li>
    );
  }
  return (
    <li className="conv" data-current={current || undefined}>
      <a href={href} className="conv-link" aria-current={current ? "page" : undefined} onClick={open}>
        {conversation.title}
      </a>
      <span className="conv-actions">
        <button type="button" className="icon-btn" aria-label={`Rename “${conversation.title}”`} title="Rename" onClick={() => setMode("rename")}>
          <PencilIcon />
        </button>
        <button type="button" className="icon-btn" aria-label={`Delete “${conversation.title}”`} title="Delete" onClick={() => setMode("delete")}>
          <TrashIcon />
        </button>
      </span>
    </li>
  );
});

/** The user's conversations, newest first. */
export function ConversationList({ onOpen }: { onOpen: () => void }) {
  const { chat } = useServices();
  const conversations = useChat(chat, (s) => s.conversations);
  const currentId = useChat(chat, (s) => s.currentId);
  const more = useChat(chat, (s) => s.conversationsCursor !== null);
  const status = useChat(chat, (s) => s.status);

  if (status === "loading") return <p className="conv-empty">Loading…</p>;
  return (
    <>
      {conversations.length === 0 ? (
        <p className="conv-empty">No conversations yet.</p>
      ) : (
        <ul className="conv-list" aria-label="Conversations">
          {conversations.map((c) => (
            <ConversationItem key={c.id} conversation={c} current={c.id === currentId} onOpen={onOpen} />
          ))}
        </ul>
      )}
      {more && (
        <button type="button" className="btn btn-ghost btn-small conv-more" onClick={() => void chat.loadMoreConversations()}>
          Load more
        </button>
      )}
    </>
  );
}

import { forwardRef, useImperativeHandle, useLayoutEffect, useRef, useState, type KeyboardEvent } from "react";
import { useServices } from "../../context";
import type { AgentInfo } from "../../api/client";
import { SendIcon, StopIcon } from "../../ui/icons";
import { agentTone } from "./AssistantMessage";
import type { RunView } from "./runView";
import { useChat } from "./store";

/** A leading `@name` (the server routes on it: server/agents/orchestrator.ts). */
const LEADING_MENTION = /^\s*@([A-Za-z][\w-]*)(?=$|[\s,:;.!?])/;
/** `@partial` being typed at the very start, up to the caret. */
const TYPING_MENTION = /^\s*@([A-Za-z][\w-]*)?$/;

export interface ComposerHandle {
  focus(): void;
  fill(text: string): void;
}

interface Props {
  /** The conversation's answer still going, if any. */
  active: Pick<RunView, "runId" | "stopping"> | null;
}

export const Composer = forwardRef<ComposerHandle, Props>(function Composer({ active }, ref) {
  const { chat } = useServices();
  const agents = useChat(chat, (s) => s.agents);
  const [text, setText] = useState("");
  const [agent, setAgent] = useState("");
  const [caret, setCaret] = useState(0);
  const [choice, setChoice] = useState(0);
  const [dismissed, setDismissed] = useState(false);
  const [sending, setSending] = useState(false);
  const area = useRef<HTMLTextAreaElement>(null);
  /**
   * Where the caret goes once the text just set is in the textarea. Placed in a
   * layout effect, in the same task as the keystroke that set the text: a key
   * typed next lands after it. (From a requestAnimationFrame, keys typed before
   * that frame went where the caret was, in the middle of the mention.)
   */
  const pendingCaret = useRef<number | null>(null);
  useLayoutEffect(() => {
    const pos = pendingCaret.current;
    const el = area.current;
    if (pos === null || !el) return;
    pendingCaret.current = null;
    el.setSelectionRange(pos, pos);
  });

  useImperativeHandle(ref, () => ({
    focus: () => area.current?.focus(),
    fill: (t: string) => {
      setText(t);
      requestAnimationFrame(() => {
        const el = area.current;
        if (!el) return;
        el.focus();
        el.setSelectionRange(t.length, t.length);
        setCaret(t.length);
      });
    },
  }));

  // Mention suggestions while `@…` is typed at the start.
  const typed = TYPING_MENTION.exec(text.slice(0, caret));
  const query = typed && !dismissed ? (typed[1] ?? "").toLowerCase() : null;
  const suggestions = query === null ? [] : agents.filter((a) => a.name.toLowerCase().startsWith(query));
  const open = suggestions.length > 0;
  const selected = open ? suggestions[Math.min(choice, suggestions.length - 1)] : undefined;

  const mention = LEADING_MENTION.exec(text)?.[1]?.toLowerCase();
  const mentioned = mention ? agents.find((a) => a.name === mention) : undefined;

  function pick(a: AgentInfo) {
    const rest = text.slice(caret).replace(/^[\w-]*/, "").trimStart();
    const next = `@${a.name} ${rest}`;
    const pos = a.name.length + 2;
    setText(next);
    setChoice(0);
    pendingCaret.current = pos;
    setCaret(pos);
  }

  async function submit() {
    const content = text;
    if (!content.trim() || active || sending) return;
    // Cleared at once, as chat apps do; given back if the message could not be sent.
    setSending(true);
    setText("");
    setCaret(0);
    setDismissed(false);
    const ok = await chat.send(content, agent || null);
    setSending(false);
    if (!ok) setText((now) => (now === "" ? content : now));
    area.current?.focus();
  }

  function onKeyDown(e: KeyboardEvent<HTMLTextAreaElement>) {
    if (e.nativeEvent.isComposing) return;
    if (open) {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        const n = suggestions.length;
        setChoice((c) => (Math.min(c, n - 1) + (e.key === "ArrowDown" ? 1 : n - 1)) % n);
        return;
      }
      if ((e.key === "Enter" && !e.shiftKey) || e.key === "Tab") {
        if (selected) {
          e.preventDefault();
          pick(selected);
          return;
        }
      }
      if (e.key === "Escape") {
        e.preventDefault();
        setDismissed(true);
        return;
      }
    }
    if (e.key === "Escape" && active) {
      e.preventDefault();
      void chat.stop(active.runId);
      return;
    }
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      void submit();
    }
  }

  const canSend = text.trim().length > 0 && !active && !sending;
  return (
    <form
      className="composer"
      onSubmit={(e) => {
        e.preventDefault();
        void submit();
      }}
    >
      {open && (
        <ul className="mentions" id="mention-list" role="listbox" aria-label="Agents">
          {suggestions.map((a) => (
            <li
              key={a.name}
              id={`mention-${a.name}`}
              role="option"
              aria-selected={a === selected}
              aria-disabled={!a.available || undefined}
              className="mention"
              onMouseDown={(e) => {
                e.preventDefault();
                pick(a);
              }}
            >
              <span className="mention-name" data-tone={agentTone(a.name)}>
                @{a.name}
              </span>
              <span className="mention-desc">{a.available ? a.description : `unavailable: ${a.reason ?? "not configured"}`}</span>
            </li>
          ))}
        </ul>
      )}
      <div className="composer-box">
        <label htmlFor="composer-input" className="sr-only">
          Message
        </label>
        <textarea
          id="composer-input"
          ref={area}
          className="composer-input"
          rows={1}
          value={text}
          placeholder="Ask anything — type @ to pick an agent"
          aria-describedby="composer-hint"
          aria-autocomplete="list"
          aria-controls={open ? "mention-list" : undefined}
          aria-activedescendant={selected ? `mention-${selected.name}` : undefined}
          onChange={(e) => {
            setText(e.target.value);
            setCaret(e.target.selectionStart);
            setDismissed(false);
          }}
          onSelect={(e) => setCaret(e.currentTarget.selectionStart)}
          onKeyDown={onKeyDown}
        />
        <div className="composer-row">
          <label className="agent-picker">
            <span className="agent-picker-label">Agent</span>
            <select value={agent} onChange={(e) => setAgent(e.target.value)}>
              <option value="">Auto (router decides)</option>
              {agents.map((a) => (
                <option key={a.name} value={a.name} disabled={!a.available}>
                  {a.name}
                  {a.available ? "" : " (unavailable)"}
                </option>
              ))}
            </select>
          </label>
          {mentioned && (
            <span className="mention-chip" data-tone={agentTone(mentioned.name)}>
              to @{mentioned.name}
            </span>
          )}
          <span id="composer-hint" className="composer-hint">
            {active ? "Esc or Stop ends the answer" : "Enter to send · Shift+Enter for a new line"}
          </span>
          {active ? (
            <button type="button" className="btn btn-stop" onClick={() => void chat.stop(active.runId)} aria-disabled={active.stopping || undefined}>
              <StopIcon />
              <span>{active.stopping ? "Stopping…" : "Stop"}</span>
            </button>
          ) : (
            <button type="submit" className="btn btn-send" disabled={!canSend} aria-label="Send message">
              <SendIcon />
            </button>
          )}
        </div>
      </div>
    </form>
  );
});

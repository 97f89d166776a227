import { memo } from "react";
import { Markdown } from "./Markdown";
import { isFinished, type RunView, type ToolUse } from "./runView";

const AGENT_TONES: Record<string, string> = { assistant: "indigo", math: "amber", hello: "green" };
export const agentTone = (agent: string | null) => (agent ? (AGENT_TONES[agent] ?? "slate") : "slate");

export function AgentAvatar({ agent }: { agent: string | null }) {
  return (
    <span className="avatar" data-tone={agentTone(agent)} aria-hidden="true">
      {(agent ?? "·").slice(0, 1).toUpperCase()}
    </span>
  );
}

/** The line under the header while there is no text to show, or between attempts. */
function progressOf(run: RunView): string | null {
  switch (run.phase) {
    case "queued":
      return run.note === "interrupted" || run.note === "instance lost" ? "Waiting to resume…" : "Queued…";
    case "running":
      return run.text ? null : run.tools.some((t) => !t.done) ? null : "Thinking…";
    case "waiting":
      return run.note ? `Waiting: ${run.note}` : "Waiting…";
    case "retrying":
      return `retrying (${run.attempt}${run.of ? ` of ${run.of}` : ""})`;
    case "succeeded":
    case "failed":
    case "cancelled":
      return null;
    default: {
      const unreachable: never = run.phase;
      return unreachable;
    }
  }
}

const brief = (v: unknown) => {
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s === undefined ? "" : s.length > 80 ? `${s.slice(0, 80)}…` : s;
};

function Tools({ tools }: { tools: ToolUse[] }) {
  if (tools.length === 0) return null;
  return (
    <ul className="tools" aria-label="Tools used">
      {tools.map((t) => (
        <li key={t.id} className="tool" data-state={t.error ? "error" : t.done ? "done" : "running"}>
          <span className="tool-name">{t.name}</span>
          <code className="tool-args">{brief(t.args)}</code>
          {t.done && !t.error && <span className="tool-result">→ {brief(t.result)}</span>}
          {t.error && <span className="tool-result">failed: {t.error}</span>}
          {!t.done && <span className="tool-result">…</span>}
        </li>
      ))}
    </ul>
  );
}

export interface AssistantMessageProps {
  /** The stored text, when the message exists; else the run's streamed text. */
  content: string | null;
  agent: string | null;
  run: RunView | null;
  /** The run that wrote the stored message, when known. */
  runId?: string | null;
}

/** One answer: who answered and why, the text (streaming or stored), and how the run ended. */
export const AssistantMessage = memo(function AssistantMessage({ content, agent, run, runId }: AssistantMessageProps) {
  const who = run?.agent ?? agent;
  const text = content ?? run?.text ?? "";
  const streaming = run !== null && content === null && !isFinished(run);
  const progress = run && content === null ? progressOf(run) : null;
  return (
    <article
      className="msg msg-assistant"
      data-phase={run?.phase ?? "succeeded"}
      data-run-id={run?.runId ?? runId ?? undefined}
      aria-label={who ? `Answer from ${who}` : "Answer"}
    >
      <AgentAvatar agent={who} />
      <div className="msg-body">
        <header className="msg-meta">
          <span className="agent-name" data-tone={agentTone(who)}>
            {who ?? "Routing…"}
          </span>
          {run?.routeReason && (
            <span className="route-reason" title="Why this agent answered">
              {run.routeReason}
            </span>
          )}
          {run?.usage && isFinished(run) && (
            <span className="usage" title="Tokens used">
              {run.usage.promptTokens + run.usage.completionTokens} tokens
            </span>
          )}
        </header>
        {run && <Tools tools={run.tools} />}
        {text && (
          <div className="answer" data-streaming={streaming || undefined}>
            <Markdown text={text} />
          </div>
        )}
        {progress && (
          <p className="run-progress" data-phase={run?.phase}>
            <span className="spinner" aria-hidden="true" />
            {progress}
            {run?.phase === "retrying" && run.note && <span className="run-note"> — {run.note}</span>}
          </p>
        )}
        {run?.phase === "failed" && run.error && content === null && (
          <div className="run-error" role="alert">
            <p className="run-error-message">{run.error.message}</p>
            <p className="run-error-code">
              Error code <code>{run.error.code}</code>
            </p>
          </div>
        )}
        {run?.phase === "cancelled" && content === null && <p className="run-cancelled">Stopped.</p>}
      </div>
    </article>
  );
});

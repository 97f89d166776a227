import { useSyncExternalStore } from "react";
import { useServices } from "../../context";
import type { ConnectionState } from "../../realtime/connection";

function describe(s: ConnectionState): { label: string; tone: "ok" | "warn" | "bad" | "idle"; title: string } {
  switch (s.status) {
    case "open":
      return { label: "Live", tone: "ok", title: "Connected: answers stream over a WebSocket" };
    case "connecting":
      return { label: "Connecting…", tone: "idle", title: "Opening the live connection" };
    case "reconnecting":
      return s.transport === "sse"
        ? { label: "Live (SSE)", tone: "warn", title: "The WebSocket is unavailable; answers stream over Server-Sent Events while it retries" }
        : { label: "Reconnecting…", tone: "warn", title: "The live connection dropped; retrying with backoff. Answers resume where they stopped." };
    case "offline":
      return { label: "Offline", tone: "bad", title: "The browser is offline" };
    default: {
      const unreachable: never = s.status;
      return unreachable;
    }
  }
}

/** The live connection's state, always visible in the header. */
export function ConnectionIndicator() {
  const { realtime } = useServices();
  const state = useSyncExternalStore(realtime.subscribe, realtime.getState);
  const d = describe(state);
  return (
    <div className="conn" data-tone={d.tone} data-state={state.status} data-transport={state.transport} title={d.title} role="status">
      <span className="conn-dot" aria-hidden="true" />
      <span className="conn-label">{d.label}</span>
    </div>
  );
}

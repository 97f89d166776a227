import { useCallback, useEffect, useState } from "react";

type Readiness =
  | { state: "checking" }
  | { state: "ready" }
  | { state: "not-ready"; reason: string }
  | { state: "unreachable" };

/** Asks `/ready`; a 503 still carries a JSON body saying why. */
async function fetchReadiness(signal: AbortSignal): Promise<Readiness> {
  let res: Response;
  try {
    res = await fetch("/ready", { signal, headers: { accept: "application/json" } });
  } catch (err) {
    if (signal.aborted) throw err;
    return { state: "unreachable" };
  }
  const body: unknown = await res.json().catch(() => null);
  const ready = typeof body === "object" && body !== null && "ready" in body && body.ready === true;
  if (res.ok && ready) return { state: "ready" };
  const error = typeof body === "object" && body !== null && "error" in body ? body.error : undefined;
  return { state: "not-ready", reason: typeof error === "string" ? error : `HTTP ${res.status}` };
}

function describe(r: Readiness): string {
  switch (r.state) {
    case "checking":
      return "Checking…";
    case "ready":
      return "Ready";
    case "not-ready":
      return `Not ready: ${r.reason}`;
    case "unreachable":
      return "Server unreachable";
    default: {
      const unreachable: never = r;
      return unreachable;
    }
  }
}

export function App() {
  const [readiness, setReadiness] = useState<Readiness>({ state: "checking" });
  // Bumping the counter re-runs the effect; the effect owns the abort, so a
  // stale response can never overwrite a newer one.
  const [attempt, setAttempt] = useState(0);
  const recheck = useCallback(() => setAttempt((n) => n + 1), []);

  useEffect(() => {
    const controller = new AbortController();
    setReadiness({ state: "checking" });
    fetchReadiness(controller.signal).then(setReadiness, () => {
      /* aborted: a newer check or unmount took over */
    });
    return () => controller.abort();
  }, [attempt]);

  return (
    <main className="app">
      <h1>ESA Agents</h1>
      <p className="tagline">A multi-agent chat server. The chat arrives soon.</p>
      <p className="status" data-state={readiness.state} role="status">
        <span className="dot" aria-hidden="true" />
        {describe(readiness)}
      </p>
      <button type="button" onClick={recheck} disabled={readiness.state === "checking"}>
        Check again
      </button>
    </main>
  );
}

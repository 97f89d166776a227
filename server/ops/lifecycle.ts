/**
 * The process's lifecycle state and the readiness of each component.
 * `/ready` and `/health` read it; boot and shutdown write it.
 */
export type Phase = "starting" | "ready" | "draining" | "stopped";

export interface ComponentState {
  ok: boolean;
  /** Why it is not ok, fit for a probe body. */
  error?: string;
  since: number;
}

export interface Lifecycle {
  readonly phase: Phase;
  setPhase(phase: Phase): void;
  /** Mark a component (database, migrations, queue …) up or down. */
  setComponent(name: string, ok: boolean, error?: string): void;
  /** Components that must be ok for /ready; the boot registers them. */
  require(name: string, initialError?: string): void;
  components(): Record<string, ComponentState>;
  /** null when ready, else the reason. */
  notReadyReason(): string | null;
  readonly startedAt: number;
  /** Aborts when draining starts. */
  readonly shutdownSignal: AbortSignal;
}

export function createLifecycle(now: () => number = Date.now): Lifecycle {
  let phase: Phase = "starting";
  const state = new Map<string, ComponentState>();
  const required = new Set<string>();
  const abort = new AbortController();
  const startedAt = now();

  return {
    get phase() {
      return phase;
    },
    startedAt,
    shutdownSignal: abort.signal,
    setPhase(next) {
      phase = next;
      if ((next === "draining" || next === "stopped") && !abort.signal.aborted) abort.abort();
    },
    setComponent(name, ok, error) {
      const prev = state.get(name);
      if (prev && prev.ok === ok && prev.error === error) return;
      state.set(name, ok ? { ok, since: now() } : { ok, error: error ?? `${name} unavailable`, since: now() });
    },
    require(name, initialError) {
      required.add(name);
      if (!state.has(name)) state.set(name, { ok: false, error: initialError ?? `${name} not started`, since: now() });
    },
    components() {
      return Object.fromEntries(state);
    },
    notReadyReason() {
      if (phase === "draining" || phase === "stopped") return "draining";
      for (const name of required) {
        const s = state.get(name);
        if (!s?.ok) return s?.error ?? `${name} not ready`;
      }
      if (phase === "starting") return "starting";
      return null;
    },
  };
}

/**
 * The runs this browser started, kept in localStorage so a reload (or
 * another tab) can find a run still streaming, or one that failed or was
 * stopped and so has no assistant message to show. A user message does not
 * name its run in the API; the run names its message.
 */
export interface RememberedRun {
  runId: string;
  conversationId: string;
  userMessageId: string;
  /** Epoch ms. */
  at: number;
}

const KEY = "esa.runs.v1";
const MAX = 200;

function read(): RememberedRun[] {
  try {
    const v: unknown = JSON.parse(localStorage.getItem(KEY) ?? "[]");
    return Array.isArray(v) ? (v as RememberedRun[]).filter((r) => typeof r?.runId === "string" && typeof r.conversationId === "string") : [];
  } catch {
    return [];
  }
}

function write(runs: RememberedRun[]) {
  try {
    localStorage.setItem(KEY, JSON.stringify(runs.slice(-MAX)));
  } catch {
    /* storage full or disabled: only reload recovery is lost */
  }
}

/**
 * Changes wait for an idle moment (at most FLUSH_WITHIN_MS) before they are
 * written: reading, parsing and rewriting the list is synchronous storage
 * work, and `remember` runs as a sent message's answer is handled, just
 * before the run's first tokens arrive. Reads see the changes not written
 * yet; leaving or hiding the page writes them at once.
 */
const FLUSH_WITHIN_MS = 1000;

type Change = (runs: RememberedRun[]) => RememberedRun[];
let pending: Change[] = [];
let scheduled = false;

const apply = (runs: RememberedRun[], changes: readonly Change[]) => changes.reduce((acc, change) => change(acc), runs);

function flush() {
  scheduled = false;
  if (pending.length === 0) return;
  const changes = pending;
  pending = [];
  // Applied to what storage holds now: another tab may have written meanwhile.
  write(apply(read(), changes));
}

function change(c: Change) {
  pending.push(c);
  if (scheduled) return;
  scheduled = true;
  if (typeof window.requestIdleCallback === "function") window.requestIdleCallback(flush, { timeout: FLUSH_WITHIN_MS });
  else setTimeout(flush, 0);
}

if (typeof window !== "undefined") {
  window.addEventListener("pagehide", flush);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") flush();
  });
}

export const runMemory = {
  remember(run: Omit<RememberedRun, "at">) {
    const entry = { ...run, at: Date.now() };
    change((runs) => [...runs.filter((r) => r.runId !== run.runId), entry]);
  },
  forConversation(conversationId: string): RememberedRun[] {
    return apply(read(), pending).filter((r) => r.conversationId === conversationId);
  },
  forget(runIds: readonly string[]) {
    if (runIds.length === 0) return;
    const drop = new Set(runIds);
    change((runs) => runs.filter((r) => !drop.has(r.runId)));
  },
  forgetConversation(conversationId: string) {
    change((runs) => runs.filter((r) => r.conversationId !== conversationId));
  },
};

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

export const runMemory = {
  remember(run: Omit<RememberedRun, "at">) {
    write([...read().filter((r) => r.runId !== run.runId), { ...run, at: Date.now() }]);
  },
  forConversation(conversationId: string): RememberedRun[] {
    return read().filter((r) => r.conversationId === conversationId);
  },
  forget(runIds: readonly string[]) {
    if (runIds.length === 0) return;
    const drop = new Set(runIds);
    write(read().filter((r) => !drop.has(r.runId)));
  },
  forgetConversation(conversationId: string) {
    write(read().filter((r) => r.conversationId !== conversationId));
  },
};

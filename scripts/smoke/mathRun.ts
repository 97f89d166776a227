/**
 * A run end to end: a session, a conversation, "what is 2^64" (202), the run
 * followed over the WebSocket stream (or by polling GET /api/runs/:id when the
 * socket cannot open) until it ends, then the stored assistant message must
 * hold the exact answer. The conversation is deleted afterwards, so a smoke
 * leaves nothing behind in a production database.
 */
import { isTerminalEvent, ServerMessage } from "../../shared/realtime.js";
import type { MessageDto, Page, PostMessageResponse, RunDto } from "../../shared/api.js";
import { excerpt } from "./http.js";
import { tryUpgrade, wsUrl } from "./realtime.js";
import { fail, pass, type Check, type SmokeContext } from "./runner.js";

export const QUESTION = "what is 2^64";
export const ANSWER = "18446744073709551616";
const POLL_MS = 500;

const jsonHeaders = (ctx: SmokeContext) => ({ accept: "application/json", "content-type": "application/json", origin: ctx.base.origin });

/** Resolves with the terminal event type seen on the stream; rejects if the socket cannot be used. */
async function followOverWs(ctx: SmokeContext, runId: string, signal: AbortSignal): Promise<string> {
  const up = await tryUpgrade(wsUrl(ctx.base), ctx.base.origin, ctx.jar.header(), signal);
  if (!up.opened) throw new Error(`WebSocket refused (${up.status})`);
  const ws = up.socket;
  try {
    return await new Promise<string>((resolve, reject) => {
      signal.addEventListener("abort", () => reject(new Error("aborted")), { once: true });
      ws.on("message", (data) => {
        const parsed = ServerMessage.safeParse(JSON.parse(String(data)));
        if (!parsed.success) return;
        const m = parsed.data;
        if (m.type === "event" && m.runId === runId && isTerminalEvent(m.event)) resolve(m.event);
        else if (m.type === "unsubscribed" && m.runId === runId && m.reason === "finished") resolve("finished");
        else if (m.type === "error") reject(new Error(`stream error ${m.code}: ${m.message}`));
      });
      ws.once("close", (code) => reject(new Error(`socket closed (${code}) before the run ended`)));
      ws.once("error", reject);
      ws.send(JSON.stringify({ type: "subscribe", runId, after: 0 }));
    });
  } finally {
    ws.terminate();
  }
}

async function getRun(ctx: SmokeContext, runId: string, signal: AbortSignal): Promise<RunDto> {
  const r = await ctx.http(`/api/runs/${runId}`, { signal, headers: { accept: "application/json" } });
  if (r.status !== 200) throw new Error(`GET /api/runs/${runId} answered ${r.status}: ${excerpt(r.text())}`);
  return r.json() as RunDto;
}

async function pollUntilDone(ctx: SmokeContext, runId: string, signal: AbortSignal): Promise<void> {
  for (;;) {
    const run = await getRun(ctx, runId, signal);
    if (run.status !== "queued" && run.status !== "running") return;
    await new Promise((r) => setTimeout(r, POLL_MS));
    if (signal.aborted) throw new Error("aborted");
  }
}

export const mathRunCheck: Check = {
  name: "math-run",
  async run(ctx, signal) {
    const t0 = performance.now();
    await ctx.session(signal);
    const conv = await ctx.http("/api/conversations", { method: "POST", signal, headers: jsonHeaders(ctx), body: JSON.stringify({ title: "smoke check" }) });
    if (conv.status !== 201) return fail(`POST /api/conversations answered ${conv.status}, expected 201: ${excerpt(conv.text())}`);
    const convId = (conv.json() as { id: string }).id;
    try {
      const posted = await ctx.http(`/api/conversations/${convId}/messages`, {
        method: "POST",
        signal,
        headers: jsonHeaders(ctx),
        body: JSON.stringify({ content: QUESTION }),
      });
      if (posted.status !== 202) return fail(`POST /api/conversations/:id/messages answered ${posted.status}, expected 202: ${excerpt(posted.text())}`);
      const { run } = posted.json() as PostMessageResponse;
      if (!run?.id) return fail("POST /api/conversations/:id/messages returned no run");
      let via = "WebSocket";
      try {
        await followOverWs(ctx, run.id, signal);
      } catch (err) {
        if (signal.aborted) throw err;
        via = `polling (${err instanceof Error ? err.message : String(err)})`;
        await pollUntilDone(ctx, run.id, signal);
      }
      const final = await getRun(ctx, run.id, signal);
      if (final.status !== "succeeded") {
        return fail(`run ${final.status}${final.error ? `: ${final.error.code} ${final.error.message}` : ""} (agent ${final.agent ?? "none"})`);
      }
      const msgs = await ctx.http(`/api/conversations/${convId}/messages`, { signal, headers: { accept: "application/json" } });
      if (msgs.status !== 200) return fail(`GET /api/conversations/:id/messages answered ${msgs.status}`);
      const answers = (msgs.json() as Page<MessageDto>).items.filter((m) => m.role === "assistant" && m.runId === run.id);
      if (answers.length !== 1) return fail(`${answers.length} assistant messages for the run, expected exactly 1`);
      const content = answers[0]?.content ?? "";
      if (!content.includes(ANSWER)) return fail(`the answer does not contain ${ANSWER}: ${excerpt(content)}`);
      const secs = ((performance.now() - t0) / 1000).toFixed(2);
      return pass(`"${QUESTION}" → 202 → succeeded (agent ${final.agent}, followed by ${via}) in ${secs} s; answer contains ${ANSWER}`);
    } finally {
      // Best effort and bounded: the check's result does not depend on the clean-up.
      await ctx.http(`/api/conversations/${convId}`, { method: "DELETE", signal: AbortSignal.timeout(3000), headers: jsonHeaders(ctx) }).catch(() => undefined);
    }
  },
};

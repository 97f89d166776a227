/**
 * Issue 4, point 4: POST /api/runs/:id/cancel. A queued run is cancelled at
 * once, its job removed, and never starts; a running run's signal fires
 * within 1 s, with LISTEN and without it (polling); the run ends `cancelled`
 * with a terminal `cancelled` event and no answer. Idempotent; another
 * user's run is 404.
 */
import { describe, it, expect } from "vitest";
import { randomUUID } from "node:crypto";
import { assistantMessages, jobsOf, postRun, runEvents, runRow, scriptOf, startTestQueue, useQueueFixture, waitFor, waitForNoJob, waitForStatus, type Step } from "./helpers/queue.js";
import { createListener, type Listener } from "../server/db/listener.js";
import { RunAborted } from "../server/queue/executeRun.js";
import { RUN_CANCEL_CHANNEL, createCancelWatch, requestCancel } from "../server/queue/cancel.js";
import { createLogger } from "../server/ops/logger.js";
import { loadConfig } from "../server/config.js";

const fx = useQueueFixture();
const FINISHED = ["succeeded", "failed", "cancelled"];

describe("cancel (point 4)", () => {
  it("a queued run is cancelled at once, its job removed, and it never starts", async () => {
    const { runId } = await postRun(fx.client, fx.conv, scriptOf({ text: ["should never be said"] }));
    expect(await jobsOf(fx.db, runId)).toHaveLength(1);

    const res = await fx.client.post(`/api/runs/${runId}/cancel`);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id: runId, status: "cancelled", attempt: 0 });
    const run = await runRow(fx.db, runId);
    expect(run).toMatchObject({ status: "cancelled", attempt: 0, started_at: null });
    expect(run.cancel_requested_at).toBeInstanceOf(Date);
    expect(run.finished_at).toBeInstanceOf(Date);
    expect(await jobsOf(fx.db, runId)).toEqual([]);
    expect((await runEvents(fx.db, runId)).map((e) => [e.seq, e.type])).toEqual([[1, "cancelled"]]);

    // Idempotent: the same answer again, nothing more written.
    const again = await fx.client.post(`/api/runs/${runId}/cancel`);
    expect(again.status).toBe(200);
    expect(again.body).toEqual(res.body);
    expect(await runEvents(fx.db, runId)).toHaveLength(1);

    // A queue that starts later runs what comes after it, but never the cancelled run.
    const q = await startTestQueue(fx.db, fx.agents.orchestrator);
    try {
      const later = await postRun(fx.client, fx.conv, scriptOf({ text: ["ok"] }));
      expect((await waitForStatus(fx.db, later.runId, FINISHED)).status).toBe("succeeded");
    } finally {
      await q.stop();
    }
    expect(fx.agents.callsFor(runId)).toEqual([]);
    expect(await runRow(fx.db, runId)).toMatchObject({ status: "cancelled", attempt: 0, started_at: null });
    expect(await assistantMessages(fx.db, runId)).toEqual([]);
  });

  for (const listen of [true, false]) {
    it(`a running run's signal fires within 1 s ${listen ? "(LISTEN)" : "(no listener: polling)"}; it ends cancelled without an answer`, async () => {
      const q = await startTestQueue(fx.db, fx.agents.orchestrator, { listener: listen });
      const log = createLogger(loadConfig({ NODE_ENV: "test", LOG_LEVEL: "silent" }));
      const observer = createListener({ url: fx.db.url, log });
      const notified: string[] = [];
      void observer.on(RUN_CANCEL_CHANNEL, (payload) => notified.push(payload));
      observer.start();
      try {
        if (q.listener) await waitFor("the queue's LISTEN connection", () => q.listener?.connected);
        await waitFor("the observer's LISTEN connection", () => observer.connected);
        const { runId } = await postRun(fx.client, fx.conv, scriptOf({ text: ["partial "], hang: true }));
        await waitFor("the agent to start", () => fx.agents.callsFor(runId).length > 0);
        await waitFor("the partial text to be stored", async () => (await runEvents(fx.db, runId)).some((e) => e.type === "text.delta"));

        const requestedAt = performance.now();
        const res = await fx.client.post(`/api/runs/${runId}/cancel`);
        expect(res.status).toBe(200);
        expect(res.body.id).toBe(runId);
        const call = await waitFor("the agent's signal", () => fx.agents.callsFor(runId)[0]?.abortedAt !== undefined && fx.agents.callsFor(runId)[0]);
        expect((call.abortedAt ?? Infinity) - requestedAt).toBeLessThan(1000);
        expect(call.abortReason).toBeInstanceOf(RunAborted);
        expect((call.abortReason as RunAborted).kind).toBe("cancel");

        const run = await waitForStatus(fx.db, runId, FINISHED);
        expect(run).toMatchObject({ status: "cancelled", attempt: 1, failures: 0, error_code: null });
        expect(run.finished_at).toBeInstanceOf(Date);
        const events = await runEvents(fx.db, runId);
        expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
        expect(events.at(-1)).toMatchObject({ type: "cancelled", attempt: 1 });
        expect(events.filter((e) => e.type === "cancelled")).toHaveLength(1);
        expect(await assistantMessages(fx.db, runId)).toEqual([]);
        await waitForNoJob(fx.db, runId);
        expect(fx.agents.callsFor(runId)).toHaveLength(1);
        expect(notified).toContain(runId);

        // Idempotent once finished: 200, the same run, nothing more written.
        const dto = (await fx.client.get(`/api/runs/${runId}`)).body;
        expect(dto.status).toBe("cancelled");
        const again = await fx.client.post(`/api/runs/${runId}/cancel`);
        expect(again.status).toBe(200);
        expect(again.body).toEqual(dto);
        expect(await runEvents(fx.db, runId)).toEqual(events);
      } finally {
        await observer.stop();
        await q.stop();
      }
    });
  }

  it("a run waiting out a retry backoff is cancelled at once and not tried again", async () => {
    const q = await startTestQueue(fx.db, fx.agents.orchestrator);
    try {
      const fail = { code: "rate_limited", message: "slow down", retryable: true, retryAfterMs: 60_000 };
      const { runId } = await postRun(fx.client, fx.conv, scriptOf({ fail }, { text: ["too late"] }));
      await waitFor("the first failure", async () => (await runRow(fx.db, runId)).failures === 1);
      expect(await jobsOf(fx.db, runId)).toHaveLength(1);
      const res = await fx.client.post(`/api/runs/${runId}/cancel`);
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ status: "cancelled", failures: 1 });
      expect(await jobsOf(fx.db, runId)).toEqual([]);
      expect((await runEvents(fx.db, runId)).at(-1)?.type).toBe("cancelled");
      expect(fx.agents.callsFor(runId)).toHaveLength(1);
    } finally {
      await q.stop();
    }
  });

  // A cancel that lands while an attempt is ending (here: requested by the
  // agent itself just before it fails, so the executor learns of it only from
  // the database) wins over the retry, the failure or the answer.
  const endings: [string, Step][] = [
    ["a retry", { fail: { code: "rate_limited", message: "slow down", retryable: true, retryAfterMs: 60_000 } }],
    ["a failure", { fail: { code: "bad_input", message: "no", retryable: false } }],
    ["an answer", { text: ["unwanted"] }],
  ];
  for (const [ending, step] of endings) {
    it(`a cancel that arrives while the attempt ends wins over ${ending}`, async () => {
      const userId = await fx.client.userId();
      fx.agents.hook("cancel-self", async (runId) => {
        expect(await requestCancel(fx.db.pool, userId, runId)).toBe(true);
      });
      const q = await startTestQueue(fx.db, fx.agents.orchestrator);
      try {
        const { runId } = await postRun(fx.client, fx.conv, scriptOf({ ...step, hook: "cancel-self" }, { text: ["second attempt"] }));
        const run = await waitFor("the attempt to end", async () => {
          const row = await runRow(fx.db, runId);
          return fx.agents.callsFor(runId)[0]?.endedAt !== undefined && row.status !== "running" ? row : undefined;
        });
        expect(run.status).toBe("cancelled");
        expect(run.finished_at).toBeInstanceOf(Date);
        expect((await runEvents(fx.db, runId)).at(-1)).toMatchObject({ type: "cancelled", attempt: 1 });
        expect(await assistantMessages(fx.db, runId)).toEqual([]);
        await waitForNoJob(fx.db, runId);
        expect(fx.agents.callsFor(runId)).toHaveLength(1);
      } finally {
        await q.stop();
      }
    });
  }

  it("cancelling a finished run answers 200 with the run as it is, and changes nothing", async () => {
    const q = await startTestQueue(fx.db, fx.agents.orchestrator);
    let runId: string;
    try {
      runId = (await postRun(fx.client, fx.conv, scriptOf({ text: ["done"] }))).runId;
      expect((await waitForStatus(fx.db, runId, FINISHED)).status).toBe("succeeded");
    } finally {
      await q.stop();
    }
    const before = await runRow(fx.db, runId);
    const events = await runEvents(fx.db, runId);
    const res = await fx.client.post(`/api/runs/${runId}/cancel`);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id: runId, status: "succeeded" });
    expect(await runRow(fx.db, runId)).toEqual(before);
    expect(await runEvents(fx.db, runId)).toEqual(events);
  });

  it("another user's run, an unknown id and a malformed id are 404, and nothing changes", async () => {
    const { runId } = await postRun(fx.client, fx.conv, scriptOf({ text: ["mine"] }));
    const before = await runRow(fx.db, runId);
    const stranger = fx.api.client();
    await stranger.userId();
    for (const id of [runId, randomUUID(), "not-a-uuid"]) {
      const res = await stranger.post(`/api/runs/${id}/cancel`);
      expect(res.status).toBe(404);
      expect(res.body.error.code).toBe("not_found");
    }
    expect(await runRow(fx.db, runId)).toEqual(before);
    expect(await jobsOf(fx.db, runId)).toHaveLength(1);
    // The owner still can.
    expect((await fx.client.post(`/api/runs/${runId}/cancel`)).body.status).toBe("cancelled");
  });
});

describe("cancel watch", () => {
  it("leaves the shared listener as it found it when stopped", async () => {
    const handlers = new Set<(payload: string) => void>();
    const listener = {
      on: (_channel: string, handler: (payload: string) => void) => {
        handlers.add(handler);
        return Promise.resolve(() => handlers.delete(handler));
      },
    } as unknown as Listener;
    const watch = createCancelWatch({ pool: fx.db.pool, listener, log: createLogger(loadConfig({ NODE_ENV: "test", LOG_LEVEL: "silent" })) });
    let fired = 0;
    watch.watch("run-1", () => fired++);
    for (const h of handlers) h("run-1");
    expect(fired).toBe(1);
    watch.stop();
    await waitFor("the handler to be removed", () => handlers.size === 0, 2000);
  });
});

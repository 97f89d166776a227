/**
 * The fake provider speaks the OpenAI streaming wire format exactly; these
 * tests read its raw bytes, with no client library in between.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { startFakeLlm, type FakeLlm } from "./helpers/fakeLlm.js";

let fake: FakeLlm;
beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
});

const post = (body: unknown, signal?: AbortSignal) =>
  fetch(`${fake.url}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer k" },
    body: JSON.stringify(body),
    ...(signal ? { signal } : {}),
  });

const streamBody = { model: "m", stream: true, stream_options: { include_usage: true }, messages: [{ role: "user", content: "hi" }] };

/** The SSE events' data fields, in order. */
function dataLines(raw: string): string[] {
  expect(raw.endsWith("\n\n")).toBe(true);
  return raw
    .split("\n\n")
    .filter(Boolean)
    .map((block) => {
      expect(block.startsWith("data: ")).toBe(true);
      return block.slice("data: ".length);
    });
}

interface Chunk {
  object: string;
  choices: { index: number; delta: { role?: string; content?: string; tool_calls?: { index: number; id?: string; type?: string; function: { name?: string; arguments?: string } }[] }; finish_reason: string | null }[];
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | null;
}

describe("fake LLM wire format", () => {
  it("streams content deltas, finish, a final usage chunk and [DONE]", async () => {
    fake.script({ text: "Hello there, world", chunkSize: 5, usage: { promptTokens: 7, completionTokens: 4 } });
    const res = await post(streamBody);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const lines = dataLines(await res.text());
    expect(lines.pop()).toBe("[DONE]");
    const chunks = lines.map((l) => JSON.parse(l) as Chunk);
    expect(chunks.every((c) => c.object === "chat.completion.chunk")).toBe(true);
    expect(chunks[0]?.choices[0]?.delta.role).toBe("assistant");
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("");
    expect(text).toBe("Hello there, world");
    expect(chunks.filter((c) => c.choices[0]?.delta.content).length).toBe(4);
    const usage = chunks[chunks.length - 1];
    expect(usage?.choices).toEqual([]);
    expect(usage?.usage).toEqual({ prompt_tokens: 7, completion_tokens: 4, total_tokens: 11 });
    expect(chunks[chunks.length - 2]?.choices[0]?.finish_reason).toBe("stop");
    // With include_usage, every other chunk carries usage: null, as OpenAI sends it.
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
  });

  it("no usage chunk unless stream_options.include_usage", async () => {
    fake.script({ text: "ok" });
    const lines = dataLines(await (await post({ ...streamBody, stream_options: undefined })).text());
    const chunks = lines.slice(0, -1).map((l) => JSON.parse(l) as Chunk);
    expect(chunks.some((c) => c.usage)).toBe(false);
    expect(chunks.every((c) => !("usage" in c))).toBe(true);
  });

  it("splits tool-call arguments across chunks", async () => {
    fake.script({ toolCalls: [{ id: "call_1", name: "math", arguments: { expression: "2^64" }, fragmentSize: 4 }] });
    const chunks = dataLines(await (await post(streamBody)).text())
      .slice(0, -1)
      .map((l) => JSON.parse(l) as Chunk);
    const parts = chunks.flatMap((c) => c.choices[0]?.delta.tool_calls ?? []);
    expect(parts[0]).toMatchObject({ index: 0, id: "call_1", type: "function", function: { name: "math", arguments: "" } });
    const fragments = parts.slice(1).map((p) => p.function.arguments ?? "");
    expect(fragments.length).toBeGreaterThan(3);
    expect(parts.slice(1).every((p) => p.id === undefined && p.function.name === undefined)).toBe(true);
    expect(JSON.parse(fragments.join(""))).toEqual({ expression: "2^64" });
    expect(chunks.find((c) => c.choices[0]?.finish_reason)?.choices[0]?.finish_reason).toBe("tool_calls");
  });

  it("answers a non-streaming request with one completion", async () => {
    fake.script({ text: "whole" });
    const res = await post({ model: "m", messages: [{ role: "user", content: "x" }] });
    const body = (await res.json()) as { object: string; choices: { message: { content: string }; finish_reason: string }[] };
    expect(body.object).toBe("chat.completion");
    expect(body.choices[0]).toMatchObject({ message: { content: "whole" }, finish_reason: "stop" });
  });

  it("faults: status with retry-after and an OpenAI error body", async () => {
    fake.script({ fault: { kind: "status", status: 429, retryAfter: "7" } });
    const res = await post(streamBody);
    expect(res.status).toBe(429);
    expect(res.headers.get("retry-after")).toBe("7");
    expect(await res.json()).toMatchObject({ error: { message: expect.any(String), type: "invalid_request_error" } });
  });

  it("faults: a malformed line, then the stream carries on", async () => {
    fake.script({ text: "abcdefgh", chunkSize: 2, fault: { kind: "malformed", afterChunks: 2 } });
    const lines = dataLines(await (await post(streamBody)).text());
    const bad = lines.filter((l) => l !== "[DONE]" && !(() => { try { JSON.parse(l); return true; } catch { return false; } })());
    expect(bad).toHaveLength(1);
    expect(lines.indexOf(bad[0] ?? "")).toBe(2);
  });

  it("faults: a dropped socket after N chunks", async () => {
    fake.script({ text: "abcdefgh", chunkSize: 1, fault: { kind: "drop", afterChunks: 3 } });
    const n = fake.requests.length;
    const res = await post(streamBody);
    await expect(res.text()).rejects.toThrow();
    expect(fake.requests[n]).toMatchObject({ chunksSent: 3, droppedByServer: true, disconnected: false });
  });

  it("faults: a stall keeps the socket open, and the client leaving is recorded", async () => {
    fake.script({ text: "abcdefgh", chunkSize: 1, fault: { kind: "stall", afterChunks: 2 } });
    const n = fake.requests.length;
    const ac = new AbortController();
    const res = await post(streamBody, ac.signal);
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(first.done).toBe(false);
    ac.abort();
    const rec = await fake.waitForDisconnect(n);
    expect(rec.chunksSent).toBe(2);
  });

  it("a 401 for a wrong key names the key presented, as OpenAI does", async () => {
    const strict = await startFakeLlm({ apiKey: "right" });
    try {
      const res = await fetch(`${strict.url}/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: "Bearer wrong-key" },
        body: JSON.stringify(streamBody),
      });
      expect(res.status).toBe(401);
      expect(JSON.stringify(await res.json())).toContain("wrong-key");
    } finally {
      await strict.close();
    }
  });
});

describe("replies bound to a message", () => {
  const textOf = async (content: string) => {
    const res = await post({ ...streamBody, messages: [{ role: "user", content }] });
    return dataLines(await res.text())
      .slice(0, -1)
      .map((l) => (JSON.parse(l) as Chunk).choices[0]?.delta.content ?? "")
      .join("");
  };

  it("scriptFor replies go to their message only, in order, ahead of script()'s queue", async () => {
    fake.script({ text: "queued" });
    fake.scriptFor("mine", { text: "first for mine" }, { text: "second for mine" });
    expect(await textOf("mine")).toBe("first for mine");
    // Another message takes the plain queue, not mine's replies.
    expect(await textOf("someone else")).toBe("queued");
    expect(await textOf("mine")).toBe("second for mine");
  });
});

/**
 * Issue 2, point 8: one error catalogue and one error middleware. Every error
 * body is {error:{code,message}}; a thrown or rejected handler answers 500
 * without a stack, the app keeps serving, and the failure is logged once with
 * the request id.
 */
import { describe, it, expect, beforeAll, afterAll, vi } from "vitest";
import { request } from "node:http";
import { Router } from "express";
import { createDeferredRouter } from "../server/http/routes/deferred.js";
import { AppError } from "../server/http/errors.js";
import { startTestApp, type TestApp } from "./helpers/app.js";
import { waitFor } from "./helpers/spawnServer.js";

const SECRET = "db password is hunter2";

function failingRouter() {
  const r = Router();
  r.get("/boom/sync", () => {
    throw new Error(`sync failure: ${SECRET}`);
  });
  r.get("/boom/async", async () => {
    await new Promise((resolve) => setTimeout(resolve, 5));
    throw new TypeError(`async failure: ${SECRET}`);
  });
  r.get("/boom/reject", () => Promise.reject(new Error(`rejected: ${SECRET}`)));
  r.get("/boom/string", () => {
    throw `a string, not an Error: ${SECRET}`;
  });
  r.get("/conflict", () => {
    throw new AppError("conflict", 409, "That title is already taken");
  });
  r.get("/busy", () => {
    throw new AppError("overloaded", 503, `queue is full: ${SECRET}`, { headers: { "retry-after": "7" } });
  });
  r.get("/boom/late", (_req, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.write("partial body");
    throw new Error(`failed mid-response: ${SECRET}`);
  });
  r.get("/items/:id", (req, res) => {
    res.json({ id: req.params.id });
  });
  r.get("/ok", (_req, res) => {
    res.json({ ok: true });
  });
  return r;
}

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp({ apiRouters: [failingRouter()] });
});
afterAll(async () => {
  await t?.close();
});

const errorLines = () => t.logLines.filter((l) => typeof l.level === "number" && l.level >= 50);

/** Requests `path`, checks the answer is a clean 500, and returns its request id. */
async function expectInternal(path: string): Promise<string> {
  const before = errorLines().length;
  const res = await fetch(t.baseUrl + path);
  expect(res.status, path).toBe(500);
  expect(res.headers.get("content-type"), path).toMatch(/^application\/json/);
  const text = await res.text();
  expect(JSON.parse(text), path).toEqual({ error: { code: "internal", message: "Internal server error" } });
  // Nothing of the error leaks: no message, no stack frames, no file paths.
  expect(text, path).not.toContain(SECRET);
  expect(text, path).not.toMatch(/\bat .*:\d+:\d+|node_modules|\.ts\b|stack/);
  const reqId = res.headers.get("x-request-id");
  expect(reqId, path).toBeTruthy();

  // Exactly one error line for this request, carrying its id (the sink may lag a tick).
  await waitFor(() => errorLines().length > before, 2000, 5);
  await new Promise((r) => setTimeout(r, 20));
  const added = errorLines().slice(before);
  expect(added, path).toHaveLength(1);
  expect(added[0]?.reqId, path).toBe(reqId);
  expect(added[0]?.err, path).toBeTruthy();
  return String(reqId);
}

describe("unexpected errors", () => {
  it("a synchronous throw answers 500 without details and is logged once with the request id", async () => {
    await expectInternal("/api/boom/sync");
  });

  it("an async rejection answers 500 without details and is logged once with the request id", async () => {
    await expectInternal("/api/boom/async");
    await expectInternal("/api/boom/reject");
  });

  it("a thrown non-Error is handled the same way", async () => {
    await expectInternal("/api/boom/string");
  });

  it("the app keeps serving after failures, including concurrent ones", async () => {
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) => fetch(t.baseUrl + (i % 3 === 0 ? "/api/ok" : i % 3 === 1 ? "/api/boom/sync" : "/api/boom/reject"))),
    );
    expect(results.map((r) => r.status)).toEqual(Array.from({ length: 30 }, (_, i) => (i % 3 === 0 ? 200 : 500)));
    await Promise.all(results.map((r) => r.arrayBuffer()));
    const res = await fetch(t.baseUrl + "/api/ok");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true });
    expect((await fetch(t.baseUrl + "/live")).status).toBe(200);
  });

  it("keeps a valid incoming x-request-id and logs the error under it", async () => {
    const before = errorLines().length;
    const res = await fetch(t.baseUrl + "/api/boom/sync", { headers: { "x-request-id": "lb-req-42.abc" } });
    expect(res.status).toBe(500);
    expect(res.headers.get("x-request-id")).toBe("lb-req-42.abc");
    await waitFor(() => errorLines().length > before, 2000, 5);
    expect(errorLines().slice(before).map((l) => l.reqId)).toEqual(["lb-req-42.abc"]);
  });

  it("replaces an unsafe incoming x-request-id with a fresh one", async () => {
    const res = await fetch(t.baseUrl + "/api/ok", { headers: { "x-request-id": "bad id\twith spaces" + "x".repeat(200) } });
    const id = res.headers.get("x-request-id");
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe("AppError", () => {
  it("comes through with its code, status and message", async () => {
    const res = await fetch(t.baseUrl + "/api/conflict");
    expect(res.status).toBe(409);
    expect(await res.json()).toEqual({ error: { code: "conflict", message: "That title is already taken" } });
  });

  it("a 5xx AppError keeps its code and headers but not its internal message", async () => {
    const res = await fetch(t.baseUrl + "/api/busy");
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("7");
    const text = await res.text();
    expect(JSON.parse(text)).toEqual({ error: { code: "overloaded", message: "Service unavailable" } });
    expect(text).not.toContain(SECRET);
  });

  it("client errors are not logged as errors", async () => {
    const before = errorLines().length;
    const res = await fetch(t.baseUrl + "/api/conflict");
    expect(res.status).toBe(409);
    await fetch(t.baseUrl + "/api/nope");
    await new Promise((r) => setTimeout(r, 20));
    expect(errorLines().length).toBe(before);
  });
});

describe("every error has the same shape", () => {
  it("404s outside and inside /api, and a path parameter that is not valid percent-encoding", async () => {
    for (const [path, status, code] of [
      ["/api/nope", 404, "not_found"],
      ["/nope", 404, "not_found"],
      ["/api/items/%E0%A4%A", 400, "bad_request"],
    ] as const) {
      const res = await fetch(t.baseUrl + path, { headers: { accept: "application/json" } });
      expect(res.status, path).toBe(status);
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(Object.keys(body), path).toEqual(["error"]);
      expect(Object.keys(body.error).sort(), path).toEqual(["code", "message"]);
      expect(body.error.code, path).toBe(code);
    }
  });
});

describe("an error after the response has started", () => {
  it("cuts the response off and is logged exactly once, in production too", async () => {
    // Express picks its own env from NODE_ENV when the app is built; in
    // production its final handler prints errors it is handed to stderr.
    const savedEnv = process.env.NODE_ENV;
    process.env.NODE_ENV = "production";
    let prod: TestApp;
    try {
      prod = await startTestApp({ env: { NODE_ENV: "production", LOG_LEVEL: "warn" }, apiRouters: [failingRouter()] });
    } finally {
      process.env.NODE_ENV = savedEnv;
    }
    const consoleError = vi.spyOn(console, "error").mockImplementation(() => undefined);
    try {
      const outcome = await new Promise<{ status: number; reqId: string; ended: "complete" | "cut" }>((resolve, reject) => {
        const req = request(prod.baseUrl + "/api/boom/late", { agent: false }, (res) => {
          const done = (ended: "complete" | "cut") => resolve({ status: res.statusCode ?? 0, reqId: String(res.headers["x-request-id"]), ended });
          res.resume();
          res.on("end", () => done("complete"));
          res.on("aborted", () => done("cut"));
          res.on("error", () => done("cut"));
        });
        req.on("error", reject);
        req.end();
      });
      expect(outcome.status).toBe(200);
      // The client must be able to tell the body is incomplete.
      expect(outcome.ended).toBe("cut");
      await waitFor(() => prod.logLines.some((l) => Number(l.level) >= 50), 2000, 5);
      await new Promise((r) => setTimeout(r, 50));
      const errors = prod.logLines.filter((l) => Number(l.level) >= 50);
      expect(errors.map((l) => l.reqId)).toEqual([outcome.reqId]);
      expect(consoleError).not.toHaveBeenCalled();
      // And the app goes on serving.
      expect((await fetch(prod.baseUrl + "/api/ok")).status).toBe(200);
    } finally {
      consoleError.mockRestore();
      await prod.close();
    }
  });
});

describe("routes that wait for the database", () => {
  it("answer 503 not_ready with Retry-After, then hand the same paths to the real router", async () => {
    const deferred = createDeferredRouter(["/things"]);
    const app = await startTestApp({ env: { LOG_LEVEL: "warn" }, apiRouters: [deferred.router] });
    try {
      const early = await fetch(app.baseUrl + "/api/things/42");
      expect(early.status).toBe(503);
      // A deliberate 503 is an answer, not a failure: no error line for it.
      await new Promise((r) => setTimeout(r, 20));
      expect(app.logLines.filter((l) => Number(l.level) >= 50)).toEqual([]);
      expect(early.headers.get("retry-after")).toBe("2");
      expect(await early.json()).toEqual({ error: { code: "not_ready", message: "The server is starting; try again shortly" } });
      // Paths it does not claim keep their 404.
      expect((await fetch(app.baseUrl + "/api/other")).status).toBe(404);

      // The real router is written as if mounted on /api, like createDataApi.
      const real = Router();
      real.get("/things/:id", (req, res) => {
        res.json({ id: req.params.id });
      });
      real.get("/things", (_req, res) => {
        res.json({ all: true });
      });
      deferred.set(real);
      const late = await fetch(app.baseUrl + "/api/things/42");
      expect(late.status).toBe(200);
      expect(await late.json()).toEqual({ id: "42" });
      expect(await (await fetch(app.baseUrl + "/api/things")).json()).toEqual({ all: true });
      expect((await fetch(app.baseUrl + "/api/things/42/nope")).status).toBe(404);
      expect((await fetch(app.baseUrl + "/api/thingsx")).status).toBe(404);
      expect((await fetch(app.baseUrl + "/api/Things/7")).status).toBe(200);
    } finally {
      await app.close();
    }
  });
});

/**
 * Issue 8, point 2, "10,000 random 404 paths", on the built server: every
 * one gets the JSON 404, and `/metrics` is left as it was apart from the
 * counts: no new series, no new label value, the one `unmatched` route.
 * (http-metrics.test.ts sends 10,000 random requests of mixed kinds to the
 * in-process app; here all 10,000 are 404s, through the real composition.)
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { Agent, request } from "node:http";
import { randomBytes } from "node:crypto";
import { spawnServer, type ServerProcess } from "./helpers/spawnServer.js";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { waitForStatus } from "./fixtures/process.js";
import { sampleValue } from "./helpers/failures.js";

let db: TestDatabase;
let srv: ServerProcess | undefined;

beforeAll(async () => {
  db = await createTestDatabase({ migrate: true });
});
afterAll(async () => {
  await srv?.stop();
  await db?.drop();
});

/** The series names with their labels (values dropped) on a Prometheus page, for the http_* metrics. */
const httpSeries = (text: string) =>
  new Set(
    text
      .split("\n")
      .filter((l) => l.startsWith("http_"))
      .map((l) => l.replace(/\s+\S+$/, "")),
  );

describe("10,000 random 404 paths", () => {
  it("each gets a JSON 404, and /metrics gains no series or label value, only counts under route=unmatched", { timeout: 180_000 }, async () => {
    srv = await spawnServer({ env: { DATABASE_URL: db.url, RATE_LIMIT_MAX: "1000000" } });
    const s = srv;
    await waitForStatus(`${s.baseUrl}/ready`, 200, 30_000);
    const agent = new Agent({ keepAlive: true, maxSockets: 20 });
    const rand = () => randomBytes(8).toString("hex");
    /** Random paths that no route matches, inside and outside /api, asking for JSON. */
    const kinds: [string, () => string][] = [
      ["GET", () => `/api/${rand()}`],
      ["GET", () => `/api/${rand()}/${rand()}?q=${rand()}`],
      ["POST", () => `/api/${rand()}`],
      ["GET", () => `/${rand()}/${rand()}.${rand().slice(0, 3)}`],
      ["DELETE", () => `/${rand()}`],
    ];
    const send = (method: string, p: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request({ host: "127.0.0.1", port: s.port, method, path: p, agent, headers: { accept: "application/json" } }, (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => (body += c));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
          res.on("error", reject);
        });
        req.on("error", reject);
        req.end();
      });
    const metrics = async () => (await fetch(`${s.baseUrl}/metrics`, { headers: { connection: "close" } })).text();

    try {
      // One of each first, so every series the load can touch exists.
      for (const [method, make] of kinds) expect((await send(method, make())).status).toBe(404);
      const before = await metrics();
      const countBefore = sampleValue(before, "http_request_duration_seconds_count", { method: "GET", route: "unmatched", status_code: "404" });
      expect(countBefore).toBeGreaterThanOrEqual(2);

      const TOTAL = 10_000;
      const bad: string[] = [];
      let next = 0;
      await Promise.all(
        Array.from({ length: 20 }, async () => {
          while (next < TOTAL) {
            const [method, make] = kinds[next++ % kinds.length] as [string, () => string];
            const p = make();
            const r = await send(method, p);
            let code: unknown;
            try {
              code = (JSON.parse(r.body) as { error?: { code?: unknown } }).error?.code;
            } catch {
              code = undefined;
            }
            if (r.status !== 404 || code !== "not_found") bad.push(`${method} ${p}: ${r.status} ${r.body.slice(0, 100)}`);
          }
        }),
      );
      expect(bad.slice(0, 5)).toEqual([]);

      const after = await metrics();
      expect([...httpSeries(after)].sort()).toEqual([...httpSeries(before)].sort());
      const routes = new Set([...after.matchAll(/^http_request_duration_seconds_count\{[^}]*route="([^"]*)"/gm)].map((m) => m[1]));
      for (const r of routes) expect(r, "a raw path became a route label").not.toMatch(/[0-9a-f]{16}/);
      // Every one of them was counted, under the one label value.
      const countAfter = sampleValue(after, "http_request_duration_seconds_count", { method: "GET", route: "unmatched", status_code: "404" });
      expect(countAfter - countBefore).toBeGreaterThanOrEqual((TOTAL * 3) / 5 - 1);
      expect(s.child.exitCode).toBeNull();
    } finally {
      agent.destroy();
    }
  });
});

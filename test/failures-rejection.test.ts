/**
 * An unhandled rejection from a lost database connection does not end the
 * process. graphile-worker records a job's end (completeJob/failJob) without
 * awaiting it, so with the database restarting that rejection reaches
 * process-level `unhandledRejection` (found by the chaos suite: a PostgreSQL
 * restart took every instance down). The database going away is not a bug:
 * the process logs it and carries on (the recovery sweep hands back what the
 * lost write concerned). Any other unhandled rejection still exits 1.
 *
 * The rejections are real and inside the built server: it runs with Node's
 * own `--inspect=127.0.0.1:0` and the inspector evaluates them on its main
 * thread (no test switch in the server).
 */
import { describe, it, expect } from "vitest";
import { getJson } from "./fixtures/process.js";
import { inspectorUrl, openInspector, useInspectableServer } from "./helpers/failures.js";

const server = useInspectableServer();

describe("an unhandled rejection", () => {
  it("from a lost database connection is logged and counted, and the process carries on; any other exits 1", async () => {
    const srv = await server.start();
    const inspector = await openInspector(inspectorUrl(srv));
    try {
      // What graphile-worker's unawaited completeJob throws when PostgreSQL goes away mid-write.
      await inspector.evaluate(`void Promise.reject(Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" })); 1`);
      await srv.waitForLog((l) => l.msg === "unhandled rejection from a lost database connection; carrying on", 10_000);
      expect((await getJson(`${srv.baseUrl}/ready`)).status).toBe(200);
      const metrics = await (await fetch(`${srv.baseUrl}/metrics`)).text();
      expect(metrics).toMatch(/background_errors_total\{loop="unhandled-database"\} 1/);
      expect(srv.child.exitCode).toBeNull();

      await inspector.evaluate(`void Promise.reject(new Error("a bug, not the database")); 1`).catch(() => undefined);
    } finally {
      inspector.close();
    }
    const exit = await Promise.race([srv.exited, new Promise<never>((_, reject) => setTimeout(() => reject(new Error("did not exit within 10 s")), 10_000))]);
    expect(exit).toEqual({ code: 1, signal: null });
    expect(srv.logs.some((l) => l.msg === "unhandled promise rejection; exiting")).toBe(true);
  });
});

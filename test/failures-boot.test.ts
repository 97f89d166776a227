/**
 * Issue 8, point 2, "a missing required secret", on the built server: in a
 * Replit deployment SESSION_SECRET is required (README, "Deploying on
 * Replit"). Without it the process stops before listening, exit code
 * non-zero, with one stderr line naming the variable and nothing else
 * (config.test.ts checks the same rule on loadConfig alone;
 * process-database.test.ts the missing DATABASE_URL).
 */
import { describe, it, expect, afterEach } from "vitest";
import { spawnServer, type ServerProcess } from "./helpers/spawnServer.js";
import { sleep } from "./fixtures/process.js";

/** Nothing listens on port 9: should the config let the process through, it would sit retrying and the timeout below fails the test. */
const UNREACHABLE = "postgres://esa:esa@127.0.0.1:9/esa?sslmode=disable";

const servers: ServerProcess[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

async function boot(env: Record<string, string | undefined>) {
  const srv = await spawnServer({ env: { SESSION_SECRET: undefined, JWT_SECRET: undefined, ...env }, waitListening: false });
  servers.push(srv);
  const exit = await Promise.race([srv.exited, sleep(10_000).then(() => null)]);
  const lines = srv.stderr().split("\n").filter((l) => l.trim() !== "");
  return { srv, exit, lines };
}

describe("a missing required secret", () => {
  it("REPLIT_DEPLOYMENT=1 without SESSION_SECRET: exits non-zero before listening, one stderr line naming SESSION_SECRET", async () => {
    const { srv, exit, lines } = await boot({ REPLIT_DEPLOYMENT: "1", DATABASE_URL: UNREACHABLE });
    expect(exit, `still running; stdout: ${srv.stdout().slice(0, 500)}`).not.toBeNull();
    expect(exit?.signal).toBeNull();
    expect(exit?.code).not.toBe(0);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/SESSION_SECRET/);
    expect(srv.stderr()).not.toMatch(/^\s*at |Error:|\.js:\d+/m);
    expect(srv.stdout()).toBe("");
    expect(srv.logs.some((l) => l.msg === "listening")).toBe(false);
  });

  it("with DATABASE_URL missing too: two lines, one per variable", async () => {
    const { exit, lines } = await boot({ REPLIT_DEPLOYMENT: "1", DATABASE_URL: undefined });
    expect(exit?.code).not.toBe(0);
    expect(exit?.code).not.toBeNull();
    expect(lines).toHaveLength(2);
    expect(lines.filter((l) => /SESSION_SECRET/.test(l))).toHaveLength(1);
    expect(lines.filter((l) => /DATABASE_URL/.test(l))).toHaveLength(1);
  });

  it("with it set, the same deployment boots (the secret was the only thing missing)", async () => {
    const srv = await spawnServer({ env: { REPLIT_DEPLOYMENT: "1", DATABASE_URL: UNREACHABLE, SESSION_SECRET: "s".repeat(40) } });
    servers.push(srv);
    expect(srv.logs.some((l) => l.msg === "listening")).toBe(true);
    expect(srv.child.exitCode).toBeNull();
  });
});

/**
 * Runs one of this folder's small baseline servers (a TypeScript file) under
 * tsx in its own process, waits for its `listening <port>` line, and stops it
 * by its PID (SIGTERM, SIGKILL after 3 s).
 */
import { spawn } from "node:child_process";
import path from "node:path";
import type { BenchContext } from "../../lib/context.js";

export interface SmallServer {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

export async function startSmallServer(ctx: BenchContext, file: string, args: string[]): Promise<SmallServer> {
  const tsx = path.join(ctx.root, "node_modules", "tsx", "dist", "cli.mjs");
  const child = spawn(process.execPath, [tsx, path.join(ctx.root, "bench", "rows", "issue7", file), ...args], {
    cwd: ctx.root,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  };
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error(`${file} did not start in 20 s`)), 20_000);
      child.stdout.setEncoding("utf8").on("data", (c: string) => {
        out += c;
        const m = /listening (\d+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`${file} exited (${code}) before listening`));
      });
    });
    return { url: `http://127.0.0.1:${port}/`, pid: child.pid ?? -1, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * The child programs of the issue 6 rows: the WebSocket client process and
 * the bare `ws` baseline. Bundled with esbuild once per run, like the
 * harness's own programs (lib/compile.ts) but into a folder of their own
 * (`node_modules/.cache/esa-bench-issue6/`), and run under plain node:
 * the baseline pinned to the server core, the clients to the load core.
 */
import path from "node:path";
import { readFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import * as esbuild from "esbuild";
import type { BenchContext, ServerChild } from "../../lib/context.js";
import { spawnArgv, type TrackedChild } from "../../lib/children.js";
import { pollUntil200 } from "../../lib/http.js";
import type { ClientCommand, Reply } from "./protocol.js";

const PROGRAMS = {
  wsClients: "bench/rows/issue6/wsClients.ts",
  bareWs: "bench/baselines/issue6BareWs.ts",
} as const;

/** The cores of lib/context.ts: servers (and baselines) on 0, load on 1. */
const SERVER_CPU = "0";
const LOAD_CPU = "1";

let built: Promise<Record<keyof typeof PROGRAMS, string>> | undefined;

export function issue6Programs(root: string): Promise<Record<keyof typeof PROGRAMS, string>> {
  return (built ??= (async () => {
    const outdir = path.join(root, "node_modules", ".cache", "esa-bench-issue6");
    await rm(outdir, { recursive: true, force: true });
    await esbuild.build({
      entryPoints: Object.fromEntries(Object.entries(PROGRAMS).map(([name, file]) => [name, path.join(root, file)])),
      outdir,
      outExtension: { ".js": ".mjs" },
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      packages: "external",
      logLevel: "warning",
    });
    return { wsClients: path.join(outdir, "wsClients.mjs"), bareWs: path.join(outdir, "bareWs.mjs") };
  })());
}

/** This process's soft limit on open files (children inherit it). */
export function openFileLimit(): number {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    return !m?.[1] || m[1] === "unlimited" ? Number.POSITIVE_INFINITY : Number(m[1]);
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

/**
 * A server child holds one descriptor per socket: the servers spawned by the
 * harness inherit the bench's limit, which a row cannot raise for them.
 */
export function assertFileLimit(sockets: number): void {
  const need = sockets + 512;
  const have = openFileLimit();
  if (have < need) throw new Error(`open-file limit ${have} is below the ${need} a server needs for ${sockets} sockets; run the bench under \`ulimit -n 4096\``);
}

const pinned = (ctx: BenchContext, cpu: string) => (ctx.options.pin ? ["taskset", "-c", cpu] : []);

/** The bare ws baseline on a free port, pinned like the servers; resolves once it answers. */
export async function spawnBareWs(ctx: BenchContext): Promise<ServerChild> {
  const programs = await issue6Programs(ctx.root);
  const port = await ctx.freePort();
  const env = { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", NODE_ENV: "production", PORT: String(port) };
  const t0 = performance.now();
  const child = spawnArgv([...pinned(ctx, SERVER_CPU), process.execPath, programs.bareWs], { cwd: ctx.root, env });
  try {
    const startupMs =
      (await pollUntil200(port, "/", {
        intervalMs: 10,
        timeoutMs: 10_000,
        abort: () => (child.isRunning() ? undefined : `bare ws exited early: ${child.stderr().slice(-1500)}`),
      })) - t0;
    return Object.assign(child, { port, baseUrl: `http://127.0.0.1:${port}`, startupMs });
  } catch (err) {
    await child.stop("SIGKILL");
    throw err;
  }
}

export interface ClientsChild {
  readonly child: TrackedChild;
  call<T = unknown>(cmd: ClientCommand, timeoutMs?: number): Promise<T>;
  stop(): Promise<void>;
}

/**
 * The client process, pinned to the load core, with an IPC channel. Its
 * open-file limit is raised (within the hard limit) when below what
 * `sockets` need.
 */
export async function spawnClients(ctx: BenchContext, sockets: number): Promise<ClientsChild> {
  const programs = await issue6Programs(ctx.root);
  const need = sockets + 256;
  const node = [process.execPath, programs.wsClients];
  const argv = openFileLimit() >= need ? node : ["sh", "-c", `ulimit -Sn ${need} && exec "$@"`, "sh", ...node];
  const child = spawnArgv([...pinned(ctx, LOAD_CPU), ...argv], {
    cwd: ctx.root,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", NODE_ENV: "production" },
    stdio: ["ignore", "pipe", "pipe", "ipc"],
  });
  let nextId = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  child.child.on("message", (m: Reply) => {
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    if (m.ok) p.resolve(m.result);
    else p.reject(new Error(`ws clients: ${m.error}`));
  });
  void child.exited.then((exit) => {
    for (const p of pending.values()) p.reject(new Error(`ws clients exited (${exit.code ?? exit.signal}): ${child.stderr().slice(-800)}`));
    pending.clear();
  });
  return {
    child,
    call<T>(cmd: ClientCommand, timeoutMs = 60_000): Promise<T> {
      const id = nextId++;
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`ws clients: ${cmd.cmd} timed out after ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, {
          resolve: (v) => {
            clearTimeout(timer);
            resolve(v as T);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        });
        if (!child.isRunning()) return pending.get(id)?.reject(new Error(`ws clients not running: ${child.stderr().slice(-800)}`));
        child.child.send({ ...cmd, id });
      });
    },
    async stop() {
      await child.stop("SIGTERM", 5000);
    },
  };
}


/**
 * Every process the bench starts goes through here, so each one is stopped by
 * its PID: by its owner in a finally block, and by `stopAll` (and, as a last
 * resort, SIGKILL on exit) for anything an error left behind.
 */
import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface TrackedChild {
  readonly pid: number;
  readonly child: ChildProcess;
  /** Resolves once the process has exited. */
  readonly exited: Promise<ExitInfo>;
  isRunning(): boolean;
  stdout(): string;
  stderr(): string;
  /**
   * Sends `signal` (default SIGTERM), waits up to `timeoutMs` (default 10 s),
   * then SIGKILLs. Resolves with the exit; idempotent.
   */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<ExitInfo>;
}

/** Output kept per stream, enough to explain a failure without growing forever. */
const KEEP_CHARS = 64 * 1024;

const live = new Set<TrackedChild>();
process.on("exit", () => {
  for (const c of live) if (c.isRunning()) c.child.kill("SIGKILL");
});

export function spawnTracked(command: string, args: readonly string[], options: SpawnOptions = {}): TrackedChild {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], ...options });
  if (child.pid === undefined) {
    // spawn reports ENOENT and friends asynchronously; surface it here.
    throw new Error(`could not start ${command} ${args.join(" ")}`);
  }
  let out = "";
  let err = "";
  child.stdout?.setEncoding("utf8").on("data", (s: string) => {
    out = (out + s).slice(-KEEP_CHARS);
  });
  child.stderr?.setEncoding("utf8").on("data", (s: string) => {
    err = (err + s).slice(-KEEP_CHARS);
  });
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
  });
  const isRunning = () => child.exitCode === null && child.signalCode === null;
  let stopping: Promise<ExitInfo> | undefined;
  const tracked: TrackedChild = {
    pid: child.pid,
    child,
    exited,
    isRunning,
    stdout: () => out,
    stderr: () => err,
    stop(signal = "SIGTERM", timeoutMs = 10_000) {
      if (!isRunning()) return exited;
      stopping ??= (async () => {
        child.kill(signal);
        const timer = setTimeout(() => {
          if (isRunning()) child.kill("SIGKILL");
        }, timeoutMs);
        try {
          return await exited;
        } finally {
          clearTimeout(timer);
        }
      })();
      return stopping;
    },
  };
  live.add(tracked);
  void exited.then(() => live.delete(tracked));
  return tracked;
}

/** {@link spawnTracked} with the command as the first element of `argv`. */
export function spawnArgv(argv: readonly string[], options: SpawnOptions = {}): TrackedChild {
  const [command, ...args] = argv;
  if (command === undefined) throw new Error("empty command line");
  return spawnTracked(command, args, options);
}

/** Stops every child still running (SIGTERM, then SIGKILL after `timeoutMs`). */
export async function stopAll(timeoutMs = 10_000): Promise<void> {
  await Promise.all([...live].map((c) => c.stop("SIGTERM", timeoutMs)));
}

/** Scheduler facts from Linux /proc, to tell a slow program from a busy machine. */
import { readFileSync } from "node:fs";

/**
 * Time the process's main thread (the event loop) has spent runnable but
 * waiting for a core, ms (/proc/<pid>/schedstat, second field; Linux with
 * schedstats). NaN where unavailable. Growth during a phase means other
 * processes held the core: latency then says more about the machine than
 * about the program.
 */
export function runQueueWaitMs(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/schedstat`, "utf8").trim().split(/\s+/);
    return Number(fields[1]) / 1e6;
  } catch {
    return Number.NaN;
  }
}

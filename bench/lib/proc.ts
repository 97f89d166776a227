/** Process facts from Linux /proc. */
import { readFileSync, readdirSync } from "node:fs";
import { execFileSync } from "node:child_process";

/** Resident set size of a process, bytes (Linux /proc). */
export function rssBytes(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (key: string) => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status);
    if (!m?.[1]) throw new Error(`no ${key} in /proc/${pid}/status`);
    return Number(m[1]) * 1024;
  };
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
}

let ticksPerSecond: number | undefined;

/** USER_HZ, the unit of /proc/<pid>/stat CPU times (almost always 100). */
function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/**
 * The fields after a /proc/<pid>/stat command name (which may hold spaces;
 * state is the first), or null when the process is gone.
 */
function statFields(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

/** User + system CPU time of a process (all its threads) so far, ms; 10 ms resolution. */
export function cpuMs(pid: number): number {
  const f = statFields(pid);
  if (!f) throw new Error(`no process with pid ${pid}`);
  return ((Number(f[11]) + Number(f[12])) * 1000) / clockTicks();
}

/**
 * CPU time of a PostgreSQL server so far, ms: the postmaster, its live
 * children (backends, WAL writer, checkpointer…) and the children it has
 * reaped (cutime/cstime), so backends that came and went count too.
 * `postmasterPid`: the first line of the data directory's postmaster.pid.
 */
export function postgresCpuMs(postmasterPid: number): number {
  const ticks = clockTicks();
  const own = statFields(postmasterPid);
  if (!own) throw new Error(`no postmaster with pid ${postmasterPid}`);
  let total = Number(own[11]) + Number(own[12]) + Number(own[13]) + Number(own[14]);
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const f = statFields(Number(name));
    // Field 4 of stat (ppid) is the second after the command name.
    if (f && Number(f[1]) === postmasterPid) total += Number(f[11]) + Number(f[12]);
  }
  return (total * 1000) / ticks;
}

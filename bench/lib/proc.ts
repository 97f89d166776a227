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

/** User + system CPU time of a process (all its threads) so far, ms; 10 ms resolution. */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the parenthesised command name (which may hold spaces): state is the first.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  return ((utime + stime) * 1000) / clockTicks();
}

/** The fields after a /proc/<pid>/stat command name, or null when the process is gone. */
function statFields(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
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

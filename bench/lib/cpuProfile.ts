/**
 * Summarises a V8 `.cpuprofile` (from `node --cpu-prof`): where the busy time
 * went, by package (self and inclusive) and by function (self). Idle time is
 * left out of the percentages.
 */
import { readFile } from "node:fs/promises";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface SummaryOptions {
  /** Functions listed. Default 20. */
  top?: number;
  /** Leave out the first ms of the profile (the boot), so per-request figures are not inflated by it. */
  skipMs?: number;
}

const SPECIAL = new Set(["(idle)", "(program)", "(garbage collector)", "(root)"]);

/** Which package or layer a frame belongs to. */
export function packageOf(url: string, functionName: string): string {
  if (!url) return SPECIAL.has(functionName) ? functionName : "(native)";
  if (url.startsWith("node:")) return url.replace(/^node:(internal\/)?/, "node:").split("/")[0] ?? url;
  const nm = url.lastIndexOf("/node_modules/");
  if (nm !== -1) {
    const rest = url.slice(nm + "/node_modules/".length).split("/");
    return rest[0]?.startsWith("@") ? `${rest[0]}/${rest[1] ?? ""}` : (rest[0] ?? url);
  }
  if (url.includes("/dist/")) return "server (dist)";
  return url;
}

function frameLabel(n: ProfileNode): string {
  const { functionName, url, lineNumber } = n.callFrame;
  const short = url.replace(/^file:\/\/.*\/node_modules\//, "").replace(/^file:\/\/.*\/dist\//, "dist/");
  return `${functionName || "(anonymous)"}${short ? ` ${short}:${lineNumber + 1}` : ""}`;
}

export interface ProfileSummary {
  skippedMs: number;
  totalMs: number;
  idleMs: number;
  busyMs: number;
  byPackageSelf: { name: string; ms: number; pct: number }[];
  byPackageInclusive: { name: string; ms: number; pct: number }[];
  topFunctions: { name: string; ms: number; pct: number }[];
}

export async function summariseProfile(file: string, opts: SummaryOptions = {}): Promise<ProfileSummary> {
  const top = opts.top ?? 20;
  const skipMs = opts.skipMs ?? 0;
  const profile = JSON.parse(await readFile(file, "utf8")) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  const self = new Map<number, number>();
  let total = 0;
  let clock = 0;
  profile.samples.forEach((id, i) => {
    const dt = (profile.timeDeltas[i] ?? 0) / 1000;
    clock += dt;
    if (clock < skipMs) return;
    total += dt;
    self.set(id, (self.get(id) ?? 0) + dt);
  });

  const idle = [...self].filter(([id]) => byId.get(id)?.callFrame.functionName === "(idle)").reduce((a, [, ms]) => a + ms, 0);
  const busy = total - idle;
  const pkgSelf = new Map<string, number>();
  const pkgIncl = new Map<string, number>();
  const fnSelf = new Map<string, number>();
  for (const [id, ms] of self) {
    const n = byId.get(id);
    if (!n || n.callFrame.functionName === "(idle)") continue;
    const pkg = packageOf(n.callFrame.url, n.callFrame.functionName);
    pkgSelf.set(pkg, (pkgSelf.get(pkg) ?? 0) + ms);
    const label = frameLabel(n);
    fnSelf.set(label, (fnSelf.get(label) ?? 0) + ms);
    // Inclusive: every package on this stack gets the sample once.
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const f = byId.get(cur);
      if (f) seen.add(packageOf(f.callFrame.url, f.callFrame.functionName));
    }
    seen.delete("(root)");
    for (const p of seen) pkgIncl.set(p, (pkgIncl.get(p) ?? 0) + ms);
  }
  const rank = (m: Map<string, number>, k: number) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, k)
      .map(([name, ms]) => ({ name, ms: Math.round(ms), pct: Math.round((ms / busy) * 1000) / 10 }));
  return {
    skippedMs: Math.round(skipMs),
    totalMs: Math.round(total),
    idleMs: Math.round(idle),
    busyMs: Math.round(busy),
    byPackageSelf: rank(pkgSelf, 15),
    byPackageInclusive: rank(pkgIncl, 15),
    topFunctions: rank(fnSelf, top),
  };
}

/**
 * @param requests answers the process served while profiled (warm-ups included), for a µs-per-request column
 */
export function formatSummary(title: string, s: ProfileSummary, requests?: number): string {
  const perReq = (ms: number) => (requests ? `${((ms * 1000) / requests).toFixed(1).padStart(7)} µs/req  ` : "");
  const list = (heading: string, items: { name: string; ms: number; pct: number }[]) =>
    [`  ${heading}`, ...items.map((i) => `    ${String(i.pct).padStart(5)} %  ${String(i.ms).padStart(6)} ms  ${perReq(i.ms)}${i.name}`)].join("\n");
  return [
    `CPU profile ${title}: ${s.busyMs} ms busy of ${s.totalMs} ms sampled${s.skippedMs ? ` (first ${s.skippedMs} ms, the boot, left out)` : ""}${requests ? `, ${requests} requests, ${((s.busyMs * 1000) / requests).toFixed(1)} µs busy per request` : ""}`,
    list("self time by package", s.byPackageSelf),
    list("inclusive time by package (a sample counts for every package on its stack)", s.byPackageInclusive),
    list("self time by function", s.topFunctions),
  ].join("\n");
}

/**
 * Bench child programs (the load worker, the bare baselines) are TypeScript
 * bundled once per run with esbuild into `node_modules/.cache/esa-bench/`, so
 * they run under plain `node`: no tsx loader in their start-up time, memory or
 * event loop, the same footing as the built server. Packages stay external and
 * resolve from the project's node_modules, as the built server's do.
 */
import path from "node:path";
import { rm } from "node:fs/promises";
import * as esbuild from "esbuild";

export const BENCH_PROGRAMS = {
  loadWorker: "bench/lib/loadWorker.ts",
  bareHttp: "bench/baselines/bareHttp.ts",
  bareExpress: "bench/baselines/bareExpress.ts",
  issue3ExpressPg: "bench/baselines/issue3ExpressPg.ts",
  issue4Worker: "bench/baselines/issue4Worker.ts",
} as const;

export type BenchProgram = keyof typeof BENCH_PROGRAMS;

/** Bundles every program; returns the absolute path of each output file. */
export async function compilePrograms(root: string): Promise<Record<BenchProgram, string>> {
  const outdir = path.join(root, "node_modules", ".cache", "esa-bench");
  await rm(outdir, { recursive: true, force: true });
  const entryPoints = Object.fromEntries(Object.entries(BENCH_PROGRAMS).map(([name, file]) => [name, path.join(root, file)]));
  await esbuild.build({
    entryPoints,
    outdir,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    packages: "external",
    logLevel: "warning",
  });
  const out = {} as Record<BenchProgram, string>;
  for (const name of Object.keys(BENCH_PROGRAMS) as BenchProgram[]) out[name] = path.join(outdir, `${name}.mjs`);
  return out;
}

/**
 * Issue 7: initial JS, gzipped. The JavaScript a first visit must fetch before
 * the app can run: every `/assets/*.js` that `dist/public/index.html` loads
 * (module scripts and modulepreloads) plus, transitively, every chunk those
 * import statically. Chunks reached only through `import()` (the status page,
 * markdown) are lazy and not counted. Size is the gzip copy the server sends
 * (`<file>.gz` from the build; gzip -9 here when a file has none); brotli
 * and raw sizes are kept in the JSON. Baseline: the seed's 500 KB budget.
 * 1 KB = 1024 bytes.
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { gzipSync, constants as zlib } from "node:zlib";
import type { BenchContext } from "../../lib/context.js";
import type { BenchRow, Measurement } from "../../lib/types.js";
import { round } from "../../lib/stats.js";

const KB = 1024;
const GOAL_KB = 100;
const SEED_BUDGET_KB = 500;

/** `/assets/…js` URLs a page loads from `<script src>` and `<link rel=modulepreload href>`. */
export function entryScripts(html: string): string[] {
  const out = new Set<string>();
  for (const m of html.matchAll(/<script\b[^>]*\bsrc=["']([^"']+\.m?js)["'][^>]*>/gi)) out.add(m[1] ?? "");
  for (const m of html.matchAll(/<link\b[^>]*>/gi)) {
    const tag = m[0];
    const href = /\bhref=["']([^"']+\.m?js)["']/i.exec(tag)?.[1];
    if (href && /\brel=["']?modulepreload\b/i.test(tag)) out.add(href);
  }
  return [...out].filter((u) => !/^[a-z]+:/i.test(u));
}

/**
 * Relative specifiers of a module's static imports and re-exports (`import x
 * from "./a.js"`, `import "./a.js"`, `export * from "./a.js"`), not `import()`.
 * Vite's minified output keeps them as `import{…}from"./a.js"`.
 */
export function staticImports(code: string): string[] {
  const out = new Set<string>();
  const re = /(?:^|[;\n}])\s*(?:import|export)\s*(?:[\w$*{}\s,]+?\s*from\s*)?["'](\.{1,2}\/[^"']+)["']/g;
  for (const m of code.matchAll(re)) out.add(m[1] ?? "");
  return [...out];
}

interface Counted {
  file: string;
  raw: number;
  gzip: number;
  brotli: number | null;
  gzipFrom: "build .gz" | "gzip -9 here";
}

export function initialJs(publicDir: string): Counted[] {
  const html = readFileSync(path.join(publicDir, "index.html"), "utf8");
  const queue = entryScripts(html).map((u) => path.join(publicDir, new URL(u, "http://x/").pathname));
  if (queue.length === 0) throw new Error("index.html loads no script");
  const seen = new Map<string, Counted>();
  while (queue.length) {
    const file = queue.shift() as string;
    if (seen.has(file)) continue;
    if (!existsSync(file)) throw new Error(`index.html or a chunk refers to ${file}, which the build did not emit`);
    const code = readFileSync(file);
    const gz = existsSync(file + ".gz") ? readFileSync(file + ".gz").length : null;
    const br = existsSync(file + ".br") ? readFileSync(file + ".br").length : null;
    seen.set(file, {
      file: path.relative(publicDir, file),
      raw: code.length,
      gzip: gz ?? gzipSync(code, { level: zlib.Z_BEST_COMPRESSION }).length,
      brotli: br,
      gzipFrom: gz === null ? "gzip -9 here" : "build .gz",
    });
    for (const spec of staticImports(code.toString("utf8"))) queue.push(path.resolve(path.dirname(file), spec));
  }
  return [...seen.values()];
}

async function run(ctx: BenchContext): Promise<Measurement[]> {
  const files = initialJs(path.join(ctx.root, "dist", "public"));
  const gzip = files.reduce((s, f) => s + f.gzip, 0);
  const raw = files.reduce((s, f) => s + f.raw, 0);
  const brotli = files.every((f) => f.brotli !== null) ? files.reduce((s, f) => s + (f.brotli ?? 0), 0) : null;
  ctx.progress(`initial JS: ${files.map((f) => `${f.file} ${f.gzip} B gz`).join(", ")}`);
  return [
    {
      name: "initial JS gzipped",
      measured: { value: round(gzip / KB, 1), unit: "KB" },
      baseline: { value: SEED_BUDGET_KB, unit: "KB", label: "the seed's budget" },
      goal: { kind: "under", value: GOAL_KB, unit: "KB" },
      details: { files, rawBytes: raw, gzipBytes: gzip, brotliBytes: brotli },
      notes: [
        `initial JS: ${files.length} file(s), ${round(raw / KB, 1)} KB raw, ${round(gzip / KB, 1)} KB gzip${brotli === null ? "" : `, ${round(brotli / KB, 1)} KB brotli (what Chromium gets)`}; lazy chunks not counted`,
      ],
    },
  ];
}

export const initialJsRow: BenchRow = {
  name: "issue7-initial-js",
  issue: 7,
  description: "JS index.html loads before any lazy import, gzip size, vs the seed's 500 KB budget (goal ≤ 100 KB)",
  run,
};

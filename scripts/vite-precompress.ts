import { readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { brotliCompress, constants, gzip } from "node:zlib";
import type { Plugin } from "vite";

/**
 * Writes `.br` and `.gz` copies next to each compressible build output, so the
 * server sends precompressed bytes instead of compressing on every request.
 * Maximum levels are affordable here: it runs once per build, not per request.
 */

const brotli = promisify(brotliCompress);
const gz = promisify(gzip);

/** Text formats only: images and fonts are already compressed. */
const COMPRESSIBLE = /\.(?:js|mjs|css|html|svg|json|txt|map|webmanifest|xml)$/i;

// A hand-rolled walk: Dirent.parentPath (for `recursive: true`) needs Node
// 20.12, and package.json allows 20.11.
async function listFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await listFiles(full)));
    else if (entry.isFile()) files.push(full);
  }
  return files;
}

/** Writes `file + ext` only when it saves bytes; returns whether it did. */
async function writeIfSmaller(file: string, ext: string, original: Buffer, packed: Buffer): Promise<boolean> {
  if (packed.length >= original.length) return false;
  await writeFile(file + ext, packed);
  return true;
}

async function precompress(file: string): Promise<number> {
  const raw = await readFile(file);
  const [br, gzipped] = await Promise.all([
    brotli(raw, {
      params: {
        [constants.BROTLI_PARAM_QUALITY]: 11,
        [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT,
        [constants.BROTLI_PARAM_SIZE_HINT]: raw.length,
      },
    }),
    gz(raw, { level: 9 }),
  ]);
  const written = await Promise.all([writeIfSmaller(file, ".br", raw, br), writeIfSmaller(file, ".gz", raw, gzipped)]);
  return written.filter(Boolean).length;
}

export function precompressPlugin(): Plugin {
  return {
    name: "esa:precompress",
    apply: "build",
    // writeBundle runs after Vite has written the chunks, index.html and the
    // copied public/ files, so walking outDir covers unhashed files too.
    async writeBundle(options) {
      if (!options.dir) return;
      const files = (await listFiles(options.dir)).filter((f) => COMPRESSIBLE.test(f));
      const written = await Promise.all(files.map(precompress));
      const total = written.reduce((a, b) => a + b, 0);
      this.info(`precompressed ${files.length} files into ${total} .br/.gz copies`);
    },
  };
}

/**
 * The LCP baseline's server: bare node:http in its own process (as the app
 * server is), serving one HTML document from memory and the app's built CSS
 * (and anything else under dist/public) from disk, brotli when the build has a
 * copy and the client accepts it, as the app does. No framework, no headers
 * beyond content type and length. Run by tsx from lcp.ts:
 * `tsx staticPage.ts <htmlFile> <publicDir>`; prints `listening <port>`.
 */
import { createServer } from "node:http";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";

const [htmlFile, publicArg] = process.argv.slice(2);
if (!htmlFile || !publicArg) {
  console.error("usage: tsx staticPage.ts <htmlFile> <publicDir>");
  process.exit(2);
}
const publicDir: string = publicArg;
const html = readFileSync(htmlFile);
const TYPES: Record<string, string> = { ".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml" };
const cache = new Map<string, { raw: Buffer; br: Buffer | null; type: string } | null>();

function fileFor(urlPath: string) {
  if (cache.has(urlPath)) return cache.get(urlPath) ?? null;
  const file = path.join(publicDir, path.normalize(urlPath).replace(/^(\.\.[/\\])+/, ""));
  const entry = file.startsWith(publicDir) && existsSync(file) && !file.endsWith("/")
    ? { raw: readFileSync(file), br: existsSync(file + ".br") ? readFileSync(file + ".br") : null, type: TYPES[path.extname(file)] ?? "application/octet-stream" }
    : null;
  cache.set(urlPath, entry);
  return entry;
}

const server = createServer((req, res) => {
  const urlPath = (req.url ?? "/").split("?")[0] ?? "/";
  if (urlPath === "/") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8", "content-length": html.length, "cache-control": "no-cache" }).end(html);
    return;
  }
  const entry = fileFor(urlPath);
  if (!entry) {
    res.writeHead(404).end();
    return;
  }
  const br = entry.br && /\bbr\b/.test(String(req.headers["accept-encoding"] ?? "")) ? entry.br : null;
  const body = br ?? entry.raw;
  res.writeHead(200, { "content-type": entry.type, "content-length": body.length, ...(br ? { "content-encoding": "br" } : {}) }).end(body);
});
server.listen(0, "127.0.0.1", () => {
  const addr = server.address();
  process.stdout.write(`listening ${typeof addr === "object" && addr ? addr.port : 0}\n`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));

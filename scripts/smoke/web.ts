/**
 * The page as a browser gets it: security headers (server/http/middleware/security.ts:
 * our CSP plus helmet's defaults, HSTS over HTTPS), index.html never cached, and
 * the hashed assets it loads immutable for a year and served compressed.
 */
import { brotliDecompressSync, gunzipSync } from "node:zlib";
import { excerpt, type Reply } from "./http.js";
import { fail, pass, type Check, type SmokeContext } from "./runner.js";

const getPage = (ctx: SmokeContext, path: string, signal: AbortSignal) =>
  ctx.http(path, { signal, headers: { accept: "text/html,application/xhtml+xml" } });

/** CSP directives by name, e.g. "script-src" → ["'self'"]. */
export function parseCsp(header: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const part of header.split(";")) {
    const [name, ...values] = part.trim().split(/\s+/);
    if (name && !out.has(name.toLowerCase())) out.set(name.toLowerCase(), values);
  }
  return out;
}

/** The problems with a page's security headers (empty: fine). */
export function securityProblems(r: Reply, https: boolean): string[] {
  const problems: string[] = [];
  const csp = r.header("content-security-policy");
  if (!csp) problems.push("no Content-Security-Policy");
  else {
    const d = parseCsp(csp);
    const script = d.get("script-src") ?? d.get("default-src");
    if (!d.get("default-src")?.includes("'self'")) problems.push("CSP default-src is not 'self'");
    if (!script) problems.push("CSP has neither script-src nor default-src");
    else if (script.some((v) => v === "'unsafe-inline'" || v === "'unsafe-eval'" || v === "*")) problems.push(`CSP script-src allows ${script.join(" ")}`);
    if (d.get("object-src")?.join(" ") !== "'none'") problems.push("CSP object-src is not 'none'");
    if (!d.has("frame-ancestors") && !/^(deny|sameorigin)$/i.test(r.header("x-frame-options"))) problems.push("neither CSP frame-ancestors nor X-Frame-Options");
  }
  if (r.header("x-content-type-options").toLowerCase() !== "nosniff") problems.push(`X-Content-Type-Options "${r.header("x-content-type-options")}", expected nosniff`);
  if (!/^(deny|sameorigin)$/i.test(r.header("x-frame-options"))) problems.push(`X-Frame-Options "${r.header("x-frame-options")}", expected SAMEORIGIN or DENY`);
  if (!r.header("referrer-policy")) problems.push("no Referrer-Policy");
  if (!r.header("cross-origin-opener-policy")) problems.push("no Cross-Origin-Opener-Policy");
  if (!r.header("cross-origin-resource-policy")) problems.push("no Cross-Origin-Resource-Policy");
  if (r.header("x-powered-by")) problems.push(`X-Powered-By "${r.header("x-powered-by")}" is sent`);
  if (https) {
    const hsts = r.header("strict-transport-security");
    const maxAge = Number(/max-age=(\d+)/i.exec(hsts)?.[1] ?? NaN);
    // 180 days: the shortest max-age the HSTS preload list and common scanners accept.
    if (!hsts) problems.push("no Strict-Transport-Security over https");
    else if (!(maxAge >= 180 * 24 * 3600)) problems.push(`Strict-Transport-Security "${hsts}" max-age under 180 days`);
  }
  return problems;
}

export const securityHeadersCheck: Check = {
  name: "security-headers",
  async run(ctx, signal) {
    const r = await getPage(ctx, "/", signal);
    if (r.status !== 200) return fail(`GET / answered ${r.status}: ${excerpt(r.text())}`);
    const https = ctx.base.protocol === "https:";
    const problems = securityProblems(r, https);
    if (problems.length) return fail(`GET /: ${problems.join("; ")}`);
    const hsts = https ? `HSTS "${r.header("strict-transport-security")}"` : "HSTS not required over http";
    return pass(`GET /: CSP (script-src ${parseCsp(r.header("content-security-policy")).get("script-src")?.join(" ") ?? "from default-src"}), nosniff, X-Frame-Options ${r.header("x-frame-options")}, Referrer-Policy, COOP, CORP, no X-Powered-By; ${hsts}`);
  },
};

const isNotCached = (cc: string) => /\bno-store\b/i.test(cc) || /\bno-cache\b/i.test(cc) || (/\bmax-age=0\b/i.test(cc) && /\bmust-revalidate\b/i.test(cc));

export const indexNotCachedCheck: Check = {
  name: "index-not-cached",
  async run(ctx, signal) {
    const seen: string[] = [];
    for (const path of ["/", "/index.html"]) {
      const r = await getPage(ctx, path, signal);
      if (r.status !== 200) return fail(`GET ${path} answered ${r.status}`);
      if (!r.header("content-type").startsWith("text/html")) return fail(`GET ${path} content-type "${r.header("content-type")}", expected text/html`);
      const cc = r.header("cache-control");
      if (!isNotCached(cc)) return fail(`GET ${path} cache-control "${cc}", expected no-cache or no-store`);
      if (/\bimmutable\b/i.test(cc)) return fail(`GET ${path} cache-control "${cc}" says immutable`);
      seen.push(`${path} "${cc}"`);
    }
    return pass(`cache-control ${seen.join(", ")}`);
  },
};

/** The /assets/ files index.html loads (scripts, module preloads and stylesheets), in page order. */
export function assetsOf(html: string): string[] {
  const out: string[] = [];
  for (const m of html.matchAll(/<(?:script|link)\b[^>]*?\b(?:src|href)=["']([^"']+)["'][^>]*>/gi)) {
    const url = m[1] ?? "";
    if (/^(?:\/[^/]|\.\/)?[^:]*assets\/[^"']+\.(?:js|mjs|css)(?:\?.*)?$/.test(url) && !out.includes(url)) out.push(url);
  }
  return out;
}

function decode(r: Reply): Buffer {
  const enc = r.header("content-encoding");
  if (enc === "br") return brotliDecompressSync(r.body);
  if (enc === "gzip") return gunzipSync(r.body);
  return r.body;
}

export const assetsCheck: Check = {
  name: "assets",
  async run(ctx, signal) {
    const page = await getPage(ctx, "/", signal);
    if (page.status !== 200) return fail(`GET / answered ${page.status}`);
    const assets = assetsOf(page.text());
    const scripts = assets.filter((a) => /\.m?js(\?|$)/.test(a));
    if (scripts.length === 0) return fail(`index.html loads no /assets/*.js (found: ${assets.join(", ") || "nothing"})`);
    const notes: string[] = [];
    for (const asset of assets) {
      const path = new URL(asset, new URL("/", ctx.base)).pathname;
      if (!/[-.][A-Za-z0-9_-]{8,}\.(?:m?js|css)$/.test(path)) return fail(`${path}: the name carries no content hash`);
      const plain = await ctx.http(path, { signal, headers: { "accept-encoding": "identity" } });
      const both = await ctx.http(path, { signal, headers: { "accept-encoding": "br, gzip" } });
      const gzip = await ctx.http(path, { signal, headers: { "accept-encoding": "gzip" } });
      for (const [label, r] of [["identity", plain], ["br, gzip", both], ["gzip", gzip]] as const) {
        if (r.status !== 200) return fail(`${path} (Accept-Encoding: ${label}) answered ${r.status}`);
        const cc = r.header("cache-control");
        if (!/\bimmutable\b/.test(cc) || !/\bmax-age=31536000\b/.test(cc)) return fail(`${path} cache-control "${cc}", expected immutable, max-age=31536000`);
      }
      if (/\.m?js$/.test(path) && !/javascript/.test(plain.header("content-type"))) return fail(`${path} content-type "${plain.header("content-type")}", expected JavaScript`);
      if (plain.header("content-encoding") && plain.header("content-encoding") !== "identity") return fail(`${path} sent ${plain.header("content-encoding")} to a client accepting only identity`);
      const enc = both.header("content-encoding");
      if (enc !== "br" && enc !== "gzip") return fail(`${path} sent Content-Encoding "${enc || "none"}" to Accept-Encoding: br, gzip`);
      if (gzip.header("content-encoding") !== "gzip") return fail(`${path} sent Content-Encoding "${gzip.header("content-encoding") || "none"}" to Accept-Encoding: gzip`);
      if (!/accept-encoding/i.test(both.header("vary"))) return fail(`${path} is compressed without "Vary: Accept-Encoding"`);
      for (const r of [both, gzip]) {
        let body: Buffer;
        try {
          body = decode(r);
        } catch (err) {
          return fail(`${path}: the ${r.header("content-encoding")} body does not decode (${err instanceof Error ? err.message : String(err)})`);
        }
        if (!body.equals(plain.body)) return fail(`${path}: the ${r.header("content-encoding")} body differs from the identity one`);
      }
      notes.push(`${path.split("/").pop()} ${enc} ${both.body.length} B of ${plain.body.length} B`);
    }
    return pass(`${assets.length} hashed assets immutable (max-age=31536000) and compressed: ${notes.join(", ")}`);
  },
};

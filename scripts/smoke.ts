/**
 * `npm run smoke -- <url> [--metrics-token T] [--metrics-url U] [--check-timeout ms] [--timeout ms]`:
 * checks a running deployment the way the deployment checklist does and prints
 * one `pass`/`fail`/`skip` line per check and a summary. Exit 0 only when every
 * check passed; 1 when any failed or could not be verified (skipped); 2 on bad
 * usage. METRICS_TOKEN in the environment stands for --metrics-token.
 */
import { runChecks, type Check } from "./smoke/runner.js";
import { healthCheck, liveCheck, metricsCheck, readyCheck } from "./smoke/probes.js";
import { assetsCheck, indexNotCachedCheck, securityHeadersCheck } from "./smoke/web.js";
import { wsOtherOriginCheck, wsOwnOriginCheck } from "./smoke/realtime.js";
import { mathRunCheck } from "./smoke/mathRun.js";

const SECOND = 1000;

/**
 * In checklist order, except /metrics last: by then the run check has made
 * requests to /api/conversations/<uuid>/…, so a raw URL in a route label shows.
 */
export const CHECKS: readonly Check[] = [
  liveCheck,
  readyCheck,
  healthCheck,
  securityHeadersCheck,
  indexNotCachedCheck,
  assetsCheck,
  wsOwnOriginCheck,
  wsOtherOriginCheck,
  mathRunCheck,
  metricsCheck,
];

const USAGE =
  "usage: npm run smoke -- <url> [--metrics-token <token>] [--metrics-url <url>] [--check-timeout <ms>] [--timeout <ms>]\n" +
  "  <url>            the deployment's origin, e.g. https://esa.example.com\n" +
  "  --metrics-token  bearer token for a protected /metrics (default: $METRICS_TOKEN)\n" +
  "  --metrics-url    where /metrics is served when METRICS_PORT moves it (default: <url>/metrics)\n" +
  "  --check-timeout  time one check may take, ms (default 15000)\n" +
  "  --timeout        time the whole smoke may take, ms (default 60000)\n";

interface Args {
  base: URL;
  metricsUrl?: URL;
  metricsToken?: string;
  checkTimeoutMs: number;
  globalTimeoutMs: number;
}

function parseUrl(s: string, what: string): URL {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new Error(`${what} is not a URL: ${s}`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error(`${what} must be http or https: ${s}`);
  return u;
}

function parseMs(s: string | undefined, flag: string): number {
  const n = Number(s);
  if (!s || !Number.isInteger(n) || n < 100 || n > 30 * 60 * SECOND) throw new Error(`${flag} must be a whole number of ms from 100 to 1800000 (got ${s ?? "nothing"})`);
  return n;
}

export function parseArgs(argv: readonly string[], env: NodeJS.ProcessEnv): Args {
  let url: string | undefined;
  const out: Partial<Args> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? "";
    const [flag, inline] = a.startsWith("--") && a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const value = () => inline ?? argv[++i];
    switch (flag) {
      case "--metrics-token":
        out.metricsToken = value();
        if (!out.metricsToken) throw new Error("--metrics-token needs a value");
        break;
      case "--metrics-url":
        out.metricsUrl = parseUrl(value() ?? "", "--metrics-url");
        break;
      case "--check-timeout":
        out.checkTimeoutMs = parseMs(value(), "--check-timeout");
        break;
      case "--timeout":
        out.globalTimeoutMs = parseMs(value(), "--timeout");
        break;
      default:
        if (a.startsWith("-")) throw new Error(`unknown option ${a}`);
        if (url !== undefined) throw new Error(`one URL only (got ${url} and ${a})`);
        url = a;
    }
  }
  if (url === undefined) throw new Error("the deployment URL is missing");
  const base = parseUrl(url, "the URL");
  if (base.pathname !== "/" || base.search || base.hash) throw new Error(`give the deployment's origin without a path (got ${url})`);
  const token = out.metricsToken ?? (env.METRICS_TOKEN || undefined);
  return {
    base,
    ...(out.metricsUrl ? { metricsUrl: out.metricsUrl } : {}),
    ...(token ? { metricsToken: token } : {}),
    checkTimeoutMs: out.checkTimeoutMs ?? 15 * SECOND,
    globalTimeoutMs: out.globalTimeoutMs ?? 60 * SECOND,
  };
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2).filter((a) => a !== "--");
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(USAGE);
    return 0;
  }
  let args: Args;
  try {
    args = parseArgs(argv, process.env);
  } catch (err) {
    process.stderr.write(`smoke: ${err instanceof Error ? err.message : String(err)}\n${USAGE}`);
    return 2;
  }
  process.stdout.write(`smoke: ${CHECKS.length} checks against ${args.base.origin} (per check ${args.checkTimeoutMs} ms, all ${args.globalTimeoutMs} ms)\n`);
  const summary = await runChecks(CHECKS, { ...args, write: (line) => process.stdout.write(line + "\n") });
  return summary.ok ? 0 : 1;
}

// Exit explicitly: a check that timed out may still hold a socket open.
main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`smoke: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);

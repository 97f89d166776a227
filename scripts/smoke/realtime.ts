/**
 * The WebSocket at /ws: an upgrade from the page's own origin (with the
 * session cookie) succeeds; the same request from another origin is refused
 * with 403 before any handshake.
 */
import WebSocket from "ws";
import { WS_PATH } from "../../shared/realtime.js";
import { excerpt } from "./http.js";
import { fail, pass, type Check, type SmokeContext } from "./runner.js";

/** An origin no deployment lists in CORS_ORIGINS (`.invalid` is reserved, RFC 2606). */
export const FOREIGN_ORIGIN = "https://smoke-foreign-origin.invalid";

export type UpgradeResult = { opened: true; socket: WebSocket } | { opened: false; status: number; body: string } | { opened: false; status: 0; body: string };

export function wsUrl(base: URL): URL {
  const u = new URL(WS_PATH, base);
  u.protocol = base.protocol === "https:" ? "wss:" : "ws:";
  return u;
}

/** Tries the upgrade; an opened socket is handed back (the caller closes it). */
export function tryUpgrade(url: URL, origin: string, cookie: string, signal: AbortSignal): Promise<UpgradeResult> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { origin, headers: { cookie }, handshakeTimeout: 10_000, perMessageDeflate: false });
    const onAbort = () => {
      ws.terminate();
      resolve({ opened: false, status: 0, body: "aborted" });
    };
    signal.addEventListener("abort", onAbort, { once: true });
    const done = (r: UpgradeResult) => {
      signal.removeEventListener("abort", onAbort);
      resolve(r);
    };
    ws.once("open", () => done({ opened: true, socket: ws }));
    ws.once("unexpected-response", (req, res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      const finish = () => {
        req.destroy();
        done({ opened: false, status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") });
      };
      res.once("end", finish);
      res.once("error", finish);
    });
    ws.once("error", (err) => done({ opened: false, status: 0, body: err.message }));
  });
}

const originOf = (ctx: SmokeContext) => ctx.base.origin;

export const wsOwnOriginCheck: Check = {
  name: "ws-own-origin",
  async run(ctx, signal) {
    const cookie = await ctx.session(signal);
    const r = await tryUpgrade(wsUrl(ctx.base), originOf(ctx), cookie, signal);
    if (!r.opened) return fail(`upgrade at ${WS_PATH} from ${originOf(ctx)} refused: ${r.status || "no HTTP answer"} ${excerpt(r.body)}`);
    r.socket.close(1000);
    return pass(`101 upgraded at ${WS_PATH} from ${originOf(ctx)} with the session cookie`);
  },
};

export const wsOtherOriginCheck: Check = {
  name: "ws-other-origin",
  async run(ctx, signal) {
    const cookie = await ctx.session(signal);
    const r = await tryUpgrade(wsUrl(ctx.base), FOREIGN_ORIGIN, cookie, signal);
    if (r.opened) {
      r.socket.terminate();
      return fail(`upgrade from ${FOREIGN_ORIGIN} was accepted (cross-site WebSocket hijacking possible)`);
    }
    if (r.status !== 403) return fail(`upgrade from ${FOREIGN_ORIGIN}: expected 403, got ${r.status || "no HTTP answer"} ${excerpt(r.body)}`);
    return pass(`403 from ${FOREIGN_ORIGIN} before the handshake: ${excerpt(r.body, 80)}`);
  },
};

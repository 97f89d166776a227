/**
 * The client's address as Express's `req.ip` gives it, for requests Express
 * never sees (the WebSocket upgrade): both take it from `proxy-addr` with one
 * trust function, so a client is the same client over HTTP and the socket.
 */
import type { IncomingMessage } from "node:http";
import proxyaddr from "proxy-addr";

/** Whether the hop at `addr`, `hop` steps from the socket (0: the socket's peer), is a trusted proxy. */
export type TrustProxyFn = (addr: string, hop: number) => boolean;

/**
 * TRUST_PROXY compiled as Express compiles a numeric `trust proxy` setting
 * (express/lib/utils.js `compileTrust`): the nearest `hops` proxies are
 * trusted, so the client is the address the farthest trusted one appended to
 * X-Forwarded-For; 0 trusts none and the header is ignored. app.ts sets this
 * very function as `trust proxy`, so `req.ip` and `clientIpOf` cannot differ.
 */
export function compileTrustProxy(hops: number): TrustProxyFn {
  return (_addr, hop) => hop < hops;
}

/** The client address of a raw request under `trust` (Express's `req.ip` is `proxyaddr(req, trust)`). */
export function clientIpOf(req: IncomingMessage, trust: TrustProxyFn): string {
  return proxyaddr(req, trust);
}

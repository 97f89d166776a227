/** Server set-up shared by the issue 6 rows. */
import type { BenchContext, ServerChild } from "../../lib/context.js";

/** Both instances must accept each other's session cookies. */
export const SHARED_SECRETS = {
  SESSION_SECRET: "bench-session-secret-issue6-0123456789abcdef",
  JWT_SECRET: "bench-jwt-secret-issue6-0123456789abcdefghij",
};

export const wsUrl = (s: { baseUrl: string }) => `${s.baseUrl.replace(/^http/, "ws")}/ws`;

/**
 * Starts every child at once; if one fails the others are stopped before
 * the error goes on.
 */
export async function startAll<T extends readonly (() => Promise<ServerChild>)[]>(starts: T): Promise<ServerChild[]> {
  const settled = await Promise.allSettled(starts.map((s) => s()));
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failed) {
    await Promise.all(settled.map((s) => (s.status === "fulfilled" ? s.value.stop() : undefined)));
    throw failed.reason;
  }
  return settled.map((s) => (s as PromiseFulfilledResult<ServerChild>).value);
}

/** SIGTERM with the server's own shutdown time, reported when it does not exit cleanly. */
export async function stopServer(ctx: BenchContext, label: string, server: ServerChild): Promise<void> {
  const exit = await server.stop("SIGTERM", 15_000);
  if (exit.code !== 0 && exit.signal !== "SIGTERM") ctx.progress(`${label} exited ${exit.code ?? exit.signal}; stderr: ${server.stderr().slice(-500)}`);
}

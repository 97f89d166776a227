/**
 * A cookie-authenticated client of the built server's API for the bench rows
 * of issues 3 and 4: a session first (`GET /api/session`), then JSON writes
 * with the cookie and `content-type: application/json` (the CSRF guard's
 * condition), and the dedicated server those rows start.
 */
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";
import type { BenchContext, ServerChild } from "../../lib/context.js";
import { formatSummary, summariseProfile } from "../../lib/cpuProfile.js";
import type { ConversationDto, PostMessageResponse, SessionResponse } from "../../../shared/api.js";

export interface Session {
  baseUrl: string;
  /** `esa_sid=…`, sent on every request. */
  cookie: string;
  userId: string;
}

async function expectStatus(res: Response, status: number, what: string): Promise<unknown> {
  const text = await res.text();
  if (res.status !== status) throw new Error(`${what} answered ${res.status}, not ${status}: ${text.slice(0, 300)}`);
  return text ? (JSON.parse(text) as unknown) : null;
}

/** A new anonymous user: the cookie the server sets on its first answer. */
export async function openSession(baseUrl: string): Promise<Session> {
  const res = await fetch(`${baseUrl}/api/session`);
  const cookie = res.headers
    .getSetCookie()
    .map((c) => c.split(";")[0] ?? "")
    .find((c) => c.startsWith("esa_sid="));
  const body = (await expectStatus(res, 200, "GET /api/session")) as SessionResponse;
  if (!cookie) throw new Error("GET /api/session set no esa_sid cookie");
  const check = (await expectStatus(await fetch(`${baseUrl}/api/session`, { headers: { cookie } }), 200, "GET /api/session with the cookie")) as SessionResponse;
  if (check.userId !== body.userId) throw new Error(`the cookie names ${check.userId}, not ${body.userId}`);
  return { baseUrl, cookie, userId: body.userId };
}

export const jsonHeaders = (s: Session) => ({ cookie: s.cookie, "content-type": "application/json" });

export async function createConversation(s: Session, title: string): Promise<ConversationDto> {
  const res = await fetch(`${s.baseUrl}/api/conversations`, { method: "POST", headers: jsonHeaders(s), body: JSON.stringify({ title }) });
  return (await expectStatus(res, 201, "POST /api/conversations")) as ConversationDto;
}

export const messagesPath = (conversationId: string) => `/api/conversations/${conversationId}/messages`;

/** `POST …/messages`: 202 `{message, run}`. */
export async function postMessage(s: Session, conversationId: string, body: { content: string; agent?: string }): Promise<PostMessageResponse> {
  const res = await fetch(`${s.baseUrl}${messagesPath(conversationId)}`, { method: "POST", headers: jsonHeaders(s), body: JSON.stringify(body) });
  return (await expectStatus(res, 202, `POST ${messagesPath(conversationId)}`)) as PostMessageResponse;
}

export async function getJson(s: Session, path: string): Promise<unknown> {
  return expectStatus(await fetch(`${s.baseUrl}${path}`, { headers: { cookie: s.cookie } }), 200, `GET ${path}`);
}

/**
 * A server of its own on a fresh database `dbName` (pinned to the server core
 * like the shared one), so no other row's server runs its jobs or shares its
 * tables. Under `--cpu-prof` it is profiled too ({@link stopServer} prints the
 * summary). Stop it with {@link stopServer}.
 */
export async function spawnOwnServer(
  ctx: BenchContext,
  dbName: string,
  env: Record<string, string>,
): Promise<{ server: ServerChild; databaseUrl: string }> {
  const databaseUrl = await (await ctx.database()).freshDatabase(dbName);
  const server = await ctx.spawnServer({
    pin: true,
    nodeArgs: ctx.options.cpuProf ? ["--cpu-prof", "--cpu-prof-dir", ctx.profileDir] : [],
    env: { DATABASE_URL: databaseUrl, SESSION_SECRET: randomBytes(32).toString("hex"), ...env },
  });
  return { server, databaseUrl };
}

/**
 * SIGTERM (graceful, up to 15 s), then SIGKILL; reports an unclean exit on
 * stderr. Under `--cpu-prof`, prints the profile's summary, per `units` (what
 * the row counted: requests, runs) when given.
 */
export async function stopServer(ctx: BenchContext, server: ServerChild, profile?: { label: string; units?: number }): Promise<void> {
  const exit = await server.stop("SIGTERM", 15_000);
  if (exit.code !== 0) ctx.progress(`server ${server.pid} exited ${exit.code ?? exit.signal}; stderr: ${server.stderr().slice(-500)}`);
  if (!ctx.options.cpuProf || !existsSync(ctx.profileDir)) return;
  // Node names them CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile; thread 0 is the main one.
  const file = readdirSync(ctx.profileDir).find((f) => f.endsWith(".cpuprofile") && f.split(".")[3] === String(server.pid) && f.split(".")[4] === "0");
  if (!file) return;
  const full = path.join(ctx.profileDir, file);
  const summary = await summariseProfile(full, { skipMs: server.startupMs + 500 });
  console.error(formatSummary(`${profile?.label ?? "server"} (${path.relative(ctx.root, full)})`, summary, profile?.units));
}

/** Runs `fn`; an error it throws carries the tail of the server's stderr (its warn and error logs). */
export async function explainFailure<T>(server: ServerChild, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const tail = server.stderr().trim().slice(-800);
    if (err instanceof Error && tail) err.message += `; server stderr: ${tail}`;
    throw err;
  }
}

/**
 * The few routes of the app, from `location.pathname`: the chat (`/`, a new
 * conversation; `/c/:id`, one conversation) and the status page (`/status`).
 * History API only; links call `navigate`.
 */
import { useSyncExternalStore } from "react";

export type Route = { page: "chat"; conversationId: string | null } | { page: "status" } | { page: "not-found" };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function parseRoute(pathname: string): Route {
  if (pathname === "/" || pathname === "") return { page: "chat", conversationId: null };
  if (pathname === "/status") return { page: "status" };
  const m = /^\/c\/([^/]+)\/?$/.exec(pathname);
  if (m?.[1] && UUID.test(m[1])) return { page: "chat", conversationId: m[1].toLowerCase() };
  return { page: "not-found" };
}

const listeners = new Set<() => void>();
let current = parseRoute(location.pathname);

function refresh() {
  const next = parseRoute(location.pathname);
  if (JSON.stringify(next) === JSON.stringify(current)) return;
  current = next;
  for (const fn of listeners) fn();
}

window.addEventListener("popstate", refresh);

export function navigate(path: string, opts: { replace?: boolean } = {}) {
  if (path === location.pathname) return;
  if (opts.replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  refresh();
}

export const getRoute = () => current;

export function useRoute(): Route {
  return useSyncExternalStore(
    (fn) => {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    () => current,
  );
}

/**
 * fetch with the API's conventions: JSON both ways (cookie-authenticated
 * writes must say `application/json`, even without a body, or the CSRF guard
 * refuses them), and `{error:{code,message}}` turned into an ApiError.
 */

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Seconds, from Retry-After, when the server sent one. */
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

const isErrorBody = (b: unknown): b is { error: { code: string; message: string } } =>
  typeof b === "object" &&
  b !== null &&
  "error" in b &&
  typeof (b as { error: unknown }).error === "object" &&
  typeof (b as { error: { code?: unknown } }).error.code === "string";

export interface RequestOptions {
  method?: "GET" | "POST" | "PATCH" | "DELETE";
  body?: unknown;
  signal?: AbortSignal;
}

export async function request<T>(path: string, opts: RequestOptions = {}): Promise<T> {
  const method = opts.method ?? "GET";
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      credentials: "same-origin",
      headers: method === "GET" ? { accept: "application/json" } : { accept: "application/json", "content-type": "application/json" },
      ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  } catch (err) {
    if (opts.signal?.aborted) throw err;
    throw new ApiError(0, "network_error", "Cannot reach the server");
  }
  if (res.status === 204) return undefined as T;
  const body: unknown = await res.json().catch(() => null);
  if (!res.ok) {
    const retry = Number(res.headers.get("retry-after"));
    if (isErrorBody(body)) throw new ApiError(res.status, body.error.code, body.error.message, Number.isFinite(retry) && retry > 0 ? retry : undefined);
    throw new ApiError(res.status, `http_${res.status}`, `The server answered ${res.status}`);
  }
  return body as T;
}

/** A message for people from anything thrown. */
export function describeError(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  if (err instanceof Error) return err.message;
  return String(err);
}

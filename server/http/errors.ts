import type { ErrorCode, ErrorBody } from "../../shared/errors.js";
import { isDatabaseUnavailable } from "../db/errors.js";

/**
 * The one error type routes throw. `expose` says whether `message` may reach
 * the client; a non-exposed error answers with a generic message for its status.
 */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly expose: boolean;
  /** Extra response headers, e.g. Retry-After. */
  readonly headers: Record<string, string> | undefined;

  constructor(
    code: ErrorCode,
    status: number,
    message: string,
    opts: { expose?: boolean; cause?: unknown; headers?: Record<string, string> } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "AppError";
    this.code = code;
    this.status = status;
    this.expose = opts.expose ?? status < 500;
    this.headers = opts.headers;
  }

  toBody(): ErrorBody {
    return { error: { code: this.code, message: this.expose ? this.message : GENERIC[this.status] ?? "Internal server error" } };
  }
}

const GENERIC: Record<number, string> = {
  500: "Internal server error",
  503: "Service unavailable",
};

export const notFound = (what = "Not found") => new AppError("not_found", 404, what);
export const badRequest = (message: string) => new AppError("bad_request", 400, message);

/** Errors thrown by body-parser carry `type` and `status`. */
interface HttpishError {
  type?: unknown;
  status?: unknown;
  statusCode?: unknown;
  expose?: unknown;
  message?: unknown;
}

/** Every catch starts here: whatever was thrown becomes an AppError. */
export function coerceError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  if (err && typeof err === "object") {
    const e = err as HttpishError;
    switch (e.type) {
      case "entity.parse.failed":
        return new AppError("invalid_json", 400, "Request body is not valid JSON", { cause: err });
      case "entity.too.large":
        return new AppError("payload_too_large", 413, "Request body is too large", { cause: err });
      case "encoding.unsupported":
      case "charset.unsupported":
        return new AppError("unsupported_media_type", 415, "Unsupported request body encoding", { cause: err });
      case "request.aborted":
        return new AppError("bad_request", 400, "Request aborted", { cause: err });
      default:
        break;
    }
    const status = Number(e.status ?? e.statusCode);
    if (Number.isInteger(status) && status >= 400 && status < 500) {
      const code: ErrorCode = status === 404 ? "not_found" : status === 413 ? "payload_too_large" : status === 415 ? "unsupported_media_type" : "bad_request";
      return new AppError(code, status, e.expose === true && typeof e.message === "string" ? e.message : "Bad request", { cause: err });
    }
  }
  // The database is down or restarting: the server's condition, not a bug and
  // not the request's fault. Clients retry, as they do for the WS upgrade.
  if (isDatabaseUnavailable(err)) {
    return new AppError("not_ready", 503, "The database is unavailable; try again shortly", { expose: true, headers: { "retry-after": "2" }, cause: err });
  }
  return new AppError("internal", 500, err instanceof Error ? err.message : String(err), { expose: false, cause: err });
}

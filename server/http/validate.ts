import type { z } from "zod";
import { AppError } from "./errors.js";

/** The message for the first bad field of a failed parse, as the API's 400s word it. */
export function describeInputError(error: z.ZodError, where: "body" | "query"): string {
  const issue = error.issues[0];
  let message = issue?.message ?? "invalid input";
  if (issue?.code === "unrecognized_keys") message = `unknown field${issue.keys.length > 1 ? "s" : ""}: ${issue.keys.join(", ")}`;
  else if (issue?.code === "invalid_type" && issue.path.length === 0) message = `${where} must be a JSON object`;
  const field = issue && issue.path.length ? issue.path.join(".") : where;
  return message.startsWith(field) ? message : `${field}: ${message}`;
}

/** Parses with a zod schema or throws 400 naming the first bad field. */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, where: "body" | "query"): z.output<S> {
  const r = schema.safeParse(input ?? {});
  if (r.success) return r.data;
  throw new AppError("validation_failed", 400, describeInputError(r.error, where));
}

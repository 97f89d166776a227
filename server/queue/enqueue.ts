/**
 * SQL that puts a run's job on graphile-worker's queue. Used inside the
 * transaction (or statement) that writes the run, so both commit or neither.
 * The job key is the run id: one job per run, replaced on reschedule; a job
 * that is running when it is replaced keeps running but is never retried.
 */
export const RUN_TASK = "agent_run";

/**
 * Our retry count lives in `runs.failures`; graphile-worker's own attempts
 * also count interruptions, so its limit is only a backstop for bugs.
 */
export const JOB_MAX_ATTEMPTS = 25;

/** $1 run id, $2 run at. */
export const scheduleRunSql = `select graphile_worker.add_job(
  '${RUN_TASK}', json_build_object('runId', $1::text), job_key := $1::text, run_at := $2::timestamptz,
  max_attempts := ${JOB_MAX_ATTEMPTS}, job_key_mode := 'replace')`;

/** The longest message a job carries with its run (see addRunJobExpr). */
export const PAYLOAD_CONTENT_MAX = 2000;

/** What addRunJobExpr adds to the payload of a run that asked for an agent by name. */
export interface RunRequest {
  agent: string;
  content: string;
}

/** A job's payload as the task receives it (unchecked JSON). */
export type RunPayload = { runId?: unknown } & { [K in keyof RunRequest]?: unknown };

/**
 * A SQL expression adding the job for run id expression `runIdExpr`. With
 * the run's requested agent and message, a run that asked for an agent by
 * name, with a message of at most PAYLOAD_CONTENT_MAX characters, carries
 * both in its payload: an agent that needs nothing else (`Agent.pure`) can
 * then run before its claim reads anything (executeRun.ts). `runAtExpr`, when
 * given, is when the job may first be fetched (default: now).
 */
export const addRunJobExpr = (runIdExpr: string, request?: { agentExpr: string; contentExpr: string }, runAtExpr?: string) => {
  const id = `'runId', ${runIdExpr}::text`;
  const payload = request
    ? `case when ${request.agentExpr} is not null and char_length(${request.contentExpr}) <= ${PAYLOAD_CONTENT_MAX}
      then json_build_object(${id}, 'agent', ${request.agentExpr}::text, 'content', ${request.contentExpr}::text)
      else json_build_object(${id}) end`
    : `json_build_object(${id})`;
  const runAt = runAtExpr ? `, run_at := ${runAtExpr}` : "";
  return `graphile_worker.add_job('${RUN_TASK}', ${payload}, job_key := ${runIdExpr}::text${runAt}, max_attempts := ${JOB_MAX_ATTEMPTS})`;
};

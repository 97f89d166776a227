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

/** A SQL expression adding the job for run id expression `runIdExpr`. */
export const addRunJobExpr = (runIdExpr: string) =>
  `graphile_worker.add_job('${RUN_TASK}', json_build_object('runId', ${runIdExpr}::text), job_key := ${runIdExpr}::text, max_attempts := ${JOB_MAX_ATTEMPTS})`;

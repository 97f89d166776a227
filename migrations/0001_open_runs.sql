ALTER TABLE "messages" DROP CONSTRAINT "messages_user_id_users_id_fk";
--> statement-breakpoint
ALTER TABLE "runs" DROP CONSTRAINT "runs_user_id_users_id_fk";
--> statement-breakpoint
DROP INDEX "runs_status_idx";--> statement-breakpoint
DROP INDEX "messages_run_id_unique";--> statement-breakpoint
CREATE INDEX "runs_open_idx" ON "runs" USING btree ("created_at") WHERE finished_at is null;--> statement-breakpoint
CREATE UNIQUE INDEX "messages_run_id_unique" ON "messages" USING btree ("run_id") WHERE run_id is not null;--> statement-breakpoint
-- Every ending sets finished_at; a run that ended without one (none should) takes its last update's time.
UPDATE "runs" SET "finished_at" = "updated_at" WHERE "status" NOT IN ('queued', 'running') AND "finished_at" IS NULL;--> statement-breakpoint
ALTER TABLE "runs" ADD CONSTRAINT "runs_finished_iff_over" CHECK (("runs"."status" in ('queued', 'running')) = ("runs"."finished_at" is null));--> statement-breakpoint
-- Room on each page for a run's next version, so its claim is a HOT update (runs_open_idx).
ALTER TABLE "runs" SET (fillfactor = 80);

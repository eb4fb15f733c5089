-- The queue and the audit log in one table.
CREATE TABLE worker_jobs (
    id bigserial PRIMARY KEY,
    type text NOT NULL,
    user_id bigint NOT NULL DEFAULT 0,
    data jsonb NOT NULL DEFAULT '{}'::jsonb,
    due timestamptz NOT NULL DEFAULT now(),
    started timestamptz,
    finished timestamptz,
    remove_at timestamptz,
    success boolean,
    result jsonb,
    cron_schedule text,
    cron_timezone text,
    auto_reschedule_on_failure boolean NOT NULL DEFAULT false,
    auto_reschedule_on_failure_delay bigint NOT NULL DEFAULT 0
        CHECK (auto_reschedule_on_failure_delay >= 0),
    remove_delay bigint NOT NULL DEFAULT 3600000 CHECK (remove_delay >= 0),
    rescheduled_from_job bigint,
    cancelled boolean NOT NULL DEFAULT false,
    attempts integer NOT NULL DEFAULT 0,
    claimed_by text,
    declared boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The claim walks this index in due order; finished rows (the audit log) are not in it.
CREATE INDEX worker_jobs_unfinished_due ON worker_jobs (due, id) WHERE finished IS NULL;
-- Cancelling matching pending jobs looks up one (type, user_id) among unfinished rows.
CREATE INDEX worker_jobs_unfinished_type_user ON worker_jobs (type, user_id) WHERE finished IS NULL;
CREATE INDEX worker_jobs_remove_at ON worker_jobs (remove_at) WHERE remove_at IS NOT NULL;
CREATE INDEX worker_jobs_failed_finished ON worker_jobs (finished) WHERE success = false;
CREATE INDEX worker_jobs_rescheduled_from ON worker_jobs (rescheduled_from_job)
    WHERE rescheduled_from_job IS NOT NULL;
CREATE INDEX worker_jobs_type_created ON worker_jobs (type, id);

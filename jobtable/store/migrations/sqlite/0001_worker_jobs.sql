-- The queue and the audit log in one table.
-- Timestamps are TEXT in one sortable form: ISO-8601 UTC with microseconds and
-- offset, e.g. 2030-01-01T09:00:00.000000+00:00. Booleans are 0/1. JSON is TEXT.
-- AUTOINCREMENT: ids are never reused after cleanup, so rescheduled_from_job stays true.
CREATE TABLE worker_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    user_id INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL DEFAULT '{}',
    due TEXT NOT NULL,
    started TEXT,
    finished TEXT,
    remove_at TEXT,
    success INTEGER,
    result TEXT,
    cron_schedule TEXT,
    cron_timezone TEXT,
    auto_reschedule_on_failure INTEGER NOT NULL DEFAULT 0,
    auto_reschedule_on_failure_delay INTEGER NOT NULL DEFAULT 0
        CHECK (auto_reschedule_on_failure_delay >= 0),
    remove_delay INTEGER NOT NULL DEFAULT 3600000 CHECK (remove_delay >= 0),
    rescheduled_from_job INTEGER,
    cancelled INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    declared INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE INDEX worker_jobs_unfinished_due ON worker_jobs (due, id) WHERE finished IS NULL;
CREATE INDEX worker_jobs_unfinished_type_user ON worker_jobs (type, user_id)
    WHERE finished IS NULL;
CREATE INDEX worker_jobs_remove_at ON worker_jobs (remove_at) WHERE remove_at IS NOT NULL;
CREATE INDEX worker_jobs_failed_finished ON worker_jobs (finished) WHERE success = 0;
CREATE INDEX worker_jobs_rescheduled_from ON worker_jobs (rescheduled_from_job)
    WHERE rescheduled_from_job IS NOT NULL;
CREATE INDEX worker_jobs_type_created ON worker_jobs (type, id);

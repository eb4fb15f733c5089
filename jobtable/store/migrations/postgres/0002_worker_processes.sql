-- One row per live worker process, refreshed by its heartbeat.
CREATE TABLE worker_processes (
    id text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    concurrency integer NOT NULL,
    started timestamptz NOT NULL,
    last_seen timestamptz NOT NULL
);
CREATE INDEX worker_jobs_running_claimed_by ON worker_jobs (claimed_by)
    WHERE finished IS NULL AND started IS NOT NULL;

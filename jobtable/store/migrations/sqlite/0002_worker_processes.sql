-- One row per live worker process, refreshed by its heartbeat.
CREATE TABLE worker_processes (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    concurrency INTEGER NOT NULL,
    started TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE INDEX worker_jobs_running_claimed_by ON worker_jobs (claimed_by)
    WHERE finished IS NULL AND started IS NOT NULL;

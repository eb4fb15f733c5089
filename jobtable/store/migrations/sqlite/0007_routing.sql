-- Routing and flow control; see the PostgreSQL migration of the same number.
CREATE INDEX worker_jobs_claim_order ON worker_jobs (priority, due, id)
    WHERE finished IS NULL;
CREATE INDEX worker_jobs_claim_queue ON worker_jobs (queue, priority, due, id)
    WHERE finished IS NULL;
DROP INDEX worker_jobs_unfinished_due;
CREATE INDEX worker_jobs_pending_due ON worker_jobs (due)
    WHERE finished IS NULL AND started IS NULL;

CREATE TABLE worker_queues (
    name TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0,
    paused_until TEXT,
    updated_at TEXT NOT NULL
);

CREATE TABLE worker_rate (
    type TEXT NOT NULL,
    bucket TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (type, bucket)
);

CREATE TABLE worker_fair (
    type TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    served TEXT NOT NULL,
    PRIMARY KEY (type, user_id)
);

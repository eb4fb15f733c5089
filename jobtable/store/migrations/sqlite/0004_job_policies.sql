-- Columns for the job policies of this release; see the PostgreSQL migration of the
-- same number for what each means. Every column has a default, so rows written by the
-- previous release keep their meaning.
ALTER TABLE worker_jobs ADD COLUMN retry_count INTEGER NOT NULL DEFAULT 0
    CHECK (retry_count >= 0);
ALTER TABLE worker_jobs ADD COLUMN max_retries INTEGER CHECK (max_retries >= 0);
ALTER TABLE worker_jobs ADD COLUMN backoff TEXT NOT NULL DEFAULT 'constant'
    CHECK (backoff IN ('constant', 'exponential'));
ALTER TABLE worker_jobs ADD COLUMN max_backoff INTEGER NOT NULL DEFAULT 3600000
    CHECK (max_backoff >= 0);
ALTER TABLE worker_jobs ADD COLUMN cancel_requested TEXT;
ALTER TABLE worker_jobs ADD COLUMN unique_key TEXT;
ALTER TABLE worker_jobs ADD COLUMN on_conflict TEXT NOT NULL DEFAULT 'replace'
    CHECK (on_conflict IN ('replace', 'keep', 'allow'));
ALTER TABLE worker_jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE worker_jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE worker_jobs ADD COLUMN trace_context TEXT;

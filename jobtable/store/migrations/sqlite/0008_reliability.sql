-- Reliability (see the PostgreSQL migration of the same number for what each means).
ALTER TABLE worker_jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0 CHECK (crashes >= 0);
ALTER TABLE worker_jobs ADD COLUMN loop_blocked_ms INTEGER NOT NULL DEFAULT 0
    CHECK (loop_blocked_ms >= 0);
ALTER TABLE worker_processes ADD COLUMN loop_blocked_ms INTEGER NOT NULL DEFAULT 0;

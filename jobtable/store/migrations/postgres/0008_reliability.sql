-- Reliability. Every column has a default, so existing rows keep their meaning.
--   worker_jobs.crashes          how often a process died while running this row and the
--                                row is to blame: it ran alone (an isolated child), or
--                                isolation is off; a row that merely shared a dead worker
--                                is not charged (attempts stays the claim's fencing token)
--   worker_jobs.loop_blocked_ms  the longest time the worker's event loop was blocked
--                                while this (async) job ran on it
--   worker_processes.loop_blocked_ms  the total time this worker's event loop was blocked
ALTER TABLE worker_jobs
    ADD COLUMN crashes integer NOT NULL DEFAULT 0 CHECK (crashes >= 0),
    ADD COLUMN loop_blocked_ms bigint NOT NULL DEFAULT 0 CHECK (loop_blocked_ms >= 0);
ALTER TABLE worker_processes ADD COLUMN loop_blocked_ms bigint NOT NULL DEFAULT 0;

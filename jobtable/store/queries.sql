-- Queries shared by both dialects. Parameters are named (:name); the PostgreSQL
-- store rewrites them to psycopg's %(name)s. TRUE/FALSE work on SQLite >= 3.23.
-- Timestamps are parameters, never the database clock, so both dialects agree.

-- name: cancel_matching
-- Rule 2: matching pending = same type and user_id, unfinished, and not started or
-- started longer ago than the stale limit.
UPDATE worker_jobs
SET finished = :now, success = FALSE, cancelled = TRUE, result = :result, updated_at = :now
WHERE type = :type AND user_id = :user_id AND finished IS NULL
  AND (started IS NULL OR started < :stale)

-- name: unfinished_for_pair
SELECT * FROM worker_jobs
WHERE type = :type AND user_id = :user_id AND finished IS NULL
ORDER BY id

-- name: next_due
SELECT MIN(due) AS due FROM worker_jobs WHERE finished IS NULL AND started IS NULL

-- name: get_job
SELECT * FROM worker_jobs WHERE id = :id

-- name: children
SELECT * FROM worker_jobs WHERE rescheduled_from_job = :id ORDER BY id

-- name: heartbeat
INSERT INTO worker_processes (id, host, pid, concurrency, started, last_seen)
VALUES (:id, :host, :pid, :concurrency, :now, :now)
ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen

-- name: unregister_worker
DELETE FROM worker_processes WHERE id = :id

-- name: live_workers
SELECT * FROM worker_processes WHERE last_seen >= :alive ORDER BY started

-- name: delete_dead_workers
DELETE FROM worker_processes WHERE last_seen < :dead

-- name: reset_claim
-- A rescued job becomes pending again; its attempts stay counted.
UPDATE worker_jobs
SET started = NULL, claimed_by = NULL, updated_at = :now
WHERE id = :id AND attempts = :token AND finished IS NULL

-- name: cancel_by_id
UPDATE worker_jobs
SET finished = :now, success = FALSE, cancelled = TRUE, result = :result, updated_at = :now
WHERE id = :id AND finished IS NULL AND (started IS NULL OR started < :stale)

-- name: undeclared_chains
SELECT * FROM worker_jobs
WHERE declared = TRUE AND finished IS NULL AND user_id = 0
ORDER BY id

-- name: count_by_status
SELECT type,
       CASE
         WHEN finished IS NULL AND started IS NULL THEN 'pending'
         WHEN finished IS NULL THEN 'running'
         WHEN cancelled = TRUE THEN 'cancelled'
         WHEN success = TRUE THEN 'succeeded'
         ELSE 'failed'
       END AS status,
       COUNT(*) AS n
FROM worker_jobs
GROUP BY 1, 2
ORDER BY 1, 2

-- name: oldest_pending_due
SELECT MIN(due) AS due FROM worker_jobs
WHERE finished IS NULL AND started IS NULL AND due <= :now

-- name: finished_since
SELECT COUNT(*) AS n FROM worker_jobs WHERE finished >= :since AND cancelled = FALSE

-- name: claimed_by_worker
SELECT id, attempts FROM worker_jobs
WHERE claimed_by = :worker AND finished IS NULL AND started IS NOT NULL

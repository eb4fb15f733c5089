-- SQLite-only queries. SQLite has one writer at a time: every write runs inside
-- BEGIN IMMEDIATE, so a claim needs no SKIP LOCKED — no other writer can see the
-- rows between the SELECT and the UPDATE.

-- name: insert
INSERT INTO worker_jobs (
    type, user_id, data, due, cron_schedule, cron_timezone, auto_reschedule_on_failure,
    auto_reschedule_on_failure_delay, remove_delay, rescheduled_from_job, declared,
    finished, success, cancelled, result, created_at, updated_at)
VALUES (
    :type, :user_id, :data, :due, :cron_schedule, :cron_timezone, :auto_reschedule_on_failure,
    :auto_reschedule_on_failure_delay, :remove_delay, :rescheduled_from_job, :declared,
    :finished, :success, :cancelled, :result, :now, :now)
RETURNING *

-- name: claim
UPDATE worker_jobs
SET started = :now, claimed_by = :worker, attempts = attempts + 1, updated_at = :now
WHERE id IN (
    SELECT id FROM worker_jobs
    WHERE finished IS NULL AND due <= :now
      AND (started IS NULL OR (started < :stale AND attempts < :max_attempts))
    ORDER BY due, id
    LIMIT :limit)
RETURNING *

-- name: finish
UPDATE worker_jobs
SET finished = :now, success = :success, result = :result, remove_at = :remove_at,
    updated_at = :now
WHERE id = :id AND attempts = :token AND finished IS NULL
RETURNING id

-- name: abandoned
SELECT * FROM worker_jobs
WHERE finished IS NULL AND started IS NOT NULL
  AND (started < :stale
       OR claimed_by IN (SELECT id FROM worker_processes WHERE last_seen < :dead))
ORDER BY id

-- name: delete_removable
DELETE FROM worker_jobs WHERE id IN (
    SELECT id FROM worker_jobs
    WHERE finished IS NOT NULL AND id <> :keep
      AND ((success = TRUE AND remove_at <= :now)
           OR (success = FALSE AND finished < :failed_before))
    LIMIT :batch)

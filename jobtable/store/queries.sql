-- Queries shared by both dialects. Parameters are named (:name); the PostgreSQL
-- store rewrites them to psycopg's %(name)s. TRUE/FALSE work on SQLite >= 3.23.
-- Timestamps are parameters, never the database clock, so both dialects agree.

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
DELETE FROM worker_processes WHERE last_seen < :dead AND last_seen >= :seen_since

-- name: reset_claim
-- A rescued job becomes pending again; its attempts stay counted. A cancel request
-- was for that claim only.
UPDATE worker_jobs
SET started = NULL, claimed_by = NULL, cancel_requested = NULL, updated_at = :now
WHERE id = :id AND attempts = :token AND finished IS NULL

-- name: snooze
-- The job raised Snooze: the same row pending again, due later. Its claim is given
-- back (attempts - 1), so that snoozes never use up max_attempts nor make it a
-- suspect; fenced by the claim, and refused once a cancel was requested.
UPDATE worker_jobs
SET due = :due, started = NULL, claimed_by = NULL, attempts = attempts - 1,
    updated_at = :now
WHERE id = :id AND attempts = :token AND finished IS NULL AND cancel_requested IS NULL
RETURNING id

-- name: reset_claim_crashed
-- As reset_claim, and the job is charged a crash (it ran alone, or isolation is off).
UPDATE worker_jobs
SET started = NULL, claimed_by = NULL, cancel_requested = NULL, crashes = crashes + 1,
    updated_at = :now
WHERE id = :id AND attempts = :token AND finished IS NULL

-- name: charge_crash
-- A crash charged to a row that is given up on (its outcome is written next).
UPDATE worker_jobs SET crashes = crashes + 1 WHERE id = :id AND attempts = :token

-- name: cancel_claimed
-- A running row whose worker died, cancelled (fenced by its claim) instead of rescued.
UPDATE worker_jobs
SET finished = :now, success = FALSE, cancelled = TRUE, result = :result, updated_at = :now
WHERE id = :id AND attempts = :token AND finished IS NULL

-- name: running_of_worker
SELECT * FROM worker_jobs
WHERE claimed_by = :worker AND finished IS NULL AND started IS NOT NULL
ORDER BY id

-- name: newer_for_pair
-- Rows of the pair scheduled after :id while it ran (created at or after :since).
SELECT * FROM worker_jobs
WHERE type = :type AND user_id = :user_id AND id > :id AND created_at >= :since
ORDER BY id
LIMIT 100

-- name: mark_loop_blocked
UPDATE worker_jobs
SET loop_blocked_ms = CASE WHEN loop_blocked_ms < :ms THEN :ms ELSE loop_blocked_ms END
WHERE id = :id

-- name: worker_loop_blocked
UPDATE worker_processes SET loop_blocked_ms = loop_blocked_ms + :ms WHERE id = :id

-- name: cancel_by_id
UPDATE worker_jobs
SET finished = :now, success = FALSE, cancelled = TRUE, result = :result, updated_at = :now
WHERE id = :id AND finished IS NULL AND (started IS NULL OR started < :stale)

-- name: undeclared_chains
SELECT * FROM worker_jobs
WHERE declared = TRUE AND finished IS NULL AND user_id = 0
ORDER BY id

-- name: count_active
-- Pending and running rows per type: the few unfinished rows, exact.
SELECT type, CASE WHEN started IS NULL THEN 'pending' ELSE 'running' END AS status,
       COUNT(*) AS n
FROM worker_jobs
WHERE finished IS NULL
GROUP BY 1, 2

-- name: count_finished
-- Finished rows per type and status (SQLite counts them all; PostgreSQL samples).
SELECT type,
       CASE WHEN cancelled = TRUE THEN 'cancelled'
            WHEN success = TRUE THEN 'succeeded'
            ELSE 'failed' END AS status,
       COUNT(*) AS n
FROM worker_jobs
WHERE finished IS NOT NULL
GROUP BY 1, 2

-- name: oldest_pending_due
SELECT MIN(due) AS due FROM worker_jobs
WHERE finished IS NULL AND started IS NULL AND due <= :now

-- name: claimed_by_worker
SELECT id, attempts FROM worker_jobs
WHERE claimed_by = :worker AND finished IS NULL AND started IS NOT NULL

-- name: list_jobs
-- Optional filters are NULL when not given; :status is one of the five statuses;
-- :type_prefix matches types that start with it (compared as text, no LIKE patterns).
SELECT * FROM worker_jobs
WHERE (CAST(:type AS TEXT) IS NULL OR type = :type)
  AND (CAST(:type_prefix AS TEXT) IS NULL
       OR substr(type, 1, length(CAST(:type_prefix AS TEXT))) = :type_prefix)
  AND (CAST(:user_id AS BIGINT) IS NULL OR user_id = :user_id)
  AND (CAST(:before_id AS BIGINT) IS NULL OR id < :before_id)
  AND (CAST(:status AS TEXT) IS NULL
       OR (:status = 'pending' AND finished IS NULL AND started IS NULL)
       OR (:status = 'running' AND finished IS NULL AND started IS NOT NULL)
       OR (:status = 'succeeded' AND finished IS NOT NULL AND success = TRUE)
       OR (:status = 'failed' AND finished IS NOT NULL AND success = FALSE
           AND cancelled = FALSE)
       OR (:status = 'cancelled' AND finished IS NOT NULL AND cancelled = TRUE))
ORDER BY id DESC
LIMIT :limit OFFSET :offset

-- name: search_data
-- The list_jobs filters, plus: the row's data, as JSON text and lower-cased, contains
-- :pattern (a LIKE pattern with its wildcards escaped). Only the newest :window ids are
-- searched, so the scan is bounded however long the table's history is.
SELECT * FROM worker_jobs
WHERE id > (SELECT COALESCE(MAX(id), 0) FROM worker_jobs) - :window
  AND lower(CAST(data AS TEXT)) LIKE :pattern ESCAPE '!'
  AND (CAST(:type_prefix AS TEXT) IS NULL
       OR substr(type, 1, length(CAST(:type_prefix AS TEXT))) = :type_prefix)
  AND (CAST(:user_id AS BIGINT) IS NULL OR user_id = :user_id)
  AND (CAST(:status AS TEXT) IS NULL
       OR (:status = 'pending' AND finished IS NULL AND started IS NULL)
       OR (:status = 'running' AND finished IS NULL AND started IS NOT NULL)
       OR (:status = 'succeeded' AND finished IS NOT NULL AND success = TRUE)
       OR (:status = 'failed' AND finished IS NOT NULL AND success = FALSE
           AND cancelled = FALSE)
       OR (:status = 'cancelled' AND finished IS NOT NULL AND cancelled = TRUE))
ORDER BY id DESC
LIMIT :limit OFFSET :offset

-- name: count_jobs
-- The rows list_jobs would list, counted up to :cap: the jobs pages and `jobtable jobs`
-- read at most :cap rows to say "more than N" instead of counting a whole history.
SELECT COUNT(*) AS n FROM (
    SELECT 1 FROM worker_jobs
    WHERE (CAST(:type AS TEXT) IS NULL OR type = :type)
      AND (CAST(:type_prefix AS TEXT) IS NULL
           OR substr(type, 1, length(CAST(:type_prefix AS TEXT))) = :type_prefix)
      AND (CAST(:user_id AS BIGINT) IS NULL OR user_id = :user_id)
      AND (CAST(:status AS TEXT) IS NULL
           OR (:status = 'pending' AND finished IS NULL AND started IS NULL)
           OR (:status = 'running' AND finished IS NULL AND started IS NOT NULL)
           OR (:status = 'succeeded' AND finished IS NOT NULL AND success = TRUE)
           OR (:status = 'failed' AND finished IS NOT NULL AND success = FALSE
               AND cancelled = FALSE)
           OR (:status = 'cancelled' AND finished IS NOT NULL AND cancelled = TRUE))
    LIMIT :cap) AS t

-- name: retry_candidates
-- Failed (or cancelled) rows that no row retries yet, oldest first.
SELECT id FROM worker_jobs
WHERE finished IS NOT NULL
  AND ((:status = 'failed' AND success = FALSE AND cancelled = FALSE)
       OR (:status = 'cancelled' AND cancelled = TRUE))
  AND (CAST(:type AS TEXT) IS NULL OR type = :type)
  AND (CAST(:user_id AS BIGINT) IS NULL OR user_id = :user_id)
  AND NOT EXISTS (SELECT 1 FROM worker_jobs AS c WHERE c.rescheduled_from_job = worker_jobs.id)
ORDER BY id
LIMIT :limit

-- name: make_due_now
UPDATE worker_jobs SET due = :now, updated_at = :now
WHERE id = :id AND finished IS NULL AND started IS NULL AND due > :now

-- name: count_purgeable
-- Finished rows of the chosen statuses (flags) that finished before :cutoff. The
-- explicit ``finished IS NOT NULL`` is the guard: unfinished rows are never purged.
SELECT COUNT(*) AS n FROM worker_jobs
WHERE finished IS NOT NULL AND finished < :cutoff
  AND ((:succeeded AND success = TRUE)
       OR (:failed AND success = FALSE AND cancelled = FALSE)
       OR (:cancelled AND cancelled = TRUE))

-- name: purge_batch
DELETE FROM worker_jobs WHERE id IN (
    SELECT id FROM worker_jobs
    WHERE finished IS NOT NULL AND finished < :cutoff
      AND ((:succeeded AND success = TRUE)
           OR (:failed AND success = FALSE AND cancelled = FALSE)
           OR (:cancelled AND cancelled = TRUE))
    ORDER BY id
    LIMIT :batch)
RETURNING id

-- name: cron_rows
SELECT * FROM worker_jobs
WHERE cron_schedule IS NOT NULL AND finished IS NULL
ORDER BY type, user_id, id

-- name: retries_by_type
SELECT c.type AS type, COUNT(*) AS n FROM worker_jobs AS c
JOIN worker_jobs AS p ON c.rescheduled_from_job = p.id
WHERE p.success = FALSE AND p.cancelled = FALSE
GROUP BY c.type

-- name: rescued_by_type
SELECT type, COUNT(*) AS n FROM worker_jobs WHERE attempts > 1 GROUP BY type

-- name: job_types
-- One index probe per type on (type, id), however many rows each type has.
WITH RECURSIVE t(type) AS (
    SELECT MIN(type) FROM worker_jobs
    UNION ALL
    SELECT (SELECT MIN(w.type) FROM worker_jobs AS w WHERE w.type > t.type)
    FROM t WHERE t.type IS NOT NULL)
SELECT type FROM t WHERE type IS NOT NULL ORDER BY type

-- name: applied_migrations
SELECT version, name FROM jobtable_migrations ORDER BY version

-- name: record_migration
INSERT INTO jobtable_migrations (version, name, applied_at) VALUES (:version, :migration, :applied_at)

-- name: pause_queue
INSERT INTO worker_queues (name, paused, paused_until, updated_at)
VALUES (:queue, :paused, :until, :now)
ON CONFLICT (name) DO UPDATE
SET paused = excluded.paused, paused_until = excluded.paused_until,
    updated_at = excluded.updated_at

-- name: queue_rows
SELECT name, paused, paused_until FROM worker_queues ORDER BY name

-- name: queue_counts
-- Unfinished rows per queue: pending (not started) and running (started).
SELECT queue,
       SUM(CASE WHEN started IS NULL THEN 1 ELSE 0 END) AS pending,
       SUM(CASE WHEN started IS NOT NULL THEN 1 ELSE 0 END) AS running
FROM worker_jobs
WHERE finished IS NULL
GROUP BY queue
ORDER BY queue

-- name: rate_starts
SELECT COALESCE(SUM(n), 0) AS n FROM worker_rate WHERE type = :type AND bucket >= :since

-- name: rate_add
INSERT INTO worker_rate (type, bucket, n) VALUES (:type, :bucket, :n)
ON CONFLICT (type, bucket) DO UPDATE SET n = worker_rate.n + excluded.n

-- name: rate_forget
DELETE FROM worker_rate WHERE type = :type AND bucket < :before

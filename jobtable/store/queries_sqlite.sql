-- SQLite-only queries. SQLite has one writer at a time: every write runs inside
-- BEGIN IMMEDIATE, so a claim needs no SKIP LOCKED — no other writer can see the
-- rows between the SELECT and the UPDATE.

-- name: take_write_lock
-- Takes the write lock inside a transaction of the application's (it changes nothing):
-- rule 2's plan and writes then run under it, as under BEGIN IMMEDIATE.
UPDATE worker_jobs SET id = id WHERE 0

-- name: database_identity
-- Which file a connection of the application's has open, to refuse another database.
PRAGMA database_list

-- name: insert
INSERT INTO worker_jobs (
    type, user_id, data, due, cron_schedule, cron_timezone, auto_reschedule_on_failure,
    auto_reschedule_on_failure_delay, remove_delay, rescheduled_from_job, declared,
    finished, success, cancelled, result, retry_count, max_retries, backoff, max_backoff,
    unique_key, on_conflict, queue, priority, trace_context, created_at, updated_at)
VALUES (
    :type, :user_id, :data, :due, :cron_schedule, :cron_timezone, :auto_reschedule_on_failure,
    :auto_reschedule_on_failure_delay, :remove_delay, :rescheduled_from_job, :declared,
    :finished, :success, :cancelled, :result, :retry_count, :max_retries, :backoff,
    :max_backoff, :unique_key, :on_conflict, :queue, :priority, :trace_context, :now, :now)
RETURNING *

-- name: claim
-- Due rows of every queue in priority order (worker_jobs_claim_order), skipping paused
-- queues and the limited types (:skip_types, a JSON array), which claim_limited serves.
UPDATE worker_jobs
SET started = :now, claimed_by = :worker, attempts = attempts + 1, updated_at = :now
WHERE id IN (
    SELECT id FROM worker_jobs INDEXED BY worker_jobs_claim_order
    WHERE finished IS NULL AND due <= :now
      AND (started IS NULL OR (started < :stale AND attempts < :max_attempts))
      AND type NOT IN (SELECT value FROM json_each(:skip_types))
      AND queue NOT IN (SELECT name FROM worker_queues
                        WHERE paused = TRUE AND (paused_until IS NULL OR paused_until > :now))
    ORDER BY priority, due, id
    LIMIT :limit)
RETURNING *

-- name: claim_queue
-- The same for one queue (worker_jobs_claim_queue): a worker started with --queues.
UPDATE worker_jobs
SET started = :now, claimed_by = :worker, attempts = attempts + 1, updated_at = :now
WHERE id IN (
    SELECT id FROM worker_jobs INDEXED BY worker_jobs_claim_queue
    WHERE finished IS NULL AND queue = :queue AND due <= :now
      AND (started IS NULL OR (started < :stale AND attempts < :max_attempts))
      AND type NOT IN (SELECT value FROM json_each(:skip_types))
      AND NOT EXISTS (SELECT 1 FROM worker_queues
                      WHERE name = :queue AND paused = TRUE
                        AND (paused_until IS NULL OR paused_until > :now))
    ORDER BY priority, due, id
    LIMIT :limit)
RETURNING *

-- name: claim_limited
-- One limited type with a per-user limit or FAIR; see the PostgreSQL query of the same
-- name. BEGIN IMMEDIATE already serialises claimers. A user's running rows are counted
-- only for the rows that could be taken (turn within the per-user limit), one index
-- probe each, and only when there is a per-user limit.
UPDATE worker_jobs
SET started = :now, claimed_by = :worker, attempts = attempts + 1, updated_at = :now
WHERE id IN (
    WITH cand AS MATERIALIZED (
        SELECT id, user_id, priority, due,
               ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY priority, due, id) AS turn
        FROM worker_jobs INDEXED BY worker_jobs_unfinished_type_user
        WHERE type = :type AND finished IS NULL AND due <= :now
          AND (started IS NULL OR (started < :stale AND attempts < :max_attempts))
          AND (:queue IS NULL OR queue = :queue)
          AND queue NOT IN (SELECT name FROM worker_queues
                            WHERE paused = TRUE
                              AND (paused_until IS NULL OR paused_until > :now)))
    SELECT cand.id FROM cand
    LEFT JOIN worker_fair AS f ON :fair AND f.type = :type AND f.user_id = cand.user_id
    WHERE cand.turn <= :limit AND cand.turn <= :per_user
      AND (:per_user >= 4611686018427387904
           OR cand.turn + (SELECT COUNT(*) FROM worker_jobs AS r
                           INDEXED BY worker_jobs_unfinished_type_user
                           WHERE r.type = :type AND r.user_id = cand.user_id
                             AND r.finished IS NULL AND r.started IS NOT NULL
                             AND r.started >= :stale) <= :per_user)
    ORDER BY CASE WHEN :fair THEN cand.turn ELSE 0 END, f.served NULLS FIRST,
             cand.priority, cand.due, cand.id
    LIMIT :limit)
RETURNING *

-- name: claim_limited_plain
-- A limited type without a per-user limit or FAIR: the first :limit of its due rows in
-- claim order, walked in that order (worker_jobs_limited_order, migration 0010).
UPDATE worker_jobs
SET started = :now, claimed_by = :worker, attempts = attempts + 1, updated_at = :now
WHERE id IN (
    SELECT id FROM worker_jobs INDEXED BY worker_jobs_limited_order
    WHERE finished IS NULL AND type = :type AND due <= :now
      AND (started IS NULL OR (started < :stale AND attempts < :max_attempts))
      AND (:queue IS NULL OR queue = :queue)
      AND queue NOT IN (SELECT name FROM worker_queues
                        WHERE paused = TRUE AND (paused_until IS NULL OR paused_until > :now))
    ORDER BY priority, due, id
    LIMIT :limit)
RETURNING *

-- name: running_of_type
-- Running rows of one type (of one user when :user_id is given), not stale: found
-- through the small index of running rows.
SELECT COUNT(*) AS n FROM worker_jobs INDEXED BY worker_jobs_running_claimed_by
WHERE finished IS NULL AND started IS NOT NULL AND type = :type AND started >= :stale
  AND (CAST(:user_id AS BIGINT) IS NULL OR user_id = :user_id)

-- name: fair_served
-- The users of a FAIR type just served (see worker_fair); :user_ids is a JSON array.
INSERT INTO worker_fair (type, user_id, served)
SELECT :type, value, :now FROM json_each(:user_ids) WHERE TRUE
ON CONFLICT (type, user_id) DO UPDATE SET served = excluded.served

-- name: finish
-- A row whose cancel was requested while it ran ends cancelled whatever the outcome
-- (kept under "returned" in :cancel_result).
UPDATE worker_jobs
SET finished = :now,
    success = CASE WHEN cancel_requested IS NULL THEN :success ELSE FALSE END,
    cancelled = (:cancelled OR cancel_requested IS NOT NULL),
    result = CASE WHEN cancel_requested IS NULL OR :cancelled THEN :result
                  ELSE json_set(:cancel_result, '$.returned', json(:result)) END,
    remove_at = CASE WHEN cancel_requested IS NULL THEN :remove_at END,
    updated_at = :now
WHERE id = :id AND attempts = :token AND finished IS NULL
RETURNING id, cancelled

-- name: request_cancel
-- Cancel a running job: record the request for this claim only (fenced by attempts).
UPDATE worker_jobs
SET cancel_requested = COALESCE(cancel_requested, :now), updated_at = :now
WHERE id = :id AND attempts = :token AND finished IS NULL AND started IS NOT NULL
RETURNING id

-- name: cancel_requests
-- Which of a worker's running jobs (ids as a JSON array) were asked to stop.
SELECT id, attempts FROM worker_jobs
WHERE id IN (SELECT value FROM json_each(:ids))
  AND finished IS NULL AND cancel_requested IS NOT NULL

-- name: abandoned
SELECT * FROM worker_jobs
WHERE finished IS NULL AND started IS NOT NULL
  AND (started < :stale
       OR claimed_by IN (SELECT id FROM worker_processes
                         WHERE last_seen < :dead AND last_seen >= :seen_since))
ORDER BY id

-- name: delete_removable
DELETE FROM worker_jobs WHERE id IN (
    SELECT id FROM worker_jobs
    WHERE finished IS NOT NULL AND id <> :keep
      AND ((success = TRUE AND remove_at <= :now)
           OR (success = FALSE AND finished < :failed_before))
    LIMIT :batch)

-- The history figures read blocks of ids (see SqliteStore._history_sample): one block
-- of every id while the table is small, else :sample_width ids every :sample_step,
-- found by rowid (CROSS JOIN keeps the blocks outside; NOT INDEXED keeps SQLite from
-- building an automatic index over the whole table instead), and the store scales the
-- counts up. So they cost the same whatever the history's size.

-- name: id_span
-- Two subqueries: each is one rowid probe (MIN and MAX in one SELECT scan the table).
SELECT (SELECT MIN(id) FROM worker_jobs) AS lo, (SELECT MAX(id) FROM worker_jobs) AS hi

-- name: count_finished
WITH RECURSIVE blocks(lo) AS (
    SELECT :sample_first
    UNION ALL SELECT lo + :sample_step FROM blocks WHERE lo + :sample_step <= :sample_last)
SELECT w.type AS type,
       CASE WHEN w.cancelled = TRUE THEN 'cancelled'
            WHEN w.success = TRUE THEN 'succeeded'
            ELSE 'failed' END AS status,
       COUNT(*) AS n
FROM blocks CROSS JOIN worker_jobs AS w NOT INDEXED
WHERE w.id >= blocks.lo AND w.id < blocks.lo + :sample_width AND w.finished IS NOT NULL
GROUP BY 1, 2

-- name: throughput
-- Succeeded and failed jobs per minute (cancellations not counted).
WITH RECURSIVE blocks(lo) AS (
    SELECT :sample_first
    UNION ALL SELECT lo + :sample_step FROM blocks WHERE lo + :sample_step <= :sample_last)
SELECT substr(w.finished, 1, 16) AS minute,
       SUM(CASE WHEN w.success = TRUE THEN 1 ELSE 0 END) AS succeeded,
       SUM(CASE WHEN w.success = FALSE THEN 1 ELSE 0 END) AS failed
FROM blocks CROSS JOIN worker_jobs AS w NOT INDEXED
WHERE w.id >= blocks.lo AND w.id < blocks.lo + :sample_width AND w.finished >= :since AND w.finished < :until AND w.cancelled = FALSE
GROUP BY 1

-- name: runtimes
-- Run-time histogram per type; :b0..:b13 are the bucket upper bounds (seconds).
WITH RECURSIVE blocks(lo) AS (
    SELECT :sample_first
    UNION ALL SELECT lo + :sample_step FROM blocks WHERE lo + :sample_step <= :sample_last)
SELECT type, COUNT(*) AS n, SUM(d) AS total,
       SUM(CASE WHEN d <= :b0 THEN 1 ELSE 0 END) AS b0,
       SUM(CASE WHEN d <= :b1 THEN 1 ELSE 0 END) AS b1,
       SUM(CASE WHEN d <= :b2 THEN 1 ELSE 0 END) AS b2,
       SUM(CASE WHEN d <= :b3 THEN 1 ELSE 0 END) AS b3,
       SUM(CASE WHEN d <= :b4 THEN 1 ELSE 0 END) AS b4,
       SUM(CASE WHEN d <= :b5 THEN 1 ELSE 0 END) AS b5,
       SUM(CASE WHEN d <= :b6 THEN 1 ELSE 0 END) AS b6,
       SUM(CASE WHEN d <= :b7 THEN 1 ELSE 0 END) AS b7,
       SUM(CASE WHEN d <= :b8 THEN 1 ELSE 0 END) AS b8,
       SUM(CASE WHEN d <= :b9 THEN 1 ELSE 0 END) AS b9,
       SUM(CASE WHEN d <= :b10 THEN 1 ELSE 0 END) AS b10,
       SUM(CASE WHEN d <= :b11 THEN 1 ELSE 0 END) AS b11,
       SUM(CASE WHEN d <= :b12 THEN 1 ELSE 0 END) AS b12,
       SUM(CASE WHEN d <= :b13 THEN 1 ELSE 0 END) AS b13
FROM (SELECT w.type AS type,
             (julianday(w.finished) - julianday(w.started)) * 86400.0 AS d
      FROM blocks CROSS JOIN worker_jobs AS w NOT INDEXED
      WHERE w.id >= blocks.lo AND w.id < blocks.lo + :sample_width AND w.finished >= :since AND w.started IS NOT NULL
        AND w.cancelled = FALSE) AS r
GROUP BY type
ORDER BY type

-- name: retries_by_type
WITH RECURSIVE blocks(lo) AS (
    SELECT :sample_first
    UNION ALL SELECT lo + :sample_step FROM blocks WHERE lo + :sample_step <= :sample_last)
SELECT w.type AS type, COUNT(*) AS n
FROM blocks CROSS JOIN worker_jobs AS w NOT INDEXED
JOIN worker_jobs AS p ON w.rescheduled_from_job = p.id
WHERE w.id >= blocks.lo AND w.id < blocks.lo + :sample_width AND p.success = FALSE AND p.cancelled = FALSE
GROUP BY w.type

-- name: rescued_by_type
WITH RECURSIVE blocks(lo) AS (
    SELECT :sample_first
    UNION ALL SELECT lo + :sample_step FROM blocks WHERE lo + :sample_step <= :sample_last)
SELECT w.type AS type, COUNT(*) AS n
FROM blocks CROSS JOIN worker_jobs AS w NOT INDEXED
WHERE w.id >= blocks.lo AND w.id < blocks.lo + :sample_width AND w.attempts > 1
GROUP BY w.type

-- name: migrations_table_exists
SELECT COUNT(*) AS present FROM sqlite_master
WHERE type = 'table' AND name = 'jobtable_migrations'

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS jobtable_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)

-- name: fill_finished
-- Benchmarks and plan tests: :n succeeded rows of history in one statement.
WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :n)
INSERT INTO worker_jobs (type, user_id, due, started, finished, success, result, remove_at,
                         attempts, created_at, updated_at)
SELECT :type, i % 1000, :now, :now, :now, TRUE, :result, :remove_at, 1, :now, :now FROM g

-- name: fill_pending
-- Benchmarks and plan tests: :n pending rows due at :due, each of its own user.
WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :n)
INSERT INTO worker_jobs (type, user_id, due, created_at, updated_at)
SELECT :type, :first_user + i, :due, :now, :now FROM g

-- name: table_health
SELECT page_count AS pages, freelist_count AS free, page_size
FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()

-- name: list_unfinished
-- The unfinished rows only, through an index of them (without statistics SQLite would
-- rather walk the whole table backwards by id to avoid the sort).
SELECT * FROM worker_jobs INDEXED BY worker_jobs_unfinished_type_user
WHERE finished IS NULL
  AND (CASE WHEN started IS NULL THEN 'pending' ELSE 'running' END) = :status
  AND (:type IS NULL OR type = :type)
  AND (:type_prefix IS NULL OR substr(type, 1, length(:type_prefix)) = :type_prefix)
  AND (:user_id IS NULL OR user_id = :user_id)
  AND (:before_id IS NULL OR id < :before_id)
ORDER BY id DESC
LIMIT :limit OFFSET :offset

-- name: count_unfinished
SELECT COUNT(*) AS n FROM (
    SELECT 1 FROM worker_jobs INDEXED BY worker_jobs_unfinished_type_user
    WHERE finished IS NULL
      AND (CASE WHEN started IS NULL THEN 'pending' ELSE 'running' END) = :status
      AND (:type IS NULL OR type = :type)
      AND (:type_prefix IS NULL OR substr(type, 1, length(:type_prefix)) = :type_prefix)
      AND (:user_id IS NULL OR user_id = :user_id)
    LIMIT :cap) AS t

-- name: list_running
-- list_jobs and count_jobs for running rows: through the index of running rows.
SELECT * FROM worker_jobs INDEXED BY worker_jobs_running_claimed_by
WHERE finished IS NULL AND started IS NOT NULL
  AND (:type IS NULL OR type = :type)
  AND (:type_prefix IS NULL OR substr(type, 1, length(:type_prefix)) = :type_prefix)
  AND (:user_id IS NULL OR user_id = :user_id)
  AND (:before_id IS NULL OR id < :before_id)
ORDER BY id DESC
LIMIT :limit OFFSET :offset

-- name: count_running
SELECT COUNT(*) AS n FROM (
    SELECT 1 FROM worker_jobs INDEXED BY worker_jobs_running_claimed_by
    WHERE finished IS NULL AND started IS NOT NULL
      AND (:type IS NULL OR type = :type)
      AND (:type_prefix IS NULL OR substr(type, 1, length(:type_prefix)) = :type_prefix)
      AND (:user_id IS NULL OR user_id = :user_id)
    LIMIT :cap) AS t

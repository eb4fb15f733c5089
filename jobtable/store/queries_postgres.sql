-- PostgreSQL-only queries. Many workers on many hosts claim at once: SKIP LOCKED
-- lets each take different rows without waiting; arrays (unnest) turn a batch
-- into one statement and one round trip.

-- name: lock_pairs
-- Rule 2 under concurrency: cancel-then-insert for one (type, user_id) is
-- serialised by a transaction-scoped advisory lock, taken in key order so that
-- batches never deadlock each other.
SELECT pg_advisory_xact_lock(k) FROM unnest(:keys::bigint[]) AS k

-- name: notify_finished
-- Tells waiters (JobTable.wait_for) which jobs finished: ids separated by commas, or *.
SELECT pg_notify('jobtable_finished', :payload)

-- name: database_identity
-- Which database a connection of the application's reaches, to refuse another one: its
-- name and oid, and when its server started (which tells two servers apart however
-- each is addressed).
SELECT current_database() AS name,
       (SELECT oid FROM pg_database WHERE datname = current_database()) AS oid,
       pg_postmaster_start_time() AS started

-- name: claim
-- The hot path, every unlimited type: see jobtable_claim() in the migrations.
SELECT * FROM jobtable_claim(:worker, :limit, :now, :stale, :max_attempts,
                             :skip_types::text[], CAST(NULL AS TEXT))

-- name: claim_queue
SELECT * FROM jobtable_claim(:worker, :limit, :now, :stale, :max_attempts,
                             :skip_types::text[], :queue)

-- name: claim_limited
-- One limited type (CONCURRENCY_LIMIT, RATE_LIMIT, FAIR), its claimers serialised by
-- an advisory lock on the type; :limit is what the type-wide limits leave. Each
-- user's due rows are numbered (turn); with a per-user limit a row is taken only while
-- turn + the user's running rows stays within it; FAIR takes every user's first turn,
-- then every second one, and so on. Rows of the type are found through
-- worker_jobs_limited_order (num_nulls(finished, due): see migration 0012). The
-- UPDATE re-checks that the row is still pending, so a row claimed meanwhile by
-- another path is never taken twice.
WITH running AS (
    SELECT user_id, COUNT(*) AS n FROM worker_jobs
    WHERE num_nulls(finished, started) = 1 AND started IS NOT NULL AND type = :type
      AND started >= :stale
    GROUP BY user_id),
cand AS (
    SELECT id, user_id, priority, due,
           ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY priority, due, id) AS turn
    FROM worker_jobs
    WHERE type = :type AND num_nulls(finished, due) = 1 AND due <= :now
      AND (started IS NULL OR (started < :stale AND attempts < :max_attempts))
      AND (CAST(:queue AS TEXT) IS NULL OR queue = :queue)
      AND queue <> ALL(ARRAY(SELECT name FROM worker_queues
                             WHERE paused AND (paused_until IS NULL OR paused_until > :now)))),
picked AS (
    SELECT cand.id FROM cand LEFT JOIN running ON running.user_id = cand.user_id
    LEFT JOIN worker_fair AS f ON :fair AND f.type = :type AND f.user_id = cand.user_id
    WHERE cand.turn <= :limit AND cand.turn + COALESCE(running.n, 0) <= :per_user
    ORDER BY CASE WHEN :fair THEN cand.turn ELSE 0 END, f.served NULLS FIRST,
             cand.priority, cand.due, cand.id
    LIMIT :limit)
UPDATE worker_jobs AS j
SET started = :now, claimed_by = :worker, attempts = j.attempts + 1, updated_at = :now
FROM picked
WHERE j.id = picked.id AND num_nulls(j.finished) = 1
  AND (j.started IS NULL OR j.started < :stale)
RETURNING j.*

-- name: claim_limited_plain
-- A limited type without a per-user limit or FAIR: its due rows in claim order, as
-- many as its limits leave (:limit): worker_jobs_limited_order walked in claim order
-- (num_nulls(finished, due): see migration 0012), stopping after the first :limit; a
-- type with nothing due costs one index probe.
WITH picked AS (
    SELECT id FROM worker_jobs
    WHERE num_nulls(finished, due) = 1 AND type = :type AND due <= :now
      AND (started IS NULL OR (started < :stale AND attempts < :max_attempts))
      AND (CAST(:queue AS TEXT) IS NULL OR queue = :queue)
      AND queue <> ALL(ARRAY(SELECT name FROM worker_queues
                             WHERE paused AND (paused_until IS NULL OR paused_until > :now)))
    ORDER BY priority, due, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED)
UPDATE worker_jobs AS j
SET started = :now, claimed_by = :worker, attempts = j.attempts + 1, updated_at = :now
FROM picked WHERE j.id = picked.id
RETURNING j.*

-- name: running_of_type
-- Running rows of one type (of one user when :user_id is given), not stale: found
-- through the small index of running rows (worker_jobs_running, migration 0010;
-- the running rows say num_nulls(finished, started) = 1 AND started IS NOT NULL).
SELECT COUNT(*) AS n FROM worker_jobs
WHERE num_nulls(finished, started) = 1 AND started IS NOT NULL AND type = :type
  AND started >= :stale
  AND (CAST(:user_id AS BIGINT) IS NULL OR user_id = :user_id)

-- name: fair_served
-- The users of a FAIR type just served (see worker_fair).
INSERT INTO worker_fair (type, user_id, served)
SELECT :type, u, :now FROM unnest(:user_ids::bigint[]) AS u
ON CONFLICT (type, user_id) DO UPDATE SET served = excluded.served

-- name: finish_many
-- num_nulls(finished) = 1 is "finished IS NULL" said so that no partial index of
-- unfinished rows qualifies: the rows are found by primary key whatever the statistics
-- say (see migration 0009).
-- A row whose cancel was requested while it ran ends cancelled whatever the outcome
-- (kept under "returned" in :cancel_result).
UPDATE worker_jobs AS j
SET finished = :now,
    success = CASE WHEN j.cancel_requested IS NULL THEN x.s ELSE FALSE END,
    cancelled = (x.c OR j.cancel_requested IS NOT NULL),
    result = CASE WHEN j.cancel_requested IS NULL OR x.c THEN x.r
                  ELSE :cancel_result::jsonb || jsonb_build_object('returned', x.r) END,
    remove_at = CASE WHEN j.cancel_requested IS NULL THEN x.ra END,
    updated_at = :now
FROM unnest(:ids::bigint[], :tokens::integer[], :successes::boolean[], :results::jsonb[],
            :remove_ats::timestamptz[], :cancelleds::boolean[]) AS x(id, tok, s, r, ra, c)
WHERE j.id = x.id AND j.attempts = x.tok AND num_nulls(j.finished) = 1
RETURNING j.id, j.cancelled

-- name: request_cancel
-- Cancel a running job: record the request for this claim only (fenced by attempts)
-- and tell the workers at once (their periodic check is the fallback).
WITH asked AS (
    UPDATE worker_jobs
    SET cancel_requested = COALESCE(cancel_requested, :now), updated_at = :now
    WHERE id = :id AND attempts = :token AND num_nulls(finished) = 1 AND started IS NOT NULL
    RETURNING id)
SELECT id, pg_notify('jobtable', 'cancel:' || id) AS notified FROM asked

-- name: cancel_requests
-- Which of a worker's running jobs were asked to stop (primary-key lookups).
SELECT id, attempts FROM worker_jobs
WHERE id = ANY(:ids::bigint[]) AND num_nulls(finished) = 1 AND cancel_requested IS NOT NULL

-- name: abandoned
-- The running rows (worker_jobs_running, migration 0010), however stale the statistics.
SELECT * FROM worker_jobs
WHERE num_nulls(finished, started) = 1 AND started IS NOT NULL
  AND (started < :stale
       OR claimed_by IN (SELECT id FROM worker_processes
                         WHERE last_seen < :dead AND last_seen >= :seen_since))
ORDER BY id
FOR UPDATE SKIP LOCKED

-- name: delete_removable
DELETE FROM worker_jobs WHERE id IN (
    SELECT id FROM worker_jobs
    WHERE finished IS NOT NULL AND id <> :keep
      AND ((success = TRUE AND remove_at <= :now)
           OR (success = FALSE AND finished < :failed_before))
    LIMIT :batch)

-- name: schedule_one_id
-- Rule 2 for one job, returning its id: see jobtable_schedule_one_id() in the migrations.
SELECT jobtable_schedule_one_id(
    :now, :stale, :cancel_result, :key, :type, :user_id, :data, :due, :cron_schedule,
    :cron_timezone, :auto_reschedule, :retry_delay, :remove_delay, :rescheduled_from,
    :declared, :retry_count, :max_retries, :backoff, :max_backoff, :unique_key,
    :on_conflict, :queue, :priority, :trace_context, :payload) AS id

-- name: schedule_batch
-- Rule 2 for a batch, returning the ids in batch order: see jobtable_schedule_batch()
-- in the migrations (an array of one element stands for every job).
-- :keys, :match_users and :user_ids come as the text of a bigint[].
SELECT jobtable_schedule_batch(
    :now, :stale, :cancel_result, CAST(:keys AS bigint[]), :match_types,
    CAST(:match_users AS bigint[]), :match_keys, :match_crons, :cancel_ids, :payload,
    :types, CAST(:user_ids AS bigint[]), :datas, :dues,
    :cron_schedules, :cron_timezones, :auto_reschedules, :retry_delays, :remove_delays,
    :rescheduled_froms, :declareds, :cancelleds, :retry_counts, :max_retries, :backoffs,
    :max_backoffs, :unique_keys, :on_conflicts, :queues, :priorities,
    :trace_contexts) AS ids

-- name: throughput
-- The history figures read :pct percent of the table's pages (100: all; see
-- Store.history_sample) and the store scales their counts up.
-- Succeeded and failed jobs per minute (cancellations not counted).
SELECT date_trunc('minute', finished) AS minute,
       SUM(CASE WHEN success = TRUE THEN 1 ELSE 0 END) AS succeeded,
       SUM(CASE WHEN success = FALSE THEN 1 ELSE 0 END) AS failed
FROM worker_jobs TABLESAMPLE SYSTEM (CAST(:pct AS real))
WHERE finished >= :since AND finished < :until AND cancelled = FALSE
GROUP BY 1

-- name: runtimes
-- Run-time histogram per type; :b0..:b13 are the bucket upper bounds (seconds).
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
FROM (SELECT type, EXTRACT(EPOCH FROM (finished - started)) AS d
      FROM worker_jobs TABLESAMPLE SYSTEM (CAST(:pct AS real))
      WHERE finished >= :since AND started IS NOT NULL AND cancelled = FALSE) AS r
GROUP BY type
ORDER BY type

-- name: count_active
-- num_nulls(finished) = 1: served by worker_jobs_pending_match, a walk of the
-- unfinished rows only, whatever the statistics say (see migration 0009).
SELECT type, CASE WHEN started IS NULL THEN 'pending' ELSE 'running' END AS status,
       COUNT(*) AS n
FROM worker_jobs
WHERE num_nulls(finished) = 1
GROUP BY 1, 2

-- name: count_finished
SELECT type,
       CASE WHEN cancelled = TRUE THEN 'cancelled'
            WHEN success = TRUE THEN 'succeeded'
            ELSE 'failed' END AS status,
       COUNT(*) AS n
FROM worker_jobs TABLESAMPLE SYSTEM (CAST(:pct AS real))
WHERE finished IS NOT NULL
GROUP BY 1, 2

-- name: retries_by_type
SELECT c.type AS type, COUNT(*) AS n
FROM worker_jobs AS c TABLESAMPLE SYSTEM (CAST(:pct AS real))
JOIN worker_jobs AS p ON c.rescheduled_from_job = p.id
WHERE p.success = FALSE AND p.cancelled = FALSE
GROUP BY c.type

-- name: rescued_by_type
SELECT type, COUNT(*) AS n FROM worker_jobs TABLESAMPLE SYSTEM (CAST(:pct AS real))
WHERE attempts > 1 GROUP BY type

-- name: table_pages
SELECT pg_relation_size('worker_jobs') / current_setting('block_size')::integer AS pages

-- name: migrations_table_exists
SELECT to_regclass('jobtable_migrations') IS NOT NULL AS present

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS jobtable_migrations (
    version integer PRIMARY KEY, name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())

-- name: lock_migrations
-- Serialises concurrent migrators; the key spells "jobtable".
SELECT pg_advisory_xact_lock(7669456942424812645)

-- name: fill_finished
-- Benchmarks and plan tests: :n succeeded rows of history in one statement.
INSERT INTO worker_jobs (type, user_id, due, started, finished, success, result, remove_at,
                         attempts, created_at, updated_at)
SELECT :type, mod(g, 1000), :now, :now, :now, TRUE, :result, :remove_at, 1, :now, :now
FROM generate_series(1, :n) AS g

-- name: fill_pending
-- Benchmarks and plan tests: :n pending rows due at :due, each of its own user.
INSERT INTO worker_jobs (type, user_id, due, created_at, updated_at)
SELECT :type, :first_user + g, :due, :now, :now
FROM generate_series(1, :n) AS g

-- name: table_health
-- The server's running estimates of live and dead rows, and the last vacuum (by hand
-- or by autovacuum): reads no row of the table.
SELECT n_live_tup AS live, n_dead_tup AS dead,
       pg_total_relation_size(relid) AS size_bytes,
       GREATEST(last_vacuum, last_autovacuum) AS last_vacuum
FROM pg_stat_user_tables WHERE relid = 'worker_jobs'::regclass

-- name: vacuum
VACUUM (ANALYZE) worker_jobs

-- Statements of queries.sql said for PostgreSQL with num_nulls(finished) = 1 instead of
-- "finished IS NULL" (see migrations 0009 and 0010): a lookup by id keeps the primary
-- key, a pair's rows come from worker_jobs_pending_match, a worker's running rows from
-- worker_jobs_running, whatever the table's statistics say. With statistics taken while
-- every row was finished, "finished IS NULL" sent each of these through the claim's
-- index, reading every pending row.

-- name: unfinished_for_pair
SELECT * FROM worker_jobs
WHERE type = :type AND user_id = :user_id AND num_nulls(finished) = 1
ORDER BY id

-- name: reset_claim
-- A rescued job becomes pending again; its attempts stay counted. A cancel request
-- was for that claim only.
UPDATE worker_jobs
SET started = NULL, claimed_by = NULL, cancel_requested = NULL, updated_at = :now
WHERE id = :id AND attempts = :token AND num_nulls(finished) = 1

-- name: reset_claim_crashed
UPDATE worker_jobs
SET started = NULL, claimed_by = NULL, cancel_requested = NULL, crashes = crashes + 1,
    updated_at = :now
WHERE id = :id AND attempts = :token AND num_nulls(finished) = 1

-- name: snooze
UPDATE worker_jobs
SET due = :due, started = NULL, claimed_by = NULL, attempts = attempts - 1,
    updated_at = :now
WHERE id = :id AND attempts = :token AND num_nulls(finished) = 1 AND cancel_requested IS NULL
RETURNING id

-- name: cancel_claimed
UPDATE worker_jobs
SET finished = :now, success = FALSE, cancelled = TRUE, result = :result, updated_at = :now
WHERE id = :id AND attempts = :token AND num_nulls(finished) = 1

-- name: cancel_by_id
UPDATE worker_jobs
SET finished = :now, success = FALSE, cancelled = TRUE, result = :result, updated_at = :now
WHERE id = :id AND num_nulls(finished) = 1 AND (started IS NULL OR started < :stale)

-- name: make_due_now
UPDATE worker_jobs SET due = :now, updated_at = :now
WHERE id = :id AND num_nulls(finished) = 1 AND started IS NULL AND due > :now

-- name: running_of_worker
SELECT * FROM worker_jobs
WHERE claimed_by = :worker AND num_nulls(finished, started) = 1 AND started IS NOT NULL
ORDER BY id

-- name: claimed_by_worker
SELECT id, attempts FROM worker_jobs
WHERE claimed_by = :worker AND num_nulls(finished, started) = 1 AND started IS NOT NULL

-- name: next_due
-- The first entry of worker_jobs_pending_due. Said as ORDER BY ... LIMIT 1: with stale
-- statistics the planner took MIN() over "one row" and read the whole index.
SELECT due FROM worker_jobs WHERE finished IS NULL AND started IS NULL
ORDER BY due LIMIT 1

-- name: oldest_pending_due
SELECT due FROM worker_jobs
WHERE finished IS NULL AND started IS NULL AND due <= :now
ORDER BY due LIMIT 1

-- name: list_unfinished
-- The unfinished rows only, through an index of every unfinished row (num_nulls), then
-- sorted: ORDER BY -id rather than id DESC, which the primary key serves, and which the
-- planner may walk backwards through the whole history hoping to meet 50 matches
-- soon (with running rows: 26 s at 10M rows and none running).
SELECT * FROM worker_jobs
WHERE num_nulls(finished) = 1
  AND (CASE WHEN started IS NULL THEN 'pending' ELSE 'running' END) = :status
  AND (CAST(:type AS TEXT) IS NULL OR type = :type)
  AND (CAST(:type_prefix AS TEXT) IS NULL
       OR substr(type, 1, length(CAST(:type_prefix AS TEXT))) = :type_prefix)
  AND (CAST(:user_id AS BIGINT) IS NULL OR user_id = :user_id)
  AND (CAST(:before_id AS BIGINT) IS NULL OR id < :before_id)
ORDER BY -id
LIMIT :limit OFFSET :offset

-- name: count_unfinished
-- Exact (the unfinished rows are counted through their index, however many): a LIMIT
-- would invite a sequential scan that expects to meet :cap matches early.
SELECT COUNT(*) AS n FROM worker_jobs
WHERE num_nulls(finished) = 1
  AND (CASE WHEN started IS NULL THEN 'pending' ELSE 'running' END) = :status
  AND (CAST(:type AS TEXT) IS NULL OR type = :type)
  AND (CAST(:type_prefix AS TEXT) IS NULL
       OR substr(type, 1, length(CAST(:type_prefix AS TEXT))) = :type_prefix)
  AND (CAST(:user_id AS BIGINT) IS NULL OR user_id = :user_id)

-- name: list_running
-- list_jobs and count_jobs for running rows: through worker_jobs_running (0010), sorted
-- by -id for the reason given at list_unfinished.
SELECT * FROM worker_jobs
WHERE num_nulls(finished, started) = 1 AND started IS NOT NULL
  AND (CAST(:type AS TEXT) IS NULL OR type = :type)
  AND (CAST(:type_prefix AS TEXT) IS NULL
       OR substr(type, 1, length(CAST(:type_prefix AS TEXT))) = :type_prefix)
  AND (CAST(:user_id AS BIGINT) IS NULL OR user_id = :user_id)
  AND (CAST(:before_id AS BIGINT) IS NULL OR id < :before_id)
ORDER BY -id
LIMIT :limit OFFSET :offset

-- name: count_running
SELECT COUNT(*) AS n FROM worker_jobs
WHERE num_nulls(finished, started) = 1 AND started IS NOT NULL
  AND (CAST(:type AS TEXT) IS NULL OR type = :type)
  AND (CAST(:type_prefix AS TEXT) IS NULL
       OR substr(type, 1, length(CAST(:type_prefix AS TEXT))) = :type_prefix)
  AND (CAST(:user_id AS BIGINT) IS NULL OR user_id = :user_id)

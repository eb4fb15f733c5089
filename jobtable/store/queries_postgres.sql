-- PostgreSQL-only queries. Many workers on many hosts claim at once: SKIP LOCKED
-- lets each take different rows without waiting; arrays (unnest) turn a batch
-- into one statement and one round trip.

-- name: lock_pairs
-- Rule 2 under concurrency: cancel-then-insert for one (type, user_id) is
-- serialised by a transaction-scoped advisory lock, taken in key order so that
-- batches never deadlock each other.
SELECT pg_advisory_xact_lock(k) FROM unnest(:keys::bigint[]) AS k

-- name: cancel_matching_many
UPDATE worker_jobs
SET finished = :now, success = FALSE, cancelled = TRUE, result = :result, updated_at = :now
WHERE (type, user_id) IN (SELECT * FROM unnest(:types::text[], :user_ids::bigint[]))
  AND finished IS NULL AND (started IS NULL OR started < :stale)

-- name: insert_many
INSERT INTO worker_jobs (
    type, user_id, data, due, cron_schedule, cron_timezone, auto_reschedule_on_failure,
    auto_reschedule_on_failure_delay, remove_delay, rescheduled_from_job, declared,
    finished, success, cancelled, result, created_at, updated_at)
SELECT t, u, d, du, cs, ctz, ar, ard, rd, rf, de,
       CASE WHEN ca THEN :now END, CASE WHEN ca THEN FALSE END, ca,
       CASE WHEN ca THEN :cancel_result::jsonb END, :now, :now
FROM unnest(:types::text[], :user_ids::bigint[], :datas::jsonb[], :dues::timestamptz[],
            :cron_schedules::text[], :cron_timezones::text[], :auto_reschedules::boolean[],
            :retry_delays::bigint[], :remove_delays::bigint[], :rescheduled_froms::bigint[],
            :declareds::boolean[], :cancelleds::boolean[])
     WITH ORDINALITY AS x(t, u, d, du, cs, ctz, ar, ard, rd, rf, de, ca, n)
ORDER BY n
RETURNING *

-- name: claim
WITH picked AS (
    SELECT id FROM worker_jobs
    WHERE finished IS NULL AND due <= :now
      AND (started IS NULL OR (started < :stale AND attempts < :max_attempts))
    ORDER BY due, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED)
UPDATE worker_jobs AS j
SET started = :now, claimed_by = :worker, attempts = j.attempts + 1, updated_at = :now
FROM picked WHERE j.id = picked.id
RETURNING j.*

-- name: finish_many
UPDATE worker_jobs AS j
SET finished = :now, success = x.s, result = x.r, remove_at = x.ra, updated_at = :now
FROM unnest(:ids::bigint[], :tokens::integer[], :successes::boolean[], :results::jsonb[],
            :remove_ats::timestamptz[]) AS x(id, tok, s, r, ra)
WHERE j.id = x.id AND j.attempts = x.tok AND j.finished IS NULL
RETURNING j.id

-- name: abandoned
SELECT * FROM worker_jobs
WHERE finished IS NULL AND started IS NOT NULL
  AND (started < :stale
       OR claimed_by IN (SELECT id FROM worker_processes WHERE last_seen < :dead))
ORDER BY id
FOR UPDATE SKIP LOCKED

-- name: delete_removable
DELETE FROM worker_jobs WHERE id IN (
    SELECT id FROM worker_jobs
    WHERE finished IS NOT NULL AND id <> :keep
      AND ((success = TRUE AND remove_at <= :now)
           OR (success = FALSE AND finished < :failed_before))
    LIMIT :batch)

-- name: notify
SELECT pg_notify('jobtable', :payload)

-- name: schedule_one
SELECT * FROM jobtable_schedule_one(
    :now, :stale, :cancel_result, :key, :type, :user_id, :data, :due, :cron_schedule,
    :cron_timezone, :auto_reschedule, :retry_delay, :remove_delay, :rescheduled_from,
    :declared, :payload)

-- name: schedule
SELECT * FROM jobtable_schedule(
    :now, :stale, :cancel_result, :keys, :pair_types, :pair_users, :types, :user_ids, :datas,
    :dues, :cron_schedules, :cron_timezones, :auto_reschedules, :retry_delays,
    :remove_delays, :rescheduled_froms, :declareds, :cancelleds, :payload)

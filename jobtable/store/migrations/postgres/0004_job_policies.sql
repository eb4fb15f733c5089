-- Columns for the job policies of this release. Every column has a default, so rows
-- written by the previous release keep their meaning (and, on PostgreSQL 11+, adding
-- them rewrites nothing).
--   retry_count       which retry of its chain this row is (0: not a retry)
--   max_retries       retry rows a failing chain may produce (NULL: unlimited)
--   backoff           'constant' or 'exponential' growth of the retry delay
--   max_backoff       cap of an exponential retry delay, in milliseconds
--   cancel_requested  when a cancel of this row (running) was asked for
--   unique_key        narrows matching to (type, user_id, unique_key)
--   on_conflict       'replace', 'keep' or 'allow': what scheduling does with a match
--   queue, priority   where the row waits and its order there (lower runs first)
--   trace_context     the W3C trace context of the code that scheduled it
ALTER TABLE worker_jobs
    ADD COLUMN retry_count integer NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    ADD COLUMN max_retries integer CHECK (max_retries >= 0),
    ADD COLUMN backoff text NOT NULL DEFAULT 'constant'
        CHECK (backoff IN ('constant', 'exponential')),
    ADD COLUMN max_backoff bigint NOT NULL DEFAULT 3600000 CHECK (max_backoff >= 0),
    ADD COLUMN cancel_requested timestamptz,
    ADD COLUMN unique_key text,
    ADD COLUMN on_conflict text NOT NULL DEFAULT 'replace'
        CHECK (on_conflict IN ('replace', 'keep', 'allow')),
    ADD COLUMN queue text NOT NULL DEFAULT 'default',
    ADD COLUMN priority integer NOT NULL DEFAULT 0,
    ADD COLUMN trace_context jsonb;

-- Rule 2 now spares cron chains from one-offs: a one-off replaces only the pending
-- one-offs of its pair, a cron job every pending row of the pair (p_pair_crons says
-- which, per pair). The schedule functions carry the new columns.
DROP FUNCTION jobtable_schedule(
    timestamptz, timestamptz, jsonb, bigint[], text[], bigint[], text[], bigint[], jsonb[],
    timestamptz[], text[], text[], boolean[], bigint[], bigint[], bigint[], boolean[],
    boolean[], text);
DROP FUNCTION jobtable_schedule_one(
    timestamptz, timestamptz, jsonb, bigint, text, bigint, jsonb, timestamptz, text, text,
    boolean, bigint, bigint, bigint, boolean, text);

CREATE FUNCTION jobtable_schedule(
    p_now timestamptz, p_stale timestamptz, p_cancel_result jsonb, p_keys bigint[],
    p_pair_types text[], p_pair_users bigint[], p_pair_crons boolean[], p_types text[],
    p_user_ids bigint[], p_datas jsonb[], p_dues timestamptz[], p_cron_schedules text[],
    p_cron_timezones text[], p_auto_reschedules boolean[], p_retry_delays bigint[],
    p_remove_delays bigint[], p_rescheduled_froms bigint[], p_declareds boolean[],
    p_cancelleds boolean[], p_retry_counts integer[], p_max_retries integer[],
    p_backoffs text[], p_max_backoffs bigint[], p_unique_keys text[], p_on_conflicts text[],
    p_queues text[], p_priorities integer[], p_trace_contexts jsonb[], p_payload text)
RETURNS SETOF worker_jobs
LANGUAGE plpgsql VOLATILE
-- A plan cached for a batch of one would be reused for a batch of thousands (and
-- the other way round); plan each call, a cost shared by the whole batch.
SET plan_cache_mode = force_custom_plan AS $$
BEGIN
    -- Keys arrive sorted, so concurrent batches take their locks in one order.
    PERFORM pg_advisory_xact_lock(k) FROM unnest(p_keys) AS k;
    UPDATE worker_jobs AS w
    SET finished = p_now, success = FALSE, cancelled = TRUE, result = p_cancel_result,
        updated_at = p_now
    FROM unnest(p_pair_types, p_pair_users, p_pair_crons) AS p(t, u, c)
    WHERE w.type = p.t AND w.user_id = p.u
      AND w.finished IS NULL AND (w.started IS NULL OR w.started < p_stale)
      AND (p.c OR w.cron_schedule IS NULL);
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO worker_jobs (
            type, user_id, data, due, cron_schedule, cron_timezone,
            auto_reschedule_on_failure, auto_reschedule_on_failure_delay, remove_delay,
            rescheduled_from_job, declared, finished, success, cancelled, result,
            retry_count, max_retries, backoff, max_backoff, unique_key, on_conflict, queue,
            priority, trace_context, created_at, updated_at)
        SELECT t, u, d, du, cs, ctz, ar, ard, rd, rf, de,
               CASE WHEN ca THEN p_now END, CASE WHEN ca THEN FALSE END, ca,
               CASE WHEN ca THEN p_cancel_result END,
               rc, mr, bo, mb, uk, oc, qu, pr, tc, p_now, p_now
        FROM unnest(p_types, p_user_ids, p_datas, p_dues, p_cron_schedules, p_cron_timezones,
                    p_auto_reschedules, p_retry_delays, p_remove_delays, p_rescheduled_froms,
                    p_declareds, p_cancelleds, p_retry_counts, p_max_retries, p_backoffs,
                    p_max_backoffs, p_unique_keys, p_on_conflicts, p_queues, p_priorities,
                    p_trace_contexts)
             WITH ORDINALITY AS x(t, u, d, du, cs, ctz, ar, ard, rd, rf, de, ca, rc, mr, bo,
                                  mb, uk, oc, qu, pr, tc, n)
        ORDER BY n
        RETURNING *)
    SELECT * FROM inserted ORDER BY id;
    PERFORM pg_notify('jobtable', p_payload);
END
$$;

-- The same for one job, with scalar parameters.
CREATE FUNCTION jobtable_schedule_one(
    p_now timestamptz, p_stale timestamptz, p_cancel_result jsonb, p_key bigint,
    p_type text, p_user_id bigint, p_data jsonb, p_due timestamptz, p_cron_schedule text,
    p_cron_timezone text, p_auto_reschedule boolean, p_retry_delay bigint,
    p_remove_delay bigint, p_rescheduled_from bigint, p_declared boolean,
    p_retry_count integer, p_max_retries integer, p_backoff text, p_max_backoff bigint,
    p_unique_key text, p_on_conflict text, p_queue text, p_priority integer,
    p_trace_context jsonb, p_payload text)
RETURNS SETOF worker_jobs
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_key);
    UPDATE worker_jobs
    SET finished = p_now, success = FALSE, cancelled = TRUE, result = p_cancel_result,
        updated_at = p_now
    WHERE type = p_type AND user_id = p_user_id
      AND finished IS NULL AND (started IS NULL OR started < p_stale)
      AND (p_cron_schedule IS NOT NULL OR cron_schedule IS NULL);
    RETURN QUERY
    INSERT INTO worker_jobs (
        type, user_id, data, due, cron_schedule, cron_timezone, auto_reschedule_on_failure,
        auto_reschedule_on_failure_delay, remove_delay, rescheduled_from_job, declared,
        retry_count, max_retries, backoff, max_backoff, unique_key, on_conflict, queue,
        priority, trace_context, created_at, updated_at)
    VALUES (p_type, p_user_id, p_data, p_due, p_cron_schedule, p_cron_timezone,
            p_auto_reschedule, p_retry_delay, p_remove_delay, p_rescheduled_from, p_declared,
            p_retry_count, p_max_retries, p_backoff, p_max_backoff, p_unique_key,
            p_on_conflict, p_queue, p_priority, p_trace_context, p_now, p_now)
    RETURNING *;
    PERFORM pg_notify('jobtable', p_payload);
END
$$;

-- Plans that do not depend on the table's statistics.
--
-- Every index of unfinished rows is partial (WHERE finished IS NULL). When the table's
-- statistics were taken while (almost) every row was finished -- a large history, and
-- no ANALYZE since the backlog grew, which is the rule on a server without autovacuum
-- -- the planner believes such an index is empty. Any statement that says
-- "finished IS NULL" may then walk a whole index of unfinished rows instead of its own
-- lookup: the cancel-matching UPDATE of rule 2 took the claim's index, and a batch of
-- completions by id took a walk of 100,000 pending rows (370 ms) over the primary key.
--
-- The statements that must find unfinished rows by (type, user_id) say it as
-- num_nulls(finished) = 1, which means the same but which the planner does not read
-- as "finished IS NULL": no other partial index qualifies for them, and the one that
-- does, worker_jobs_pending_match, is a short lookup whatever the statistics say (the
-- planner estimates the expression with a fixed selectivity, not from stale column
-- statistics). Lookups by id say it the same way, so that they keep the primary key.
CREATE INDEX worker_jobs_pending_match ON worker_jobs (type, user_id)
    WHERE num_nulls(finished) = 1;
DROP INDEX worker_jobs_unfinished_type_user;

-- A queue table churns: each job is an insert, a claim, a completion and a delete.
-- The server's default thresholds (20 % of the table) let a table of millions of
-- history rows collect millions of dead tuples between vacuums; these settings keep
-- vacuum and analyze close behind where autovacuum runs. Where it does not, the
-- cleanup job vacuums the table itself (see the store's maintenance).
ALTER TABLE worker_jobs SET (
    autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01, autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0);

-- The schedule functions of 0006 (uniqueness), with the matching and the cancels by id
-- written as above.
-- p_match_*: one entry per distinct match of a replacing job (type, user, key or NULL
-- for any key, whether cron-chain rows match too); p_cancel_ids: pending rows to cancel
-- by id. Both are applied before the inserts.
CREATE OR REPLACE FUNCTION jobtable_schedule(
    p_now timestamptz, p_stale timestamptz, p_cancel_result jsonb, p_keys bigint[],
    p_match_types text[], p_match_users bigint[], p_match_keys text[],
    p_match_crons boolean[], p_cancel_ids bigint[], p_types text[],
    p_user_ids bigint[], p_datas jsonb[], p_dues timestamptz[], p_cron_schedules text[],
    p_cron_timezones text[], p_auto_reschedules boolean[], p_retry_delays bigint[],
    p_remove_delays bigint[], p_rescheduled_froms bigint[], p_declareds boolean[],
    p_cancelleds boolean[], p_retry_counts integer[], p_max_retries integer[],
    p_backoffs text[], p_max_backoffs bigint[], p_unique_keys text[], p_on_conflicts text[],
    p_queues text[], p_priorities integer[], p_trace_contexts jsonb[], p_payload text)
RETURNS SETOF worker_jobs
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_custom_plan AS $$
BEGIN
    -- Keys arrive sorted, so concurrent batches take their locks in one order.
    PERFORM pg_advisory_xact_lock(k) FROM unnest(p_keys) AS k;
    IF cardinality(p_match_types) > 0 THEN
        UPDATE worker_jobs AS w
        SET finished = p_now, success = FALSE, cancelled = TRUE, result = p_cancel_result,
            updated_at = p_now
        FROM unnest(p_match_types, p_match_users, p_match_keys, p_match_crons)
             AS p(t, u, k, c)
        WHERE w.type = p.t AND w.user_id = p.u
          AND num_nulls(w.finished) = 1 AND (w.started IS NULL OR w.started < p_stale)
          AND (p.k IS NULL OR w.unique_key = p.k)
          AND (p.c OR w.cron_schedule IS NULL);
    END IF;
    IF cardinality(p_cancel_ids) > 0 THEN
        UPDATE worker_jobs
        SET finished = p_now, success = FALSE, cancelled = TRUE, result = p_cancel_result,
            updated_at = p_now
        WHERE id = ANY (p_cancel_ids)
          AND num_nulls(finished) = 1 AND (started IS NULL OR started < p_stale);
    END IF;
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
    IF cardinality(p_types) > 0 THEN
        PERFORM pg_notify('jobtable', p_payload);
    END IF;
END
$$;

-- The same for one job that replaces or allows ('keep' goes through the store's plan).
CREATE OR REPLACE FUNCTION jobtable_schedule_one(
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
    IF p_on_conflict = 'keep' THEN
        RAISE EXCEPTION 'jobtable_schedule_one: on_conflict keep is planned by the store';
    END IF;
    PERFORM pg_advisory_xact_lock(p_key);
    IF p_on_conflict = 'replace' THEN
        UPDATE worker_jobs
        SET finished = p_now, success = FALSE, cancelled = TRUE, result = p_cancel_result,
            updated_at = p_now
        WHERE type = p_type AND user_id = p_user_id
          AND num_nulls(finished) = 1 AND (started IS NULL OR started < p_stale)
          AND (p_unique_key IS NULL OR unique_key = p_unique_key)
          AND (p_cron_schedule IS NOT NULL OR cron_schedule IS NULL);
    END IF;
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

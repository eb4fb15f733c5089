-- Rule 2 (cancel matching pending jobs, then insert) as one server-side call: one
-- round trip and plans cached per session. In a VOLATILE PL/pgSQL function each
-- statement takes a fresh snapshot, so the UPDATE after the advisory locks sees
-- every row that earlier holders of those locks committed.
CREATE FUNCTION jobtable_schedule(
    p_now timestamptz, p_stale timestamptz, p_cancel_result jsonb, p_keys bigint[],
    p_pair_types text[], p_pair_users bigint[], p_types text[], p_user_ids bigint[],
    p_datas jsonb[], p_dues timestamptz[], p_cron_schedules text[], p_cron_timezones text[],
    p_auto_reschedules boolean[], p_retry_delays bigint[], p_remove_delays bigint[],
    p_rescheduled_froms bigint[], p_declareds boolean[], p_cancelleds boolean[],
    p_payload text)
RETURNS SETOF worker_jobs
LANGUAGE plpgsql VOLATILE
-- A plan cached for a batch of one would be reused for a batch of thousands (and
-- the other way round); plan each call, a cost shared by the whole batch.
SET plan_cache_mode = force_custom_plan AS $$
BEGIN
    -- Keys arrive sorted, so concurrent batches take their locks in one order.
    PERFORM pg_advisory_xact_lock(k) FROM unnest(p_keys) AS k;
    -- A join (not IN) so that the plan cached for one size of batch, an index lookup
    -- per pair, stays good for every size.
    UPDATE worker_jobs AS w
    SET finished = p_now, success = FALSE, cancelled = TRUE, result = p_cancel_result,
        updated_at = p_now
    FROM unnest(p_pair_types, p_pair_users) AS p(t, u)
    WHERE w.type = p.t AND w.user_id = p.u
      AND w.finished IS NULL AND (w.started IS NULL OR w.started < p_stale);
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO worker_jobs (
            type, user_id, data, due, cron_schedule, cron_timezone,
            auto_reschedule_on_failure, auto_reschedule_on_failure_delay, remove_delay,
            rescheduled_from_job, declared, finished, success, cancelled, result,
            created_at, updated_at)
        SELECT t, u, d, du, cs, ctz, ar, ard, rd, rf, de,
               CASE WHEN ca THEN p_now END, CASE WHEN ca THEN FALSE END, ca,
               CASE WHEN ca THEN p_cancel_result END, p_now, p_now
        FROM unnest(p_types, p_user_ids, p_datas, p_dues, p_cron_schedules, p_cron_timezones,
                    p_auto_reschedules, p_retry_delays, p_remove_delays, p_rescheduled_froms,
                    p_declareds, p_cancelleds)
             WITH ORDINALITY AS x(t, u, d, du, cs, ctz, ar, ard, rd, rf, de, ca, n)
        ORDER BY n
        RETURNING *)
    SELECT * FROM inserted ORDER BY id;
    PERFORM pg_notify('jobtable', p_payload);
END
$$;

-- The same for one job, with scalar parameters: its cached plan is an index lookup
-- on (type, user_id) whatever the table's statistics say.
CREATE FUNCTION jobtable_schedule_one(
    p_now timestamptz, p_stale timestamptz, p_cancel_result jsonb, p_key bigint,
    p_type text, p_user_id bigint, p_data jsonb, p_due timestamptz, p_cron_schedule text,
    p_cron_timezone text, p_auto_reschedule boolean, p_retry_delay bigint,
    p_remove_delay bigint, p_rescheduled_from bigint, p_declared boolean, p_payload text)
RETURNS SETOF worker_jobs
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_key);
    UPDATE worker_jobs
    SET finished = p_now, success = FALSE, cancelled = TRUE, result = p_cancel_result,
        updated_at = p_now
    WHERE type = p_type AND user_id = p_user_id
      AND finished IS NULL AND (started IS NULL OR started < p_stale);
    RETURN QUERY
    INSERT INTO worker_jobs (
        type, user_id, data, due, cron_schedule, cron_timezone, auto_reschedule_on_failure,
        auto_reschedule_on_failure_delay, remove_delay, rescheduled_from_job, declared,
        created_at, updated_at)
    VALUES (p_type, p_user_id, p_data, p_due, p_cron_schedule, p_cron_timezone,
            p_auto_reschedule, p_retry_delay, p_remove_delay, p_rescheduled_from, p_declared,
            p_now, p_now)
    RETURNING *;
    PERFORM pg_notify('jobtable', p_payload);
END
$$;

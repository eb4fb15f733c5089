-- Scheduling that sends what varies and returns only ids.
--
-- jobtable_schedule() and jobtable_schedule_one() take every column of every job and
-- return whole rows; a client reads them back only to hand them to its caller, who
-- mostly wants the ids. These take the same rule 2 steps (pair locks in key order,
-- cancel the matches, insert, notify) and return the new ids in batch order; the
-- client builds the rows from what it sent. The older functions stay for clients of
-- the previous release during an upgrade.
--
-- A batch's columns: an array of one element means "this value for every job", so a
-- batch whose jobs differ only in user_id and data sends one array of user ids and one
-- of data instead of twenty of a thousand equal values. p_user_ids and p_match_users
-- always have one element per job (per match); they set the number of rows. Data and
-- trace contexts come as JSON text (the client has it already). Each CASE is decided
-- when the statement is planned (custom plans: the arrays are known), not per row.
--
-- The matching is one probe of worker_jobs_pending_match per match, whatever the
-- table's size when the statement was planned. Before, a batch joined its matches to
-- the whole index of pending rows by hash (14 ms per batch at 19,000 pending rows,
-- growing with them; the probes take about 1 ms per 1,000 matches), and a session
-- that first scheduled into a small table (a new table, or one just emptied) kept a
-- sequential scan as the one-job function's cached plan while the table grew (100 us
-- per job at 2,000 rows). Sequential scans are off in both functions: none of their
-- statements is better served by one.
CREATE FUNCTION jobtable_schedule_batch(
    p_now timestamptz, p_stale timestamptz, p_cancel_result jsonb, p_keys bigint[],
    p_match_types text[], p_match_users bigint[], p_match_keys text[],
    p_match_crons boolean[], p_cancel_ids bigint[], p_payload text, p_types text[],
    p_user_ids bigint[], p_datas text[], p_dues timestamptz[], p_cron_schedules text[],
    p_cron_timezones text[], p_auto_reschedules boolean[], p_retry_delays bigint[],
    p_remove_delays bigint[], p_rescheduled_froms bigint[], p_declareds boolean[],
    p_cancelleds boolean[], p_retry_counts integer[], p_max_retries integer[],
    p_backoffs text[], p_max_backoffs bigint[], p_unique_keys text[], p_on_conflicts text[],
    p_queues text[], p_priorities integer[], p_trace_contexts text[])
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_custom_plan SET enable_seqscan = off AS $$
DECLARE
    v_hits bigint[];
    v_ids bigint[];
BEGIN
    -- Keys arrive sorted and distinct, so concurrent batches take their locks in one
    -- order. Taken by a statement of their own: the statements below then see every
    -- row committed by the previous holder of a lock.
    PERFORM pg_advisory_xact_lock(k) FROM unnest(p_keys) AS k;
    IF cardinality(p_match_users) > 0 THEN
        -- One probe of worker_jobs_pending_match per match: a lateral subquery that
        -- cannot be flattened, so the planner cannot turn the join around.
        SELECT array_agg(j.id) INTO v_hits
        FROM (SELECT CASE WHEN cardinality(p_match_types) = 1 THEN p_match_types[1]
                          ELSE m.t END AS t,
                     m.u,
                     CASE WHEN cardinality(p_match_keys) = 1 THEN p_match_keys[1]
                          ELSE m.k END AS k,
                     CASE WHEN cardinality(p_match_crons) = 1 THEN p_match_crons[1]
                          ELSE m.c END AS c
              FROM unnest(p_match_types, p_match_users, p_match_keys, p_match_crons)
                   AS m(t, u, k, c)) AS p
        CROSS JOIN LATERAL (
            SELECT w.id FROM worker_jobs AS w
            WHERE w.type = p.t AND w.user_id = p.u
              AND num_nulls(w.finished) = 1 AND (w.started IS NULL OR w.started < p_stale)
              AND (p.k IS NULL OR w.unique_key = p.k)
              AND (p.c OR w.cron_schedule IS NULL)
            OFFSET 0) AS j;
    END IF;
    v_hits := coalesce(v_hits, '{}') || p_cancel_ids;
    IF cardinality(v_hits) > 0 THEN
        -- By id, checking the status again on each row as it is now: a worker may have
        -- claimed one since it was found.
        UPDATE worker_jobs
        SET finished = p_now, success = FALSE, cancelled = TRUE, result = p_cancel_result,
            updated_at = p_now
        WHERE id = ANY (v_hits)
          AND num_nulls(finished) = 1 AND (started IS NULL OR started < p_stale);
    END IF;
    WITH inserted AS (
        INSERT INTO worker_jobs (
            type, user_id, data, due, cron_schedule, cron_timezone,
            auto_reschedule_on_failure, auto_reschedule_on_failure_delay, remove_delay,
            rescheduled_from_job, declared, finished, success, cancelled, result,
            retry_count, max_retries, backoff, max_backoff, unique_key, on_conflict, queue,
            priority, trace_context, created_at, updated_at)
        SELECT t, u, d::jsonb, du, cs, ctz, ar, ard, rd, rf, de,
               CASE WHEN ca THEN p_now END, CASE WHEN ca THEN FALSE END, ca,
               CASE WHEN ca THEN p_cancel_result END,
               rc, mr, bo, mb, uk, oc, qu, pr, tc::jsonb, p_now, p_now
        FROM (
            SELECT
                CASE WHEN cardinality(p_types) = 1 THEN p_types[1] ELSE x.t END AS t,
                x.u,
                CASE WHEN cardinality(p_datas) = 1 THEN p_datas[1] ELSE x.d END AS d,
                CASE WHEN cardinality(p_dues) = 1 THEN p_dues[1] ELSE x.du END AS du,
                CASE WHEN cardinality(p_cron_schedules) = 1 THEN p_cron_schedules[1]
                     ELSE x.cs END AS cs,
                CASE WHEN cardinality(p_cron_timezones) = 1 THEN p_cron_timezones[1]
                     ELSE x.ctz END AS ctz,
                CASE WHEN cardinality(p_auto_reschedules) = 1 THEN p_auto_reschedules[1]
                     ELSE x.ar END AS ar,
                CASE WHEN cardinality(p_retry_delays) = 1 THEN p_retry_delays[1]
                     ELSE x.ard END AS ard,
                CASE WHEN cardinality(p_remove_delays) = 1 THEN p_remove_delays[1]
                     ELSE x.rd END AS rd,
                CASE WHEN cardinality(p_rescheduled_froms) = 1 THEN p_rescheduled_froms[1]
                     ELSE x.rf END AS rf,
                CASE WHEN cardinality(p_declareds) = 1 THEN p_declareds[1]
                     ELSE x.de END AS de,
                CASE WHEN cardinality(p_cancelleds) = 1 THEN p_cancelleds[1]
                     ELSE x.ca END AS ca,
                CASE WHEN cardinality(p_retry_counts) = 1 THEN p_retry_counts[1]
                     ELSE x.rc END AS rc,
                CASE WHEN cardinality(p_max_retries) = 1 THEN p_max_retries[1]
                     ELSE x.mr END AS mr,
                CASE WHEN cardinality(p_backoffs) = 1 THEN p_backoffs[1]
                     ELSE x.bo END AS bo,
                CASE WHEN cardinality(p_max_backoffs) = 1 THEN p_max_backoffs[1]
                     ELSE x.mb END AS mb,
                CASE WHEN cardinality(p_unique_keys) = 1 THEN p_unique_keys[1]
                     ELSE x.uk END AS uk,
                CASE WHEN cardinality(p_on_conflicts) = 1 THEN p_on_conflicts[1]
                     ELSE x.oc END AS oc,
                CASE WHEN cardinality(p_queues) = 1 THEN p_queues[1] ELSE x.qu END AS qu,
                CASE WHEN cardinality(p_priorities) = 1 THEN p_priorities[1]
                     ELSE x.pr END AS pr,
                CASE WHEN cardinality(p_trace_contexts) = 1 THEN p_trace_contexts[1]
                     ELSE x.tc END AS tc,
                x.n
            FROM unnest(p_types, p_user_ids, p_datas, p_dues, p_cron_schedules,
                        p_cron_timezones, p_auto_reschedules, p_retry_delays,
                        p_remove_delays, p_rescheduled_froms, p_declareds, p_cancelleds,
                        p_retry_counts, p_max_retries, p_backoffs, p_max_backoffs,
                        p_unique_keys, p_on_conflicts, p_queues, p_priorities,
                        p_trace_contexts)
                 WITH ORDINALITY AS x(t, u, d, du, cs, ctz, ar, ard, rd, rf, de, ca, rc,
                                      mr, bo, mb, uk, oc, qu, pr, tc, n)) AS y
        ORDER BY n
        RETURNING id)
    SELECT array_agg(id ORDER BY id) INTO v_ids FROM inserted;
    IF cardinality(p_user_ids) > 0 THEN
        PERFORM pg_notify('jobtable', p_payload);
    END IF;
    RETURN coalesce(v_ids, '{}');
END
$$;

-- One job that replaces or allows ('keep' goes through the store's plan); its data as
-- JSON text. Returns the new id.
CREATE FUNCTION jobtable_schedule_one_id(
    p_now timestamptz, p_stale timestamptz, p_cancel_result jsonb, p_key bigint,
    p_type text, p_user_id bigint, p_data text, p_due timestamptz, p_cron_schedule text,
    p_cron_timezone text, p_auto_reschedule boolean, p_retry_delay bigint,
    p_remove_delay bigint, p_rescheduled_from bigint, p_declared boolean,
    p_retry_count integer, p_max_retries integer, p_backoff text, p_max_backoff bigint,
    p_unique_key text, p_on_conflict text, p_queue text, p_priority integer,
    p_trace_context text, p_payload text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off AS $$
DECLARE
    v_id bigint;
BEGIN
    IF p_on_conflict = 'keep' THEN
        RAISE EXCEPTION 'jobtable_schedule_one_id: on_conflict keep is planned by the store';
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
    INSERT INTO worker_jobs (
        type, user_id, data, due, cron_schedule, cron_timezone, auto_reschedule_on_failure,
        auto_reschedule_on_failure_delay, remove_delay, rescheduled_from_job, declared,
        retry_count, max_retries, backoff, max_backoff, unique_key, on_conflict, queue,
        priority, trace_context, created_at, updated_at)
    VALUES (p_type, p_user_id, p_data::jsonb, p_due, p_cron_schedule, p_cron_timezone,
            p_auto_reschedule, p_retry_delay, p_remove_delay, p_rescheduled_from, p_declared,
            p_retry_count, p_max_retries, p_backoff, p_max_backoff, p_unique_key,
            p_on_conflict, p_queue, p_priority, p_trace_context::jsonb, p_now, p_now)
    RETURNING id INTO v_id;
    PERFORM pg_notify('jobtable', p_payload);
    RETURN v_id;
END
$$;

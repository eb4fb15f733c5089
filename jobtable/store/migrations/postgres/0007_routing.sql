-- Routing and flow control (queues, priorities, pauses, rate limits).
--
-- The claim takes due rows in priority order (lower first), then earliest due, then id.
-- A worker serving every queue walks the first index; a worker serving named queues
-- (--queues) walks the second, one queue at a time. Finished rows are in neither.
-- worker_jobs_unfinished_due (due, id) is replaced by an index of the rows not
-- started: it answers "the next due" and the queue lag, and the claim (which may also
-- take stale started rows) cannot mistake it for a way to its order: with the
-- statistics of a table that grew since its last ANALYZE, the planner took the old
-- index plus a sort of every due row (200 ms at 100,000 due rows) over a walk of the
-- claim index that stops after LIMIT rows (under 1 ms).
CREATE INDEX worker_jobs_claim_order ON worker_jobs (priority, due, id)
    WHERE finished IS NULL;
CREATE INDEX worker_jobs_claim_queue ON worker_jobs (queue, priority, due, id)
    WHERE finished IS NULL;
DROP INDEX worker_jobs_unfinished_due;
CREATE INDEX worker_jobs_pending_due ON worker_jobs (due)
    WHERE finished IS NULL AND started IS NULL;

-- A queue's pause, honoured by every claim on every host. A row exists only for a
-- queue that was ever paused; paused_until NULL with paused = true pauses until a
-- resume, a time pauses until then.
CREATE TABLE worker_queues (
    name text PRIMARY KEY,
    paused boolean NOT NULL DEFAULT false,
    paused_until timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Starts of rate-limited job types (RATE_LIMIT), counted per time bucket (a tenth of
-- the limit's period), so that a claim counts recent starts without scanning rows.
-- Buckets older than the period are deleted by the claims themselves.
CREATE TABLE worker_rate (
    type text NOT NULL,
    bucket timestamptz NOT NULL,
    n integer NOT NULL,
    PRIMARY KEY (type, bucket)
);

-- When each user last had a job of a FAIR type started: among users with the same
-- turn, the claim serves the one served least recently, so that one-slot claims
-- alternate between users instead of always favouring the oldest backlog.
CREATE TABLE worker_fair (
    type text NOT NULL,
    user_id bigint NOT NULL,
    served timestamptz NOT NULL,
    PRIMARY KEY (type, user_id)
);

-- The claim of every unlimited type, of one queue (p_queue) or of all: due rows in
-- priority order, paused queues and the limited types (p_skip_types, which the limited
-- claim serves) skipped. A function so that its plan is made without bitmap scans and
-- sorts: with statistics from before the backlog grew (this server may run without
-- autovacuum) the planner otherwise gathers and sorts every due row (100-200 ms at
-- 100,000) instead of walking the claim index and stopping after p_limit rows.
CREATE FUNCTION jobtable_claim(
    p_worker text, p_limit integer, p_now timestamptz, p_stale timestamptz,
    p_max_attempts integer, p_skip_types text[], p_queue text)
RETURNS SETOF worker_jobs
LANGUAGE plpgsql VOLATILE
SET enable_bitmapscan = off
SET enable_sort = off AS $$
BEGIN
    IF p_queue IS NULL THEN
        RETURN QUERY
        WITH picked AS (
            SELECT w.id FROM worker_jobs AS w
            WHERE w.finished IS NULL AND w.due <= p_now
              AND (w.started IS NULL OR (w.started < p_stale AND w.attempts < p_max_attempts))
              AND w.type <> ALL(p_skip_types)
              AND w.queue <> ALL(ARRAY(
                  SELECT q.name FROM worker_queues AS q
                  WHERE q.paused AND (q.paused_until IS NULL OR q.paused_until > p_now)))
            ORDER BY w.priority, w.due, w.id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED)
        UPDATE worker_jobs AS j
        SET started = p_now, claimed_by = p_worker, attempts = j.attempts + 1,
            updated_at = p_now
        FROM picked WHERE j.id = picked.id
        RETURNING j.*;
    ELSE
        RETURN QUERY
        WITH picked AS (
            SELECT w.id FROM worker_jobs AS w
            WHERE w.finished IS NULL AND w.queue = p_queue AND w.due <= p_now
              AND (w.started IS NULL OR (w.started < p_stale AND w.attempts < p_max_attempts))
              AND w.type <> ALL(p_skip_types)
              AND NOT EXISTS (
                  SELECT 1 FROM worker_queues AS q
                  WHERE q.name = p_queue AND q.paused
                    AND (q.paused_until IS NULL OR q.paused_until > p_now))
            ORDER BY w.priority, w.due, w.id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED)
        UPDATE worker_jobs AS j
        SET started = p_now, claimed_by = p_worker, attempts = j.attempts + 1,
            updated_at = p_now
        FROM picked WHERE j.id = picked.id
        RETURNING j.*;
    END IF;
END
$$;

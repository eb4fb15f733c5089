-- History-independent plans, continued (see 0009).
--
-- A flow-limited type is claimed in (priority, due, id) order among its own unfinished
-- rows: worker_jobs_limited_order walks them in that order and stops after the claim's
-- LIMIT, instead of reading every unfinished row of the type and sorting them.
CREATE INDEX worker_jobs_limited_order ON worker_jobs (type, priority, due, id)
    WHERE num_nulls(finished) = 1;

-- The running rows' index, said so that no other partial index qualifies: "finished IS
-- NULL AND started IS NOT NULL" let every index of unfinished rows qualify, and with
-- stale statistics the planner walked the claim's index (every pending row) to find the
-- few running ones; num_nulls(finished) = 1 would let the two indexes of every
-- unfinished row qualify. num_nulls(finished, started) = 1 AND started IS NOT NULL
-- means the same (started, not finished) and implies neither. Rescue, release, a
-- worker's own rows and the limited types' running counts (by type, and user) say it
-- this way.
CREATE INDEX worker_jobs_running ON worker_jobs (type, user_id)
    WHERE num_nulls(finished, started) = 1 AND started IS NOT NULL;
DROP INDEX worker_jobs_running_claimed_by;

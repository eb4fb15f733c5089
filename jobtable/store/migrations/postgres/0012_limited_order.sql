-- The claim order of flow-limited types (0010) as an index that rule 2's matching
-- cannot take.
--
-- 0010 gave worker_jobs_limited_order the predicate num_nulls(finished) = 1, the one
-- that rule 2's matching says in order to reach worker_jobs_pending_match (0009). On a
-- table without statistics (new, or never analyzed on a server without autovacuum) the
-- planner then took the newer index for "type = $1 AND user_id = $2" as readily as the
-- match index, and walked every unfinished row of the type for each match: scheduling
-- batches of 1,000 on a new database slowed from ~40,000 to ~900 jobs/s, and fell
-- further as the backlog grew. num_nulls(finished, due) = 1 means the same (due is
-- never NULL) and is implied only by the limited claims, which say it.
DROP INDEX worker_jobs_limited_order;
CREATE INDEX worker_jobs_limited_order ON worker_jobs (type, priority, due, id)
    WHERE num_nulls(finished, due) = 1;

-- The physical baseline: a job's whole life in one transaction, no library around it.
-- One insert, one SKIP LOCKED claim of the oldest unfinished row, one update.
BEGIN;
INSERT INTO pgbench_jobs (data) VALUES ('{}');
SELECT id FROM pgbench_jobs WHERE finished IS NULL ORDER BY due, id LIMIT 1 FOR UPDATE SKIP LOCKED \gset
UPDATE pgbench_jobs SET started = now(), finished = now(), success = true WHERE id = :id;
END;

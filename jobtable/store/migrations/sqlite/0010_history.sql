-- A flow-limited type is claimed in (priority, due, id) order among its own unfinished
-- rows: this index walks them in that order and stops after the claim's LIMIT, instead
-- of reading every unfinished row of the type and sorting them (see postgres 0010).
CREATE INDEX worker_jobs_limited_order ON worker_jobs (type, priority, due, id)
    WHERE finished IS NULL;

-- A webhook hint that arrives while a worker holds the job is remembered here (microseconds since
-- the epoch), and the job is due again at that time when the worker gives it back. A claim
-- clears it. See the PostgreSQL migration of the same name.
ALTER TABLE jobs ADD COLUMN woken_at INTEGER;

-- The database baseline of the create scenario: what `PgStore::insert_job`
-- (crates/sora-store/src/pg.rs) sends for one `POST /api/generate` with an Idempotency-Key,
-- i.e. the job row and the idempotency row in one transaction, four round trips
-- (BEGIN, INSERT, INSERT, COMMIT), prepared statements (`pgbench -M prepared`).
-- Job ids are spelled as the server's are (`job_` + 26 upper-case Crockford base-32 digits), so
-- the server, which hears every insert's change notice, takes them for jobs, not for noise.
\set r random(1, 9223372036854775806)
\set s random(0, 4294967295)
BEGIN;
INSERT INTO jobs (id, owner, prompt, model, size, seconds, remix_of_job_id, remix_of_video_id, input_reference, metadata, created_at, status, progress, video_id, error_code, error_message, artifacts, provider_expires_at, version, updated_at, submitted_at, finished_at, next_run_at) VALUES ('job_01' || upper(lpad(to_hex((:r)::bigint), 16, '0')) || upper(lpad(to_hex((:s)::bigint), 8, '0')), 'pgbench', 'A calico cat playing a grand piano on a dimly lit stage, slow dolly in', 'sora-2', '1280x720', 4, NULL, NULL, NULL, '{}'::jsonb, now(), 'pending', 0, NULL, NULL, NULL, NULL, NULL, 1, now(), NULL, NULL, now());
INSERT INTO idempotency (owner, key, request_hash, job_id, created_at) VALUES ('pgbench', 'key-' || :r, '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08', 'job_01' || upper(lpad(to_hex((:r)::bigint), 16, '0')) || upper(lpad(to_hex((:s)::bigint), 8, '0')), now()) ON CONFLICT (owner, key) DO NOTHING;
COMMIT;

-- The Sora job service schema (PostgreSQL). Applied by `sqlx migrate run --source migrations` from
-- the repository root, or embedded (`sora_store::PG_MIGRATOR`) at server start-up.

-- Jobs: the request (never changes), the state (changes with each version), the scheduling
-- columns the workers' leases use, and retention.
CREATE TABLE IF NOT EXISTS jobs (
    -- `job_` + ULID; byte order ("C") so that ids sort by creation time.
    id                  TEXT COLLATE "C" PRIMARY KEY,
    owner               TEXT NOT NULL,
    prompt              TEXT NOT NULL,
    model               TEXT NOT NULL,
    size                TEXT NOT NULL,
    seconds             BIGINT NOT NULL CHECK (seconds > 0),
    remix_of_job_id     TEXT,
    remix_of_video_id   TEXT,
    input_reference     JSONB,
    metadata            JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at          TIMESTAMPTZ NOT NULL,

    status              TEXT NOT NULL CHECK (status IN
                            ('pending', 'queued', 'in_progress', 'archiving',
                             'completed', 'failed', 'cancelled')),
    progress            BIGINT NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    video_id            TEXT UNIQUE,
    error_code          TEXT,
    error_message       TEXT,
    artifacts           JSONB,
    provider_expires_at TIMESTAMPTZ,
    version             BIGINT NOT NULL CHECK (version > 0),
    updated_at          TIMESTAMPTZ NOT NULL,
    submitted_at        TIMESTAMPTZ,
    finished_at         TIMESTAMPTZ,

    next_run_at         TIMESTAMPTZ NOT NULL,
    attempts            BIGINT NOT NULL DEFAULT 0,
    polls               BIGINT NOT NULL DEFAULT 0,
    lease_token         TEXT,
    lease_worker        TEXT,
    lease_expires_at    TIMESTAMPTZ,

    purged_at           TIMESTAMPTZ
);

-- An owner's jobs, newest first (ids sort by time).
CREATE INDEX IF NOT EXISTS jobs_owner_id ON jobs (owner, id DESC);
-- The workers' claims: due jobs of a status, oldest due first; also the per-status counts.
CREATE INDEX IF NOT EXISTS jobs_status_next_run ON jobs (status, next_run_at);
-- The deadline worker: non-terminal jobs by age.
CREATE INDEX IF NOT EXISTS jobs_active_created ON jobs (created_at)
    WHERE status IN ('pending', 'queued', 'in_progress', 'archiving');
-- The retention worker: completed jobs whose files are still there, by finish time.
CREATE INDEX IF NOT EXISTS jobs_unpurged_finished ON jobs (finished_at)
    WHERE status = 'completed' AND purged_at IS NULL;
-- Graceful shutdown: a worker's leases.
CREATE INDEX IF NOT EXISTS jobs_lease_worker ON jobs (lease_worker)
    WHERE lease_worker IS NOT NULL;

-- Every committed insert or version change notifies `sora_job_changes` with `job_id:version`, in
-- the writing transaction, so that every server instance hears every change.
CREATE OR REPLACE FUNCTION sora_notify_job_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('sora_job_changes', NEW.id || ':' || NEW.version);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS jobs_notify_insert ON jobs;
CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION sora_notify_job_change();
DROP TRIGGER IF EXISTS jobs_notify_update ON jobs;
CREATE TRIGGER jobs_notify_update AFTER UPDATE OF version ON jobs
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version)
    EXECUTE FUNCTION sora_notify_job_change();

-- The webhook inbox, keyed by the `webhook-id` header. `job_id` is set when the event's video id
-- matches a job (at once, or when a job later gets that provider id).
CREATE TABLE IF NOT EXISTS webhook_inbox (
    webhook_id  TEXT PRIMARY KEY,
    event_type  TEXT NOT NULL,
    video_id    TEXT,
    received_at TIMESTAMPTZ NOT NULL,
    payload     TEXT NOT NULL,
    job_id      TEXT REFERENCES jobs (id)
);
CREATE INDEX IF NOT EXISTS webhook_inbox_unmatched ON webhook_inbox (video_id)
    WHERE job_id IS NULL;

-- Idempotency records: the first request's hash and the job it created, per owner and key.
CREATE TABLE IF NOT EXISTS idempotency (
    owner        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    job_id       TEXT NOT NULL REFERENCES jobs (id),
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (owner, key)
);
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency (created_at);

-- API keys: only the hex SHA-256 of each key.
CREATE TABLE IF NOT EXISTS api_keys (
    id         TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    label      TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);

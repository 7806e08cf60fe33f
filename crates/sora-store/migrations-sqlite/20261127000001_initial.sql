-- The Sora job service schema (SQLite). The same tables as the PostgreSQL migrations in the
-- top-level `migrations/`; timestamps are INTEGER microseconds since the Unix epoch (UTC), and
-- JSON is TEXT. Applied automatically when a SqliteStore opens.

CREATE TABLE IF NOT EXISTS jobs (
    id                  TEXT PRIMARY KEY,
    owner               TEXT NOT NULL,
    prompt              TEXT NOT NULL,
    model               TEXT NOT NULL,
    size                TEXT NOT NULL,
    seconds             INTEGER NOT NULL CHECK (seconds > 0),
    remix_of_job_id     TEXT,
    remix_of_video_id   TEXT,
    input_reference     TEXT,
    metadata            TEXT NOT NULL DEFAULT '{}',
    created_at          INTEGER NOT NULL,

    status              TEXT NOT NULL CHECK (status IN
                            ('pending', 'queued', 'in_progress', 'archiving',
                             'completed', 'failed', 'cancelled')),
    progress            INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    video_id            TEXT UNIQUE,
    error_code          TEXT,
    error_message       TEXT,
    artifacts           TEXT,
    provider_expires_at INTEGER,
    version             INTEGER NOT NULL CHECK (version > 0),
    updated_at          INTEGER NOT NULL,
    submitted_at        INTEGER,
    finished_at         INTEGER,

    next_run_at         INTEGER NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    polls               INTEGER NOT NULL DEFAULT 0,
    lease_token         TEXT,
    lease_worker        TEXT,
    lease_expires_at    INTEGER,

    purged_at           INTEGER
);

CREATE INDEX IF NOT EXISTS jobs_owner_id ON jobs (owner, id DESC);
CREATE INDEX IF NOT EXISTS jobs_status_next_run ON jobs (status, next_run_at);
CREATE INDEX IF NOT EXISTS jobs_active_created ON jobs (created_at)
    WHERE status IN ('pending', 'queued', 'in_progress', 'archiving');
CREATE INDEX IF NOT EXISTS jobs_unpurged_finished ON jobs (finished_at)
    WHERE status = 'completed' AND purged_at IS NULL;
CREATE INDEX IF NOT EXISTS jobs_lease_worker ON jobs (lease_worker)
    WHERE lease_worker IS NOT NULL;

CREATE TABLE IF NOT EXISTS webhook_inbox (
    webhook_id  TEXT PRIMARY KEY,
    event_type  TEXT NOT NULL,
    video_id    TEXT,
    received_at INTEGER NOT NULL,
    payload     TEXT NOT NULL,
    job_id      TEXT REFERENCES jobs (id)
);
CREATE INDEX IF NOT EXISTS webhook_inbox_unmatched ON webhook_inbox (video_id)
    WHERE job_id IS NULL;

CREATE TABLE IF NOT EXISTS idempotency (
    owner        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    job_id       TEXT NOT NULL REFERENCES jobs (id),
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (owner, key)
);
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency (created_at);

CREATE TABLE IF NOT EXISTS api_keys (
    id         TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    label      TEXT,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

//! The production store: PostgreSQL, shared by several server instances.
//!
//! Claims are `UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING`, so two
//! claimers never block on or hand out the same job; every later write is fenced on the lease
//! token. Change notices come from a trigger (`pg_notify` inside the writing transaction) and
//! reach every instance through one `LISTEN` connection per store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sora_core::{Job, JobId, JobStatus, OwnerId, VideoId};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::error::redact_url;
use crate::row::{
    JobColumns, decode_api_key, decode_claimed, decode_counts, decode_cursor, decode_job,
    decode_page, decode_stored, parse_notice, status_filter, version_to_i64,
};
use crate::sqlite::truncate_micros;
use crate::{
    ApiKeyRecord, ChangeNotice, Claimed, InboxEvent, InboxOutcome, Inserted, JobPage, JobQuery,
    JobStore, Lease, NOTICE_CAPACITY, NewIdempotency, SaveJob, StoreError, StoredJob, Work,
    chrono_duration, clamp_limit, new_token,
};

/// The PostgreSQL migrations (the repository's top-level `migrations/`), the same files
/// `sqlx migrate run --source migrations` applies.
pub static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// The channel the `jobs` triggers notify with payload `job_id:version`: what servers before
/// [`STATE_CHANNEL`] listen to, kept for them during a rolling upgrade. This release does not
/// listen to it.
pub const CHANGE_CHANNEL: &str = "sora_job_changes";
/// The channel the `jobs` triggers notify with the changed job's state, a JSON object: `id`,
/// `version` and, unless the payload would be too long for a notification, `owner`, `status`,
/// `progress`, `error_code`, `error_message`, `video` and `thumbnail`. What this release
/// listens to.
pub const STATE_CHANNEL: &str = "sora_job_states";

/// The ids as text, each once (a job asked for twice is answered once).
fn distinct_ids(ids: &[JobId]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The job columns, as every job query selects them (JSON read back as text).
macro_rules! job_cols {
    () => {
        "id, owner, prompt, model, size, seconds, remix_of_job_id, remix_of_video_id, \
         input_reference::text AS input_reference, metadata::text AS metadata, created_at, \
         status, progress, video_id, error_code, error_message, artifacts::text AS artifacts, \
         provider_expires_at, version, updated_at, submitted_at, finished_at"
    };
}

/// The production store: a PostgreSQL database that several server instances share.
///
/// Cloning is cheap and shares the pool and the listener.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    notices: broadcast::Sender<ChangeNotice>,
    _listener: Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PgStore {
    /// Connects to the database a `postgres://` URL names and starts listening for change
    /// notices. Does not migrate: call [`PgStore::migrate`] (or use [`crate::connect`]).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(|e| {
            StoreError::Config(format!("invalid database URL {}: {e}", redact_url(url)))
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::Config(format!("cannot connect to {}: {e}", redact_url(url)))
            })?;
        Self::from_pool(pool).await
    }

    /// A store over an existing pool. Starts the change listener, which keeps one of the pool's
    /// connections for itself (so the pool needs at least two), and waits until it listens, so
    /// no later change is missed.
    pub async fn from_pool(pool: PgPool) -> Result<Self, StoreError> {
        let (notices, _) = broadcast::channel(NOTICE_CAPACITY);
        let listener = listen(&pool).await?;
        let task = tokio::spawn(run_listener(pool.clone(), listener, notices.clone()));
        Ok(Self {
            pool,
            notices,
            _listener: Arc::new(AbortOnDrop(task)),
        })
    }

    /// Applies the migrations that have not been applied yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        PG_MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn jobs_where(
        &self,
        sql: &'static str,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(sql)
            .bind(cutoff)
            .bind(i64::from(limit.max(1)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_job).collect()
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, StoreError> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(STATE_CHANNEL).await?;
    Ok(listener)
}

/// Forwards notifications to the subscribers. A lost connection is re-established, and the
/// subscribers are told to re-read ([`ChangeNotice::Resync`]), since notifications sent
/// meanwhile are gone.
async fn run_listener(
    pool: PgPool,
    mut listener: PgListener,
    notices: broadcast::Sender<ChangeNotice>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => match parse_notice(n.payload()) {
                Some(notice) => {
                    let _ = notices.send(notice);
                }
                None => tracing::warn!(payload = n.payload(), "unexpected change notification"),
            },
            // The connection dropped and was re-established (eager reconnect).
            Ok(None) => {
                tracing::warn!("change listener reconnected; subscribers will re-read");
                let _ = notices.send(ChangeNotice::Resync);
            }
            Err(e) => {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %e, "change listener failed; reconnecting");
                // Start over on a fresh connection.
                loop {
                    tokio::time::sleep(backoff).await;
                    match listen(&pool).await {
                        Ok(l) => {
                            listener = l;
                            backoff = Duration::from_millis(100);
                            let _ = notices.send(ChangeNotice::Resync);
                            break;
                        }
                        Err(e) => {
                            if pool.is_closed() {
                                return;
                            }
                            tracing::warn!(error = %e, "change listener cannot reconnect yet");
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }
        }
    }
}

fn parse_job_id(s: &str, what: &str) -> Result<JobId, StoreError> {
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn statuses(work: Work) -> Vec<String> {
    work.statuses()
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect()
}

#[async_trait]
impl JobStore for PgStore {
    async fn insert_job<'a>(
        &self,
        job: &Job,
        idempotency: Option<&'a NewIdempotency>,
    ) -> Result<Inserted, StoreError> {
        let c = JobColumns::of(job)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO jobs (id, owner, prompt, model, size, seconds, remix_of_job_id, \
             remix_of_video_id, input_reference, metadata, created_at, status, progress, \
             video_id, error_code, error_message, artifacts, provider_expires_at, version, \
             updated_at, submitted_at, finished_at, next_run_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11, $12, $13, $14, \
             $15, $16, $17::jsonb, $18, $19, $20, $21, $22, $11)",
        )
        .bind(&c.id)
        .bind(&c.owner)
        .bind(&c.prompt)
        .bind(&c.model)
        .bind(&c.size)
        .bind(c.seconds)
        .bind(&c.remix_of_job_id)
        .bind(&c.remix_of_video_id)
        .bind(&c.input_reference)
        .bind(&c.metadata)
        .bind(c.created_at)
        .bind(c.status)
        .bind(c.progress)
        .bind(&c.video_id)
        .bind(c.error_code)
        .bind(&c.error_message)
        .bind(&c.artifacts)
        .bind(c.provider_expires_at)
        .bind(c.version)
        .bind(c.updated_at)
        .bind(c.submitted_at)
        .bind(c.finished_at)
        .execute(&mut *tx)
        .await?;
        if let Some(idem) = idempotency {
            // A concurrent insert of the same key waits here for the first to commit, then
            // inserts nothing.
            let inserted = sqlx::query(
                "INSERT INTO idempotency (owner, key, request_hash, job_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (owner, key) DO NOTHING",
            )
            .bind(&c.owner)
            .bind(&idem.key)
            .bind(&idem.request_hash)
            .bind(&c.id)
            .bind(c.created_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                tx.rollback().await?;
                let (hash, job_id): (String, String) = sqlx::query_as(
                    "SELECT request_hash, job_id FROM idempotency WHERE owner = $1 AND key = $2",
                )
                .bind(&c.owner)
                .bind(&idem.key)
                .fetch_one(&self.pool)
                .await?;
                let job_id = parse_job_id(&job_id, "idempotency job id")?;
                if hash != idem.request_hash {
                    return Err(StoreError::IdempotencyConflict { job_id });
                }
                return match self.get_job(job_id, None).await? {
                    Some(first) => Ok(Inserted::Replayed(first)),
                    None => Err(StoreError::Corrupt(format!(
                        "idempotency record names missing job {job_id}"
                    ))),
                };
            }
        }
        tx.commit().await?;
        Ok(Inserted::Created)
    }

    async fn get_job<'a>(
        &self,
        id: JobId,
        owner: Option<&'a OwnerId>,
    ) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs WHERE id = $1 AND ($2::text IS NULL OR owner = $2)"
        ))
        .bind(id.to_string())
        .bind(owner.map(|o| o.as_str()))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_job).transpose()
    }

    async fn get_jobs<'a>(
        &self,
        ids: &[JobId],
        owner: Option<&'a OwnerId>,
    ) -> Result<Vec<StoredJob>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One primary-key lookup per id, whatever the planner's statistics say: the `LIMIT 1`
        // keeps the lateral subquery from being flattened into a join. Left to the statistics,
        // a join over `unnest` became a hash join over a sequential scan of all 150,000 rows
        // when they were stale (57 ms for 999 ids in psql; 2-3 ms this way).
        let rows = sqlx::query(concat!(
            "SELECT j.* FROM unnest($1::text[]) AS wanted(id) CROSS JOIN LATERAL (SELECT ",
            job_cols!(),
            ", (CASE WHEN purged_at IS NULL THEN 0 ELSE 1 END)::int8 AS files_purged",
            " FROM jobs WHERE jobs.id = wanted.id AND ($2::text IS NULL OR owner = $2) LIMIT 1) j"
        ))
        .bind(distinct_ids(ids))
        .bind(owner.map(|o| o.as_str()))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_stored).collect()
    }

    async fn get_job_by_video(&self, video_id: &VideoId) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs WHERE video_id = $1"
        ))
        .bind(video_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_job).transpose()
    }

    async fn list_jobs(&self, owner: &OwnerId, query: &JobQuery) -> Result<JobPage, StoreError> {
        let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
        let limit = clamp_limit(query.limit);
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            ", (CASE WHEN purged_at IS NULL THEN 0 ELSE 1 END)::int8 AS files_purged",
            " FROM jobs WHERE owner = $1 AND ($2::text IS NULL OR id < $2) \
             AND ($3::text[] IS NULL OR status = ANY($3)) \
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(owner.as_str())
        .bind(after.map(|a| a.to_string()))
        .bind(status_filter(query))
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        decode_page(&rows, limit)
    }

    async fn save_job<'a>(
        &self,
        job: &Job,
        expected_version: u64,
        save: SaveJob<'a>,
    ) -> Result<(), StoreError> {
        let c = JobColumns::of(job)?;
        let now = save.now.unwrap_or_else(Utc::now);
        let expected = version_to_i64(expected_version)?;
        // One statement: the fenced, versioned update; matching the inbox events that were
        // waiting for this video id (and waking the job if there were any). The trigger sends
        // the change notice in the same transaction.
        let row = sqlx::query(
            "WITH waiting AS ( \
                 SELECT EXISTS (SELECT 1 FROM webhook_inbox \
                     WHERE $5::text IS NOT NULL AND video_id = $5 AND job_id IS NULL) AS found \
             ), updated AS ( \
                 UPDATE jobs SET status = $3, progress = $4, video_id = $5, error_code = $6, \
                     error_message = $7, artifacts = $8::jsonb, provider_expires_at = $9, \
                     version = $10, updated_at = $11, submitted_at = $12, finished_at = $13, \
                     next_run_at = LEAST(woken_at, CASE WHEN (SELECT found FROM waiting) \
                         THEN LEAST(COALESCE($14, next_run_at), $18) \
                         ELSE COALESCE($14, next_run_at) END), \
                     woken_at = CASE WHEN $16 THEN NULL ELSE woken_at END, \
                     attempts = CASE WHEN $15 THEN 0 ELSE attempts END, \
                     lease_token = CASE WHEN $16 THEN NULL ELSE lease_token END, \
                     lease_worker = CASE WHEN $16 THEN NULL ELSE lease_worker END, \
                     lease_expires_at = CASE WHEN $16 THEN NULL ELSE lease_expires_at END \
                 WHERE id = $1 AND version = $2 \
                     AND ($17::text IS NULL OR (lease_token = $17 AND lease_expires_at > $18)) \
                 RETURNING id \
             ), matched AS ( \
                 UPDATE webhook_inbox SET job_id = $1 \
                 WHERE $5::text IS NOT NULL AND video_id = $5 AND job_id IS NULL \
                     AND EXISTS (SELECT 1 FROM updated) \
                 RETURNING 1 \
             ) \
             SELECT (SELECT COUNT(*) FROM updated) AS updated, \
                    (SELECT COUNT(*) FROM matched) AS matched, \
                    (SELECT version FROM jobs WHERE id = $1) AS version, \
                    (SELECT lease_token FROM jobs WHERE id = $1) AS lease_token, \
                    (SELECT lease_expires_at FROM jobs WHERE id = $1) AS lease_expires_at",
        )
        .bind(&c.id)
        .bind(expected)
        .bind(c.status)
        .bind(c.progress)
        .bind(&c.video_id)
        .bind(c.error_code)
        .bind(&c.error_message)
        .bind(&c.artifacts)
        .bind(c.provider_expires_at)
        .bind(c.version)
        .bind(c.updated_at)
        .bind(c.submitted_at)
        .bind(c.finished_at)
        .bind(save.next_run_at)
        .bind(save.reset_attempts)
        .bind(save.release_lease)
        .bind(save.lease.map(|l| l.token.as_str()))
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        let updated: i64 = row.try_get("updated")?;
        if updated > 0 {
            return Ok(());
        }
        // Nothing written. The sub-selects saw the row as it was before this statement.
        let version: Option<i64> = row.try_get("version")?;
        let token: Option<String> = row.try_get("lease_token")?;
        let expires: Option<DateTime<Utc>> = row.try_get("lease_expires_at")?;
        Err(match version {
            None => StoreError::NotFound,
            Some(_)
                if save.lease.is_some_and(|l| {
                    token.as_deref() != Some(l.token.as_str()) || expires.is_none_or(|e| e <= now)
                }) =>
            {
                StoreError::LeaseLost { job_id: job.id() }
            }
            Some(_) => StoreError::Conflict {
                job_id: job.id(),
                expected_version,
            },
        })
    }

    async fn claim(
        &self,
        work: Work,
        worker: &str,
        limit: u32,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claimed>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let expires = now + chrono_duration(lease_for);
        let poll = i64::from(work == Work::Poll);
        let rows = sqlx::query(concat!(
            "WITH claimed AS ( \
                 UPDATE jobs SET lease_token = $1, lease_worker = $2, lease_expires_at = $3, \
                     polls = polls + $4, woken_at = NULL \
                 WHERE id IN ( \
                     SELECT id FROM jobs \
                     WHERE status = ANY($5) AND next_run_at <= $6 \
                         AND (lease_expires_at IS NULL OR lease_expires_at <= $6) \
                     ORDER BY next_run_at, id LIMIT $7 \
                     FOR UPDATE SKIP LOCKED) \
                 RETURNING *) \
             SELECT ",
            job_cols!(),
            ", lease_token, lease_worker, lease_expires_at, attempts, polls - $4 AS polls_before \
             FROM claimed ORDER BY next_run_at, id"
        ))
        .bind(new_token())
        .bind(worker)
        .bind(expires)
        .bind(poll)
        .bind(statuses(work))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_claimed).collect()
    }

    async fn renew(
        &self,
        lease: &Lease,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        let expires = now + chrono_duration(lease_for);
        let n = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $3 \
             WHERE id = $1 AND lease_token = $2 AND lease_expires_at > $4",
        )
        .bind(lease.job_id.to_string())
        .bind(&lease.token)
        .bind(expires)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::LeaseLost {
                job_id: lease.job_id,
            });
        }
        Ok(Lease {
            expires_at: truncate_micros(expires),
            ..lease.clone()
        })
    }

    async fn release(
        &self,
        lease: &Lease,
        next_run_at: DateTime<Utc>,
        count_attempt: bool,
    ) -> Result<(), StoreError> {
        let n = sqlx::query(
            "UPDATE jobs SET next_run_at = LEAST($3, woken_at), woken_at = NULL, \
             attempts = attempts + $4, lease_token = NULL, lease_worker = NULL, \
             lease_expires_at = NULL WHERE id = $1 AND lease_token = $2",
        )
        .bind(lease.job_id.to_string())
        .bind(&lease.token)
        .bind(next_run_at)
        .bind(i64::from(count_attempt))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::LeaseLost {
                job_id: lease.job_id,
            });
        }
        Ok(())
    }

    async fn release_all(&self, worker: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE jobs SET lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL, \
             next_run_at = LEAST(next_run_at, woken_at), woken_at = NULL \
             WHERE lease_worker = $1",
        )
        .bind(worker)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn wake(&self, id: JobId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE jobs SET next_run_at = LEAST(next_run_at, $2), \
             woken_at = CASE WHEN lease_expires_at > $2 THEN LEAST(woken_at, $2) ELSE woken_at END \
             WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    async fn count_active(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'in_progress')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        decode_counts(&rows)
    }

    async fn overdue(
        &self,
        created_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        self.jobs_where(
            concat!(
                "SELECT ",
                job_cols!(),
                " FROM jobs WHERE status IN ('pending', 'queued', 'in_progress', 'archiving') \
                 AND created_at < $1 ORDER BY created_at, id LIMIT $2"
            ),
            created_before,
            limit,
        )
        .await
    }

    async fn finished_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        self.jobs_where(
            concat!(
                "SELECT ",
                job_cols!(),
                " FROM jobs WHERE status = 'completed' AND purged_at IS NULL \
                 AND finished_at < $1 ORDER BY finished_at, id LIMIT $2"
            ),
            cutoff,
            limit,
        )
        .await
    }

    async fn mark_purged(&self, id: JobId, at: DateTime<Utc>) -> Result<(), StoreError> {
        let n = sqlx::query("UPDATE jobs SET purged_at = COALESCE(purged_at, $2) WHERE id = $1")
            .bind(id.to_string())
            .bind(at)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn purged_at(&self, id: JobId) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row: Option<(Option<DateTime<Utc>>,)> =
            sqlx::query_as("SELECT purged_at FROM jobs WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(at,)| at).ok_or(StoreError::NotFound)
    }

    async fn record_webhook(&self, event: &InboxEvent) -> Result<InboxOutcome, StoreError> {
        // One statement: store the event unless its id is known, match it to the job with its
        // video id, and wake that job.
        let row: Option<(Option<String>,)> = sqlx::query_as(
            "WITH inserted AS ( \
                 INSERT INTO webhook_inbox (webhook_id, event_type, video_id, received_at, \
                     payload, job_id) \
                 VALUES ($1, $2, $3, $4, $5, (SELECT id FROM jobs WHERE video_id = $3)) \
                 ON CONFLICT (webhook_id) DO NOTHING \
                 RETURNING job_id \
             ), woken AS ( \
                 UPDATE jobs SET next_run_at = LEAST(next_run_at, $4), \
                     woken_at = CASE WHEN lease_expires_at > $4 THEN LEAST(woken_at, $4) \
                         ELSE woken_at END \
                 WHERE id = (SELECT job_id FROM inserted) \
                 RETURNING id \
             ) \
             SELECT job_id FROM inserted",
        )
        .bind(&event.webhook_id)
        .bind(&event.event_type)
        .bind(event.video_id.as_ref().map(|v| v.as_str()))
        .bind(event.received_at)
        .bind(&event.payload)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            None => InboxOutcome::Duplicate,
            Some((job_id,)) => InboxOutcome::New {
                job_id: job_id
                    .map(|j| parse_job_id(&j, "inbox job id"))
                    .transpose()?,
            },
        })
    }

    async fn purge_idempotency(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM idempotency WHERE created_at < $1")
            .bind(older_than)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn purge_webhooks(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM webhook_inbox WHERE received_at < $1")
                .bind(older_than)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn create_api_key<'a>(
        &self,
        owner: &OwnerId,
        key_hash: &str,
        label: Option<&'a str>,
    ) -> Result<ApiKeyRecord, StoreError> {
        let record = ApiKeyRecord {
            id: format!("key_{}", ulid::Ulid::new()),
            owner: owner.clone(),
            label: label.map(str::to_owned),
            created_at: truncate_micros(Utc::now()),
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, owner, key_hash, label, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&record.id)
        .bind(owner.as_str())
        .bind(key_hash)
        .bind(label)
        .bind(record.created_at)
        .execute(&self.pool)
        .await?;
        Ok(record)
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, owner, label, created_at, revoked_at FROM api_keys \
             WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_api_key).transpose()
    }

    async fn revoke_api_key(&self, id: &str) -> Result<bool, StoreError> {
        let n =
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(Utc::now())
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(n > 0)
    }

    fn subscribe(&self) -> broadcast::Receiver<ChangeNotice> {
        self.notices.subscribe()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

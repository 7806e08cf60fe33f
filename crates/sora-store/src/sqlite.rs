//! The embedded store: one SQLite file (WAL mode), change notices through an in-process
//! broadcast.
//!
//! SQLite runs one writer at a time, so every multi-statement write opens its transaction with
//! `BEGIN IMMEDIATE` (taking the write lock up front instead of upgrading a read lock, which could
//! fail with `SQLITE_BUSY` mid-transaction), and claims are one `UPDATE ... RETURNING` statement.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sora_core::{Job, JobId, JobStatus, OwnerId, VideoId};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::broadcast;

use crate::row::{
    JobColumns, decode_api_key, decode_claimed, decode_counts, decode_cursor, decode_job,
    decode_page, decode_stored, micros, opt_micros, status_filter, version_to_i64,
};
use crate::{
    ApiKeyRecord, ChangeNotice, Claimed, InboxEvent, InboxOutcome, Inserted, JobPage, JobQuery,
    JobStore, Lease, NOTICE_CAPACITY, NewIdempotency, SaveJob, StoreError, StoredJob, Work,
    chrono_duration, clamp_limit, new_token,
};

/// The SQLite migrations (`crates/sora-store/migrations-sqlite`), applied by
/// [`SqliteStore::connect`].
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations-sqlite");

/// The job columns, as every job query selects them.
macro_rules! job_cols {
    () => {
        "id, owner, prompt, model, size, seconds, remix_of_job_id, remix_of_video_id, \
         input_reference, metadata, created_at, status, progress, video_id, error_code, \
         error_message, artifacts, provider_expires_at, version, updated_at, submitted_at, \
         finished_at"
    };
}

/// The embedded store: a SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    notices: broadcast::Sender<ChangeNotice>,
}

impl SqliteStore {
    /// Opens (creating if missing, with its parent directory) the database a `sqlite://path`
    /// or `sqlite:path` URL names, in WAL mode, and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit survives a power loss too, not only a crash of this process; an
            // accepted job must never be lost.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let filename = options.get_filename().to_owned();
        let in_memory = filename.as_os_str() == ":memory:" || url.contains("mode=memory");
        if !in_memory {
            create_parent(&filename)?;
        }
        // An in-memory database lives in its one connection.
        let max = if in_memory { 1 } else { 8 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .min_connections(if in_memory { 1 } else { 0 })
            .idle_timeout(if in_memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if in_memory {
                None
            } else {
                Some(Duration::from_secs(1800))
            })
            .connect_with(options)
            .await?;
        let mut store = Self::from_pool(pool).await?;
        if !in_memory {
            // Every store of this process on the same file shares one notice channel.
            if let Ok(path) = std::fs::canonicalize(&filename) {
                store.notices = shared_channel(path);
            }
        }
        Ok(store)
    }

    /// A private in-memory database (for tests): one connection, gone when the store is dropped.
    pub async fn in_memory() -> Result<Self, StoreError> {
        Self::connect("sqlite::memory:").await
    }

    /// A store over an existing pool; applies the migrations.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self, StoreError> {
        SQLITE_MIGRATOR.run(&pool).await?;
        let (notices, _) = broadcast::channel(NOTICE_CAPACITY);
        Ok(Self { pool, notices })
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn notify(&self, job_id: JobId, version: u64) {
        // No subscriber is not an error.
        // In one process, reading the job back is as cheap as carrying it.
        let _ = self.notices.send(ChangeNotice::Changed {
            job_id,
            version,
            state: None,
        });
    }

    async fn jobs_where(
        &self,
        sql: &'static str,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(sql)
            .bind(micros(cutoff))
            .bind(i64::from(limit.max(1)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_job).collect()
    }
}

/// The notice channel of a database file, shared by every store of this process on that file.
fn shared_channel(path: std::path::PathBuf) -> broadcast::Sender<ChangeNotice> {
    static CHANNELS: std::sync::LazyLock<
        std::sync::Mutex<
            std::collections::HashMap<std::path::PathBuf, broadcast::Sender<ChangeNotice>>,
        >,
    > = std::sync::LazyLock::new(Default::default);
    let mut channels = CHANNELS.lock().unwrap_or_else(|e| e.into_inner());
    channels
        .entry(path)
        .or_insert_with(|| broadcast::channel(NOTICE_CAPACITY).0)
        .clone()
}

fn create_parent(filename: &Path) -> Result<(), StoreError> {
    if let Some(parent) = filename.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            StoreError::Config(format!("cannot create directory {}: {e}", parent.display()))
        })?;
    }
    Ok(())
}

/// Makes a job due at `?2` unless it is due earlier, and, if a worker holds it, remembers the
/// hint so that the job is due again at that time when the worker gives it back.
const WAKE: &str = "UPDATE jobs SET next_run_at = MIN(next_run_at, ?2), \
     woken_at = CASE WHEN lease_expires_at > ?2 \
         THEN (CASE WHEN woken_at IS NOT NULL AND woken_at < ?2 THEN woken_at ELSE ?2 END) \
         ELSE woken_at END \
     WHERE id = ?1";

fn status_json(statuses: &[JobStatus]) -> String {
    let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    serde_json::Value::from(names).to_string()
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn insert_job<'a>(
        &self,
        job: &Job,
        idempotency: Option<&'a NewIdempotency>,
    ) -> Result<Inserted, StoreError> {
        let c = JobColumns::of(job)?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(idem) = idempotency {
            let existing: Option<(String, String)> = sqlx::query_as(
                "SELECT request_hash, job_id FROM idempotency WHERE owner = ?1 AND key = ?2",
            )
            .bind(&c.owner)
            .bind(&idem.key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((hash, job_id)) = existing {
                tx.rollback().await?;
                let job_id: JobId = job_id
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("idempotency job id: {e}")))?;
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
        sqlx::query(
            "INSERT INTO jobs (id, owner, prompt, model, size, seconds, remix_of_job_id, \
             remix_of_video_id, input_reference, metadata, created_at, status, progress, \
             video_id, error_code, error_message, artifacts, provider_expires_at, version, \
             updated_at, submitted_at, finished_at, next_run_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
             ?17, ?18, ?19, ?20, ?21, ?22, ?11)",
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
        .bind(micros(c.created_at))
        .bind(c.status)
        .bind(c.progress)
        .bind(&c.video_id)
        .bind(c.error_code)
        .bind(&c.error_message)
        .bind(&c.artifacts)
        .bind(opt_micros(c.provider_expires_at))
        .bind(c.version)
        .bind(micros(c.updated_at))
        .bind(opt_micros(c.submitted_at))
        .bind(opt_micros(c.finished_at))
        .execute(&mut *tx)
        .await?;
        if let Some(idem) = idempotency {
            sqlx::query(
                "INSERT INTO idempotency (owner, key, request_hash, job_id, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(&c.owner)
            .bind(&idem.key)
            .bind(&idem.request_hash)
            .bind(&c.id)
            .bind(micros(c.created_at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.notify(job.id(), job.version());
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
            " FROM jobs WHERE id = ?1 AND (?2 IS NULL OR owner = ?2)"
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
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            ", (purged_at IS NOT NULL) AS files_purged",
            " FROM jobs WHERE id IN (SELECT value FROM json_each(?1)) AND (?2 IS NULL OR owner = ?2)"
        ))
        .bind(serde_json::to_string(&ids.iter().map(|i| i.to_string()).collect::<Vec<_>>()).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        .bind(owner.map(|o| o.as_str()))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_stored).collect()
    }

    async fn get_job_by_video(&self, video_id: &VideoId) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs WHERE video_id = ?1"
        ))
        .bind(video_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_job).transpose()
    }

    async fn list_jobs(&self, owner: &OwnerId, query: &JobQuery) -> Result<JobPage, StoreError> {
        let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
        let limit = clamp_limit(query.limit);
        let statuses = status_filter(query).map(|s| serde_json::Value::from(s).to_string());
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            ", (purged_at IS NOT NULL) AS files_purged",
            " FROM jobs WHERE owner = ?1 AND (?2 IS NULL OR id < ?2) \
             AND (?3 IS NULL OR status IN (SELECT value FROM json_each(?3))) \
             ORDER BY id DESC LIMIT ?4"
        ))
        .bind(owner.as_str())
        .bind(after.map(|a| a.to_string()))
        .bind(statuses)
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let updated = sqlx::query(
            "UPDATE jobs SET status = ?3, progress = ?4, video_id = ?5, error_code = ?6, \
             error_message = ?7, artifacts = ?8, provider_expires_at = ?9, version = ?10, \
             updated_at = ?11, submitted_at = ?12, finished_at = ?13, \
             next_run_at = CASE WHEN woken_at IS NOT NULL AND woken_at < COALESCE(?14, next_run_at) \
                 THEN woken_at ELSE COALESCE(?14, next_run_at) END, \
             woken_at = CASE WHEN ?16 THEN NULL ELSE woken_at END, \
             attempts = CASE WHEN ?15 THEN 0 ELSE attempts END, \
             lease_token = CASE WHEN ?16 THEN NULL ELSE lease_token END, \
             lease_worker = CASE WHEN ?16 THEN NULL ELSE lease_worker END, \
             lease_expires_at = CASE WHEN ?16 THEN NULL ELSE lease_expires_at END \
             WHERE id = ?1 AND version = ?2 \
             AND (?17 IS NULL OR (lease_token = ?17 AND lease_expires_at > ?18))",
        )
        .bind(&c.id)
        .bind(expected)
        .bind(c.status)
        .bind(c.progress)
        .bind(&c.video_id)
        .bind(c.error_code)
        .bind(&c.error_message)
        .bind(&c.artifacts)
        .bind(opt_micros(c.provider_expires_at))
        .bind(c.version)
        .bind(micros(c.updated_at))
        .bind(opt_micros(c.submitted_at))
        .bind(opt_micros(c.finished_at))
        .bind(opt_micros(save.next_run_at))
        .bind(save.reset_attempts)
        .bind(save.release_lease)
        .bind(save.lease.map(|l| l.token.as_str()))
        .bind(micros(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            let found: Option<(i64, Option<String>, Option<i64>)> = sqlx::query_as(
                "SELECT version, lease_token, lease_expires_at FROM jobs WHERE id = ?1",
            )
            .bind(&c.id)
            .fetch_optional(&mut *tx)
            .await?;
            tx.rollback().await?;
            return Err(match found {
                None => StoreError::NotFound,
                Some((_, token, expires))
                    if save.lease.is_some_and(|l| {
                        token.as_deref() != Some(l.token.as_str())
                            || expires.is_none_or(|e| e <= micros(now))
                    }) =>
                {
                    StoreError::LeaseLost { job_id: job.id() }
                }
                Some(_) => StoreError::Conflict {
                    job_id: job.id(),
                    expected_version,
                },
            });
        }
        if let Some(video_id) = &c.video_id {
            let matched = sqlx::query(
                "UPDATE webhook_inbox SET job_id = ?1 WHERE video_id = ?2 AND job_id IS NULL",
            )
            .bind(&c.id)
            .bind(video_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if matched > 0 {
                sqlx::query("UPDATE jobs SET next_run_at = MIN(next_run_at, ?2) WHERE id = ?1")
                    .bind(&c.id)
                    .bind(micros(now))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        if job.version() != expected_version {
            self.notify(job.id(), job.version());
        }
        Ok(())
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
            "UPDATE jobs SET lease_token = ?1, lease_worker = ?2, lease_expires_at = ?3, \
             polls = polls + ?4, woken_at = NULL \
             WHERE id IN (SELECT id FROM jobs \
                 WHERE status IN (SELECT value FROM json_each(?5)) AND next_run_at <= ?6 \
                 AND (lease_expires_at IS NULL OR lease_expires_at <= ?6) \
                 ORDER BY next_run_at, id LIMIT ?7) \
             RETURNING ",
            job_cols!(),
            ", lease_token, lease_worker, lease_expires_at, attempts, polls - ?4 AS polls_before, \
             next_run_at"
        ))
        .bind(new_token())
        .bind(worker)
        .bind(micros(expires))
        .bind(poll)
        .bind(status_json(work.statuses()))
        .bind(micros(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = rows
            .iter()
            .map(|r| {
                let next: i64 = sqlx::Row::try_get(r, "next_run_at")?;
                Ok((next, decode_claimed(r)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // RETURNING gives no order: oldest due first.
        claimed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.job.id().cmp(&b.1.job.id())));
        Ok(claimed.into_iter().map(|(_, c)| c).collect())
    }

    async fn renew(
        &self,
        lease: &Lease,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        let expires = now + chrono_duration(lease_for);
        let n = sqlx::query(
            "UPDATE jobs SET lease_expires_at = ?3 \
             WHERE id = ?1 AND lease_token = ?2 AND lease_expires_at > ?4",
        )
        .bind(lease.job_id.to_string())
        .bind(&lease.token)
        .bind(micros(expires))
        .bind(micros(now))
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
            "UPDATE jobs SET next_run_at = CASE WHEN woken_at IS NOT NULL AND woken_at < ?3 \
                 THEN woken_at ELSE ?3 END, woken_at = NULL, \
             attempts = attempts + ?4, lease_token = NULL, lease_worker = NULL, \
             lease_expires_at = NULL WHERE id = ?1 AND lease_token = ?2",
        )
        .bind(lease.job_id.to_string())
        .bind(&lease.token)
        .bind(micros(next_run_at))
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
             next_run_at = CASE WHEN woken_at IS NOT NULL AND woken_at < next_run_at \
                 THEN woken_at ELSE next_run_at END, woken_at = NULL \
             WHERE lease_worker = ?1",
        )
        .bind(worker)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn wake(&self, id: JobId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let n = sqlx::query(WAKE)
            .bind(id.to_string())
            .bind(micros(now))
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
                 AND created_at < ?1 ORDER BY created_at, id LIMIT ?2"
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
                 AND finished_at < ?1 ORDER BY finished_at, id LIMIT ?2"
            ),
            cutoff,
            limit,
        )
        .await
    }

    async fn mark_purged(&self, id: JobId, at: DateTime<Utc>) -> Result<(), StoreError> {
        let n = sqlx::query("UPDATE jobs SET purged_at = COALESCE(purged_at, ?2) WHERE id = ?1")
            .bind(id.to_string())
            .bind(micros(at))
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn purged_at(&self, id: JobId) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT purged_at FROM jobs WHERE id = ?1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        match row {
            None => Err(StoreError::NotFound),
            Some((None,)) => Ok(None),
            Some((Some(v),)) => DateTime::from_timestamp_micros(v)
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt(format!("purged_at {v} out of range"))),
        }
    }

    async fn record_webhook(&self, event: &InboxEvent) -> Result<InboxOutcome, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let inserted: Option<(Option<String>,)> = sqlx::query_as(
            "INSERT INTO webhook_inbox (webhook_id, event_type, video_id, received_at, payload, \
             job_id) VALUES (?1, ?2, ?3, ?4, ?5, (SELECT id FROM jobs WHERE video_id = ?3)) \
             ON CONFLICT (webhook_id) DO NOTHING RETURNING job_id",
        )
        .bind(&event.webhook_id)
        .bind(&event.event_type)
        .bind(event.video_id.as_ref().map(|v| v.as_str()))
        .bind(micros(event.received_at))
        .bind(&event.payload)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match inserted {
            None => InboxOutcome::Duplicate,
            Some((None,)) => InboxOutcome::New { job_id: None },
            Some((Some(job_id),)) => {
                sqlx::query(WAKE)
                    .bind(&job_id)
                    .bind(micros(event.received_at))
                    .execute(&mut *tx)
                    .await?;
                InboxOutcome::New {
                    job_id: Some(
                        job_id
                            .parse()
                            .map_err(|e| StoreError::Corrupt(format!("inbox job id: {e}")))?,
                    ),
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn purge_idempotency(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM idempotency WHERE created_at < ?1")
            .bind(micros(older_than))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn purge_webhooks(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM webhook_inbox WHERE received_at < ?1")
                .bind(micros(older_than))
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
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&record.id)
        .bind(owner.as_str())
        .bind(key_hash)
        .bind(label)
        .bind(micros(record.created_at))
        .execute(&self.pool)
        .await?;
        Ok(record)
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, owner, label, created_at, revoked_at FROM api_keys \
             WHERE key_hash = ?1 AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_api_key).transpose()
    }

    async fn revoke_api_key(&self, id: &str) -> Result<bool, StoreError> {
        let n =
            sqlx::query("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")
                .bind(id)
                .bind(micros(Utc::now()))
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

/// A time at the precision both databases keep (microseconds).
pub(crate) fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

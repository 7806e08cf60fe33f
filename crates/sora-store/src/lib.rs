#![doc = include_str!("../README.md")]

mod blob;
mod error;
mod pg;
mod row;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sora_core::{Job, JobError, JobId, JobStatus, OwnerId, PublicStatus, VideoId};

pub use blob::{BlobMeta, BlobRead, BlobStore};
pub use error::{BoxError, StoreError};
pub use pg::{CHANGE_CHANNEL, PG_MIGRATOR, PgStore, STATE_CHANNEL};
pub use sqlite::{SQLITE_MIGRATOR, SqliteStore};

/// The idempotency record stored with a new job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIdempotency {
    /// The caller's `Idempotency-Key`.
    pub key: String,
    /// Hex SHA-256 of the canonical request, computed by the service.
    pub request_hash: String,
}

/// What [`JobStore::insert_job`] did.
// Rare and short-lived: boxing the job would only make matching on it clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The job was stored.
    Created,
    /// The same owner sent the same idempotency key with the same request before: nothing was
    /// stored, and this is the job that first request created.
    Replayed(Job),
}

/// A page request of an owner's jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobQuery {
    /// Only jobs with this public status.
    pub status: Option<PublicStatus>,
    /// How many jobs at most; clamped to `1..=100`.
    pub limit: u32,
    /// Where the previous page ended ([`JobPage::next_cursor`]).
    pub cursor: Option<String>,
}

impl Default for JobQuery {
    fn default() -> Self {
        Self {
            status: None,
            limit: 20,
            cursor: None,
        }
    }
}

/// A job with what the store knows beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredJob {
    /// The job.
    pub job: Job,
    /// Whether its files were deleted (by retention or its owner).
    pub files_purged: bool,
}

/// A page of an owner's jobs, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<Job>,
    /// The cursor of the next page, if there are more jobs. Opaque.
    pub next_cursor: Option<String>,
    /// The jobs of this page whose files were deleted (by retention or their owner).
    pub purged: Vec<JobId>,
}

/// The kinds of work the workers claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Work {
    /// `pending` jobs, to send to the provider.
    Submit,
    /// `queued` and `in_progress` jobs, to ask the provider about.
    Poll,
    /// `archiving` jobs, whose files are to be copied into our storage.
    Archive,
}

impl Work {
    /// Every kind of work.
    pub const ALL: [Self; 3] = [Self::Submit, Self::Poll, Self::Archive];

    /// The stored statuses of the jobs this work is for.
    pub fn statuses(self) -> &'static [JobStatus] {
        match self {
            Self::Submit => &[JobStatus::Pending],
            Self::Poll => &[JobStatus::Queued, JobStatus::InProgress],
            Self::Archive => &[JobStatus::Archiving],
        }
    }
}

/// A worker's exclusive, expiring hold on one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub job_id: JobId,
    /// A random token naming this hold; every write under the lease is fenced on it.
    pub token: String,
    /// The worker that holds it.
    pub worker: String,
    /// When it expires unless renewed.
    pub expires_at: DateTime<Utc>,
}

/// A job handed to a worker by [`JobStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The job as stored.
    pub job: Job,
    /// The worker's hold on it.
    pub lease: Lease,
    /// Failed attempts counted so far (see [`JobStore::release`] and [`SaveJob::reset_attempts`]).
    pub attempts: u32,
    /// How many times the job was claimed for [`Work::Poll`] before this claim (a poll claim
    /// counts itself).
    pub polls: u32,
}

/// How [`JobStore::save_job`] writes. `SaveJob::default()`: no lease fence, keep `next_run_at`,
/// keep the lease, keep the attempt count, check expiry against the wall clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaveJob<'a> {
    /// Write only while this lease holds the job and has not expired.
    pub lease: Option<&'a Lease>,
    /// When the job is next due for work, if it should change.
    pub next_run_at: Option<DateTime<Utc>>,
    /// Clear the lease after writing.
    pub release_lease: bool,
    /// Set the failed-attempt count back to zero.
    pub reset_attempts: bool,
    /// The time of the write: leases expire against it, and matched webhooks wake the job at it.
    /// `None`: the wall clock.
    pub now: Option<DateTime<Utc>>,
}

/// A notice that something changed, sent after the change committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeNotice {
    /// The job changed and is now at this version.
    Changed {
        /// The job.
        job_id: JobId,
        /// Its new version.
        version: u64,
        /// What the job looks like at that version, when the notice carries it (PostgreSQL's
        /// notices do, unless the job's error message is too long for a notification): a
        /// subscriber can show the change without reading the job. `None`: read it.
        state: Option<Arc<ChangedState>>,
    },
    /// Notices may have been lost (the listener's connection dropped, or this subscriber lagged):
    /// re-read everything you watch.
    Resync,
}

/// A job's state at one version, as much of it as a progress message shows: carried by a
/// [`ChangeNotice`] so that subscribers need not read the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedState {
    /// The job's owner.
    pub owner: OwnerId,
    /// The status.
    pub status: JobStatus,
    /// Percent done, 0 to 100.
    pub progress: u8,
    /// Why it failed, when failed.
    pub error: Option<JobError>,
    /// The video is stored and can be downloaded (completed, files not purged).
    pub video: bool,
    /// A thumbnail is stored too.
    pub thumbnail: bool,
}

/// What [`JobStore::record_webhook`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxOutcome {
    /// The event is new and was stored.
    New {
        /// The job whose provider video id matched (it was woken: due now), or `None` if no job
        /// has that video id yet (the event is matched when a job gets it).
        job_id: Option<JobId>,
    },
    /// An event with this webhook id was recorded before; nothing changed.
    Duplicate,
}

/// A verified webhook event, as the inbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEvent {
    /// The `webhook-id` header: unique per event, repeated on redelivery.
    pub webhook_id: String,
    /// The event's `type`, such as `video.completed`.
    pub event_type: String,
    /// The provider's video id the event is about, when it names one.
    pub video_id: Option<VideoId>,
    /// When we received it.
    pub received_at: DateTime<Utc>,
    /// The raw body.
    pub payload: String,
}

/// A stored API key: its hash, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Our id of the key (`key_` + a ULID), for listing and revoking.
    pub id: String,
    /// Whose jobs the key reaches.
    pub owner: OwnerId,
    /// A label for people.
    pub label: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Durable jobs and everything the service keeps about them.
///
/// Implemented by [`PgStore`] (production; several server instances share one database) and
/// [`SqliteStore`] (the embedded default). Both pass the same conformance suite.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait::async_trait]
pub trait JobStore: Send + Sync {
    /// Inserts a pending job (due at once) and, when given, its idempotency record, in one
    /// transaction. The same owner and key with the same request hash (a record not yet purged)
    /// gives `Ok(Inserted::Replayed(first job))` and stores nothing; with a different hash,
    /// `Err(IdempotencyConflict)`. Sends a change notice.
    async fn insert_job<'a>(
        &self,
        job: &Job,
        idempotency: Option<&'a NewIdempotency>,
    ) -> Result<Inserted, StoreError>;

    /// Jobs by id with their purge flag, in one query: `owner = Some` keeps only that owner's
    /// (the API reading one job), `None` any owner's (the WebSocket hub reading every job that
    /// changed at once). Ids that match no job are left out; the order is unspecified.
    async fn get_jobs<'a>(
        &self,
        ids: &[JobId],
        owner: Option<&'a OwnerId>,
    ) -> Result<Vec<StoredJob>, StoreError>;

    /// A job by id. `owner = Some`: only that owner's (another owner's job gives `Ok(None)`);
    /// `None`: any owner's (for workers).
    async fn get_job<'a>(
        &self,
        id: JobId,
        owner: Option<&'a OwnerId>,
    ) -> Result<Option<Job>, StoreError>;

    /// The job the provider knows by this video id.
    async fn get_job_by_video(&self, video_id: &VideoId) -> Result<Option<Job>, StoreError>;

    /// An owner's jobs, newest first, a page at a time. A cursor this store did not hand out
    /// gives `Err(InvalidCursor)`.
    async fn list_jobs(&self, owner: &OwnerId, query: &JobQuery) -> Result<JobPage, StoreError>;

    /// Writes the job's state if the row is still at `expected_version` (else `Conflict`) and,
    /// with `save.lease`, only while that lease holds the row and has not expired at `save.now`
    /// (else `LeaseLost`; checked before the version). Atomic; sends a change notice when the
    /// version changed. Also sets `next_run_at`, releases the lease and resets the attempt
    /// count as asked. When the job has a provider video id, unmatched inbox events for that id
    /// are matched to it and the job becomes due at `save.now`.
    async fn save_job<'a>(
        &self,
        job: &Job,
        expected_version: u64,
        save: SaveJob<'a>,
    ) -> Result<(), StoreError>;

    /// Claims up to `limit` jobs due for `work` (`next_run_at <= now`, no live lease) for
    /// `worker`, oldest due first. One job is never held by two live leases, across processes.
    async fn claim(
        &self,
        work: Work,
        worker: &str,
        limit: u32,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// Extends a live lease to `now + lease_for`. `LeaseLost` if it expired, was released or
    /// was taken.
    async fn renew(
        &self,
        lease: &Lease,
        lease_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError>;

    /// Gives a job back without a state change: due again at `next_run_at`, one more failed
    /// attempt if `count_attempt`. `LeaseLost` if the lease no longer holds the job (its token
    /// was replaced or cleared).
    async fn release(
        &self,
        lease: &Lease,
        next_run_at: DateTime<Utc>,
        count_attempt: bool,
    ) -> Result<(), StoreError>;

    /// Releases every lease `worker` holds (graceful shutdown); the jobs keep their due times.
    /// Returns how many.
    async fn release_all(&self, worker: &str) -> Result<u64, StoreError>;

    /// Makes the job due at `now` (a webhook hint) unless it is due earlier. No version change.
    /// `Ok(false)` if there is no such job.
    async fn wake(&self, id: JobId, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// How many jobs are `queued` or `in_progress` (active at the provider).
    async fn count_active(&self) -> Result<u64, StoreError>;

    /// How many jobs are in each stored status (every status, zeros included).
    async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>, StoreError>;

    /// Non-terminal jobs created before `created_before`, oldest first.
    async fn overdue(
        &self,
        created_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError>;

    /// Completed jobs that finished before `cutoff` and whose files are not purged yet, oldest
    /// first.
    async fn finished_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError>;

    /// Records that the job's files were deleted by retention (the job row stays). The first
    /// time is kept. `NotFound` if there is no such job.
    async fn mark_purged(&self, id: JobId, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// When the job's files were purged, if they were. `NotFound` if there is no such job.
    async fn purged_at(&self, id: JobId) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Records a webhook event in the inbox, keyed by its webhook id.
    async fn record_webhook(&self, event: &InboxEvent) -> Result<InboxOutcome, StoreError>;

    /// Deletes idempotency records created before `older_than`. Returns how many.
    async fn purge_idempotency(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Deletes webhook inbox entries received before `older_than`. Keep them longer than the
    /// provider retries a delivery (OpenAI: 72 hours), or a late retry counts as new (which is
    /// harmless: it only wakes a poll). Returns how many.
    async fn purge_webhooks(&self, older_than: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Stores a new API key by its hash (hex SHA-256, computed by the caller).
    async fn create_api_key<'a>(
        &self,
        owner: &OwnerId,
        key_hash: &str,
        label: Option<&'a str>,
    ) -> Result<ApiKeyRecord, StoreError>;

    /// The key with this hash, unless revoked.
    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Revokes a key by id. `Ok(false)` if there is no such key or it was revoked already.
    async fn revoke_api_key(&self, id: &str) -> Result<bool, StoreError>;

    /// Notices of committed changes: from every process sharing the database (PostgreSQL) or
    /// from every store of this process on the same file (SQLite).
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ChangeNotice>;

    /// Readiness: one cheap query.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Opens the store a URL names and applies its migrations: `postgres://` or `postgresql://`
/// gives a [`PgStore`], `sqlite://` or `sqlite:` a [`SqliteStore`] (the file and its directory
/// are created if missing; WAL mode).
pub async fn connect(database_url: &str) -> Result<Arc<dyn JobStore>, StoreError> {
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        let store = PgStore::connect(database_url).await?;
        store.migrate().await?;
        Ok(Arc::new(store))
    } else if database_url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(database_url).await?))
    } else {
        Err(StoreError::Config(format!(
            "unsupported database URL `{}`: use postgres://... or sqlite://...",
            error::redact_url(database_url)
        )))
    }
}

/// The capacity of each store's change-notice channel; a subscriber that falls further behind
/// gets `RecvError::Lagged` and should treat it like [`ChangeNotice::Resync`].
pub const NOTICE_CAPACITY: usize = 1024;

/// Clamps a page size to `1..=100`.
fn clamp_limit(limit: u32) -> i64 {
    i64::from(limit.clamp(1, 100))
}

/// A lease duration as chrono's, saturating at a century.
fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::days(36_500))
}

/// A new random lease token.
fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

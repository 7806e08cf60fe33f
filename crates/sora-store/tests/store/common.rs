//! Jobs, clocks and backends for the tests.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sora_core::{
    Artifacts, Catalogue, InputReference, Job, JobEvent, JobId, NewJob, OwnerId, Prompt,
    ProviderReport, ProviderStatus, RemixOf, SpecRequest, StoredFile, VideoId,
};
use sora_store::testing::TestPostgres;
use sora_store::{JobStore, PgStore, SqliteStore};

/// A fixed start time, at the microsecond precision both databases keep.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 123_456_000).unwrap()
}

/// `t0` plus some seconds.
pub fn at(secs: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(secs)
}

pub fn owner(name: &str) -> OwnerId {
    name.parse().unwrap()
}

pub fn video(id: &str) -> VideoId {
    id.parse().unwrap()
}

/// A plain pending job of `owner` created at `created`.
pub fn job(owner_name: &str, created: DateTime<Utc>) -> Job {
    let spec = Catalogue::default()
        .resolve(&SpecRequest::default())
        .unwrap();
    let id = JobId::from_parts(created.timestamp_millis() as u64, rand::random());
    let request = NewJob {
        owner: owner(owner_name),
        prompt: Prompt::parse("a calico cat on a skateboard").unwrap(),
        spec,
        remix_of: None,
        input_reference: None,
        metadata: BTreeMap::new(),
    };
    Job::new(id, request, created)
}

/// A pending job with every optional request field set.
pub fn full_job(owner_name: &str, created: DateTime<Utc>) -> Job {
    let base = job(owner_name, created);
    let mut request = base.request().clone();
    request.remix_of = Some(RemixOf {
        job_id: JobId::new(),
        video_id: video("video_earlier"),
    });
    request.input_reference = Some(InputReference {
        key: "inputs/abc.png".into(),
        content_type: "image/png".into(),
        size: 1234,
    });
    request.metadata = BTreeMap::from([
        ("campaign".to_owned(), "spring \"launch\"".to_owned()),
        ("ünïcode".to_owned(), "✓".to_owned()),
    ]);
    Job::new(base.id(), request, created)
}

/// Applies an event that must change the job.
pub fn apply(job: &mut Job, event: JobEvent, now: DateTime<Utc>) {
    assert!(
        job.apply(&event, now).is_changed(),
        "{event:?} did not apply"
    );
}

pub fn submitted(video_id: &str) -> JobEvent {
    JobEvent::Submitted {
        video_id: video(video_id),
    }
}

pub fn reported(status: ProviderStatus, progress: Option<u8>) -> JobEvent {
    JobEvent::ProviderReported(ProviderReport {
        status,
        progress,
        expires_at: Some(at(3600)),
    })
}

pub fn archived(key: &str) -> JobEvent {
    JobEvent::Archived(Artifacts {
        video: StoredFile {
            key: format!("{key}/video.mp4"),
            size: 42,
            content_type: "video/mp4".into(),
            etag: Some("\"e1\"".into()),
        },
        thumbnail: None,
        spritesheet: Some(StoredFile {
            key: format!("{key}/sprites.jpg"),
            size: 7,
            content_type: "image/jpeg".into(),
            etag: None,
        }),
    })
}

/// A store under test, with what keeps its database alive.
pub struct Backend {
    pub store: Arc<dyn JobStore>,
    pub url: String,
    pub kind: Kind,
    // Dropped after the store: the database outlives its connections.
    _guard: Box<dyn Any + Send>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

impl Backend {
    /// A SQLite store in a fresh temporary file.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/nested/sora.db", dir.path().display());
        let store = SqliteStore::connect(&url).await.unwrap();
        Self {
            store: Arc::new(store),
            url,
            kind: Kind::Sqlite,
            _guard: Box::new(dir),
        }
    }

    /// A PostgreSQL store on a fresh database, migrated.
    pub async fn postgres() -> Self {
        let db = TestPostgres::new().await;
        let store = PgStore::connect(&db.url).await.unwrap();
        store.migrate().await.unwrap();
        Self {
            store: Arc::new(store),
            url: db.url.clone(),
            kind: Kind::Postgres,
            _guard: Box::new(db),
        }
    }

    /// A second store on the same database (another "server instance").
    pub async fn reopen(&self) -> Arc<dyn JobStore> {
        match self.kind {
            Kind::Sqlite => Arc::new(SqliteStore::connect(&self.url).await.unwrap()),
            Kind::Postgres => Arc::new(PgStore::connect(&self.url).await.unwrap()),
        }
    }
}

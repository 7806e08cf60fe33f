//! The use cases: create, read, list, cancel, download, accept a webhook.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use sha2::{Digest, Sha256};
use sora_core::{
    InputReference, Job, JobEvent, JobId, NewJob, OwnerId, Prompt, PublicStatus, RemixOf,
    SpecRequest, StoredFile, Variant,
};
use sora_openai::webhook::WebhookEvent;
use sora_openai::{ProviderError, VideoProvider};
use sora_store::{
    BlobRead, BlobStore, ChangeNotice, InboxEvent, InboxOutcome, Inserted, JobPage, JobQuery,
    JobStore, NewIdempotency, SaveJob, StoreError,
};
use tokio::sync::{Notify, broadcast};

use crate::config::ServiceConfig;
use crate::error::ServiceError;

/// What a caller asks to generate, as received (not yet validated).
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// The prompt.
    pub prompt: String,
    /// A preset name.
    pub preset: Option<String>,
    /// A model id.
    pub model: Option<String>,
    /// A size such as `1280x720`.
    pub size: Option<String>,
    /// A duration in seconds.
    pub seconds: Option<String>,
    /// The id of an earlier completed job of the same owner to remix.
    pub remix_of: Option<String>,
    /// The caller's own labels.
    pub metadata: BTreeMap<String, String>,
    /// A first-frame image.
    pub input_reference: Option<UploadedImage>,
}

/// An uploaded image.
#[derive(Clone)]
pub struct UploadedImage {
    /// The file name the client gave, if any.
    pub filename: Option<String>,
    /// The bytes.
    pub data: Bytes,
}

impl std::fmt::Debug for UploadedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadedImage")
            .field("filename", &self.filename)
            .field("len", &self.data.len())
            .finish()
    }
}

/// The answer to a create.
#[derive(Debug, Clone)]
pub struct Created {
    /// The job (for a replay, the job the first request created, as it is now).
    pub job: Job,
    /// Whether this was a replay of an earlier request with the same `Idempotency-Key`.
    pub replayed: bool,
}

/// A job as a caller sees it.
#[derive(Debug, Clone)]
pub struct JobView {
    /// The job.
    pub job: Job,
    /// Whether its files were deleted by retention or by its owner.
    pub files_deleted: bool,
}

/// What happened at the provider when a job was cancelled or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// The job had not reached the provider: nothing to cancel there.
    NotSubmitted,
    /// The provider deleted its copy.
    Deleted,
    /// The provider no longer knew the job.
    NotFound,
    /// The provider refused or failed; its copy may still exist (and expires on its own).
    Failed(String),
}

impl UpstreamOutcome {
    /// A short machine-readable word: `not_submitted`, `deleted`, `not_found`, `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NotSubmitted => "not_submitted",
            Self::Deleted => "deleted",
            Self::NotFound => "not_found",
            Self::Failed(_) => "failed",
        }
    }

    /// A sentence for people.
    pub fn message(&self) -> String {
        match self {
            Self::NotSubmitted => "The job had not been sent to the provider.".into(),
            Self::Deleted => "The provider deleted its copy of the job.".into(),
            Self::NotFound => "The provider no longer had the job.".into(),
            Self::Failed(why) => format!(
                "The provider did not confirm the deletion ({why}); its copy expires on its own."
            ),
        }
    }
}

/// The answer to a cancel or delete.
#[derive(Debug, Clone)]
pub struct Cancelled {
    /// The job after the operation.
    pub job: Job,
    /// Whether this call changed the job's state (false when it had already ended).
    pub cancelled_now: bool,
    /// Whether the job's stored files were deleted.
    pub files_deleted: bool,
    /// What the provider did.
    pub upstream: UpstreamOutcome,
}

/// What became of a verified webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// A new video event, recorded; the matching job (if any yet) is due for a poll now.
    Recorded {
        /// The job whose provider id matched.
        job_id: Option<JobId>,
    },
    /// The same `webhook-id` was seen before: acknowledged, nothing done.
    Duplicate,
    /// Not a video event: recorded and ignored.
    Ignored {
        /// The event type.
        event_type: String,
    },
}

/// Wakes the workers of this process when there is work for them, so they need not wait for
/// their idle tick.
#[derive(Debug, Default)]
pub(crate) struct Nudges {
    pub(crate) submit: Notify,
    pub(crate) poll: Notify,
    pub(crate) archive: Notify,
}

/// The service: every use case, over a store, a provider and a blob store.
///
/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct VideoService {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) provider: Arc<dyn VideoProvider>,
    pub(crate) blobs: Arc<BlobStore>,
    pub(crate) config: ServiceConfig,
    pub(crate) nudges: Nudges,
}

impl std::fmt::Debug for VideoService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoService")
            .field("worker_id", &self.inner.config.worker_id)
            .finish_non_exhaustive()
    }
}

const MAX_METADATA_ENTRIES: usize = 16;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 512;

impl VideoService {
    /// A service over these parts.
    pub fn new(
        store: Arc<dyn JobStore>,
        provider: Arc<dyn VideoProvider>,
        blobs: Arc<BlobStore>,
        config: ServiceConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                provider,
                blobs,
                config,
                nudges: Nudges::default(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.inner.store
    }

    /// The blob store.
    pub fn blobs(&self) -> &Arc<BlobStore> {
        &self.inner.blobs
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<dyn VideoProvider> {
        &self.inner.provider
    }

    /// Every committed job change, from every instance sharing the database: the job-event bus
    /// the WebSocket layer listens to. A `Resync` means notices may have been lost: re-read.
    pub fn subscribe(&self) -> broadcast::Receiver<ChangeNotice> {
        self.inner.store.subscribe()
    }

    /// Validates a request, stores a `pending` job (and its idempotency record) in one
    /// transaction, and wakes the submitter. Never calls the provider.
    pub async fn create(
        &self,
        owner: &OwnerId,
        request: CreateRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Created, ServiceError> {
        let idempotency = idempotency_key
            .map(|key| {
                let key = key.trim();
                if key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(ServiceError::invalid(
                        "Idempotency-Key",
                        "must be 1 to 255 visible ASCII characters",
                    ));
                }
                Ok(NewIdempotency {
                    key: key.to_owned(),
                    request_hash: request_hash(&request),
                })
            })
            .transpose()?;

        let prompt = Prompt::parse(&request.prompt)
            .map_err(|e| ServiceError::invalid("prompt", e.to_string()))?;
        let spec = self
            .inner
            .config
            .catalogue
            .resolve(&SpecRequest {
                preset: request.preset.clone(),
                model: request.model.clone(),
                size: request.size.clone(),
                seconds: request.seconds.clone(),
            })
            .map_err(|e| ServiceError::invalid(e.field, e.message))?;
        validate_metadata(&request.metadata)?;
        let remix_of = match &request.remix_of {
            None => None,
            Some(raw) => Some(self.remix_source(owner, raw).await?),
        };
        let image = match &request.input_reference {
            None => None,
            Some(image) => Some(self.check_image(image)?),
        };

        let id = JobId::new();
        let input_reference = match (image, &request.input_reference) {
            (Some(content_type), Some(upload)) => {
                let key = format!("inputs/{id}");
                let meta = self
                    .inner
                    .blobs
                    .put_bytes(&key, upload.data.clone(), content_type)
                    .await?;
                Some(InputReference {
                    key,
                    content_type: content_type.to_owned(),
                    size: meta.size,
                })
            }
            _ => None,
        };
        let job = Job::new(
            id,
            NewJob {
                owner: owner.clone(),
                prompt,
                spec,
                remix_of,
                input_reference,
                metadata: request.metadata,
            },
            Utc::now(),
        );
        let inserted = self
            .inner
            .store
            .insert_job(&job, idempotency.as_ref())
            .await;
        let orphan = job
            .request()
            .input_reference
            .as_ref()
            .map(|r| r.key.clone());
        match inserted {
            Ok(Inserted::Created) => {
                self.inner.nudges.submit.notify_one();
                Ok(Created {
                    job,
                    replayed: false,
                })
            }
            Ok(Inserted::Replayed(existing)) => {
                self.delete_quietly(orphan).await;
                Ok(Created {
                    job: existing,
                    replayed: true,
                })
            }
            Err(StoreError::IdempotencyConflict { job_id }) => {
                self.delete_quietly(orphan).await;
                Err(ServiceError::IdempotencyConflict(job_id))
            }
            Err(e) => {
                self.delete_quietly(orphan).await;
                Err(e.into())
            }
        }
    }

    /// Deletes what a job that ended without a video leaves in storage: its uploaded input
    /// image and any files copied before it failed or was cancelled. Failures are logged.
    pub(crate) async fn discard_files(&self, job: &Job) {
        let id = job.id();
        let keys = job
            .request()
            .input_reference
            .iter()
            .map(|r| r.key.clone())
            .chain(Variant::ALL.into_iter().map(|v| file_key(id, v)));
        for key in keys {
            self.delete_quietly(Some(key)).await;
        }
    }

    async fn delete_quietly(&self, key: Option<String>) {
        if let Some(key) = key
            && let Err(e) = self.inner.blobs.delete(&key).await
        {
            tracing::warn!(%key, error = %e, "could not delete an unused upload");
        }
    }

    async fn remix_source(&self, owner: &OwnerId, raw: &str) -> Result<RemixOf, ServiceError> {
        let job_id: JobId = raw
            .trim()
            .parse()
            .map_err(|e: sora_core::IdError| ServiceError::invalid("remixOf", e.to_string()))?;
        let source = self
            .inner
            .store
            .get_job(job_id, Some(owner))
            .await?
            .ok_or_else(|| {
                ServiceError::invalid("remixOf", format!("no job {job_id} for this caller"))
            })?;
        match (source.status().public(), source.video_id()) {
            (PublicStatus::Completed, Some(video_id)) => Ok(RemixOf {
                job_id,
                video_id: video_id.clone(),
            }),
            (status, _) => Err(ServiceError::invalid(
                "remixOf",
                format!("job {job_id} is {status}; only a completed job can be remixed"),
            )),
        }
    }

    fn check_image(&self, image: &UploadedImage) -> Result<&'static str, ServiceError> {
        let max = self.inner.config.max_input_image_bytes;
        if image.data.is_empty() {
            return Err(ServiceError::invalid("inputReference", "the file is empty"));
        }
        if image.data.len() > max {
            return Err(ServiceError::invalid(
                "inputReference",
                format!("the image is larger than {max} bytes"),
            ));
        }
        sniff_image(&image.data).ok_or_else(|| {
            ServiceError::invalid(
                "inputReference",
                "the file must be a JPEG, PNG or WebP image",
            )
        })
    }

    /// One of the caller's jobs.
    pub async fn get(&self, owner: &OwnerId, id: JobId) -> Result<JobView, ServiceError> {
        self.read(&[id], Some(owner))
            .await?
            .pop()
            .ok_or_else(|| ServiceError::NotFound(id.to_string()))
    }

    /// Any job, whoever owns it (for workers and for the WebSocket layer, which checks
    /// ownership itself).
    pub async fn get_any(&self, id: JobId) -> Result<Option<JobView>, ServiceError> {
        Ok(self.read(&[id], None).await?.pop())
    }

    /// Several jobs, whoever owns them, in one read (the WebSocket layer's batch of changes).
    /// Ids that match no job are left out.
    pub async fn get_many(&self, ids: &[JobId]) -> Result<Vec<JobView>, ServiceError> {
        self.read(ids, None).await
    }

    /// Jobs with their purge flag, in one query.
    async fn read(
        &self,
        ids: &[JobId],
        owner: Option<&OwnerId>,
    ) -> Result<Vec<JobView>, ServiceError> {
        let stored = self.inner.store.get_jobs(ids, owner).await?;
        Ok(stored
            .into_iter()
            .map(|s| JobView {
                job: s.job,
                files_deleted: s.files_purged,
            })
            .collect())
    }

    /// The caller's jobs, newest first.
    pub async fn list(&self, owner: &OwnerId, query: &JobQuery) -> Result<JobPage, ServiceError> {
        match self.inner.store.list_jobs(owner, query).await {
            Err(StoreError::InvalidCursor) => Err(ServiceError::invalid(
                "cursor",
                "not a cursor this service gave out",
            )),
            other => Ok(other?),
        }
    }

    /// The stored file of one variant of a completed job. `owner` is `None` when the caller
    /// presented a valid signed link instead of a credential.
    pub async fn find_file(
        &self,
        owner: Option<&OwnerId>,
        id: JobId,
        variant: Variant,
    ) -> Result<StoredFile, ServiceError> {
        let job = self
            .inner
            .store
            .get_job(id, owner)
            .await?
            .ok_or_else(|| ServiceError::NotFound(id.to_string()))?;
        let Some(artifacts) = job.artifacts() else {
            return Err(ServiceError::NotReady {
                job_id: id,
                status: job.status().public(),
            });
        };
        artifacts
            .get(variant)
            .cloned()
            .ok_or(ServiceError::NoSuchVariant {
                job_id: id,
                variant,
            })
    }

    /// Opens a stored file for streaming, whole or a byte range (already checked against its
    /// size). A file deleted by retention is `Gone`.
    pub async fn open_file(
        &self,
        id: JobId,
        file: &StoredFile,
        range: Option<Range<u64>>,
    ) -> Result<BlobRead, ServiceError> {
        match self.inner.blobs.get(&file.key, range).await {
            Ok(read) => Ok(read),
            Err(StoreError::NotFound) => Err(ServiceError::Gone(id)),
            Err(e) => Err(e.into()),
        }
    }

    /// Cancels a job that has not ended, or deletes the files of one that has; in both cases
    /// asks the provider to delete its copy, and says what it did.
    pub async fn cancel(&self, owner: &OwnerId, id: JobId) -> Result<Cancelled, ServiceError> {
        let store = &self.inner.store;
        // A worker may write between our read and our write: re-read and retry on conflict.
        let mut attempts = 0;
        let (job, cancelled_now) = loop {
            let mut job = store
                .get_job(id, Some(owner))
                .await?
                .ok_or_else(|| ServiceError::NotFound(id.to_string()))?;
            let version = job.version();
            if !job.apply(&JobEvent::Cancelled, Utc::now()).is_changed() {
                break (job, false);
            }
            match store.save_job(&job, version, SaveJob::default()).await {
                Ok(()) => break (job, true),
                Err(StoreError::Conflict { .. }) if attempts < 5 => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        };

        let mut files_deleted = false;
        if cancelled_now {
            self.discard_files(&job).await;
        } else if let Some(artifacts) = job.artifacts() {
            for (_, file) in artifacts.iter() {
                self.inner.blobs.delete(&file.key).await?;
            }
            store.mark_purged(id, Utc::now()).await?;
            files_deleted = true;
        }
        let upstream = match job.video_id() {
            None => UpstreamOutcome::NotSubmitted,
            Some(video_id) => match self.inner.provider.delete(video_id).await {
                Ok(_) => UpstreamOutcome::Deleted,
                Err(ProviderError::NotFound { .. }) => UpstreamOutcome::NotFound,
                Err(e) => {
                    tracing::warn!(job_id = %id, error = %e, "the provider did not delete a cancelled job");
                    UpstreamOutcome::Failed(e.to_string())
                }
            },
        };
        Ok(Cancelled {
            job,
            cancelled_now,
            files_deleted,
            upstream,
        })
    }

    /// Takes a webhook whose signature was verified: records it in the inbox (a duplicate
    /// `webhook-id` is acknowledged and dropped) and makes the matching job due for a poll
    /// now. The event is a hint; the provider's retrieve is the truth.
    pub async fn accept_webhook(
        &self,
        webhook_id: &str,
        body: &[u8],
    ) -> Result<WebhookOutcome, ServiceError> {
        let event = WebhookEvent::parse(body)
            .map_err(|e| ServiceError::invalid("body", format!("not a webhook event: {e}")))?;
        let video_event = matches!(
            event.kind,
            sora_openai::webhook::WebhookEventKind::VideoCompleted
                | sora_openai::webhook::WebhookEventKind::VideoFailed
        );
        let video_id = if video_event {
            event.video_id.as_deref().and_then(|v| v.parse().ok())
        } else {
            None
        };
        let record = InboxEvent {
            webhook_id: webhook_id.to_owned(),
            event_type: event.kind.as_str().to_owned(),
            video_id,
            received_at: Utc::now(),
            payload: String::from_utf8_lossy(body).into_owned(),
        };
        match self.inner.store.record_webhook(&record).await? {
            InboxOutcome::Duplicate => Ok(WebhookOutcome::Duplicate),
            InboxOutcome::New { .. } if !video_event => Ok(WebhookOutcome::Ignored {
                event_type: record.event_type,
            }),
            InboxOutcome::New { job_id } => {
                if job_id.is_some() {
                    self.inner.nudges.poll.notify_one();
                }
                Ok(WebhookOutcome::Recorded { job_id })
            }
        }
    }
}

/// Where the archiver keeps a job's file of one variant in the blob store.
pub(crate) fn file_key(id: JobId, variant: Variant) -> String {
    format!("jobs/{id}/{variant}.{}", variant.extension())
}

fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ServiceError> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(ServiceError::invalid(
            "metadata",
            format!("at most {MAX_METADATA_ENTRIES} entries"),
        ));
    }
    for (k, v) in metadata {
        if k.is_empty() || k.chars().count() > MAX_METADATA_KEY {
            return Err(ServiceError::invalid(
                "metadata",
                format!("keys must be 1 to {MAX_METADATA_KEY} characters"),
            ));
        }
        if v.chars().count() > MAX_METADATA_VALUE {
            return Err(ServiceError::invalid(
                "metadata",
                format!("values must be at most {MAX_METADATA_VALUE} characters (key `{k}`)"),
            ));
        }
    }
    Ok(())
}

/// The media type of an image, from its first bytes.
fn sniff_image(data: &[u8]) -> Option<&'static str> {
    if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// A stable digest of everything a create request asks for, so that a replayed
/// `Idempotency-Key` can be told apart from a reused one.
fn request_hash(request: &CreateRequest) -> String {
    let mut h = Sha256::new();
    let mut field = |name: &str, value: Option<&[u8]>| {
        h.update(name.as_bytes());
        match value {
            None => h.update([0u8]),
            Some(v) => {
                h.update([1u8]);
                h.update((v.len() as u64).to_be_bytes());
                h.update(v);
            }
        }
    };
    field("prompt", Some(request.prompt.as_bytes()));
    field("preset", request.preset.as_deref().map(str::as_bytes));
    field("model", request.model.as_deref().map(str::as_bytes));
    field("size", request.size.as_deref().map(str::as_bytes));
    field("seconds", request.seconds.as_deref().map(str::as_bytes));
    field("remix_of", request.remix_of.as_deref().map(str::as_bytes));
    for (k, v) in &request.metadata {
        field("metadata.key", Some(k.as_bytes()));
        field("metadata.value", Some(v.as_bytes()));
    }
    let image = request
        .input_reference
        .as_ref()
        .map(|i| Sha256::digest(&i.data).to_vec());
    field("input_reference", image.as_deref());
    hex(&h.finalize())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_recognised_by_their_first_bytes() {
        assert_eq!(sniff_image(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff_image(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff_image(b"GIF89a"), None);
        assert_eq!(sniff_image(b""), None);
    }

    #[test]
    fn request_hash_changes_with_every_field() {
        let base = CreateRequest {
            prompt: "a cat".into(),
            ..Default::default()
        };
        let h = request_hash(&base);
        assert_eq!(h, request_hash(&base.clone()));
        let variants = [
            CreateRequest {
                prompt: "a dog".into(),
                ..base.clone()
            },
            CreateRequest {
                preset: Some("pro".into()),
                ..base.clone()
            },
            CreateRequest {
                seconds: Some("8".into()),
                ..base.clone()
            },
            CreateRequest {
                metadata: [("a".to_string(), "b".to_string())].into(),
                ..base.clone()
            },
            CreateRequest {
                input_reference: Some(UploadedImage {
                    filename: None,
                    data: Bytes::from_static(b"x"),
                }),
                ..base.clone()
            },
        ];
        for v in variants {
            assert_ne!(request_hash(&v), h, "{v:?}");
        }
        // Field boundaries are unambiguous.
        let a = CreateRequest {
            model: Some("ab".into()),
            size: Some("c".into()),
            ..base.clone()
        };
        let b = CreateRequest {
            model: Some("a".into()),
            size: Some("bc".into()),
            ..base
        };
        assert_ne!(request_hash(&a), request_hash(&b));
    }

    #[test]
    fn metadata_limits_are_enforced() {
        let many: BTreeMap<_, _> = (0..17).map(|i| (i.to_string(), String::new())).collect();
        assert!(validate_metadata(&many).is_err());
        assert!(validate_metadata(&[("".to_string(), "x".to_string())].into()).is_err());
        assert!(validate_metadata(&[("k".to_string(), "v".repeat(513))].into()).is_err());
        assert!(validate_metadata(&[("k".to_string(), "v".repeat(512))].into()).is_ok());
    }
}

//! The use cases and workers over a real (SQLite) store and in-memory blob storage, with the
//! provider mocked, driven one step at a time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sora_core::{JobId, OwnerId, Variant, VideoId};
use sora_openai::{
    Backoff, Content, CreateVideo, DeletedVideo, ListQuery, MockVideoProvider, ProviderError,
    RemixVideo, Video, VideoPage, VideoProvider, VideoStatus,
};
use sora_service::{CreateRequest, ServiceConfig, UpstreamOutcome, VideoService, Workers};
use sora_store::{BlobStore, JobStore, SqliteStore};

fn alice() -> OwnerId {
    "alice".parse().unwrap()
}

fn vid(s: &str) -> VideoId {
    s.parse().unwrap()
}

fn config() -> ServiceConfig {
    let mut cfg = ServiceConfig::new("test-worker");
    cfg.backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(5)).with_jitter(0.0);
    cfg.poll = sora_service::PollSchedule::with_base(Duration::ZERO);
    cfg
}

async fn service_with(provider: impl VideoProvider + 'static, cfg: ServiceConfig) -> VideoService {
    service_over(Arc::new(provider), cfg).await
}

async fn service_over(provider: Arc<dyn VideoProvider>, cfg: ServiceConfig) -> VideoService {
    let store: Arc<dyn JobStore> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let blobs = Arc::new(BlobStore::from_url("memory://").unwrap());
    VideoService::new(store, provider, blobs, cfg)
}

fn request(prompt: &str) -> CreateRequest {
    CreateRequest {
        prompt: prompt.into(),
        preset: Some("draft".into()),
        ..Default::default()
    }
}

fn video(id: &str, status: VideoStatus, progress: u8) -> Video {
    let mut v = Video::new(vid(id), status);
    v.progress = Some(progress);
    v
}

fn content(bytes: &'static [u8], ct: &str) -> Content {
    Content {
        content_type: Some(ct.into()),
        content_length: Some(bytes.len() as u64),
        stream: futures::stream::iter([Ok(Bytes::from_static(bytes))]).boxed(),
    }
}

async fn status_of(service: &VideoService, id: JobId) -> sora_core::Job {
    service.get(&alice(), id).await.unwrap().job
}

#[tokio::test]
async fn workers_take_a_job_from_pending_to_completed_one_step_at_a_time() {
    let mut p = MockVideoProvider::new();
    p.expect_create()
        .times(1)
        .withf(|r: &CreateVideo| {
            r.prompt == "a cat"
                && r.model.as_deref() == Some("sora-2")
                && r.seconds.as_deref() == Some("4")
        })
        .returning(|_| Ok(video("video_1", VideoStatus::Queued, 0)));
    let mut polls = 0;
    p.expect_retrieve().times(2).returning(move |_| {
        polls += 1;
        Ok(if polls == 1 {
            video("video_1", VideoStatus::InProgress, 40)
        } else {
            video("video_1", VideoStatus::Completed, 100)
        })
    });
    p.expect_download()
        .times(3)
        .returning(|_, variant| match variant {
            Variant::Video => Ok(content(b"mp4 bytes", "video/mp4")),
            Variant::Thumbnail => Ok(content(b"webp", "image/webp")),
            Variant::Spritesheet => Err(ProviderError::NotFound {
                message: "no spritesheet".into(),
                request_id: None,
            }),
        });
    let service = service_with(p, config()).await;
    let workers = Workers::new(service.clone());
    let created = service
        .create(&alice(), request("a cat"), None)
        .await
        .unwrap();
    let id = created.job.id();
    assert_eq!(status_of(&service, id).await.status().as_str(), "pending");

    assert_eq!(workers.submit_once().await.unwrap(), 1);
    assert_eq!(status_of(&service, id).await.status().as_str(), "queued");
    assert_eq!(workers.poll_once().await.unwrap(), 1);
    let job = status_of(&service, id).await;
    assert_eq!((job.status().as_str(), job.progress()), ("in_progress", 40));
    assert_eq!(workers.poll_once().await.unwrap(), 1);
    assert_eq!(status_of(&service, id).await.status().as_str(), "archiving");
    assert_eq!(workers.archive_once().await.unwrap(), 1);
    let job = status_of(&service, id).await;
    assert_eq!(job.status().as_str(), "completed");
    let files = job.artifacts().unwrap();
    assert!(files.thumbnail.is_some());
    assert!(
        files.spritesheet.is_none(),
        "an optional variant the provider lacks is skipped"
    );

    let file = service
        .find_file(Some(&alice()), id, Variant::Video)
        .await
        .unwrap();
    let read = service.open_file(id, &file, Some(4..9)).await.unwrap();
    let body: Vec<Bytes> = read.stream.map(|c| c.unwrap()).collect().await;
    assert_eq!(body.concat(), b"bytes");
    // Nothing is left to do.
    assert_eq!(workers.run_until_idle(5).await.unwrap(), 0);
}

#[tokio::test]
async fn a_rate_limited_submit_waits_and_a_bad_key_is_retried_not_failed() {
    let mut p = MockVideoProvider::new();
    let mut calls = 0;
    p.expect_create().times(3).returning(move |_| {
        calls += 1;
        match calls {
            1 => Err(ProviderError::RateLimited {
                retry_after: Some(Duration::from_millis(20)),
                request_id: Some("req_1".into()),
            }),
            2 => Err(ProviderError::Unauthorized {
                status: 401,
                message: "bad key".into(),
                request_id: None,
            }),
            _ => Ok(video("video_9", VideoStatus::Queued, 0)),
        }
    });
    // Each retry first looks for a video an earlier attempt may have made: there is none.
    p.expect_list().times(2).returning(|_| {
        Ok(VideoPage {
            data: vec![],
            first_id: None,
            last_id: None,
            has_more: false,
        })
    });
    let service = service_with(p, config()).await;
    let workers = Workers::new(service.clone());
    let id = service
        .create(&alice(), request("x"), None)
        .await
        .unwrap()
        .job
        .id();
    assert_eq!(workers.submit_once().await.unwrap(), 1);
    // Not due again until Retry-After has passed.
    assert_eq!(workers.submit_once().await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(workers.submit_once().await.unwrap(), 1);
    assert_eq!(status_of(&service, id).await.status().as_str(), "pending");
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(workers.submit_once().await.unwrap(), 1);
    assert_eq!(status_of(&service, id).await.status().as_str(), "queued");
}

#[tokio::test]
async fn an_invalid_request_fails_the_job_with_the_providers_message() {
    let mut p = MockVideoProvider::new();
    p.expect_create().times(1).returning(|_| {
        Err(ProviderError::InvalidRequest {
            code: Some("invalid_size".into()),
            param: Some("size".into()),
            message: "size is not supported for this model".into(),
            request_id: None,
        })
    });
    let service = service_with(p, config()).await;
    let workers = Workers::new(service.clone());
    let id = service
        .create(&alice(), request("x"), None)
        .await
        .unwrap()
        .job
        .id();
    workers.run_until_idle(5).await.unwrap();
    let job = status_of(&service, id).await;
    let error = job.error().unwrap();
    assert_eq!(error.code.as_str(), "invalid_request");
    assert!(
        error.message.contains("size is not supported"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_job_the_provider_forgot_fails_as_cancelled_upstream() {
    let mut p = MockVideoProvider::new();
    p.expect_create()
        .returning(|_| Ok(video("video_2", VideoStatus::InProgress, 5)));
    p.expect_retrieve().returning(|_| {
        Err(ProviderError::NotFound {
            message: "no such video".into(),
            request_id: None,
        })
    });
    let service = service_with(p, config()).await;
    let workers = Workers::new(service.clone());
    let id = service
        .create(&alice(), request("x"), None)
        .await
        .unwrap()
        .job
        .id();
    workers.run_until_idle(5).await.unwrap();
    assert_eq!(
        status_of(&service, id).await.error().unwrap().code.as_str(),
        "cancelled_upstream"
    );
}

#[tokio::test]
async fn retention_deletes_old_files_and_the_job_says_so() {
    let mut p = MockVideoProvider::new();
    p.expect_create()
        .returning(|_| Ok(video("video_3", VideoStatus::Completed, 100)));
    p.expect_download().returning(|_, variant| match variant {
        Variant::Video => Ok(content(b"v", "video/mp4")),
        _ => Err(ProviderError::NotFound {
            message: "none".into(),
            request_id: None,
        }),
    });
    let mut cfg = config();
    cfg.retention = Some(Duration::ZERO);
    let service = service_with(p, cfg).await;
    let workers = Workers::new(service.clone());
    let id = service
        .create(&alice(), request("x"), None)
        .await
        .unwrap()
        .job
        .id();
    workers.run_until_idle(5).await.unwrap();
    assert_eq!(status_of(&service, id).await.status().as_str(), "completed");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(workers.retention_once().await.unwrap(), 1);
    assert!(service.get(&alice(), id).await.unwrap().files_deleted);
    let file = service
        .find_file(Some(&alice()), id, Variant::Video)
        .await
        .unwrap();
    assert!(matches!(
        service.open_file(id, &file, None).await,
        Err(sora_service::ServiceError::Gone(_))
    ));
    assert_eq!(workers.retention_once().await.unwrap(), 0, "purged once");
}

/// A provider whose create waits for the test's go-ahead, and which records deletions.
#[derive(Default)]
struct GatedProvider {
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
    deleted: Mutex<Vec<String>>,
}

#[async_trait]
impl VideoProvider for GatedProvider {
    async fn create(&self, _: CreateVideo) -> Result<Video, ProviderError> {
        self.entered.notify_one();
        self.release.notified().await;
        Ok(video("video_gated", VideoStatus::Queued, 0))
    }
    async fn retrieve(&self, id: &VideoId) -> Result<Video, ProviderError> {
        Ok(Video::new(id.clone(), VideoStatus::InProgress))
    }
    async fn list(&self, _: ListQuery) -> Result<VideoPage, ProviderError> {
        unreachable!("not used")
    }
    async fn delete(&self, id: &VideoId) -> Result<DeletedVideo, ProviderError> {
        self.deleted.lock().unwrap().push(id.to_string());
        Ok(DeletedVideo {
            id: id.to_string(),
            deleted: true,
        })
    }
    async fn remix(&self, _: &VideoId, _: RemixVideo) -> Result<Video, ProviderError> {
        unreachable!("not used")
    }
    async fn download(&self, _: &VideoId, _: Variant) -> Result<Content, ProviderError> {
        unreachable!("not used")
    }
}

#[tokio::test]
async fn cancelling_during_submission_deletes_the_copy_the_provider_just_made() {
    let provider = Arc::new(GatedProvider::default());
    let service = service_over(provider.clone(), config()).await;
    let workers = Workers::new(service.clone());
    let id = service
        .create(&alice(), request("x"), None)
        .await
        .unwrap()
        .job
        .id();

    let submit = tokio::spawn({
        let workers = workers.clone();
        async move { workers.submit_once().await }
    });
    provider.entered.notified().await;
    // The job is not at the provider yet as far as we know: cancelling says so.
    let cancelled = service.cancel(&alice(), id).await.unwrap();
    assert!(cancelled.cancelled_now);
    assert_eq!(cancelled.upstream, UpstreamOutcome::NotSubmitted);
    provider.release.notify_one();
    submit.await.unwrap().unwrap();

    assert_eq!(status_of(&service, id).await.status().as_str(), "cancelled");
    assert_eq!(
        *provider.deleted.lock().unwrap(),
        vec!["video_gated".to_string()]
    );
}

#[tokio::test]
async fn the_idempotency_key_replays_the_first_job_and_refuses_another_request() {
    let service = service_with(MockVideoProvider::new(), config()).await;
    let first = service
        .create(&alice(), request("same"), Some("k1"))
        .await
        .unwrap();
    let again = service
        .create(&alice(), request("same"), Some("k1"))
        .await
        .unwrap();
    assert!(!first.replayed);
    assert!(again.replayed);
    assert_eq!(again.job.id(), first.job.id());
    assert!(matches!(
        service.create(&alice(), request("other"), Some("k1")).await,
        Err(sora_service::ServiceError::IdempotencyConflict(id)) if id == first.job.id()
    ));
    assert!(matches!(
        service
            .create(&alice(), request("x"), Some("bad key\n"))
            .await,
        Err(sora_service::ServiceError::Invalid {
            field: "Idempotency-Key",
            ..
        })
    ));
}

#[tokio::test]
async fn a_create_that_timed_out_but_reached_the_provider_is_adopted_not_paid_twice() {
    let mut p = MockVideoProvider::new();
    // The first create reaches the provider, but the answer is lost.
    p.expect_create()
        .times(1)
        .returning(|_| Err(ProviderError::Timeout));
    // On the retry, the provider's list shows the video that create made.
    p.expect_list().times(1).returning(|_| {
        let mut v = video("video_orphan", VideoStatus::InProgress, 10);
        v.prompt = Some("lost answer".into());
        v.model = Some("sora-2".into());
        v.size = Some("1280x720".into());
        v.seconds = Some("4".into());
        let mut other = video("video_other", VideoStatus::Queued, 0);
        other.prompt = Some("someone else's prompt".into());
        Ok(VideoPage {
            data: vec![other, v],
            first_id: None,
            last_id: None,
            has_more: false,
        })
    });
    let service = service_with(p, config()).await;
    let workers = Workers::new(service.clone());
    let id = service
        .create(&alice(), request("lost answer"), None)
        .await
        .unwrap()
        .job
        .id();
    assert_eq!(workers.submit_once().await.unwrap(), 1);
    assert_eq!(status_of(&service, id).await.status().as_str(), "pending");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(workers.submit_once().await.unwrap(), 1);
    let job = status_of(&service, id).await;
    assert_eq!(job.video_id().map(|v| v.as_str()), Some("video_orphan"));
    assert_eq!(job.status().as_str(), "in_progress");
}

#[tokio::test]
async fn a_job_that_fails_leaves_no_upload_behind() {
    let mut p = MockVideoProvider::new();
    p.expect_create().returning(|_| {
        Err(ProviderError::QuotaExhausted {
            message: "billing limit".into(),
            request_id: None,
        })
    });
    let service = service_with(p, config()).await;
    let workers = Workers::new(service.clone());
    let png = Bytes::from_static(b"\x89PNG\r\n\x1a\nrest-of-a-png");
    let req = CreateRequest {
        input_reference: Some(sora_service::UploadedImage {
            filename: Some("a.png".into()),
            data: png,
        }),
        ..request("with an image")
    };
    let job = service.create(&alice(), req, None).await.unwrap().job;
    let key = job.request().input_reference.as_ref().unwrap().key.clone();
    assert!(service.blobs().head(&key).await.unwrap().is_some());
    workers.run_until_idle(5).await.unwrap();
    assert_eq!(
        status_of(&service, job.id())
            .await
            .error()
            .unwrap()
            .code
            .as_str(),
        "quota_exhausted"
    );
    assert!(
        service.blobs().head(&key).await.unwrap().is_none(),
        "the upload is deleted"
    );
}

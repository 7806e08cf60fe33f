//! The background workers: submitter, poller, archiver, deadline and retention.
//!
//! Each worker claims jobs through store leases, so several processes can run them against one
//! database and no job is worked on twice at once. Each has a `*_once` step that tests drive
//! directly; [`Workers::spawn`] runs them all in loops until shut down.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use sora_core::{
    Artifacts, FailureCode, Job, JobError, JobEvent, JobStatus, ProviderReport, ProviderStatus,
    StoredFile, Variant,
};
use sora_openai::{
    CreateVideo, InputImage, ListOrder, ListQuery, ProviderError, RemixVideo, Video,
};
use sora_store::{Claimed, Lease, SaveJob, StoreError, Work};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::service::VideoService;

/// How often the deadline worker looks for overdue jobs.
const DEADLINE_TICK: Duration = Duration::from_secs(15);
/// How often the retention worker looks for old files.
const RETENTION_TICK: Duration = Duration::from_secs(300);
/// How long a worker whose step failed (the database is down, say) waits before trying again.
const ERROR_PAUSE: Duration = Duration::from_secs(2);

/// The background workers of one process.
#[derive(Debug, Clone)]
pub struct Workers {
    service: VideoService,
}

/// The running workers; [`WorkersHandle::shutdown`] stops them and releases their leases.
#[derive(Debug)]
pub struct WorkersHandle {
    tasks: JoinSet<()>,
    shutdown: CancellationToken,
    service: VideoService,
}

impl WorkersHandle {
    /// Stops every worker after its current step, then gives back the leases this process
    /// still holds so another instance can take the jobs at once.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        let worker = &self.service.inner.config.worker_id;
        match self.service.inner.store.release_all(worker).await {
            Ok(n) if n > 0 => tracing::info!(released = n, "released leases at shutdown"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not release leases at shutdown"),
        }
    }
}

impl Workers {
    /// Workers for this service.
    pub fn new(service: VideoService) -> Self {
        Self { service }
    }

    /// Runs every worker in its own task until `shutdown` is cancelled or
    /// [`WorkersHandle::shutdown`] is called.
    pub fn spawn(&self, shutdown: CancellationToken) -> WorkersHandle {
        let mut tasks = JoinSet::new();
        let tick = self.service.inner.config.idle_tick;
        let kinds: [(&'static str, Duration); 5] = [
            ("submitter", tick),
            ("poller", tick),
            ("archiver", tick),
            ("deadline", DEADLINE_TICK),
            ("retention", RETENTION_TICK),
        ];
        for (name, every) in kinds {
            let workers = self.clone();
            let token = shutdown.clone();
            tasks.spawn(async move { workers.run_loop(name, every, token).await });
        }
        WorkersHandle {
            tasks,
            shutdown,
            service: self.service.clone(),
        }
    }

    async fn run_loop(&self, name: &'static str, every: Duration, shutdown: CancellationToken) {
        let nudges = &self.service.inner.nudges;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let step = match name {
                "submitter" => self.submit_once().await,
                "poller" => self.poll_once().await,
                "archiver" => self.archive_once().await,
                "deadline" => self.deadline_once().await,
                _ => self.retention_once().await,
            };
            let pause = match step {
                // There may be more: go again at once.
                Ok(n) if n > 0 => continue,
                Ok(_) => every,
                Err(e) => {
                    tracing::error!(worker = name, error = %e, "worker step failed");
                    ERROR_PAUSE
                }
            };
            let nudge = async {
                match name {
                    "submitter" => nudges.submit.notified().await,
                    "poller" => nudges.poll.notified().await,
                    "archiver" => nudges.archive.notified().await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
                _ = nudge => {}
            }
        }
    }

    /// Runs every worker step until none finds anything to do (at most `max_rounds` rounds).
    /// Returns the number of jobs worked on. For tests and tools.
    pub async fn run_until_idle(&self, max_rounds: usize) -> Result<usize, StoreError> {
        let mut total = 0;
        for _ in 0..max_rounds {
            let n = self.submit_once().await?
                + self.poll_once().await?
                + self.archive_once().await?
                + self.deadline_once().await?;
            if n == 0 {
                break;
            }
            total += n;
        }
        Ok(total)
    }

    fn lease_for(&self) -> Duration {
        self.service.inner.config.lease_for
    }

    /// Claims up to `limit` jobs of one kind and works on them concurrently. Returns how many
    /// it claimed.
    async fn claim_and_run<'a, F, Fut>(
        &'a self,
        work: Work,
        limit: u32,
        label: &'static str,
        step: F,
    ) -> Result<usize, StoreError>
    where
        F: Fn(Claimed) -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>> + 'a,
    {
        let inner = &self.service.inner;
        let claimed = inner
            .store
            .claim(
                work,
                &inner.config.worker_id,
                limit,
                self.lease_for(),
                Utc::now(),
            )
            .await?;
        let n = claimed.len();
        futures::stream::iter(claimed)
            .for_each_concurrent(None, |c| {
                let id = c.job.id();
                let fut = step(c);
                async move {
                    if let Err(e) = fut.await {
                        tracing::warn!(job_id = %id, error = %e, "{label} step failed");
                    }
                }
            })
            .await;
        Ok(n)
    }

    fn retry_at(&self, attempts: u32, err: &ProviderError) -> DateTime<Utc> {
        let delay = self
            .service
            .inner
            .config
            .backoff
            .delay(attempts, err.retry_after());
        Utc::now() + delay
    }

    /// Submits pending jobs to the provider, within the cap on jobs active there. Returns how
    /// many jobs it worked on.
    pub async fn submit_once(&self) -> Result<usize, StoreError> {
        let inner = &self.service.inner;
        let cfg = &inner.config;
        let active = inner.store.count_active().await?;
        if active >= cfg.max_active_jobs {
            return Ok(0);
        }
        let room = (cfg.max_active_jobs - active).min(u64::from(cfg.batch_size)) as u32;
        self.claim_and_run(Work::Submit, room, "submit", |c| self.submit_one(c))
            .await
    }

    async fn submit_one(&self, claimed: Claimed) -> Result<(), StoreError> {
        let inner = &self.service.inner;
        let Claimed {
            mut job,
            lease,
            attempts,
            ..
        } = claimed;
        let version = job.version();
        let request = job.request().clone();
        // An earlier attempt may have reached the provider although we saw an error (a
        // timeout, a dropped connection): adopt its video rather than paying twice.
        if attempts > 0
            && let Some(video) = self.find_earlier_submission(&job).await
        {
            tracing::info!(job_id = %job.id(), video_id = %video.id, "adopting a video an earlier attempt created");
            return self.record_submission(job, version, &lease, video).await;
        }
        let result = match &request.remix_of {
            Some(remix) => {
                inner
                    .provider
                    .remix(
                        &remix.video_id,
                        RemixVideo {
                            prompt: request.prompt.as_str().to_owned(),
                        },
                    )
                    .await
            }
            None => {
                let input_reference = match &request.input_reference {
                    None => None,
                    Some(r) => Some(InputImage {
                        filename: format!("input.{}", extension(&r.content_type)),
                        content_type: r.content_type.clone(),
                        data: self.read_small_blob(&r.key).await?,
                    }),
                };
                inner
                    .provider
                    .create(CreateVideo {
                        prompt: request.prompt.as_str().to_owned(),
                        model: Some(request.spec.model.clone()),
                        size: Some(request.spec.size.to_string()),
                        seconds: Some(request.spec.seconds.to_string()),
                        input_reference,
                    })
                    .await
            }
        };
        let now = Utc::now();
        match result {
            Ok(video) => self.record_submission(job, version, &lease, video).await,
            Err(err) if is_permanent_submit_error(&err) => {
                let error = match (&err, &request.remix_of) {
                    (ProviderError::NotFound { .. }, Some(_)) => JobError::new(
                        FailureCode::InvalidRequest,
                        "The video to remix no longer exists at the provider",
                    ),
                    _ => err.to_job_error(),
                };
                tracing::info!(job_id = %job.id(), code = %error.code, "the provider refused the job");
                let _ = job.apply(&JobEvent::SubmitRejected(error), now);
                self.save_leased(&job, version, &lease, None).await
            }
            Err(err) => {
                tracing::warn!(job_id = %job.id(), attempts, error = %err, "submit failed; will retry");
                inner
                    .store
                    .release(&lease, self.retry_at(attempts, &err), true)
                    .await
            }
        }
    }

    /// Records the provider's acceptance. If the job changed meanwhile (its owner cancelled it,
    /// or our lease ran out and another worker submitted it too), the provider's copy we just
    /// made is deleted, so that a job is generated once.
    async fn record_submission(
        &self,
        mut job: Job,
        version: u64,
        lease: &Lease,
        video: Video,
    ) -> Result<(), StoreError> {
        let inner = &self.service.inner;
        let now = Utc::now();
        let _ = job.apply(
            &JobEvent::Submitted {
                video_id: video.id.clone(),
            },
            now,
        );
        let _ = job.apply(&JobEvent::ProviderReported(video.to_report()), now);
        let next = now + inner.config.poll.interval(0);
        let save = SaveJob {
            lease: Some(lease),
            next_run_at: Some(next),
            release_lease: true,
            reset_attempts: true,
            ..SaveJob::default()
        };
        let outcome = match inner.store.save_job(&job, version, save).await {
            Err(StoreError::LeaseLost { .. }) => {
                // Our lease ran out while the provider answered. Nobody has recorded a
                // submission if the version is unchanged, so record ours (fenced on the
                // version alone); a competing submitter will then find a conflict and delete
                // its own copy.
                tracing::warn!(job_id = %job.id(), "lease lost during submission");
                let save = SaveJob {
                    next_run_at: Some(next),
                    ..SaveJob::default()
                };
                inner.store.save_job(&job, version, save).await
            }
            other => other,
        };
        match outcome {
            Ok(()) => {
                if let Some(r) = &job.request().input_reference {
                    // The provider has the image now; our copy is no longer needed.
                    let _ = inner.blobs.delete(&r.key).await;
                }
                if job.status() == JobStatus::Archiving {
                    inner.nudges.archive.notify_one();
                }
                Ok(())
            }
            Err(StoreError::Conflict { .. }) => {
                let current = inner.store.get_job(job.id(), None).await?;
                let ours_kept = current
                    .as_ref()
                    .and_then(|j| j.video_id())
                    .is_some_and(|v| *v == video.id);
                if !ours_kept {
                    tracing::info!(job_id = %job.id(), video_id = %video.id, "job changed during submission; deleting the provider's copy");
                    if let Err(e) = inner.provider.delete(&video.id).await {
                        tracing::warn!(video_id = %video.id, error = %e, "could not delete an unneeded provider job");
                    }
                }
                let _ = inner.store.release(lease, now, false).await;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// A video at the provider that matches this job and that no job has recorded: what an
    /// earlier, seemingly failed create of this job made. Looks at the provider's newest
    /// videos only; any error means "none found".
    async fn find_earlier_submission(&self, job: &Job) -> Option<Video> {
        let inner = &self.service.inner;
        let page = inner
            .provider
            .list(ListQuery {
                limit: Some(100),
                order: Some(ListOrder::Desc),
                after: None,
            })
            .await
            .ok()?;
        let request = job.request();
        let size = request.spec.size.to_string();
        let seconds = request.spec.seconds.to_string();
        // The provider's clock may differ from ours a little.
        let since = job.created_at().timestamp() - 300;
        for video in page.data {
            let matches = video.prompt.as_deref() == Some(request.prompt.as_str())
                && video
                    .model
                    .as_deref()
                    .is_none_or(|m| m == request.spec.model)
                && video.size.as_deref().is_none_or(|s| s == size)
                && video.seconds.as_deref().is_none_or(|s| s == seconds)
                && video.created_at.is_none_or(|t| t >= since)
                && match &request.remix_of {
                    Some(r) => video.remixed_from_video_id.as_deref() == Some(r.video_id.as_str()),
                    None => video.remixed_from_video_id.is_none(),
                };
            if matches && matches!(inner.store.get_job_by_video(&video.id).await, Ok(None)) {
                return Some(video);
            }
        }
        None
    }

    async fn read_small_blob(&self, key: &str) -> Result<Bytes, StoreError> {
        let read = self.service.inner.blobs.get(key, None).await?;
        let mut buf = BytesMut::with_capacity(read.meta.size as usize);
        let mut stream = read.stream;
        while let Some(chunk) = stream.try_next().await? {
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    async fn save_leased(
        &self,
        job: &Job,
        version: u64,
        lease: &Lease,
        next_run_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        if matches!(job.status(), JobStatus::Failed | JobStatus::Cancelled) {
            self.service.discard_files(job).await;
        }
        let save = SaveJob {
            lease: Some(lease),
            next_run_at,
            release_lease: true,
            reset_attempts: true,
            ..SaveJob::default()
        };
        match self.service.inner.store.save_job(job, version, save).await {
            // Someone else changed the job (a cancel, a webhook-driven poll): they win, and the
            // next step re-reads it.
            Err(StoreError::Conflict { .. } | StoreError::LeaseLost { .. }) => {
                tracing::debug!(job_id = %job.id(), "job changed under a worker; dropping its write");
                let _ = self
                    .service
                    .inner
                    .store
                    .release(lease, Utc::now(), false)
                    .await;
                Ok(())
            }
            other => other,
        }
    }

    /// Reads active jobs from the provider and applies what it says. Returns how many jobs it
    /// polled.
    pub async fn poll_once(&self) -> Result<usize, StoreError> {
        let batch = self.service.inner.config.batch_size;
        self.claim_and_run(Work::Poll, batch, "poll", |c| self.poll_one(c))
            .await
    }

    async fn poll_one(&self, claimed: Claimed) -> Result<(), StoreError> {
        let inner = &self.service.inner;
        let Claimed {
            mut job,
            lease,
            attempts,
            polls,
        } = claimed;
        let version = job.version();
        let Some(video_id) = job.video_id().cloned() else {
            // Cannot happen for a consistent job (restore checks it); leave it for the deadline.
            return inner
                .store
                .release(&lease, Utc::now() + inner.config.poll.max, false)
                .await;
        };
        let now = Utc::now();
        let report = match inner.provider.retrieve(&video_id).await {
            Ok(video) => video.to_report(),
            Err(ProviderError::NotFound { .. }) => ProviderReport {
                status: ProviderStatus::Failed(JobError::new(
                    FailureCode::CancelledUpstream,
                    "The provider no longer has this job: it was deleted or cancelled there",
                )),
                progress: None,
                expires_at: None,
            },
            Err(err) => {
                tracing::warn!(job_id = %job.id(), error = %err, "poll failed; will retry");
                return inner
                    .store
                    .release(&lease, self.retry_at(attempts, &err), true)
                    .await;
            }
        };
        let next = now + inner.config.poll.interval(polls.saturating_add(1));
        if job
            .apply(&JobEvent::ProviderReported(report), now)
            .is_changed()
        {
            let archiving = job.status() == JobStatus::Archiving;
            let next = if archiving { now } else { next };
            self.save_leased(&job, version, &lease, Some(next)).await?;
            if archiving {
                inner.nudges.archive.notify_one();
            }
            Ok(())
        } else {
            inner.store.release(&lease, next, false).await
        }
    }

    /// Copies the files of jobs the provider finished into our storage, then completes them.
    /// Returns how many jobs it worked on.
    pub async fn archive_once(&self) -> Result<usize, StoreError> {
        let batch = self.service.inner.config.batch_size;
        self.claim_and_run(Work::Archive, batch, "archive", |c| self.archive_one(c))
            .await
    }

    async fn archive_one(&self, claimed: Claimed) -> Result<(), StoreError> {
        let inner = &self.service.inner;
        let Claimed {
            mut job,
            mut lease,
            attempts,
            ..
        } = claimed;
        let version = job.version();
        let Some(video_id) = job.video_id().cloned() else {
            return inner
                .store
                .release(&lease, Utc::now() + inner.config.poll.max, false)
                .await;
        };
        let mut files: BTreeMap<Variant, StoredFile> = BTreeMap::new();
        for variant in Variant::ALL {
            let content = match inner.provider.download(&video_id, variant).await {
                Ok(content) => content,
                Err(ProviderError::NotFound { .. } | ProviderError::ContentNotReady { .. })
                    if variant != Variant::Video =>
                {
                    // The provider need not offer a thumbnail or a spritesheet.
                    continue;
                }
                Err(ProviderError::NotFound { .. }) => {
                    return self.fail_archive(job, version, &lease).await;
                }
                Err(ProviderError::ContentNotReady { .. })
                    if attempts >= inner.config.archive_not_ready_retries
                        || job
                            .state()
                            .provider_expires_at
                            .is_some_and(|at| at <= Utc::now()) =>
                {
                    return self.fail_archive(job, version, &lease).await;
                }
                Err(err) => {
                    tracing::warn!(job_id = %job.id(), %variant, error = %err, "download failed; will retry");
                    return inner
                        .store
                        .release(&lease, self.retry_at(attempts, &err), true)
                        .await;
                }
            };
            let key = crate::service::file_key(job.id(), variant);
            let content_type = content
                .content_type
                .clone()
                .filter(|ct| !ct.is_empty() && ct != "application/octet-stream")
                .unwrap_or_else(|| variant.default_content_type().to_owned());
            let stream = content.stream.map_err(std::io::Error::other);
            match inner.blobs.put_stream(&key, stream, &content_type).await {
                Ok(meta) => {
                    files.insert(
                        variant,
                        StoredFile {
                            key,
                            size: meta.size,
                            content_type,
                            etag: meta.etag,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(job_id = %job.id(), %variant, error = %e, "copying a file failed; will retry");
                    let delay = inner.config.backoff.delay(attempts, None);
                    return inner.store.release(&lease, Utc::now() + delay, true).await;
                }
            }
            // Long downloads must not lose the job to another archiver.
            lease = inner
                .store
                .renew(&lease, self.lease_for(), Utc::now())
                .await?;
        }
        let Some(video) = files.remove(&Variant::Video) else {
            return self.fail_archive(job, version, &lease).await;
        };
        let artifacts = Artifacts {
            video,
            thumbnail: files.remove(&Variant::Thumbnail),
            spritesheet: files.remove(&Variant::Spritesheet),
        };
        let _ = job.apply(&JobEvent::Archived(artifacts), Utc::now());
        self.save_leased(&job, version, &lease, None).await
    }

    async fn fail_archive(
        &self,
        mut job: Job,
        version: u64,
        lease: &Lease,
    ) -> Result<(), StoreError> {
        tracing::warn!(job_id = %job.id(), "the provider's copy is gone before it was archived");
        let error = JobError::new(
            FailureCode::ContentExpired,
            "The provider's copy of the video expired or was deleted before it could be copied",
        );
        let _ = job.apply(&JobEvent::ArchiveFailed(error), Utc::now());
        self.save_leased(&job, version, lease, None).await
    }

    /// Fails jobs that stayed active past the deadline with `timeout`, and asks the provider
    /// to drop them. Returns how many it failed.
    pub async fn deadline_once(&self) -> Result<usize, StoreError> {
        let inner = &self.service.inner;
        let deadline = inner.config.job_deadline;
        let cutoff = Utc::now() - deadline;
        let overdue = inner.store.overdue(cutoff, 100).await?;
        let mut failed = 0;
        for mut job in overdue {
            let version = job.version();
            if !job
                .apply(&JobEvent::TimedOut { after: deadline }, Utc::now())
                .is_changed()
            {
                continue;
            }
            match inner
                .store
                .save_job(&job, version, SaveJob::default())
                .await
            {
                Ok(()) => {
                    failed += 1;
                    tracing::warn!(job_id = %job.id(), "job timed out");
                    self.service.discard_files(&job).await;
                    if let Some(video_id) = job.video_id()
                        && let Err(e) = inner.provider.delete(video_id).await
                    {
                        tracing::debug!(%video_id, error = %e, "could not delete a timed-out job upstream");
                    }
                }
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(failed)
    }

    /// Deletes the files of jobs completed longer ago than the retention, and forgets old
    /// idempotency keys and webhook ids. Returns how many jobs' files it deleted.
    pub async fn retention_once(&self) -> Result<usize, StoreError> {
        let inner = &self.service.inner;
        let now = Utc::now();
        inner
            .store
            .purge_idempotency(now - inner.config.idempotency_ttl)
            .await?;
        inner
            .store
            .purge_webhooks(now - inner.config.webhook_ttl)
            .await?;
        let Some(retention) = inner.config.retention else {
            return Ok(0);
        };
        let jobs = inner.store.finished_before(now - retention, 100).await?;
        let n = jobs.len();
        for job in jobs {
            if let Some(artifacts) = job.artifacts() {
                for (_, file) in artifacts.iter() {
                    inner.blobs.delete(&file.key).await?;
                }
            }
            inner.store.mark_purged(job.id(), now).await?;
        }
        Ok(n)
    }
}

/// Errors that no retry will fix: the job fails with the provider's reason.
fn is_permanent_submit_error(err: &ProviderError) -> bool {
    match err {
        ProviderError::InvalidRequest { .. } | ProviderError::QuotaExhausted { .. } => true,
        // A remix of a video the provider no longer has.
        ProviderError::NotFound { .. } => true,
        // A bad key is the operator's to fix: keep retrying (slowly) until the deadline.
        ProviderError::Unauthorized { .. } => false,
        ProviderError::RateLimited { .. }
        | ProviderError::ContentNotReady { .. }
        | ProviderError::Upstream { .. }
        | ProviderError::Timeout
        | ProviderError::Connection { .. }
        | ProviderError::Decode { .. } => false,
    }
}

fn extension(content_type: &str) -> &'static str {
    match content_type {
        "image/png" => "png",
        "image/webp" => "webp",
        _ => "jpg",
    }
}

//! The `Job` aggregate and its state machine.
//!
//! A job changes only through [`Job::apply`], which takes a [`JobEvent`] and either moves the job
//! forward or leaves it as it is. Every rule is an exhaustive `match`: adding a state or an event
//! is a compile error until each rule says what happens to it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{JobId, OwnerId, VideoId};
use crate::prompt::Prompt;
use crate::spec::VideoSpec;

/// Where a job is in its life, as stored.
///
/// `Archiving` is internal: the provider has finished, and we are copying the files. The public
/// status ([`JobStatus::public`]) reports it as `in_progress`, so that `completed` always means
/// "downloadable".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobStatus {
    /// Persisted, not yet accepted by the provider.
    #[default]
    Pending,
    /// Accepted by the provider, waiting for a worker there.
    Queued,
    /// Being generated.
    InProgress,
    /// Generated; the files are being copied into our storage.
    Archiving,
    /// The files are in our storage and downloadable. Terminal.
    Completed,
    /// Ended without a video, with a [`JobError`]. Terminal.
    Failed,
    /// Cancelled by its owner. Terminal.
    Cancelled,
}

impl JobStatus {
    /// A sentence describing a job in this status, for people: what [`Job::message`] says of a
    /// job with this progress and error.
    pub fn describe(self, progress: u8, error: Option<&JobError>) -> String {
        match self {
            JobStatus::Pending => "Waiting to be sent to the provider".into(),
            JobStatus::Queued => "Queued at the provider".into(),
            JobStatus::InProgress => format!("Generating ({progress}%)"),
            JobStatus::Archiving => "Copying the finished video to storage".into(),
            JobStatus::Completed => "Ready for download".into(),
            JobStatus::Failed => error
                .map(|e| e.message.clone())
                .unwrap_or_else(|| "Failed".into()),
            JobStatus::Cancelled => "Cancelled".into(),
        }
    }

    /// Every status, in lifecycle order.
    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Queued,
        Self::InProgress,
        Self::Archiving,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The stored spelling (`pending`, `queued`, `in_progress`, `archiving`, `completed`,
    /// `failed`, `cancelled`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Archiving => "archiving",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the job can no longer change.
    pub fn is_terminal(self) -> bool {
        match self {
            Self::Pending | Self::Queued | Self::InProgress | Self::Archiving => false,
            Self::Completed | Self::Failed | Self::Cancelled => true,
        }
    }

    /// The status as callers see it.
    pub fn public(self) -> PublicStatus {
        match self {
            Self::Pending => PublicStatus::Pending,
            Self::Queued => PublicStatus::Queued,
            Self::InProgress | Self::Archiving => PublicStatus::InProgress,
            Self::Completed => PublicStatus::Completed,
            Self::Failed => PublicStatus::Failed,
            Self::Cancelled => PublicStatus::Cancelled,
        }
    }

    /// The position in the lifecycle: a job's rank never decreases. All terminal states share
    /// the highest rank.
    pub fn rank(self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::Queued => 1,
            Self::InProgress => 2,
            Self::Archiving => 3,
            Self::Completed | Self::Failed | Self::Cancelled => 4,
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown status spelling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status `{0}`")]
pub struct UnknownStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// The status a caller sees: [`JobStatus`] without the internal `archiving` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublicStatus {
    /// Persisted, not yet accepted by the provider.
    Pending,
    /// Accepted by the provider, waiting.
    Queued,
    /// Being generated, or being copied into our storage.
    InProgress,
    /// Downloadable.
    Completed,
    /// Ended without a video.
    Failed,
    /// Cancelled by its owner.
    Cancelled,
}

impl PublicStatus {
    /// Every public status.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Queued,
        Self::InProgress,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The stored statuses this public status stands for.
    pub fn stored(self) -> &'static [JobStatus] {
        match self {
            Self::Pending => &[JobStatus::Pending],
            Self::Queued => &[JobStatus::Queued],
            Self::InProgress => &[JobStatus::InProgress, JobStatus::Archiving],
            Self::Completed => &[JobStatus::Completed],
            Self::Failed => &[JobStatus::Failed],
            Self::Cancelled => &[JobStatus::Cancelled],
        }
    }
}

impl fmt::Display for PublicStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PublicStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Why a job failed: a closed set of machine-readable codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// The provider refused the request as invalid (bad parameters, unsupported input).
    InvalidRequest,
    /// The provider refused the prompt or the input under its content policy.
    ContentPolicy,
    /// The provider account's quota or billing limit is exhausted.
    QuotaExhausted,
    /// The provider failed the generation for another reason.
    ProviderError,
    /// The provider's copy of the files expired or vanished before we copied it.
    ContentExpired,
    /// The job stayed active past its deadline.
    Timeout,
    /// The provider cancelled or deleted the job on its side.
    CancelledUpstream,
}

impl FailureCode {
    /// Every code.
    pub const ALL: [Self; 7] = [
        Self::InvalidRequest,
        Self::ContentPolicy,
        Self::QuotaExhausted,
        Self::ProviderError,
        Self::ContentExpired,
        Self::Timeout,
        Self::CancelledUpstream,
    ];

    /// The wire and stored spelling, in `snake_case`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::ContentPolicy => "content_policy",
            Self::QuotaExhausted => "quota_exhausted",
            Self::ProviderError => "provider_error",
            Self::ContentExpired => "content_expired",
            Self::Timeout => "timeout",
            Self::CancelledUpstream => "cancelled_upstream",
        }
    }

    /// Our code for a failed generation, from the provider's free-form error code. The provider
    /// does not document its codes, so this recognises the usual words for policy and quota
    /// refusals and calls everything else a provider error.
    pub fn from_provider_code(code: Option<&str>) -> Self {
        let Some(code) = code else {
            return Self::ProviderError;
        };
        let code = code.to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| code.contains(w));
        if has(&["moderation", "policy", "safety", "blocked", "violation"]) {
            Self::ContentPolicy
        } else if has(&["quota", "billing"]) {
            Self::QuotaExhausted
        } else if has(&["invalid", "unsupported", "bad_request"]) {
            Self::InvalidRequest
        } else if has(&["expired"]) {
            Self::ContentExpired
        } else if has(&["cancel"]) {
            Self::CancelledUpstream
        } else {
            Self::ProviderError
        }
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailureCode {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Why a job failed: a code for machines and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobError {
    /// The machine-readable reason.
    pub code: FailureCode,
    /// A sentence for people.
    pub message: String,
}

impl JobError {
    /// An error from a code and a message.
    pub fn new(code: FailureCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// One of the files a finished generation has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// The MP4 video.
    Video,
    /// A WebP still.
    Thumbnail,
    /// A JPEG grid of frames.
    Spritesheet,
}

impl Variant {
    /// Every variant.
    pub const ALL: [Self; 3] = [Self::Video, Self::Thumbnail, Self::Spritesheet];

    /// The wire spelling (`video`, `thumbnail`, `spritesheet`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Video => "video",
            Self::Thumbnail => "thumbnail",
            Self::Spritesheet => "spritesheet",
        }
    }

    /// The media type the provider serves this variant as.
    pub fn default_content_type(self) -> &'static str {
        match self {
            Self::Video => "video/mp4",
            Self::Thumbnail => "image/webp",
            Self::Spritesheet => "image/jpeg",
        }
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Video => "mp4",
            Self::Thumbnail => "webp",
            Self::Spritesheet => "jpg",
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Variant {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// A file in our blob storage.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoredFile {
    /// Its key (path) in the blob store.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type.
    pub content_type: String,
    /// The blob store's entity tag, when it gives one.
    pub etag: Option<String>,
}

/// The files of a finished job, in our storage. The video is always there; the provider may
/// not offer the others.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Artifacts {
    /// The video.
    pub video: StoredFile,
    /// The thumbnail, if the provider had one.
    pub thumbnail: Option<StoredFile>,
    /// The spritesheet, if the provider had one.
    pub spritesheet: Option<StoredFile>,
}

impl Artifacts {
    /// The file of one variant, if there is one.
    pub fn get(&self, variant: Variant) -> Option<&StoredFile> {
        match variant {
            Variant::Video => Some(&self.video),
            Variant::Thumbnail => self.thumbnail.as_ref(),
            Variant::Spritesheet => self.spritesheet.as_ref(),
        }
    }

    /// Every file present, with its variant.
    pub fn iter(&self) -> impl Iterator<Item = (Variant, &StoredFile)> {
        Variant::ALL
            .into_iter()
            .filter_map(|v| self.get(v).map(|f| (v, f)))
    }
}

/// An uploaded image that becomes the first frame, kept in our blob storage until submission.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InputReference {
    /// Its key in the blob store.
    pub key: String,
    /// `image/jpeg`, `image/png` or `image/webp`.
    pub content_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The earlier job a remix starts from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RemixOf {
    /// Our id of the earlier job.
    pub job_id: JobId,
    /// The provider's id of its video.
    pub video_id: VideoId,
}

/// What a caller asked for, validated: everything a new job needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// Who the job belongs to.
    pub owner: OwnerId,
    /// What to generate.
    pub prompt: Prompt,
    /// Model, size and duration.
    pub spec: VideoSpec,
    /// The job this one remixes, if any.
    pub remix_of: Option<RemixOf>,
    /// The first-frame image, if any.
    pub input_reference: Option<InputReference>,
    /// The caller's own labels, returned as given.
    pub metadata: BTreeMap<String, String>,
}

/// What the provider reported about a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderStatus {
    /// Waiting at the provider.
    Queued,
    /// Being generated.
    InProgress,
    /// Generated; the files can be downloaded.
    Completed,
    /// Failed, with the reason mapped to our codes.
    Failed(JobError),
    /// A status this service does not know (a gateway's own spelling).
    Unknown(String),
}

/// One observation of the provider's job: from a retrieve, a create answer or a webhook-triggered
/// read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderReport {
    /// The status.
    pub status: ProviderStatus,
    /// The approximate percentage, when given (values above 100 are read as 100).
    pub progress: Option<u8>,
    /// When the provider's copy of the files expires, when given.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Something that happened to a job. Each is applied with [`Job::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    /// The provider accepted the job and gave it this id.
    Submitted {
        /// The provider's id.
        video_id: VideoId,
    },
    /// The provider reported the job's state.
    ProviderReported(ProviderReport),
    /// The finished files were copied into our storage.
    Archived(Artifacts),
    /// The provider refused to create the job, for good (not a retryable error).
    SubmitRejected(JobError),
    /// The finished files could not be copied, for good (for example, they expired).
    ArchiveFailed(JobError),
    /// The job stayed active longer than its deadline.
    TimedOut {
        /// The deadline that passed.
        after: Duration,
    },
    /// The owner cancelled the job.
    Cancelled,
}

/// The result of applying an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Applied {
    /// The job changed (its status, its progress or both) and its version went up by one.
    Changed {
        /// The status before.
        from: JobStatus,
        /// The status after (may equal `from` when only progress moved).
        to: JobStatus,
    },
    /// The event was a duplicate, stale, or not applicable in this state: nothing changed.
    Unchanged,
}

impl Applied {
    /// Whether the job changed.
    pub fn is_changed(self) -> bool {
        matches!(self, Self::Changed { .. })
    }
}

/// A job: the request, and where it is in its life.
///
/// The request fields never change. The state changes only through [`Job::apply`], so the
/// invariants hold for every `Job`: a terminal status never changes, progress never decreases,
/// the status only moves forward, a `completed` job has its files, a `failed` job has an error,
/// and every job past `pending` has a provider id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    id: JobId,
    request: NewJob,
    created_at: DateTime<Utc>,
    state: JobState,
}

/// The changing part of a job, as a store keeps it. Turn it back into a [`Job`] with
/// [`Job::restore`], which checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    /// The status.
    pub status: JobStatus,
    /// Percent done, 0 to 100.
    pub progress: u8,
    /// The provider's id, once submitted.
    pub video_id: Option<VideoId>,
    /// Why it failed, when failed.
    pub error: Option<JobError>,
    /// The files, when completed.
    pub artifacts: Option<Artifacts>,
    /// When the provider's copy of the files expires, when known.
    pub provider_expires_at: Option<DateTime<Utc>>,
    /// Goes up by one with every change; starts at 1.
    pub version: u64,
    /// When the state last changed.
    pub updated_at: DateTime<Utc>,
    /// When the provider accepted the job.
    pub submitted_at: Option<DateTime<Utc>>,
    /// When the job reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Why stored state does not make a valid job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inconsistent stored job: {0}")]
pub struct RestoreError(&'static str);

impl Job {
    /// A new job in `pending`, at version 1.
    pub fn new(id: JobId, request: NewJob, now: DateTime<Utc>) -> Self {
        Self {
            id,
            request,
            created_at: now,
            state: JobState {
                status: JobStatus::Pending,
                progress: 0,
                video_id: None,
                error: None,
                artifacts: None,
                provider_expires_at: None,
                version: 1,
                updated_at: now,
                submitted_at: None,
                finished_at: None,
            },
        }
    }

    /// A job from what a store kept, checked for consistency.
    pub fn restore(
        id: JobId,
        request: NewJob,
        created_at: DateTime<Utc>,
        state: JobState,
    ) -> Result<Self, RestoreError> {
        if state.progress > 100 {
            return Err(RestoreError("progress above 100"));
        }
        if state.version == 0 {
            return Err(RestoreError("version 0"));
        }
        match state.status {
            JobStatus::Pending => {}
            JobStatus::Queued | JobStatus::InProgress | JobStatus::Archiving => {
                if state.video_id.is_none() {
                    return Err(RestoreError("an active job without a provider id"));
                }
            }
            JobStatus::Completed => {
                if state.artifacts.is_none() {
                    return Err(RestoreError("a completed job without files"));
                }
                if state.video_id.is_none() {
                    return Err(RestoreError("a completed job without a provider id"));
                }
            }
            JobStatus::Failed => {
                if state.error.is_none() {
                    return Err(RestoreError("a failed job without an error"));
                }
            }
            JobStatus::Cancelled => {}
        }
        Ok(Self {
            id,
            request,
            created_at,
            state,
        })
    }

    /// Our id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// Who the job belongs to.
    pub fn owner(&self) -> &OwnerId {
        &self.request.owner
    }

    /// What was asked for.
    pub fn request(&self) -> &NewJob {
        &self.request
    }

    /// When the job was created.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// The changing part.
    pub fn state(&self) -> &JobState {
        &self.state
    }

    /// The stored status.
    pub fn status(&self) -> JobStatus {
        self.state.status
    }

    /// Percent done.
    pub fn progress(&self) -> u8 {
        self.state.progress
    }

    /// The version, for optimistic concurrency.
    pub fn version(&self) -> u64 {
        self.state.version
    }

    /// The provider's id, once submitted.
    pub fn video_id(&self) -> Option<&VideoId> {
        self.state.video_id.as_ref()
    }

    /// The error, when failed.
    pub fn error(&self) -> Option<&JobError> {
        self.state.error.as_ref()
    }

    /// The files, when completed.
    pub fn artifacts(&self) -> Option<&Artifacts> {
        self.state.artifacts.as_ref()
    }

    /// A sentence describing where the job is, for people.
    pub fn message(&self) -> String {
        self.state
            .status
            .describe(self.state.progress, self.state.error.as_ref())
    }

    /// Applies an event at time `now`. Never panics: an event that does not apply to the
    /// current state (a duplicate, a stale report, anything after a terminal state) leaves the
    /// job unchanged.
    pub fn apply(&mut self, event: &JobEvent, now: DateTime<Utc>) -> Applied {
        let from = self.state.status;
        let next = match from {
            JobStatus::Pending => match event {
                JobEvent::Submitted { video_id } => Some(Next {
                    status: JobStatus::Queued,
                    video_id: Some(video_id.clone()),
                    ..Next::default()
                }),
                // Without a provider id, a report cannot be about this job.
                JobEvent::ProviderReported(_) => None,
                JobEvent::Archived(_) => None,
                JobEvent::SubmitRejected(error) => Some(Next::failed(error.clone())),
                JobEvent::ArchiveFailed(_) => None,
                JobEvent::TimedOut { after } => Some(Next::timed_out(*after)),
                JobEvent::Cancelled => Some(Next::status(JobStatus::Cancelled)),
            },
            JobStatus::Queued | JobStatus::InProgress => match event {
                // Already submitted: a second acceptance is a duplicate (or a stray).
                JobEvent::Submitted { .. } => None,
                JobEvent::ProviderReported(report) => self.next_from_report(report),
                // Files cannot be archived before the provider has reported completion.
                JobEvent::Archived(_) => None,
                JobEvent::SubmitRejected(_) => None,
                JobEvent::ArchiveFailed(_) => None,
                JobEvent::TimedOut { after } => Some(Next::timed_out(*after)),
                JobEvent::Cancelled => Some(Next::status(JobStatus::Cancelled)),
            },
            JobStatus::Archiving => match event {
                JobEvent::Submitted { .. } => None,
                // The provider has finished: anything it says now is stale. In particular, a
                // late `failed` never overrides a completion.
                JobEvent::ProviderReported(_) => None,
                JobEvent::Archived(artifacts) => Some(Next {
                    status: JobStatus::Completed,
                    progress: Some(100),
                    artifacts: Some(artifacts.clone()),
                    ..Next::default()
                }),
                JobEvent::SubmitRejected(_) => None,
                JobEvent::ArchiveFailed(error) => Some(Next::failed(error.clone())),
                JobEvent::TimedOut { after } => Some(Next::timed_out(*after)),
                JobEvent::Cancelled => Some(Next::status(JobStatus::Cancelled)),
            },
            // Terminal states absorb every event.
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled => None,
        };
        match next {
            Some(next) => self.commit(from, next, now),
            None => Applied::Unchanged,
        }
    }

    fn next_from_report(&self, report: &ProviderReport) -> Option<Next> {
        let progress = report.progress.map(|p| p.min(100));
        let expires_at = report.expires_at;
        match &report.status {
            // A report of `queued` never moves a job back from `in_progress`.
            ProviderStatus::Queued | ProviderStatus::Unknown(_) => Some(Next {
                status: self.state.status,
                progress,
                expires_at,
                ..Next::default()
            }),
            ProviderStatus::InProgress => Some(Next {
                status: JobStatus::InProgress,
                progress,
                expires_at,
                ..Next::default()
            }),
            ProviderStatus::Completed => Some(Next {
                status: JobStatus::Archiving,
                progress: Some(100),
                expires_at,
                ..Next::default()
            }),
            ProviderStatus::Failed(error) => Some(Next::failed(error.clone())),
        }
    }

    fn commit(&mut self, from: JobStatus, next: Next, now: DateTime<Utc>) -> Applied {
        let s = &mut self.state;
        let progress = next.progress.map_or(s.progress, |p| p.max(s.progress));
        let expires_at = next.expires_at.or(s.provider_expires_at);
        let changed = next.status != s.status
            || progress != s.progress
            || expires_at != s.provider_expires_at;
        if !changed {
            return Applied::Unchanged;
        }
        s.status = next.status;
        s.progress = progress;
        s.provider_expires_at = expires_at;
        if let Some(video_id) = next.video_id {
            s.video_id = Some(video_id);
            s.submitted_at = Some(now);
        }
        if let Some(error) = next.error {
            s.error = Some(error);
        }
        if let Some(artifacts) = next.artifacts {
            s.artifacts = Some(artifacts);
        }
        if next.status.is_terminal() {
            s.finished_at = Some(now);
        }
        s.version += 1;
        s.updated_at = now;
        Applied::Changed {
            from,
            to: next.status,
        }
    }
}

/// What a rule decided: the next status and the fields it sets.
#[derive(Default)]
struct Next {
    status: JobStatus,
    progress: Option<u8>,
    video_id: Option<VideoId>,
    error: Option<JobError>,
    artifacts: Option<Artifacts>,
    expires_at: Option<DateTime<Utc>>,
}

impl Next {
    fn status(status: JobStatus) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }

    fn failed(error: JobError) -> Self {
        Self {
            status: JobStatus::Failed,
            error: Some(error),
            ..Self::default()
        }
    }

    fn timed_out(after: Duration) -> Self {
        let minutes = after.as_secs().div_ceil(60);
        Self::failed(JobError::new(
            FailureCode::Timeout,
            format!("The job did not finish within {minutes} minutes"),
        ))
    }
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;

//! The JSON shapes of the external contract (camelCase, `jobId`), built from domain types.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sora_core::{Job, JobError, JobId, JobStatus, PublicStatus, Variant};
use sora_service::{JobView, LinkSigner};
use sora_store::ChangedState;
use url::Url;
use utoipa::ToSchema;

/// Builds links for answers: status, download (plain and signed) and WebSocket URLs.
#[derive(Debug, Clone)]
pub struct Links {
    base: Url,
    signer: LinkSigner,
}

impl Links {
    /// Links under `base` (the public URL plus any mount prefix, ending in `/`), signing
    /// download links with `signer`.
    pub fn new(mut base: Url, signer: LinkSigner) -> Self {
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Self { base, signer }
    }

    /// The origin (`scheme://host:port`) of the public URL.
    pub fn origin(&self) -> String {
        self.base.origin().ascii_serialization()
    }

    /// The signer of download links.
    pub fn signer(&self) -> &LinkSigner {
        &self.signer
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> String {
        let mut url = self.base.join(path).unwrap_or_else(|_| self.base.clone());
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url.to_string()
    }

    /// `GET /api/status?jobId=...&renderVersion=v3`.
    pub fn status(&self, id: JobId) -> String {
        self.url(
            "api/status",
            &[("jobId", &id.to_string()), ("renderVersion", "v3")],
        )
    }

    /// `GET /api/download?jobId=...&renderVersion=v3` (needs the caller's credential).
    pub fn download(&self, id: JobId) -> String {
        self.url(
            "api/download",
            &[("jobId", &id.to_string()), ("renderVersion", "v3")],
        )
    }

    /// A signed, short-lived download link that needs no credential.
    pub fn signed_download(&self, id: JobId, variant: Variant) -> String {
        let (expires, sig) = self.signer.sign(id, variant, Utc::now().timestamp());
        self.url(
            "api/download",
            &[
                ("jobId", &id.to_string()),
                ("renderVersion", "v3"),
                ("variant", variant.as_str()),
                ("expires", &expires.to_string()),
                ("signature", &sig),
            ],
        )
    }

    /// `ws(s)://.../api/ws?jobId=...`.
    pub fn ws(&self, id: JobId) -> String {
        let mut url = self.url("api/ws", &[("jobId", &id.to_string())]);
        if let Some(rest) = url.strip_prefix("http") {
            url = format!("ws{rest}");
        }
        url
    }
}

/// The answer to `POST /api/generate`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedDto {
    /// Our id of the job.
    #[schema(value_type = String)]
    pub job_id: JobId,
    /// `pending` for a new job.
    #[schema(value_type = crate::openapi::Status)]
    pub status: PublicStatus,
    /// Where to read the job.
    pub status_url: String,
    /// Where to download the video once completed.
    pub download_url: String,
    /// Where to watch it live.
    pub ws_url: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl CreatedDto {
    /// The answer for this job.
    pub fn new(job: &Job, links: &Links) -> Self {
        Self {
            job_id: job.id(),
            status: job.status().public(),
            status_url: links.status(job.id()),
            download_url: links.download(job.id()),
            ws_url: links.ws(job.id()),
            created_at: job.created_at(),
        }
    }
}

/// Model, size and duration.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpecDto {
    /// Model id.
    pub model: String,
    /// `WIDTHxHEIGHT`.
    pub size: String,
    /// Duration in seconds.
    pub seconds: u32,
}

/// A failure.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDto {
    /// Machine-readable code: `invalid_request`, `content_policy`, `quota_exhausted`,
    /// `provider_error`, `content_expired`, `timeout` or `cancelled_upstream`.
    #[schema(value_type = String)]
    pub code: &'static str,
    /// Sentence for people.
    pub message: String,
}

/// One downloadable file.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileDto {
    /// A signed, short-lived link.
    pub url: String,
    /// Media type.
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
}

/// A job as `GET /api/status` and `GET /api/jobs` show it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobDto {
    /// Our id.
    #[schema(value_type = String)]
    pub job_id: JobId,
    /// `pending`, `queued`, `in_progress`, `completed`, `failed` or `cancelled`.
    #[schema(value_type = crate::openapi::Status)]
    pub status: PublicStatus,
    /// 0 to 100.
    pub progress: u8,
    /// Where the job is, in words.
    pub message: String,
    /// The prompt.
    pub prompt: String,
    /// What is generated.
    pub spec: SpecDto,
    /// The job this one remixes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub remix_of: Option<JobId>,
    /// The caller's labels.
    pub metadata: BTreeMap<String, String>,
    /// Why it failed.
    pub error: Option<ErrorDto>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When the provider accepted it.
    pub submitted_at: Option<DateTime<Utc>>,
    /// When it completed, failed or was cancelled.
    pub finished_at: Option<DateTime<Utc>>,
    /// A signed link to the video, when completed.
    pub download_url: Option<String>,
    /// Signed links to every file, when completed, by variant (`video`, `thumbnail`,
    /// `spritesheet`).
    #[schema(value_type = Option<BTreeMap<String, FileDto>>)]
    pub downloads: Option<BTreeMap<&'static str, FileDto>>,
    /// Whether the files were deleted (by retention or by the owner).
    pub files_deleted: bool,
    /// Where to read the job.
    pub status_url: String,
    /// Where to watch it live.
    pub ws_url: String,
}

impl JobDto {
    /// The view of a job, with links.
    pub fn new(view: &JobView, links: &Links) -> Self {
        let job = &view.job;
        let request = job.request();
        let state = job.state();
        let downloadable = !view.files_deleted;
        let downloads = job.artifacts().filter(|_| downloadable).map(|a| {
            a.iter()
                .map(|(variant, file)| {
                    (
                        variant.as_str(),
                        FileDto {
                            url: links.signed_download(job.id(), variant),
                            content_type: file.content_type.clone(),
                            size: file.size,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>()
        });
        Self {
            job_id: job.id(),
            status: job.status().public(),
            progress: job.progress(),
            message: job.message(),
            prompt: request.prompt.as_str().to_owned(),
            spec: SpecDto {
                model: request.spec.model.clone(),
                size: request.spec.size.to_string(),
                seconds: request.spec.seconds,
            },
            remix_of: request.remix_of.as_ref().map(|r| r.job_id),
            metadata: request.metadata.clone(),
            error: job.error().map(|e| ErrorDto {
                code: e.code.as_str(),
                message: e.message.clone(),
            }),
            created_at: job.created_at(),
            updated_at: state.updated_at,
            submitted_at: state.submitted_at,
            finished_at: state.finished_at,
            download_url: downloads
                .as_ref()
                .and_then(|d| d.get("video"))
                .map(|f| f.url.clone()),
            downloads,
            files_deleted: view.files_deleted,
            status_url: links.status(job.id()),
            ws_url: links.ws(job.id()),
        }
    }
}

/// A WebSocket message about a job: the snapshot on subscribe and every change after.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressMessage {
    /// Always `progress`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// The job.
    #[schema(value_type = String)]
    pub job_id: JobId,
    /// 0 to 100.
    pub progress: u8,
    /// The public status.
    #[schema(value_type = crate::openapi::Status)]
    pub status: PublicStatus,
    /// Where the job is, in words.
    pub message: String,
    /// Goes up with every change: a client can drop anything older than what it has.
    pub version: u64,
    /// True for the snapshot sent on subscribe.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub snapshot: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDto>,
    /// A signed link to the video, when completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
    /// A signed link to the thumbnail, when completed and there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
}

impl ProgressMessage {
    /// The message for a job.
    pub fn new(view: &JobView, links: &Links, snapshot: bool) -> Self {
        let job = &view.job;
        let files = job.artifacts().filter(|_| !view.files_deleted);
        Self::of(
            job.id(),
            job.version(),
            job.status(),
            job.progress(),
            job.error(),
            files.is_some(),
            files.is_some_and(|a| a.thumbnail.is_some()),
            links,
            snapshot,
        )
    }

    /// The message for a change whose notice carried the job's state (never a snapshot).
    pub fn changed(job_id: JobId, version: u64, state: &ChangedState, links: &Links) -> Self {
        Self::of(
            job_id,
            version,
            state.status,
            state.progress,
            state.error.as_ref(),
            state.video,
            state.thumbnail,
            links,
            false,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn of(
        job_id: JobId,
        version: u64,
        status: JobStatus,
        progress: u8,
        error: Option<&JobError>,
        video: bool,
        thumbnail: bool,
        links: &Links,
        snapshot: bool,
    ) -> Self {
        Self {
            kind: "progress",
            job_id,
            progress,
            status: status.public(),
            message: status.describe(progress, error),
            version,
            snapshot,
            error: error.map(|e| ErrorDto {
                code: e.code.as_str(),
                message: e.message.clone(),
            }),
            download_url: video.then(|| links.signed_download(job_id, Variant::Video)),
            thumbnail_url: (video && thumbnail)
                .then(|| links.signed_download(job_id, Variant::Thumbnail)),
        }
    }

    /// As a JSON text frame.
    pub fn to_text(&self) -> bytestring::ByteString {
        serde_json::to_string(self)
            .expect("a progress message always serialises")
            .into()
    }
}

/// The catalogue as `GET /api/presets` shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogueDto<'a> {
    /// The models on offer, with the sizes and durations each allows.
    #[schema(value_type = Vec<crate::openapi::ModelOfferDoc>)]
    pub models: &'a [sora_core::ModelOffer],
    /// The named presets.
    #[schema(value_type = Vec<crate::openapi::PresetDoc>)]
    pub presets: &'a [sora_core::Preset],
    /// The preset used when a request names neither a preset nor a model.
    #[schema(value_type = String)]
    pub default_preset: &'a str,
}

impl<'a> CatalogueDto<'a> {
    /// The view of a catalogue.
    pub fn new(catalogue: &'a sora_core::Catalogue) -> Self {
        Self {
            models: catalogue.models(),
            presets: catalogue.presets(),
            default_preset: &catalogue.default_preset().name,
        }
    }
}

/// A page of the caller's jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobListDto {
    /// The jobs.
    pub jobs: Vec<JobDto>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// What the provider did about a cancel or delete.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpstreamDto {
    /// `not_submitted`, `deleted`, `not_found` or `failed`.
    #[schema(value_type = String)]
    pub outcome: &'static str,
    /// A sentence for people.
    pub message: String,
}

/// The answer to `DELETE /api/jobs/{jobId}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletedDto {
    /// The job afterwards.
    pub job: JobDto,
    /// Whether this call cancelled it (false when it had already ended).
    pub cancelled: bool,
    /// Whether its stored files were deleted.
    pub files_deleted: bool,
    /// What the provider did.
    pub upstream: UpstreamDto,
}

//! Jobs, keys and counts to and from rows, shared by both backends.
//!
//! Both backends store the same columns; they differ in how a timestamp is kept (PostgreSQL:
//! `timestamptz`; SQLite: integer microseconds since the epoch, which compare correctly) and in
//! how a row is read, which [`RowGet`] hides.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sora_core::{
    Artifacts, FailureCode, InputReference, Job, JobError, JobId, JobState, JobStatus, NewJob,
    OwnerId, Prompt, RemixOf, VideoId, VideoSize, VideoSpec,
};
use sqlx::Row;

use crate::{ApiKeyRecord, Claimed, Lease, StoreError};

/// Reading typed columns from a row of either backend.
pub(crate) trait RowGet {
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn ts(&self, col: &str) -> Result<DateTime<Utc>, StoreError>;
    fn opt_ts(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
}

impl RowGet for sqlx::postgres::PgRow {
    fn text(&self, col: &str) -> Result<String, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn ts(&self, col: &str) -> Result<DateTime<Utc>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_ts(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.try_get(col)?)
    }
}

impl RowGet for sqlx::sqlite::SqliteRow {
    fn text(&self, col: &str) -> Result<String, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn ts(&self, col: &str) -> Result<DateTime<Utc>, StoreError> {
        from_micros(self.try_get(col)?)
    }
    fn opt_ts(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.try_get::<Option<i64>, _>(col)?
            .map(from_micros)
            .transpose()
    }
}

/// A timestamp as SQLite keeps it: microseconds since the epoch.
pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// An optional timestamp as SQLite keeps it.
pub(crate) fn opt_micros(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(micros)
}

fn from_micros(v: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(v)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {v} out of range")))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// A job as column values, for inserts and updates.
pub(crate) struct JobColumns {
    pub id: String,
    pub owner: String,
    pub prompt: String,
    pub model: String,
    pub size: String,
    pub seconds: i64,
    pub remix_of_job_id: Option<String>,
    pub remix_of_video_id: Option<String>,
    pub input_reference: Option<String>,
    pub metadata: String,
    pub created_at: DateTime<Utc>,
    pub status: &'static str,
    pub progress: i64,
    pub video_id: Option<String>,
    pub error_code: Option<&'static str>,
    pub error_message: Option<String>,
    pub artifacts: Option<String>,
    pub provider_expires_at: Option<DateTime<Utc>>,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobColumns {
    pub(crate) fn of(job: &Job) -> Result<Self, StoreError> {
        let req = job.request();
        let st = job.state();
        Ok(Self {
            id: job.id().to_string(),
            owner: req.owner.to_string(),
            prompt: req.prompt.as_str().to_owned(),
            model: req.spec.model.clone(),
            size: req.spec.size.to_string(),
            seconds: i64::from(req.spec.seconds),
            remix_of_job_id: req.remix_of.as_ref().map(|r| r.job_id.to_string()),
            remix_of_video_id: req.remix_of.as_ref().map(|r| r.video_id.to_string()),
            input_reference: req.input_reference.as_ref().map(to_json).transpose()?,
            metadata: to_json(&req.metadata)?,
            created_at: job.created_at(),
            status: st.status.as_str(),
            progress: i64::from(st.progress),
            video_id: st.video_id.as_ref().map(|v| v.to_string()),
            error_code: st.error.as_ref().map(|e| e.code.as_str()),
            error_message: st.error.as_ref().map(|e| e.message.clone()),
            artifacts: st.artifacts.as_ref().map(to_json).transpose()?,
            provider_expires_at: st.provider_expires_at,
            version: version_to_i64(st.version)?,
            updated_at: st.updated_at,
            submitted_at: st.submitted_at,
            finished_at: st.finished_at,
        })
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A version as the databases keep it (a signed 64-bit integer).
pub(crate) fn version_to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("version {v} out of range")))
}

/// Reads a job from a row holding the job columns.
pub(crate) fn decode_job(row: &impl RowGet) -> Result<Job, StoreError> {
    let id: JobId = row.text("id")?.parse().map_err(|e| corrupt("id", e))?;
    let owner: OwnerId = row
        .text("owner")?
        .parse()
        .map_err(|e| corrupt("owner", e))?;
    let prompt = Prompt::parse(&row.text("prompt")?).map_err(|e| corrupt("prompt", e))?;
    let size = VideoSize::from_str(&row.text("size")?).map_err(|e| corrupt("size", e))?;
    let seconds = u32::try_from(row.int("seconds")?).map_err(|e| corrupt("seconds", e))?;
    let remix_of = match (
        row.opt_text("remix_of_job_id")?,
        row.opt_text("remix_of_video_id")?,
    ) {
        (Some(j), Some(v)) => Some(RemixOf {
            job_id: j.parse().map_err(|e| corrupt("remix_of_job_id", e))?,
            video_id: v.parse().map_err(|e| corrupt("remix_of_video_id", e))?,
        }),
        (None, None) => None,
        _ => return Err(StoreError::Corrupt("half a remix reference".into())),
    };
    let input_reference: Option<InputReference> = row
        .opt_text("input_reference")?
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| corrupt("input_reference", e))?;
    let metadata: BTreeMap<String, String> =
        serde_json::from_str(&row.text("metadata")?).map_err(|e| corrupt("metadata", e))?;
    let request = NewJob {
        owner,
        prompt,
        spec: VideoSpec {
            model: row.text("model")?,
            size,
            seconds,
        },
        remix_of,
        input_reference,
        metadata,
    };
    let status: JobStatus = row
        .text("status")?
        .parse()
        .map_err(|e| corrupt("status", e))?;
    let progress = u8::try_from(row.int("progress")?).map_err(|e| corrupt("progress", e))?;
    let video_id: Option<VideoId> = row
        .opt_text("video_id")?
        .map(|v| v.parse())
        .transpose()
        .map_err(|e| corrupt("video_id", e))?;
    let error = match (row.opt_text("error_code")?, row.opt_text("error_message")?) {
        (Some(code), message) => Some(JobError::new(
            FailureCode::from_str(&code).map_err(|e| corrupt("error_code", e))?,
            message.unwrap_or_default(),
        )),
        (None, _) => None,
    };
    let artifacts: Option<Artifacts> = row
        .opt_text("artifacts")?
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| corrupt("artifacts", e))?;
    let version = u64::try_from(row.int("version")?).map_err(|e| corrupt("version", e))?;
    let state = JobState {
        status,
        progress,
        video_id,
        error,
        artifacts,
        provider_expires_at: row.opt_ts("provider_expires_at")?,
        version,
        updated_at: row.ts("updated_at")?,
        submitted_at: row.opt_ts("submitted_at")?,
        finished_at: row.opt_ts("finished_at")?,
    };
    Job::restore(id, request, row.ts("created_at")?, state)
        .map_err(|e| corrupt(&format!("job {id}"), e))
}

/// Reads a claimed job: the job columns plus `lease_token`, `lease_worker`, `lease_expires_at`,
/// `attempts` and `polls_before`.
pub(crate) fn decode_claimed(row: &impl RowGet) -> Result<Claimed, StoreError> {
    let job = decode_job(row)?;
    let lease = Lease {
        job_id: job.id(),
        token: row.text("lease_token")?,
        worker: row.text("lease_worker")?,
        expires_at: row.ts("lease_expires_at")?,
    };
    let count = |col: &str| -> Result<u32, StoreError> {
        u32::try_from(row.int(col)?.max(0)).map_err(|e| corrupt(col, e))
    };
    Ok(Claimed {
        attempts: count("attempts")?,
        polls: count("polls_before")?,
        job,
        lease,
    })
}

/// Reads an API key row.
pub(crate) fn decode_api_key(row: &impl RowGet) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: row.text("id")?,
        owner: row
            .text("owner")?
            .parse()
            .map_err(|e| corrupt("api key owner", e))?,
        label: row.opt_text("label")?,
        created_at: row.ts("created_at")?,
        revoked_at: row.opt_ts("revoked_at")?,
    })
}

/// Reads `(status, n)` rows into counts for every status, zeros included.
pub(crate) fn decode_counts(rows: &[impl RowGet]) -> Result<Vec<(JobStatus, u64)>, StoreError> {
    let mut counts: Vec<(JobStatus, u64)> = JobStatus::ALL.iter().map(|s| (*s, 0)).collect();
    for row in rows {
        let status: JobStatus = row
            .text("status")?
            .parse()
            .map_err(|e| corrupt("status", e))?;
        let n = u64::try_from(row.int("n")?).map_err(|e| corrupt("count", e))?;
        if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
            slot.1 = n;
        }
    }
    Ok(counts)
}

/// The opaque list cursor of a job id.
/// A job and its purge flag, from a row with a `files_purged` column (0 or 1).
pub(crate) fn decode_stored(row: &impl RowGet) -> Result<crate::StoredJob, StoreError> {
    Ok(crate::StoredJob {
        job: decode_job(row)?,
        files_purged: row.int("files_purged")? != 0,
    })
}

/// A page of an owner's jobs from the rows of a list query that asked for `limit + 1` rows and a
/// `files_purged` column (0 or 1).
pub(crate) fn decode_page(rows: &[impl RowGet], limit: i64) -> Result<crate::JobPage, StoreError> {
    let mut jobs = Vec::new();
    let mut purged = Vec::new();
    for row in rows.iter().take(usize::try_from(limit).unwrap_or(0)) {
        let stored = decode_stored(row)?;
        if stored.files_purged {
            purged.push(stored.job.id());
        }
        jobs.push(stored.job);
    }
    let next_cursor = if rows.len() as i64 > limit {
        jobs.last().map(|j| encode_cursor(j.id()))
    } else {
        None
    };
    Ok(crate::JobPage {
        jobs,
        next_cursor,
        purged,
    })
}

pub(crate) fn encode_cursor(id: JobId) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.to_string())
}

/// The job id a list cursor stands for.
pub(crate) fn decode_cursor(cursor: &str) -> Result<JobId, StoreError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| StoreError::InvalidCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::InvalidCursor)?;
    text.parse().map_err(|_| StoreError::InvalidCursor)
}

/// The stored statuses of a public status filter.
pub(crate) fn status_filter(query: &crate::JobQuery) -> Option<Vec<String>> {
    query
        .status
        .map(|p| p.stored().iter().map(|s| s.as_str().to_owned()).collect())
}

/// A notification on [`crate::STATE_CHANNEL`], as the trigger writes it.
#[derive(serde::Deserialize)]
struct StatePayload {
    id: String,
    version: u64,
    owner: Option<String>,
    status: Option<String>,
    progress: Option<u8>,
    error_code: Option<String>,
    error_message: Option<String>,
    video: Option<bool>,
    thumbnail: Option<bool>,
}

impl StatePayload {
    /// The state it carries, if it carries a whole one this release understands.
    fn state(self) -> Option<crate::ChangedState> {
        let error = match self.error_code {
            Some(code) => Some(JobError::new(
                FailureCode::from_str(&code).ok()?,
                self.error_message.unwrap_or_default(),
            )),
            None => None,
        };
        Some(crate::ChangedState {
            owner: self.owner?.parse().ok()?,
            status: self.status?.parse().ok()?,
            progress: self.progress.filter(|p| *p <= 100)?,
            error,
            video: self.video?,
            thumbnail: self.thumbnail?,
        })
    }
}

/// Parses a notification payload of [`crate::STATE_CHANNEL`]: `None` if it names no job and
/// version; a notice without a state if the state is missing (too long to carry) or not one
/// this release understands, so that the job is read instead.
pub(crate) fn parse_notice(payload: &str) -> Option<crate::ChangeNotice> {
    let p: StatePayload = serde_json::from_str(payload).ok()?;
    let job_id = p.id.parse().ok()?;
    let version = p.version;
    Some(crate::ChangeNotice::Changed {
        job_id,
        version,
        state: p.state().map(std::sync::Arc::new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let id = JobId::new();
        assert_eq!(decode_cursor(&encode_cursor(id)).unwrap(), id);
        assert!(matches!(
            decode_cursor("not a cursor!"),
            Err(StoreError::InvalidCursor)
        ));
        assert!(matches!(
            decode_cursor("aGVsbG8"),
            Err(StoreError::InvalidCursor)
        ));
    }

    #[test]
    fn notices_parse_from_payloads() {
        let id = JobId::new();
        let full = format!(
            r#"{{"id":"{id}","version":7,"owner":"alice","status":"failed","progress":40,"error_code":"provider_error","error_message":"It broke \"badly\"","video":false,"thumbnail":false}}"#
        );
        assert_eq!(
            parse_notice(&full),
            Some(crate::ChangeNotice::Changed {
                job_id: id,
                version: 7,
                state: Some(std::sync::Arc::new(crate::ChangedState {
                    owner: "alice".parse().unwrap(),
                    status: JobStatus::Failed,
                    progress: 40,
                    error: Some(JobError::new(
                        FailureCode::ProviderError,
                        "It broke \"badly\""
                    )),
                    video: false,
                    thumbnail: false,
                })),
            })
        );
        // Too long to carry, or a state this release does not know: read the job instead.
        let bare = Some(crate::ChangeNotice::Changed {
            job_id: id,
            version: 7,
            state: None,
        });
        assert_eq!(
            parse_notice(&format!(r#"{{"id":"{id}","version":7}}"#)),
            bare
        );
        let future = full.replace("\"failed\"", "\"paused\"");
        assert_eq!(parse_notice(&future), bare);
        let unknown_code = full.replace("provider_error", "no_such_code");
        assert_eq!(parse_notice(&unknown_code), bare);
        // Not a notice at all.
        assert_eq!(parse_notice("nonsense"), None);
        assert_eq!(parse_notice(&format!("{id}:7")), None);
        assert_eq!(parse_notice(r#"{"id":"job_nope","version":7}"#), None);
    }
}

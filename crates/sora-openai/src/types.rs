//! The wire types of the Videos API: what is sent and what comes back.
//!
//! Decoding is tolerant because OpenAI-compatible gateways differ: unknown fields are ignored,
//! optional fields may be missing or `null`, `seconds` may be a string or a number, `progress`
//! may be a float (it is clamped to `0..=100`), and a status this crate does not know becomes
//! [`VideoStatus::Unknown`] instead of an error.

use std::fmt;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use futures::stream::BoxStream;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use sora_core::{FailureCode, JobError, ProviderReport, ProviderStatus, VideoId};

use crate::error::ProviderError;

/// A request to start a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateVideo {
    /// What to generate.
    pub prompt: String,
    /// The model id (free-form: gateways serve other models); the provider's default when absent.
    pub model: Option<String>,
    /// The frame size such as `1280x720` (free-form); the provider's default when absent.
    pub size: Option<String>,
    /// The duration in seconds, as the string the API expects (`"4"`, `"8"`...).
    pub seconds: Option<String>,
    /// An image that becomes the first frame. When present the request is sent as
    /// `multipart/form-data`, otherwise as JSON.
    pub input_reference: Option<InputImage>,
}

impl CreateVideo {
    /// A request with only a prompt; everything else is the provider's default.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            model: None,
            size: None,
            seconds: None,
            input_reference: None,
        }
    }
}

/// An image file sent as the first frame of a generation.
#[derive(Clone, PartialEq, Eq)]
pub struct InputImage {
    /// The file name given in the multipart part.
    pub filename: String,
    /// Its media type (`image/jpeg`, `image/png` or `image/webp`).
    pub content_type: String,
    /// The image bytes.
    pub data: Bytes,
}

impl fmt::Debug for InputImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InputImage")
            .field("filename", &self.filename)
            .field("content_type", &self.content_type)
            .field("len", &self.data.len())
            .finish()
    }
}

/// A request to remix a finished generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemixVideo {
    /// How to change the video.
    pub prompt: String,
}

/// The provider's video object: one generation and its state.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Video {
    /// The provider's id (`video_...`).
    pub id: VideoId,
    /// The model that generates it.
    #[serde(default)]
    pub model: Option<String>,
    /// Where the generation is.
    pub status: VideoStatus,
    /// Approximate percentage done, `0..=100`.
    #[serde(default, deserialize_with = "de_progress")]
    pub progress: Option<u8>,
    /// When it was created, in Unix seconds.
    #[serde(default, deserialize_with = "de_timestamp")]
    pub created_at: Option<i64>,
    /// When it finished, in Unix seconds.
    #[serde(default, deserialize_with = "de_timestamp")]
    pub completed_at: Option<i64>,
    /// When the provider's copy of the files expires, in Unix seconds.
    #[serde(default, deserialize_with = "de_timestamp")]
    pub expires_at: Option<i64>,
    /// The prompt it was generated from.
    #[serde(default)]
    pub prompt: Option<String>,
    /// The frame size (free-form).
    #[serde(default, deserialize_with = "de_string_or_number")]
    pub size: Option<String>,
    /// The duration in seconds, as a string (a number on the wire is accepted).
    #[serde(default, deserialize_with = "de_string_or_number")]
    pub seconds: Option<String>,
    /// The video this one remixes, if any.
    #[serde(default)]
    pub remixed_from_video_id: Option<String>,
    /// Why the generation failed, when it did.
    #[serde(default, deserialize_with = "de_video_error")]
    pub error: Option<VideoError>,
}

impl Serialize for Video {
    /// Writes the video object as the API does, with `"object": "video"`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            id: &'a VideoId,
            object: &'static str,
            model: &'a Option<String>,
            status: &'a VideoStatus,
            progress: &'a Option<u8>,
            created_at: &'a Option<i64>,
            completed_at: &'a Option<i64>,
            expires_at: &'a Option<i64>,
            prompt: &'a Option<String>,
            size: &'a Option<String>,
            seconds: &'a Option<String>,
            remixed_from_video_id: &'a Option<String>,
            error: &'a Option<VideoError>,
        }
        Wire {
            id: &self.id,
            object: "video",
            model: &self.model,
            status: &self.status,
            progress: &self.progress,
            created_at: &self.created_at,
            completed_at: &self.completed_at,
            expires_at: &self.expires_at,
            prompt: &self.prompt,
            size: &self.size,
            seconds: &self.seconds,
            remixed_from_video_id: &self.remixed_from_video_id,
            error: &self.error,
        }
        .serialize(serializer)
    }
}

/// The sentence used when a failed generation comes without a message.
const DEFAULT_FAILURE_MESSAGE: &str = "the provider failed the generation without giving a reason";

impl Video {
    /// A video in the given status with every optional field empty (for emulators and tests).
    pub fn new(id: VideoId, status: VideoStatus) -> Self {
        Self {
            id,
            model: None,
            status,
            progress: None,
            created_at: None,
            completed_at: None,
            expires_at: None,
            prompt: None,
            size: None,
            seconds: None,
            remixed_from_video_id: None,
            error: None,
        }
    }

    /// What this observation means for a job: the status in `sora-core`'s terms (a failure
    /// carries a [`JobError`] whose code comes from [`FailureCode::from_provider_code`] and whose
    /// message is the provider's, or a default sentence), the progress and the expiry time.
    pub fn to_report(&self) -> ProviderReport {
        let status = match &self.status {
            VideoStatus::Queued => ProviderStatus::Queued,
            VideoStatus::InProgress => ProviderStatus::InProgress,
            VideoStatus::Completed => ProviderStatus::Completed,
            VideoStatus::Failed => {
                let code = self.error.as_ref().and_then(|e| e.code.as_deref());
                let message = self
                    .error
                    .as_ref()
                    .and_then(|e| e.message.as_deref())
                    .filter(|m| !m.trim().is_empty())
                    .map_or_else(|| DEFAULT_FAILURE_MESSAGE.to_owned(), str::to_owned);
                ProviderStatus::Failed(JobError::new(
                    FailureCode::from_provider_code(code),
                    message,
                ))
            }
            VideoStatus::Unknown(s) => ProviderStatus::Unknown(s.clone()),
        };
        ProviderReport {
            status,
            progress: self.progress.map(|p| p.min(100)),
            expires_at: self
                .expires_at
                .and_then(|t| Utc.timestamp_opt(t, 0).single()),
        }
    }
}

/// Where a generation is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VideoStatus {
    /// Waiting to start (`queued`).
    Queued,
    /// Being generated (`in_progress`).
    InProgress,
    /// Done; the files can be downloaded (`completed`).
    Completed,
    /// Failed; `error` says why (`failed`).
    Failed,
    /// A status this crate does not know, kept as sent.
    Unknown(String),
}

impl VideoStatus {
    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Unknown(s) => s,
        }
    }

    /// Whether the generation will not change any more (`completed` or `failed`).
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }

    /// Reads a wire spelling; anything unknown becomes [`VideoStatus::Unknown`].
    pub fn from_wire(s: &str) -> Self {
        match s {
            "queued" => Self::Queued,
            "in_progress" => Self::InProgress,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            other => Self::Unknown(other.to_owned()),
        }
    }
}

impl fmt::Display for VideoStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for VideoStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for VideoStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Ok(Self::from_wire(&s))
    }
}

/// Why a generation failed, as the provider put it. Its codes are not documented.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoError {
    /// The provider's code, if any.
    #[serde(default)]
    pub code: Option<String>,
    /// The provider's message, if any.
    #[serde(default)]
    pub message: Option<String>,
}

/// The parameters of one list call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// How many items at most (the API accepts `0..=100`).
    pub limit: Option<u32>,
    /// Sort order by creation time.
    pub order: Option<ListOrder>,
    /// The id of the last item of the previous page.
    pub after: Option<String>,
}

/// Sort order of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListOrder {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

impl ListOrder {
    /// The wire spelling (`asc`, `desc`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoPage {
    /// The videos on this page.
    #[serde(default)]
    pub data: Vec<Video>,
    /// The id of the first video on the page.
    #[serde(default)]
    pub first_id: Option<String>,
    /// The id of the last video on the page: the `after` of the next call.
    #[serde(default)]
    pub last_id: Option<String>,
    /// Whether more pages follow.
    #[serde(default)]
    pub has_more: bool,
}

/// The answer to a delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedVideo {
    /// The id of the deleted video.
    pub id: String,
    /// Whether the provider deleted it.
    #[serde(default)]
    pub deleted: bool,
}

/// A downloadable file being streamed from the provider.
pub struct Content {
    /// Its media type, when the provider said.
    pub content_type: Option<String>,
    /// Its length in bytes, when the provider said.
    pub content_length: Option<u64>,
    /// The bytes, chunk by chunk. An error ends the download.
    pub stream: BoxStream<'static, Result<Bytes, ProviderError>>,
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Content")
            .field("content_type", &self.content_type)
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

/// A number or a string: `seconds` and `size` on the wire.
fn de_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string, a number or null")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            // `8.0` is the duration 8; keep a real fraction as written.
            if v.fract() == 0.0 && v.abs() < 1e15 {
                Ok(Some(format!("{}", v as i64)))
            } else {
                Ok(Some(v.to_string()))
            }
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
    }
    d.deserialize_any(V)
}

/// A percentage: an integer or a float, clamped to `0..=100`; a string holding a number is read too.
fn de_progress<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    Ok(de_number(d)?.map(|v| {
        if v.is_nan() {
            0
        } else {
            v.round().clamp(0.0, 100.0) as u8
        }
    }))
}

/// Unix seconds: an integer (a float is truncated; a string holding a number is read too).
fn de_timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(de_number(d)?
        .filter(|v| v.is_finite() && v.abs() < 1e15)
        .map(|v| v as i64))
}

fn de_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number or null")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            // A gateway that writes numbers as strings; anything unreadable is treated as absent.
            Ok(v.trim().parse::<f64>().ok())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
    }
    d.deserialize_any(V)
}

/// The `error` field: an object `{code, message}`, a bare string (taken as the message), or null.
fn de_video_error<'de, D: Deserializer<'de>>(d: D) -> Result<Option<VideoError>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Object(VideoError),
        Message(String),
    }
    Ok(match Option::<Wire>::deserialize(d)? {
        None => None,
        Some(Wire::Object(e)) => Some(e),
        Some(Wire::Message(m)) => Some(VideoError {
            code: None,
            message: Some(m),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(json: &str) -> Video {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_full_video_object_decodes() {
        let v = video(
            r#"{"id":"video_123","object":"video","model":"sora-2","status":"in_progress",
               "progress":42,"created_at":1758941485,"completed_at":null,"expires_at":null,
               "prompt":"a cat","size":"1280x720","seconds":"8","remixed_from_video_id":null,
               "error":null}"#,
        );
        assert_eq!(v.id.as_str(), "video_123");
        assert_eq!(v.status, VideoStatus::InProgress);
        assert_eq!(v.progress, Some(42));
        assert_eq!(v.created_at, Some(1_758_941_485));
        assert_eq!(v.seconds.as_deref(), Some("8"));
        assert_eq!(v.error, None);
    }

    #[test]
    fn decoding_tolerates_unknown_and_missing_fields() {
        let v = video(r#"{"id":"video_1","status":"queued","brand_new":{"x":[1,2]}}"#);
        assert_eq!(
            v,
            Video::new("video_1".parse().unwrap(), VideoStatus::Queued)
        );
    }

    #[test]
    fn seconds_may_be_a_number_and_progress_a_float_out_of_range() {
        let v = video(r#"{"id":"v","status":"queued","seconds":8,"progress":150.7}"#);
        assert_eq!(v.seconds.as_deref(), Some("8"));
        assert_eq!(v.progress, Some(100));
        let v = video(r#"{"id":"v","status":"queued","seconds":4.0,"progress":-3}"#);
        assert_eq!(v.seconds.as_deref(), Some("4"));
        assert_eq!(v.progress, Some(0));
        let v = video(r#"{"id":"v","status":"queued","progress":33.4}"#);
        assert_eq!(v.progress, Some(33));
    }

    #[test]
    fn an_unknown_status_is_kept() {
        let v = video(r#"{"id":"v","status":"cancelled"}"#);
        assert_eq!(v.status, VideoStatus::Unknown("cancelled".into()));
        assert_eq!(
            v.to_report().status,
            ProviderStatus::Unknown("cancelled".into())
        );
    }

    #[test]
    fn a_failed_video_reports_a_job_error() {
        let v = video(
            r#"{"id":"v","status":"failed","error":{"code":"moderation_blocked","message":"no"}}"#,
        );
        assert_eq!(
            v.to_report().status,
            ProviderStatus::Failed(JobError::new(FailureCode::ContentPolicy, "no"))
        );
        let v = video(r#"{"id":"v","status":"failed"}"#);
        assert_eq!(
            v.to_report().status,
            ProviderStatus::Failed(JobError::new(
                FailureCode::ProviderError,
                DEFAULT_FAILURE_MESSAGE
            ))
        );
        let v = video(r#"{"id":"v","status":"failed","error":"it broke"}"#);
        assert_eq!(v.error.unwrap().message.as_deref(), Some("it broke"));
    }

    #[test]
    fn a_report_carries_progress_and_expiry() {
        let v = video(r#"{"id":"v","status":"completed","progress":100,"expires_at":1758945085}"#);
        let r = v.to_report();
        assert_eq!(r.status, ProviderStatus::Completed);
        assert_eq!(r.progress, Some(100));
        assert_eq!(r.expires_at.unwrap().timestamp(), 1_758_945_085);
    }

    #[test]
    fn a_video_round_trips_through_json_with_its_object_tag() {
        let mut v = Video::new("video_9".parse().unwrap(), VideoStatus::Failed);
        v.seconds = Some("12".into());
        v.error = Some(VideoError {
            code: Some("x".into()),
            message: None,
        });
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["object"], "video");
        assert_eq!(json["status"], "failed");
        let back: Video = serde_json::from_value(json).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn a_page_decodes_with_defaults() {
        let p: VideoPage = serde_json::from_str(r#"{"object":"list","data":[]}"#).unwrap();
        assert!(p.data.is_empty());
        assert!(!p.has_more);
    }
}

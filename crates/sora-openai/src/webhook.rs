//! Webhook signatures as OpenAI sends them: the Standard Webhooks v1 scheme (HMAC-SHA256).
//!
//! A delivery carries three headers: `webhook-id` (the message id, the same on every retry, so the
//! idempotency key), `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`
//! (space-separated `v1,<base64>` signatures, several during a secret rotation). The signed content
//! is `"{id}.{timestamp}.{raw body}"`, byte for byte: verify the raw body, never a re-serialised one.
//!
//! ```
//! use std::time::{Duration, SystemTime, UNIX_EPOCH};
//! use sora_openai::webhook::{WebhookHeaders, WebhookSecret, WebhookSigner, WebhookVerifier};
//!
//! let secret: WebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse()?;
//! let body = br#"{"test": 2432232314}"#;
//! let signature = WebhookSigner::new(secret.clone()).sign("msg_1", 1614265330, body);
//!
//! let verifier = WebhookVerifier::new(vec![secret])?;
//! let headers = WebhookHeaders {
//!     id: Some("msg_1"),
//!     timestamp: Some("1614265330"),
//!     signature: Some(&signature),
//! };
//! let now = UNIX_EPOCH + Duration::from_secs(1614265330);
//! let verified = verifier.verify(&headers, body, now)?;
//! assert_eq!(verified.id, "msg_1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::Deserialize;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The name of the header holding the message id.
pub const HEADER_ID: &str = "webhook-id";
/// The name of the header holding the timestamp.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The name of the header holding the signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

const SECRET_PREFIX: &str = "whsec_";

/// Standard base64 that accepts the secret with or without its padding.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a webhook secret or a verifier cannot be built: a configuration error, reported at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The secret (or its part after `whsec_`) is empty.
    #[error("the webhook secret is empty")]
    Empty,
    /// The part after `whsec_` is not valid base64.
    #[error("the webhook secret is not valid base64 after `whsec_`")]
    InvalidBase64,
    /// A verifier needs at least one secret.
    #[error("a webhook verifier needs at least one secret")]
    NoSecrets,
}

/// A webhook signing key.
///
/// Parsed from `whsec_<base64>` (the key is the decoded bytes) or, like OpenAI's SDKs do, from a
/// string without the prefix (the key is its raw UTF-8 bytes). Surrounding whitespace is ignored.
/// The key never appears in `Debug` output.
#[derive(Clone)]
pub struct WebhookSecret {
    key: SecretSlice<u8>,
}

impl WebhookSecret {
    /// A new random secret of 32 bytes.
    pub fn generate() -> Self {
        let key: [u8; 32] = rand::random();
        Self::from_bytes(key.to_vec()).unwrap_or_else(|_| unreachable!("32 bytes are not empty"))
    }

    /// A secret from raw key bytes.
    pub fn from_bytes(key: Vec<u8>) -> Result<Self, SecretError> {
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self { key: key.into() })
    }

    /// The secret in its `whsec_<base64>` form, to hand to a sender (an emulator, a test).
    pub fn to_whsec(&self) -> SecretString {
        format!(
            "{SECRET_PREFIX}{}",
            STANDARD.encode(self.key.expose_secret())
        )
        .into()
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        HmacSha256::new_from_slice(self.key.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    }

    fn signed_mac(&self, msg_id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        let mut mac = self.mac();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl FromStr for WebhookSecret {
    type Err = SecretError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s.strip_prefix(SECRET_PREFIX) {
            Some(encoded) => {
                if encoded.is_empty() {
                    return Err(SecretError::Empty);
                }
                let key = LENIENT_BASE64
                    .decode(encoded)
                    .map_err(|_| SecretError::InvalidBase64)?;
                Self::from_bytes(key)
            }
            None => Self::from_bytes(s.as_bytes().to_vec()),
        }
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

/// Signs webhook deliveries (used by emulators and tests).
#[derive(Debug, Clone)]
pub struct WebhookSigner {
    secret: WebhookSecret,
}

impl WebhookSigner {
    /// A signer with this secret.
    pub fn new(secret: WebhookSecret) -> Self {
        Self { secret }
    }

    /// The `webhook-signature` value (`v1,<base64>`) for a delivery with this id, timestamp
    /// (Unix seconds) and raw body.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mac = self.secret.signed_mac(msg_id, &timestamp.to_string(), body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The three signature headers of a delivery, as received (`None` when absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookHeaders<'a> {
    /// `webhook-id`.
    pub id: Option<&'a str>,
    /// `webhook-timestamp`.
    pub timestamp: Option<&'a str>,
    /// `webhook-signature`.
    pub signature: Option<&'a str>,
}

/// A delivery whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedWebhook {
    /// The message id: the idempotency key (the same on every retry of one message).
    pub id: String,
    /// The timestamp of this delivery attempt, in Unix seconds.
    pub timestamp: i64,
}

/// Why a delivery was rejected. Each check has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A required header is absent (its name: `webhook-id`, `webhook-timestamp` or
    /// `webhook-signature`).
    #[error("the `{0}` header is missing")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not an integer.
    #[error("the webhook timestamp is not an integer")]
    InvalidTimestamp,
    /// The timestamp is further in the past than the tolerance.
    #[error("the webhook timestamp is too old")]
    TooOld,
    /// The timestamp is further in the future than the tolerance.
    #[error("the webhook timestamp is too far in the future")]
    TooNew,
    /// No `v1` signature matches under any secret.
    #[error("no webhook signature matches")]
    NoMatchingSignature,
}

/// Verifies webhook deliveries against one or more secrets (several during a rotation).
#[derive(Debug, Clone)]
pub struct WebhookVerifier {
    secrets: Vec<WebhookSecret>,
    tolerance: Duration,
}

impl WebhookVerifier {
    /// The default distance allowed between the timestamp and now, in either direction.
    pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

    /// A verifier accepting a signature by any of these secrets. An empty list is an error.
    pub fn new(secrets: Vec<WebhookSecret>) -> Result<Self, SecretError> {
        if secrets.is_empty() {
            return Err(SecretError::NoSecrets);
        }
        Ok(Self {
            secrets,
            tolerance: Self::DEFAULT_TOLERANCE,
        })
    }

    /// Sets the distance allowed between the timestamp and now (default 300 s).
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Checks a delivery, in this order: the three headers are present, the timestamp is an
    /// integer, it is within the tolerance of `now` in either direction, then one of the
    /// space-separated `v1` signatures matches the raw `body` under one of the secrets (compared
    /// in constant time). Signatures of other versions are ignored.
    pub fn verify(
        &self,
        headers: &WebhookHeaders<'_>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<VerifiedWebhook, VerifyError> {
        let id = headers.id.ok_or(VerifyError::MissingHeader(HEADER_ID))?;
        let timestamp_text = headers
            .timestamp
            .ok_or(VerifyError::MissingHeader(HEADER_TIMESTAMP))?;
        let signatures = headers
            .signature
            .ok_or(VerifyError::MissingHeader(HEADER_SIGNATURE))?;

        let timestamp: i64 = timestamp_text
            .trim()
            .parse()
            .map_err(|_| VerifyError::InvalidTimestamp)?;
        self.check_timestamp(timestamp, now)?;

        // The signed content uses the header exactly as received.
        let candidates: Vec<Vec<u8>> = signatures
            .split(' ')
            .filter_map(|s| s.split_once(','))
            .filter(|(version, _)| *version == "v1")
            .filter_map(|(_, sig)| STANDARD.decode(sig).ok())
            .collect();
        if candidates.is_empty() {
            return Err(VerifyError::NoMatchingSignature);
        }
        for secret in &self.secrets {
            let mac = secret.signed_mac(id, timestamp_text, body);
            if candidates
                .iter()
                .any(|sig| mac.clone().verify_slice(sig).is_ok())
            {
                return Ok(VerifiedWebhook {
                    id: id.to_owned(),
                    timestamp,
                });
            }
        }
        Err(VerifyError::NoMatchingSignature)
    }

    fn check_timestamp(&self, timestamp: i64, now: SystemTime) -> Result<(), VerifyError> {
        let now = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => i128::from(d.as_secs()),
            Err(e) => -i128::from(e.duration().as_secs()),
        };
        let tolerance = i128::from(self.tolerance.as_secs());
        let age = now - i128::from(timestamp);
        if age > tolerance {
            Err(VerifyError::TooOld)
        } else if -age > tolerance {
            Err(VerifyError::TooNew)
        } else {
            Ok(())
        }
    }
}

/// What a webhook event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WebhookEventKind {
    /// `video.completed`: the video can be downloaded.
    VideoCompleted,
    /// `video.failed`: the generation failed.
    VideoFailed,
    /// Any other event type, kept as sent (a video service acknowledges and ignores these).
    Other(String),
}

impl WebhookEventKind {
    /// The wire spelling of the event type.
    pub fn as_str(&self) -> &str {
        match self {
            Self::VideoCompleted => "video.completed",
            Self::VideoFailed => "video.failed",
            Self::Other(s) => s,
        }
    }

    /// Reads an event type.
    pub fn from_wire(s: &str) -> Self {
        match s {
            "video.completed" => Self::VideoCompleted,
            "video.failed" => Self::VideoFailed,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for WebhookEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A webhook event: `{"id","object":"event","created_at","type","data":{"id"}}`. It carries only
/// the video id: retrieve the video to learn the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// The event id.
    pub id: String,
    /// When the event was created, in Unix seconds.
    pub created_at: Option<i64>,
    /// What the event is about.
    pub kind: WebhookEventKind,
    /// The id of the object it is about (`data.id`), for video events the video id.
    pub video_id: Option<String>,
}

impl WebhookEvent {
    /// Parses an event body (after verification). Unknown fields are ignored; `created_at` and
    /// `data` may be missing; `id` and `type` are required.
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Data {
            #[serde(default)]
            id: Option<String>,
        }
        #[derive(Deserialize)]
        struct Wire {
            id: String,
            #[serde(default)]
            created_at: Option<i64>,
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            data: Option<Data>,
        }
        let wire: Wire = serde_json::from_slice(body)?;
        Ok(Self {
            id: wire.id,
            created_at: wire.created_at,
            kind: WebhookEventKind::from_wire(&wire.kind),
            video_id: wire.data.and_then(|d| d.id),
        })
    }
}

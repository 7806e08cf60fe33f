#![doc = include_str!("../README.md")]

mod config;
mod error;
mod links;
mod service;
mod workers;

pub use config::{PollSchedule, ServiceConfig};
pub use error::ServiceError;
pub use links::{LinkError, LinkSigner};
pub use service::{
    Cancelled, CreateRequest, Created, JobView, UploadedImage, UpstreamOutcome, VideoService,
    WebhookOutcome,
};
pub use workers::{Workers, WorkersHandle};

/// Hashes an API key the way the store keeps it (hex SHA-256). Keys are long random strings, so
/// a fast hash is enough: there is nothing to brute-force.
pub fn hash_api_key(key: &str) -> String {
    use sha2::Digest;
    service::hex(&sha2::Sha256::digest(key.as_bytes()))
}

/// A new API key: `sk_sora_` followed by 32 random bytes in URL-safe base64.
pub fn generate_api_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!(
        "sk_sora_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

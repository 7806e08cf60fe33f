//! Shared set-up: a wiremock server and a client pointed at it.

use std::time::Duration;

use serde_json::{Value, json};
use sora_core::VideoId;
use sora_openai::{Backoff, OpenAiClient, OpenAiConfig};
use url::Url;
use wiremock::MockServer;

/// The API key the tests use; it must never show up in errors.
pub const KEY: &str = "sk-test-0123456789abcdef";

/// A running mock provider and a client for it.
pub struct TestProvider {
    pub server: MockServer,
    pub client: OpenAiClient,
}

/// The configuration used by the tests: short timeouts, tiny backoff delays.
pub fn config(server: &MockServer) -> OpenAiConfig {
    OpenAiConfig::new(KEY)
        .with_base_url(Url::parse(&format!("{}/v1", server.uri())).unwrap())
        .with_request_timeout(Duration::from_millis(400))
        .with_connect_timeout(Duration::from_millis(400))
        .with_download_read_timeout(Duration::from_millis(400))
        .with_read_retries(0)
        .with_backoff(
            Backoff::new(Duration::from_millis(1), Duration::from_millis(5))
                .with_max_hint(Duration::from_millis(20)),
        )
}

/// A mock server and a client that does not retry.
pub async fn start() -> TestProvider {
    start_with(|c| c).await
}

/// A mock server and a client whose configuration the test adjusts.
pub async fn start_with(adjust: impl FnOnce(OpenAiConfig) -> OpenAiConfig) -> TestProvider {
    let server = MockServer::start().await;
    let client = OpenAiClient::new(adjust(config(&server))).unwrap();
    TestProvider { server, client }
}

/// A video id.
pub fn vid(s: &str) -> VideoId {
    s.parse().unwrap()
}

/// A complete video object as OpenAI returns it.
pub fn video_json(id: &str, status: &str) -> Value {
    json!({
        "id": id,
        "object": "video",
        "model": "sora-2",
        "status": status,
        "progress": 0,
        "created_at": 1_758_941_485,
        "completed_at": null,
        "expires_at": null,
        "prompt": "a calico cat playing a piano",
        "size": "1280x720",
        "seconds": "8",
        "remixed_from_video_id": null,
        "error": null
    })
}

/// An OpenAI error body.
pub fn error_json(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

/// One part of a multipart body.
#[derive(Debug)]
pub struct Part {
    pub headers: String,
    pub data: Vec<u8>,
}

impl Part {
    /// Whether the part's `Content-Disposition` names this field.
    pub fn is_named(&self, name: &str) -> bool {
        self.headers.contains(&format!("name=\"{name}\""))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Splits a `multipart/form-data` body into its parts (a minimal parser, enough to check what
/// the client sent).
pub fn multipart_parts(content_type: &str, body: &[u8]) -> Vec<Part> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .expect("a boundary")
        .trim_matches('"');
    let delimiter = format!("--{boundary}").into_bytes();
    let mut parts = Vec::new();
    let mut rest = body;
    let start = find(rest, &delimiter).expect("an opening delimiter");
    rest = &rest[start + delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        let rest_after_crlf = rest.strip_prefix(b"\r\n").expect("CRLF after a delimiter");
        let end = find(rest_after_crlf, &delimiter).expect("a closing delimiter");
        let segment = &rest_after_crlf[..end];
        let segment = segment
            .strip_suffix(b"\r\n")
            .expect("CRLF before a delimiter");
        let split = find(segment, b"\r\n\r\n").expect("a blank line after the part headers");
        parts.push(Part {
            headers: String::from_utf8(segment[..split].to_vec()).unwrap(),
            data: segment[split + 4..].to_vec(),
        });
        rest = &rest_after_crlf[end + delimiter.len()..];
    }
    parts
}

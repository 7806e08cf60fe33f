//! Starting an emulator with fast timings, a client for it, and small waiting helpers.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use secrecy::SecretString;
use sora_core::{Variant, VideoId};
use sora_emulator::{Emulator, EmulatorConfig, EmulatorHandle, WebhookRetry, WebhookTarget};
use sora_openai::webhook::{WebhookHeaders, WebhookSecret, WebhookVerifier};
use sora_openai::{CreateVideo, OpenAiClient, OpenAiConfig, ProviderError, Video, VideoProvider};
use url::Url;

/// How long a generation takes in these tests.
pub const DURATION: Duration = Duration::from_millis(300);

/// The configuration every test starts from: fast generations, fast ticks, fast retries.
pub fn fast_config() -> EmulatorConfig {
    EmulatorConfig {
        generation_duration: DURATION,
        tick_interval: Duration::from_millis(10),
        content_ttl: Duration::from_secs(600),
        retry_after: Duration::from_millis(100),
        webhook_retry: WebhookRetry {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(20),
            timeout: Duration::from_millis(300),
        },
        ..EmulatorConfig::default()
    }
}

/// A running emulator and clients for it.
pub struct TestEmulator {
    pub handle: EmulatorHandle,
    pub client: OpenAiClient,
    pub http: reqwest::Client,
}

impl TestEmulator {
    /// Starts an emulator with this configuration and an `OpenAiClient` with the key `sk-test`.
    pub async fn start(config: EmulatorConfig) -> Self {
        Self::start_with_key(config, "sk-test").await
    }

    /// Starts an emulator and a client using this API key.
    pub async fn start_with_key(config: EmulatorConfig, key: &str) -> Self {
        let handle = Emulator::start(config).await.expect("the emulator starts");
        let client = client_for(&handle, key);
        Self {
            handle,
            client,
            http: reqwest::Client::new(),
        }
    }

    /// `base_url` + `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.handle.base_url(), path)
    }

    /// Creates a video with only a prompt.
    pub async fn create(&self, prompt: &str) -> Result<Video, ProviderError> {
        self.client.create(CreateVideo::new(prompt)).await
    }

    /// Retrieves a video until `done` says so (at most 5 s).
    pub async fn retrieve_until(&self, id: &VideoId, done: impl Fn(&Video) -> bool) -> Video {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let video = self.client.retrieve(id).await.expect("retrieve");
            if done(&video) {
                return video;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting; last seen {video:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Downloads a variant completely.
    pub async fn download(
        &self,
        id: &VideoId,
        variant: Variant,
    ) -> Result<Download, ProviderError> {
        let content = self.client.download(id, variant).await?;
        let mut bytes = Vec::new();
        let mut stream = content.stream;
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(Download {
            content_type: content.content_type,
            content_length: content.content_length,
            bytes,
        })
    }
}

/// A finished download.
#[derive(Debug)]
pub struct Download {
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    pub bytes: Vec<u8>,
}

/// An `OpenAiClient` pointed at the emulator, with no read retries so that every answer shows.
pub fn client_for(handle: &EmulatorHandle, key: &str) -> OpenAiClient {
    let config = OpenAiConfig::new(SecretString::from(key.to_owned()))
        .with_base_url(Url::parse(&handle.base_url()).unwrap())
        .with_request_timeout(Duration::from_secs(5))
        .with_read_retries(0);
    OpenAiClient::new(config).unwrap()
}

/// Waits until `check` returns `Some` (at most `limit`).
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A webhook receiver: a wiremock server and the secret the emulator signs with.
pub struct Receiver {
    pub server: wiremock::MockServer,
    pub secret: WebhookSecret,
}

impl Receiver {
    /// A receiver with no mocks yet (wiremock answers 404 to everything until one is mounted).
    pub async fn start() -> Self {
        Self {
            server: wiremock::MockServer::start().await,
            secret: WebhookSecret::generate(),
        }
    }

    /// The webhook target to put in the emulator's configuration.
    pub fn target(&self) -> WebhookTarget {
        WebhookTarget {
            url: Url::parse(&format!("{}/hooks/openai", self.server.uri())).unwrap(),
            secret: self.secret.clone(),
        }
    }

    /// Every delivery received so far.
    pub async fn deliveries(&self) -> Vec<wiremock::Request> {
        self.server.received_requests().await.unwrap_or_default()
    }

    /// Waits until at least `n` deliveries arrived, and returns them all.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<wiremock::Request> {
        eventually(limit, || async {
            let got = self.deliveries().await;
            (got.len() >= n).then_some(got)
        })
        .await
    }

    /// Checks a delivery's signature with `sora_openai`'s verifier and parses its event.
    pub fn verify(&self, request: &wiremock::Request) -> Verified {
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (id, timestamp, signature) = (
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
        );
        let headers = WebhookHeaders {
            id: id.as_deref(),
            timestamp: timestamp.as_deref(),
            signature: signature.as_deref(),
        };
        let verifier = WebhookVerifier::new(vec![self.secret.clone()]).unwrap();
        let verified = verifier
            .verify(&headers, &request.body, SystemTime::now())
            .expect("the signature verifies");
        let event = sora_openai::webhook::WebhookEvent::parse(&request.body).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        Verified {
            webhook_id: verified.id,
            event,
            json,
        }
    }
}

/// A verified delivery.
#[derive(Debug)]
pub struct Verified {
    pub webhook_id: String,
    pub event: sora_openai::webhook::WebhookEvent,
    pub json: serde_json::Value,
}

/// Mounts a mock answering `status` to every webhook POST.
pub async fn answer_webhooks(receiver: &Receiver, status: u16) {
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/hooks/openai"))
        .respond_with(wiremock::ResponseTemplate::new(status))
        .mount(&receiver.server)
        .await;
}

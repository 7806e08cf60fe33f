//! Webhook delivery: `video.completed` / `video.failed` events, signed with the Standard Webhooks
//! scheme by `sora_openai`'s signer, retried with exponential backoff.

use std::time::Duration;

use serde::Serialize;
use sora_openai::webhook::WebhookSigner;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use url::Url;

use crate::config::{WebhookRetry, WebhookTarget};
use crate::state::{EventKind, Notice, new_id, unix_ms_now};

#[derive(Debug, Serialize)]
struct EventData<'a> {
    id: &'a str,
}

#[derive(Debug, Serialize)]
struct Event<'a> {
    id: String,
    object: &'static str,
    created_at: i64,
    #[serde(rename = "type")]
    kind: &'static str,
    data: EventData<'a>,
}

/// Everything one delivery needs, shared by the delivery tasks.
#[derive(Debug, Clone)]
struct Sender {
    client: reqwest::Client,
    signer: WebhookSigner,
    url: Url,
    retry: WebhookRetry,
}

/// Builds the HTTP client of the dispatcher: no redirects (a 3xx is a failed delivery, like
/// OpenAI's), a timeout per attempt.
pub(crate) fn client(retry: &WebhookRetry) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(retry.timeout)
        .user_agent(concat!("sora-emulator/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Receives the notices of finished jobs and delivers their webhooks until the channel closes or
/// the task is aborted (which aborts the deliveries in flight too).
pub(crate) async fn run(
    mut notices: UnboundedReceiver<Notice>,
    target: Option<WebhookTarget>,
    retry: WebhookRetry,
    client: reqwest::Client,
) {
    let sender = target.map(|t| Sender {
        client,
        signer: WebhookSigner::new(t.secret),
        url: t.url,
        retry,
    });
    let mut deliveries = JoinSet::new();
    loop {
        tokio::select! {
            notice = notices.recv() => {
                let Some(notice) = notice else { break };
                let Some(sender) = sender.clone() else {
                    tracing::debug!(video_id = %notice.video_id, "no webhook target configured");
                    continue;
                };
                if notice.drop {
                    tracing::info!(video_id = %notice.video_id, event = notice.kind.as_str(), "webhook dropped on purpose (fault)");
                    continue;
                }
                deliveries.spawn(deliver_notice(sender, notice));
            }
            Some(_) = deliveries.join_next(), if !deliveries.is_empty() => {}
        }
    }
    while deliveries.join_next().await.is_some() {}
}

async fn deliver_notice(sender: Sender, notice: Notice) {
    if !notice.delay.is_zero() {
        tokio::time::sleep(notice.delay).await;
    }
    let created_at = unix_ms_now().div_euclid(1000);
    let body = event_body(&notice.video_id, notice.kind, created_at);
    let webhook_id = new_id("wh");
    for _ in 0..notice.copies.max(1) {
        sender.deliver(&webhook_id, &body, notice.kind).await;
    }
    if notice.out_of_order {
        // A stale event of the opposite type, dated before the real one: a receiver must
        // neither move a finished job backwards nor trust the event over a retrieve.
        let stale_kind = notice.kind.opposite();
        let stale = event_body(&notice.video_id, stale_kind, created_at - 1);
        sender.deliver(&new_id("wh"), &stale, stale_kind).await;
    }
}

fn event_body(video_id: &str, kind: EventKind, created_at: i64) -> Vec<u8> {
    let event = Event {
        id: new_id("evt"),
        object: "event",
        created_at,
        kind: kind.as_str(),
        data: EventData { id: video_id },
    };
    // Serialising a struct of strings and integers cannot fail.
    serde_json::to_vec(&event).unwrap_or_default()
}

impl Sender {
    /// Delivers one message, retrying with exponential backoff; `true` once a 2xx came back.
    async fn deliver(&self, webhook_id: &str, body: &[u8], kind: EventKind) -> bool {
        let mut backoff = self.retry.initial_backoff;
        for attempt in 1..=self.retry.max_attempts {
            let timestamp = unix_ms_now().div_euclid(1000);
            let signature = self.signer.sign(webhook_id, timestamp, body);
            let result = self
                .client
                .post(self.url.clone())
                .header("content-type", "application/json")
                .header("webhook-id", webhook_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body.to_vec())
                .send()
                .await;
            match result {
                Ok(resp) if resp.status().is_success() => {
                    tracing::info!(
                        webhook_id,
                        event = kind.as_str(),
                        attempt,
                        "webhook delivered"
                    );
                    return true;
                }
                Ok(resp) => {
                    tracing::warn!(
                        webhook_id,
                        event = kind.as_str(),
                        attempt,
                        status = resp.status().as_u16(),
                        "webhook refused"
                    );
                }
                Err(e) => {
                    tracing::warn!(webhook_id, event = kind.as_str(), attempt, error = %e.without_url(), "webhook delivery failed");
                }
            }
            if attempt < self.retry.max_attempts {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2).min(Duration::from_secs(3600));
            }
        }
        tracing::error!(
            webhook_id,
            event = kind.as_str(),
            attempts = self.retry.max_attempts,
            "webhook given up"
        );
        false
    }
}

//! Webhooks: signed by the shared signer, verified by `sora_openai`'s verifier, retried, and every
//! webhook fault.

use std::time::{Duration, Instant};

use sora_emulator::{EmulatorConfig, Faults, WebhookRetry};
use sora_openai::VideoProvider;
use sora_openai::VideoStatus;
use sora_openai::webhook::WebhookEventKind;

use super::helpers::{DURATION, Receiver, TestEmulator, answer_webhooks, fast_config};

fn config_for(receiver: &Receiver) -> EmulatorConfig {
    EmulatorConfig {
        webhook: Some(receiver.target()),
        ..fast_config()
    }
}

#[tokio::test]
async fn completion_sends_a_signed_video_completed_event_without_anyone_polling() {
    let receiver = Receiver::start().await;
    answer_webhooks(&receiver, 200).await;
    let emu = TestEmulator::start(config_for(&receiver)).await;
    let video = emu.create("a sunrise").await.unwrap();
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let request = &got[0];
    assert_eq!(request.url.path(), "/hooks/openai");
    assert_eq!(request.headers["content-type"], "application/json");
    let verified = receiver.verify(request);
    assert_eq!(verified.event.kind, WebhookEventKind::VideoCompleted);
    assert_eq!(verified.event.video_id.as_deref(), Some(video.id.as_str()));
    assert!(verified.event.id.starts_with("evt_"));
    assert_eq!(verified.json["object"], "event");
    assert_eq!(verified.json["type"], "video.completed");
    assert!(verified.json["created_at"].as_i64().unwrap() >= video.created_at.unwrap());
    // When the event arrives, the video is completed for anyone who retrieves it.
    let now = emu.client.retrieve(&video.id).await.unwrap();
    assert_eq!(now.status, VideoStatus::Completed);
    // And a verifier with another secret refuses it.
    let other = sora_openai::webhook::WebhookVerifier::new(vec![
        sora_openai::webhook::WebhookSecret::generate(),
    ])
    .unwrap();
    let header = |n: &str| request.headers.get(n).map(|v| v.to_str().unwrap());
    let headers = sora_openai::webhook::WebhookHeaders {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
    };
    assert!(
        other
            .verify(&headers, &request.body, std::time::SystemTime::now())
            .is_err()
    );
}

#[tokio::test]
async fn failure_sends_a_video_failed_event() {
    let receiver = Receiver::start().await;
    answer_webhooks(&receiver, 204).await;
    let emu = TestEmulator::start(config_for(&receiver)).await;
    let video = emu.create("[fail:moderation_blocked]").await.unwrap();
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    let verified = receiver.verify(&got[0]);
    assert_eq!(verified.event.kind, WebhookEventKind::VideoFailed);
    assert_eq!(verified.event.video_id.as_deref(), Some(video.id.as_str()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        receiver.deliveries().await.len(),
        1,
        "a 2xx ends the delivery"
    );
}

#[tokio::test]
async fn refused_deliveries_are_retried_with_the_same_webhook_id() {
    let receiver = Receiver::start().await;
    // Two 500s, a redirect (3xx is a failure too), then success.
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(500))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&receiver.server)
        .await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(307).insert_header("location", "/elsewhere"))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&receiver.server)
        .await;
    answer_webhooks(&receiver, 200).await;
    let emu = TestEmulator::start(config_for(&receiver)).await;
    emu.create("persistent").await.unwrap();
    let got = receiver.wait_for(4, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_all = receiver.deliveries().await;
    assert_eq!(got_all.len(), 4, "no delivery after the first 2xx");
    assert!(got_all.iter().all(|r| r.url.path() == "/hooks/openai"));
    let verified: Vec<_> = got.iter().map(|r| receiver.verify(r)).collect();
    assert!(
        verified
            .iter()
            .all(|v| v.webhook_id == verified[0].webhook_id)
    );
    assert!(verified.iter().all(|v| v.event.id == verified[0].event.id));
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "the body is the same on every attempt"
    );
}

#[tokio::test]
async fn a_receiver_that_answers_too_slowly_gets_the_event_again() {
    let receiver = Receiver::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&receiver.server)
        .await;
    answer_webhooks(&receiver, 200).await;
    let emu = TestEmulator::start(config_for(&receiver)).await;
    emu.create("slow receiver").await.unwrap();
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    let a = receiver.verify(&got[0]);
    let b = receiver.verify(&got[1]);
    assert_eq!(a.webhook_id, b.webhook_id);
}

#[tokio::test]
async fn attempts_are_bounded() {
    let receiver = Receiver::start().await;
    answer_webhooks(&receiver, 503).await;
    let emu = TestEmulator::start(EmulatorConfig {
        webhook_retry: WebhookRetry {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            timeout: Duration::from_millis(300),
        },
        ..config_for(&receiver)
    })
    .await;
    emu.create("nobody home").await.unwrap();
    receiver.wait_for(3, Duration::from_secs(5)).await;
    // 10 ms then 20 ms of backoff: a fourth attempt would have come long before this.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.deliveries().await.len(), 3);
}

#[tokio::test]
async fn drop_webhook_marker_sends_nothing_for_that_job() {
    let receiver = Receiver::start().await;
    answer_webhooks(&receiver, 200).await;
    let emu = TestEmulator::start(config_for(&receiver)).await;
    let dropped = emu.create("lost [drop-webhook]").await.unwrap();
    let kept = emu.create("found").await.unwrap();
    emu.retrieve_until(&dropped.id, |v| v.status == VideoStatus::Completed)
        .await;
    receiver.wait_for(1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = receiver.deliveries().await;
    assert_eq!(got.len(), 1);
    let only = receiver.verify(&got[0]);
    assert_eq!(only.event.video_id.as_deref(), Some(kept.id.as_str()));
}

#[tokio::test]
async fn a_global_drop_share_of_one_drops_every_webhook() {
    let receiver = Receiver::start().await;
    answer_webhooks(&receiver, 200).await;
    let emu = TestEmulator::start(EmulatorConfig {
        faults: Faults {
            webhook_drop_share: 1.0,
            ..Faults::default()
        },
        ..config_for(&receiver)
    })
    .await;
    let a = emu.create("one").await.unwrap();
    let b = emu.create("two [fail]").await.unwrap();
    emu.retrieve_until(&a.id, |v| v.status.is_terminal()).await;
    emu.retrieve_until(&b.id, |v| v.status.is_terminal()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.deliveries().await.is_empty());
    // Back to no drops: the next job's webhook arrives.
    emu.handle.set_faults(Faults::default());
    emu.create("three").await.unwrap();
    receiver.wait_for(1, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn dup_webhook_marker_sends_the_same_message_n_times() {
    let receiver = Receiver::start().await;
    answer_webhooks(&receiver, 200).await;
    let emu = TestEmulator::start(config_for(&receiver)).await;
    emu.create("echo [dup-webhook:3]").await.unwrap();
    let got = receiver.wait_for(3, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.deliveries().await.len(), 3);
    let ids: Vec<String> = got.iter().map(|r| receiver.verify(r).webhook_id).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert!(got.iter().all(|r| r.body == got[0].body));
}

#[tokio::test]
async fn global_copies_duplicate_every_webhook() {
    let receiver = Receiver::start().await;
    answer_webhooks(&receiver, 200).await;
    let emu = TestEmulator::start(EmulatorConfig {
        faults: Faults {
            webhook_copies: 2,
            ..Faults::default()
        },
        ..config_for(&receiver)
    })
    .await;
    emu.create("twice").await.unwrap();
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(
        receiver.verify(&got[0]).webhook_id,
        receiver.verify(&got[1]).webhook_id
    );
}

#[tokio::test]
async fn late_webhook_marker_sends_long_after_completion() {
    let receiver = Receiver::start().await;
    answer_webhooks(&receiver, 200).await;
    let emu = TestEmulator::start(config_for(&receiver)).await;
    let video = emu.create("tardy [late-webhook:500]").await.unwrap();
    emu.retrieve_until(&video.id, |v| v.status == VideoStatus::Completed)
        .await;
    let completed = Instant::now();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        receiver.deliveries().await.is_empty(),
        "the webhook must wait for its delay"
    );
    receiver.wait_for(1, Duration::from_secs(5)).await;
    assert!(completed.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn out_of_order_marker_follows_the_real_event_with_a_stale_opposite_one() {
    let receiver = Receiver::start().await;
    answer_webhooks(&receiver, 200).await;
    let emu = TestEmulator::start(config_for(&receiver)).await;
    let video = emu.create("confusing [out-of-order]").await.unwrap();
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    let first = receiver.verify(&got[0]);
    let second = receiver.verify(&got[1]);
    assert_eq!(first.event.kind, WebhookEventKind::VideoCompleted);
    assert_eq!(second.event.kind, WebhookEventKind::VideoFailed);
    assert_eq!(second.event.video_id.as_deref(), Some(video.id.as_str()));
    assert_ne!(first.webhook_id, second.webhook_id);
    assert!(second.event.created_at.unwrap() < first.event.created_at.unwrap());
    // The truth, for whoever retrieves, is still "completed".
    let now = emu.client.retrieve(&video.id).await.unwrap();
    assert_eq!(now.status, VideoStatus::Completed);
}

#[tokio::test]
async fn early_webhook_marker_announces_the_outcome_before_retrieve_shows_it() {
    let receiver = Receiver::start().await;
    answer_webhooks(&receiver, 200).await;
    let emu = TestEmulator::start(EmulatorConfig {
        generation_duration: Duration::from_millis(600),
        ..config_for(&receiver)
    })
    .await;
    let video = emu.create("impatient [early-webhook]").await.unwrap();
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    let now = emu.client.retrieve(&video.id).await.unwrap();
    assert_eq!(now.status, VideoStatus::InProgress, "the event came first");
    let event = receiver.verify(&got[0]);
    assert_eq!(event.event.kind, WebhookEventKind::VideoCompleted);
    let done = emu
        .retrieve_until(&video.id, |v| v.status.is_terminal())
        .await;
    assert_eq!(done.status, VideoStatus::Completed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        receiver.deliveries().await.len(),
        1,
        "no second event at completion"
    );
}

#[tokio::test]
async fn without_a_webhook_target_nothing_is_sent_and_jobs_still_finish() {
    let receiver = Receiver::start().await;
    answer_webhooks(&receiver, 200).await;
    let emu = TestEmulator::start(fast_config()).await;
    let video = emu.create("quiet").await.unwrap();
    tokio::time::sleep(DURATION + Duration::from_millis(200)).await;
    let v = emu.client.retrieve(&video.id).await.unwrap();
    assert_eq!(v.status, VideoStatus::Completed);
    assert!(receiver.deliveries().await.is_empty());
}

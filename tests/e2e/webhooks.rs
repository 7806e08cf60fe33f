//! Webhooks: as an accelerator, never the only way a job finishes; verified, deduplicated.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use sora_e2e::{AppOptions, TestApp, start_emulator};
use sora_openai::webhook::{WebhookSecret, WebhookSigner};

use crate::{JOB_TIMEOUT, free_port};

fn metric(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn metrics(app: &TestApp) -> String {
    app.get("/metrics").await.text().await.unwrap()
}

#[tokio::test]
async fn a_webhook_completes_a_job_before_any_poll_would_have() {
    // The poller's first look is a minute away: only the webhook can finish this job in time.
    let app = TestApp::spawn_with(AppOptions {
        poll_ms: 60_000,
        ..Default::default()
    })
    .await;
    let job = app.create_job("a webhook-driven job").await;
    app.wait_for(&job, "completed", JOB_TIMEOUT).await;
    let m = metrics(&app).await;
    assert_eq!(
        metric(&m, "sora_webhooks_total{outcome=\"recorded\"}"),
        1,
        "{m}"
    );
    // Operators can see when webhooks last arrived.
    let last = metric(&m, "sora_webhook_last_verified_timestamp_seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(last) < 120, "{m}");
    app.stop().await;
}

#[tokio::test]
async fn jobs_complete_by_polling_when_webhooks_never_arrive() {
    // An external provider that sends no webhooks, and no webhook secret configured.
    let secret = WebhookSecret::generate();
    let emulator = start_emulator(None, &secret, 400).await;
    let app = TestApp::spawn_with(AppOptions {
        provider: Some((emulator.base_url(), None)),
        ..Default::default()
    })
    .await;
    let job = app.create_job("no webhooks here").await;
    app.wait_for(&job, "completed", JOB_TIMEOUT).await;

    // And the route says webhooks are off.
    let res = app
        .http
        .post(app.url("/api/webhook/video-events"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "webhooks_disabled");
    app.stop().await;
    emulator.stop().await;
}

#[tokio::test]
async fn dropped_webhooks_are_covered_by_polling_in_emulator_mode() {
    let app = TestApp::spawn().await;
    let job = app.create_job("lost in the mail [drop-webhook]").await;
    app.wait_for(&job, "completed", JOB_TIMEOUT).await;
    app.stop().await;
}

#[tokio::test]
async fn the_same_webhook_five_times_is_acknowledged_and_recorded_once() {
    let app = TestApp::spawn_with(AppOptions {
        poll_ms: 60_000,
        ..Default::default()
    })
    .await;
    let job = app.create_job("echo [dup-webhook:5]").await;
    app.wait_for(&job, "completed", JOB_TIMEOUT).await;
    // The copies arrive right after the first; give them a moment.
    let deadline = tokio::time::Instant::now() + JOB_TIMEOUT;
    loop {
        let m = metrics(&app).await;
        let recorded = metric(&m, "sora_webhooks_total{outcome=\"recorded\"}");
        let duplicate = metric(&m, "sora_webhooks_total{outcome=\"duplicate\"}");
        if duplicate == 4 {
            assert_eq!(recorded, 1);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn out_of_order_webhooks_never_move_a_job_backwards() {
    let app = TestApp::spawn().await;
    let job = app.create_job("twisted [out-of-order]").await;
    app.wait_for(&job, "completed", JOB_TIMEOUT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.status(&job).await["status"], "completed");
    app.stop().await;
}

#[tokio::test]
async fn forged_stale_future_and_malformed_webhooks_are_rejected() {
    let secret = WebhookSecret::generate();
    let port = free_port();
    let emulator = start_emulator(None, &secret, 400).await;
    let app = TestApp::spawn_with(AppOptions {
        provider: Some((emulator.base_url(), Some(secret.clone()))),
        env: vec![("SORA_BIND", format!("127.0.0.1:{port}"))],
        ..Default::default()
    })
    .await;
    let signer = WebhookSigner::new(secret);
    let forger = WebhookSigner::new(WebhookSecret::generate());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let body = json!({"id": "evt_1", "object": "event", "created_at": now, "type": "video.completed", "data": {"id": "video_unknown"}}).to_string();

    let post = |id: &str, ts: i64, sig: String, body: String| {
        let req = app
            .http
            .post(app.url("/api/webhook/video-events"))
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body);
        async move { req.send().await.unwrap() }
    };
    let expect = |res: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(res.status(), status);
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
    };

    // Forged: signed with another secret.
    let res = post(
        "wh_1",
        now,
        forger.sign("wh_1", now, body.as_bytes()),
        body.clone(),
    )
    .await;
    expect(res, 401, "invalid_signature").await;
    // Signed for another body.
    let res = post("wh_1", now, signer.sign("wh_1", now, b"{}"), body.clone()).await;
    expect(res, 401, "invalid_signature").await;
    // Stale and future-dated.
    for ts in [now - 301, now + 301] {
        let res = post(
            "wh_1",
            ts,
            signer.sign("wh_1", ts, body.as_bytes()),
            body.clone(),
        )
        .await;
        expect(res, 401, "invalid_signature").await;
    }
    // Missing headers.
    let res = app
        .http
        .post(app.url("/api/webhook/video-events"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    expect(res, 400, "invalid_webhook").await;
    // Validly signed but not an event.
    let junk = "not json".to_string();
    let res = post("wh_2", now, signer.sign("wh_2", now, junk.as_bytes()), junk).await;
    expect(res, 400, "invalid_webhook").await;

    // Valid: acknowledged, including an unknown event type and a video nobody knows yet.
    let res = post(
        "wh_3",
        now,
        signer.sign("wh_3", now, body.as_bytes()),
        body.clone(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        json!({"received": true})
    );
    let other = json!({"id": "evt_2", "object": "event", "type": "batch.completed", "data": {"id": "batch_1"}}).to_string();
    let res = post(
        "wh_4",
        now,
        signer.sign("wh_4", now, other.as_bytes()),
        other,
    )
    .await;
    assert_eq!(res.status(), 200);
    // The same delivery again: still 200.
    let res = post("wh_3", now, signer.sign("wh_3", now, body.as_bytes()), body).await;
    assert_eq!(res.status(), 200);

    let m = metrics(&app).await;
    assert_eq!(
        metric(&m, "sora_webhooks_total{outcome=\"rejected\"}"),
        6,
        "{m}"
    );
    assert_eq!(
        metric(&m, "sora_webhooks_total{outcome=\"duplicate\"}"),
        1,
        "{m}"
    );
    assert_eq!(
        metric(&m, "sora_webhooks_total{outcome=\"ignored\"}"),
        1,
        "{m}"
    );
    app.stop().await;
    emulator.stop().await;
}

#[tokio::test]
async fn webhooks_from_an_external_provider_with_a_configured_secret_complete_jobs() {
    // The production wiring: OPENAI_API_KEY, OPENAI_BASE_URL and OPENAI_WEBHOOK_SECRET set, the
    // provider signing its webhooks with that secret, and polling too slow to matter.
    let secret = WebhookSecret::generate();
    let port = free_port();
    let emulator = start_emulator(
        Some(format!("http://127.0.0.1:{port}/api/webhook/video-events")),
        &secret,
        200,
    )
    .await;
    let app = TestApp::spawn_with(AppOptions {
        provider: Some((emulator.base_url(), Some(secret))),
        poll_ms: 60_000,
        env: vec![("SORA_BIND", format!("127.0.0.1:{port}"))],
        ..Default::default()
    })
    .await;
    let job = app.create_job("a quick one").await;
    app.wait_for(&job, "completed", JOB_TIMEOUT).await;
    let m = metrics(&app).await;
    assert_eq!(
        metric(&m, "sora_webhooks_total{outcome=\"recorded\"}"),
        1,
        "{m}"
    );
    app.stop().await;
    emulator.stop().await;
}

//! Provider trouble: throttling, outages, refusals, expired content, stuck jobs, restarts.

use sora_e2e::{AppOptions, Db, TestApp, start_emulator};
use sora_openai::webhook::WebhookSecret;
use sora_openai::{ListQuery, OpenAiClient, OpenAiConfig, VideoProvider};

use crate::JOB_TIMEOUT;

async fn provider_calls(app: &TestApp, outcome: &str) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    let prefix = format!("sora_provider_calls_total{{operation=\"create\",outcome=\"{outcome}\"}}");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test]
async fn throttled_creates_are_retried_after_retry_after_then_succeed() {
    let app = TestApp::spawn().await;
    let job = app.create_job("busy day [429:2]").await;
    app.wait_for(&job, "completed", JOB_TIMEOUT).await;
    assert_eq!(provider_calls(&app, "rate_limited").await, 2);
    assert_eq!(provider_calls(&app, "ok").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn provider_server_errors_are_retried_then_succeed() {
    let app = TestApp::spawn().await;
    let job = app.create_job("flaky upstream [500:2]").await;
    app.wait_for(&job, "completed", JOB_TIMEOUT).await;
    assert_eq!(provider_calls(&app, "upstream").await, 2);
    let job = app.create_job("flaky upstream [503]").await;
    app.wait_for(&job, "completed", JOB_TIMEOUT).await;
    app.stop().await;
}

#[tokio::test]
async fn exhausted_quota_fails_the_job_with_the_providers_reason() {
    let app = TestApp::spawn().await;
    let job = app.create_job("no money left [quota]").await;
    let status = app.wait_for(&job, "failed", JOB_TIMEOUT).await;
    assert_eq!(status["error"]["code"], "quota_exhausted");
    assert!(!status["error"]["message"].as_str().unwrap().is_empty());
    assert_eq!(
        provider_calls(&app, "quota_exhausted").await,
        1,
        "not retried"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_policy_rejected_generation_fails_with_content_policy() {
    let app = TestApp::spawn().await;
    let job = app
        .create_job("something forbidden [fail:moderation_blocked]")
        .await;
    let status = app.wait_for(&job, "failed", JOB_TIMEOUT).await;
    assert_eq!(status["error"]["code"], "content_policy");
    assert!(status["downloadUrl"].is_null());
    let res = app.get(&format!("/api/download?jobId={job}")).await;
    assert_eq!(res.status(), 409);
    app.stop().await;
}

#[tokio::test]
async fn content_expired_before_archiving_fails_with_content_expired() {
    let app = TestApp::spawn().await;
    let job = app.create_job("gone too soon [expire-early]").await;
    let status = app.wait_for(&job, "failed", JOB_TIMEOUT).await;
    assert_eq!(status["error"]["code"], "content_expired");
    app.stop().await;
}

#[tokio::test]
async fn a_job_stuck_at_the_provider_fails_with_timeout() {
    let app = TestApp::spawn_with(AppOptions {
        env: vec![("SORA_JOB_DEADLINE_SECS", "2".into())],
        tune: |cfg| {
            sora_e2e::fast(cfg);
        },
        ..Default::default()
    })
    .await;
    let job = app.create_job("forever [stall]").await;
    let status = app.wait_for(&job, "failed", JOB_TIMEOUT).await;
    assert_eq!(status["error"]["code"], "timeout");
    app.stop().await;
}

async fn emulator_videos_with_prompt(base_url: &str, prompt: &str) -> usize {
    let client = OpenAiClient::new(
        OpenAiConfig::new("k".to_string()).with_base_url(base_url.parse().unwrap()),
    )
    .unwrap();
    let page = client
        .list(ListQuery {
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    page.data
        .iter()
        .filter(|v| v.prompt.as_deref() == Some(prompt))
        .count()
}

#[tokio::test]
async fn a_server_killed_mid_job_finishes_it_after_restart_and_submits_it_once() {
    let secret = WebhookSecret::generate();
    let emulator = start_emulator(None, &secret, 1500).await;
    let provider = Some((emulator.base_url(), None));
    let first = TestApp::spawn_with(AppOptions {
        provider: provider.clone(),
        ..Default::default()
    })
    .await;
    let db_url = first.db_url.clone();
    let storage = tempfile::tempdir().unwrap();
    let submitted = first.create_job("survives a crash").await;
    first.wait_for(&submitted, "in_progress", JOB_TIMEOUT).await;
    let db = first.kill().await;

    // An instance accepts a job, then dies before any worker of it looks at the job.
    let api_only = TestApp::spawn_with(AppOptions {
        db: Db::PostgresUrl(db_url.clone()),
        provider: provider.clone(),
        workers: false,
        ..Default::default()
    })
    .await;
    let accepted = api_only.create_job("accepted before the crash").await;
    let _ = api_only.kill().await;

    let second = TestApp::spawn_with(AppOptions {
        db: Db::PostgresUrl(db_url),
        provider,
        storage_dir: Some(storage.path().to_owned()),
        ..Default::default()
    })
    .await;
    second.wait_for(&submitted, "completed", JOB_TIMEOUT).await;
    second.wait_for(&accepted, "completed", JOB_TIMEOUT).await;
    let base = emulator.base_url();
    assert_eq!(
        emulator_videos_with_prompt(&base, "survives a crash").await,
        1
    );
    assert_eq!(
        emulator_videos_with_prompt(&base, "accepted before the crash").await,
        1
    );
    second.stop().await;
    if let Some(db) = db {
        db.cleanup().await;
    }
    emulator.stop().await;
}

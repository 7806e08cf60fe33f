//! Several server instances on one PostgreSQL database.

use sora_e2e::{AppOptions, Db, TestApp, start_emulator};
use sora_openai::webhook::WebhookSecret;
use sora_openai::{ListQuery, OpenAiClient, OpenAiConfig, VideoProvider};

use crate::{JOB_TIMEOUT, free_port};

#[tokio::test]
async fn a_webhook_to_one_instance_reaches_a_websocket_client_of_the_other() {
    let secret = WebhookSecret::generate();
    let port_a = free_port();
    let emulator = start_emulator(
        Some(format!(
            "http://127.0.0.1:{port_a}/api/webhook/video-events"
        )),
        &secret,
        300,
    )
    .await;
    let storage = tempfile::tempdir().unwrap();
    let provider = Some((emulator.base_url(), Some(secret)));
    // Polling is a minute away on both: completion can only come through the webhook to A.
    let a = TestApp::spawn_with(AppOptions {
        provider: provider.clone(),
        poll_ms: 60_000,
        storage_dir: Some(storage.path().to_owned()),
        env: vec![("SORA_BIND", format!("127.0.0.1:{port_a}"))],
        worker_id: Some("instance-a".into()),
        ..Default::default()
    })
    .await;
    let b = TestApp::spawn_with(AppOptions {
        db: Db::PostgresUrl(a.db_url.clone()),
        provider,
        poll_ms: 60_000,
        storage_dir: Some(storage.path().to_owned()),
        worker_id: Some("instance-b".into()),
        ..Default::default()
    })
    .await;

    let job = b.create_job("seen from afar").await;
    let mut ws = b.ws(&format!("&jobId={job}")).await;
    let seen = ws.until_status(&job, "completed", JOB_TIMEOUT).await;
    let last = seen.last().unwrap();
    // The signed link B hands out works on A too (shared link secret and storage).
    let url = last["downloadUrl"]
        .as_str()
        .unwrap()
        .replace(&b.base, &a.base);
    assert_eq!(reqwest::get(url).await.unwrap().status(), 200);

    b.stop().await;
    a.stop().await;
    emulator.stop().await;
}

#[tokio::test]
async fn two_instances_submit_each_job_exactly_once() {
    let secret = WebhookSecret::generate();
    let emulator = start_emulator(None, &secret, 300).await;
    let storage = tempfile::tempdir().unwrap();
    let provider = Some((emulator.base_url(), None));
    let a = TestApp::spawn_with(AppOptions {
        provider: provider.clone(),
        storage_dir: Some(storage.path().to_owned()),
        worker_id: Some("instance-a".into()),
        ..Default::default()
    })
    .await;
    let b = TestApp::spawn_with(AppOptions {
        db: Db::PostgresUrl(a.db_url.clone()),
        provider,
        storage_dir: Some(storage.path().to_owned()),
        worker_id: Some("instance-b".into()),
        ..Default::default()
    })
    .await;
    let mut jobs = Vec::new();
    for i in 0..12 {
        let app = if i % 2 == 0 { &a } else { &b };
        jobs.push(app.create_job(&format!("job number {i}")).await);
    }
    for job in &jobs {
        a.wait_for(job, "completed", JOB_TIMEOUT).await;
    }
    let client = OpenAiClient::new(
        OpenAiConfig::new("k".to_string()).with_base_url(emulator.base_url().parse().unwrap()),
    )
    .unwrap();
    let page = client
        .list(ListQuery {
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.data.len(), 12, "each job submitted exactly once");
    b.stop().await;
    a.stop().await;
    emulator.stop().await;
}

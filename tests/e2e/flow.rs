//! The whole flow: generate, watch over WebSocket, completion, download.

use std::time::Duration;

use serde_json::json;
use sora_e2e::{AppOptions, Db, TestApp};
use sora_emulator::media::{SPRITESHEET_JPEG, THUMBNAIL_WEBP, VIDEO_MP4};

use crate::JOB_TIMEOUT;

#[tokio::test]
async fn full_flow_generate_watch_complete_and_download_byte_identical_files() {
    let app = TestApp::spawn().await;
    let res = app
        .generate(json!({"prompt": "a calico cat on a skateboard", "preset": "draft", "metadata": {"ticket": "42"}}))
        .await;
    assert_eq!(res.status(), 202);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let created: serde_json::Value = res.json().await.unwrap();
    let job = created["jobId"].as_str().unwrap().to_owned();
    assert!(job.starts_with("job_"));
    assert_eq!(created["status"], "pending");
    assert_eq!(location, created["statusUrl"].as_str().unwrap());
    assert!(created["wsUrl"].as_str().unwrap().starts_with("ws://"));
    assert!(created["downloadUrl"].as_str().unwrap().contains(&job));

    let mut ws = app.ws(&format!("&jobId={job}")).await;
    let first = ws.next(JOB_TIMEOUT).await.expect("snapshot");
    assert_eq!(first["type"], "progress");
    assert_eq!(first["jobId"], job.as_str());
    assert_eq!(first["snapshot"], true);
    let seen = ws.until_status(&job, "completed", JOB_TIMEOUT).await;
    let last = seen.last().unwrap();
    assert_eq!(last["progress"], 100);
    assert_eq!(last["message"], "Ready for download");
    // Versions only go up, and progress never goes down, over the whole stream.
    let mut all = vec![first.clone()];
    all.extend(seen.iter().cloned());
    for pair in all.windows(2) {
        assert!(
            pair[1]["version"].as_u64() > pair[0]["version"].as_u64(),
            "{pair:?}"
        );
        assert!(
            pair[1]["progress"].as_u64() >= pair[0]["progress"].as_u64(),
            "{pair:?}"
        );
    }
    assert!(
        all.iter().any(|m| m["status"] == "in_progress"),
        "progress was pushed while generating: {all:?}"
    );

    let status = app.status(&job).await;
    assert_eq!(status["status"], "completed");
    assert_eq!(status["metadata"]["ticket"], "42");
    assert_eq!(status["spec"]["seconds"], 4);
    assert!(status["error"].is_null());

    // With the caller's key.
    let res = app
        .get(&format!("/api/download?jobId={job}&renderVersion=v3"))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "video/mp4");
    assert_eq!(res.headers()["accept-ranges"], "bytes");
    assert!(res.headers().contains_key("etag"));
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(".mp4")
    );
    assert_eq!(
        res.headers()["content-length"].to_str().unwrap(),
        VIDEO_MP4.len().to_string()
    );
    assert_eq!(res.bytes().await.unwrap().as_ref(), VIDEO_MP4);

    // Through the signed links, with no credential at all (as a <video src> would).
    for (variant, bytes, ct) in [
        ("video", VIDEO_MP4, "video/mp4"),
        ("thumbnail", THUMBNAIL_WEBP, "image/webp"),
        ("spritesheet", SPRITESHEET_JPEG, "image/jpeg"),
    ] {
        let url = status["downloads"][variant]["url"].as_str().unwrap();
        let res = reqwest::get(url).await.unwrap();
        assert_eq!(res.status(), 200, "{variant}");
        assert_eq!(res.headers()["content-type"], ct);
        assert_eq!(res.bytes().await.unwrap().as_ref(), bytes, "{variant}");
    }
    assert_eq!(status["downloadUrl"], status["downloads"]["video"]["url"]);

    // A tampered or expired link is refused.
    let url = status["downloadUrl"].as_str().unwrap();
    let tampered = url.replace("variant=video", "variant=thumbnail");
    assert_eq!(reqwest::get(&tampered).await.unwrap().status(), 403);
    let expired = regex_replace_expires(url);
    let res = reqwest::get(&expired).await.unwrap();
    assert_eq!(res.status(), 403);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_link");
    app.stop().await;
}

fn regex_replace_expires(url: &str) -> String {
    let start = url.find("expires=").unwrap() + "expires=".len();
    let end = url[start..].find('&').map_or(url.len(), |e| start + e);
    format!("{}1{}", &url[..start], &url[end..])
}

#[tokio::test]
async fn the_embedded_sqlite_store_runs_the_whole_flow() {
    let app = TestApp::spawn_with(AppOptions {
        db: Db::Sqlite,
        ..Default::default()
    })
    .await;
    let job = app.create_job("a lighthouse at dusk").await;
    // SQLite's notices carry no state: the hub reads each change (and the snapshot) back.
    let mut ws = app.ws(&format!("&jobId={job}")).await;
    let seen = ws.until_status(&job, "completed", JOB_TIMEOUT).await;
    assert_eq!(seen[0]["snapshot"], true, "{seen:?}");
    let versions: Vec<u64> = seen
        .iter()
        .map(|m| m["version"].as_u64().unwrap())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{versions:?}");
    assert!(seen.last().unwrap()["downloadUrl"].is_string(), "{seen:?}");
    let status = app.wait_for(&job, "completed", JOB_TIMEOUT).await;
    let url = status["downloadUrl"].as_str().unwrap();
    assert_eq!(
        reqwest::get(url)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        VIDEO_MP4
    );
    app.stop().await;
}

#[tokio::test]
async fn websocket_subscriptions_by_message_unsubscribe_and_ping() {
    // Generations take a few seconds here, so that job `a` keeps changing while we watch `b`.
    let app = TestApp::spawn_with(AppOptions {
        emulator_ms: 4000,
        ..Default::default()
    })
    .await;
    let a = app.create_job("first [stall]").await;
    let b = app.create_job("second").await;
    let mut ws = app.ws("").await;

    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next(JOB_TIMEOUT).await.unwrap(), json!({"type": "pong"}));

    ws.send(json!({"type": "subscribe", "jobId": a})).await;
    let snap = ws.next(JOB_TIMEOUT).await.unwrap();
    assert_eq!(
        (snap["jobId"].as_str(), snap["snapshot"].as_bool()),
        (Some(a.as_str()), Some(true))
    );
    ws.send(json!({"type": "unsubscribe", "jobId": a})).await;
    // Messages about `a` may still be in flight; skip to the acknowledgement, then let anything
    // already queued drain.
    loop {
        let m = ws.next(JOB_TIMEOUT).await.unwrap();
        if m["type"] == "unsubscribed" {
            assert_eq!(m["jobId"], a.as_str());
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send(json!({"type": "ping"})).await;
    while ws.next(JOB_TIMEOUT).await.unwrap()["type"] != "pong" {}

    // While `b` runs to completion, `a` keeps progressing, and none of it reaches us.
    ws.send(json!({"type": "subscribe", "jobId": b})).await;
    let seen = ws.until_status(&b, "completed", JOB_TIMEOUT).await;
    assert!(seen.iter().all(|m| m["jobId"] != a.as_str()), "{seen:?}");
    assert!(
        app.status(&a).await["progress"].as_u64() > snap["progress"].as_u64(),
        "`a` did progress meanwhile"
    );

    ws.send(json!({"type": "dance"})).await;
    let err = ws.next(JOB_TIMEOUT).await.unwrap();
    assert_eq!(
        (err["type"].as_str(), err["code"].as_str()),
        (Some("error"), Some("invalid_message"))
    );
    ws.send(json!({"type": "subscribe", "jobId": "nope"})).await;
    let err = ws.next(JOB_TIMEOUT).await.unwrap();
    assert_eq!(err["code"], "invalid_job_id");
    app.stop().await;
}

#[tokio::test]
async fn a_job_can_be_cancelled_and_the_provider_copy_is_deleted() {
    let app = TestApp::spawn().await;
    let job = app.create_job("a slow one [stall]").await;
    app.wait_for(&job, "in_progress", JOB_TIMEOUT).await;
    let res = app
        .http
        .delete(app.url(&format!("/api/jobs/{job}")))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["cancelled"], true);
    assert_eq!(body["job"]["status"], "cancelled");
    assert_eq!(body["upstream"]["outcome"], "deleted");
    // Cancelling again changes nothing and says so.
    let res = app
        .http
        .delete(app.url(&format!("/api/jobs/{job}")))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["cancelled"], false);
    assert_eq!(body["job"]["status"], "cancelled");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.status(&job).await["status"], "cancelled");
    app.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_closes_websockets_with_a_reason() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let app = TestApp::spawn().await;
    let job = app.create_job("interrupted [stall]").await;
    app.wait_for(&job, "in_progress", JOB_TIMEOUT).await;
    let url = format!(
        "ws://{}/api/ws?token={}&jobId={job}",
        app.server().addr(),
        app.key
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let _snapshot = ws.next().await.unwrap().unwrap();

    let mut app = app;
    let db = app.db.take();
    app.server.take().unwrap().stop().await;

    let close = loop {
        match tokio::time::timeout(JOB_TIMEOUT, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let frame = close.expect("a close reason");
    assert_eq!(frame.code, CloseCode::Away);
    assert!(frame.reason.contains("shutting down"), "{}", frame.reason);

    if let Some(db) = db {
        db.cleanup().await;
    }
}

//! The example completes a job end to end through the application's own login and prefix.

use std::time::Duration;

use serde_json::Value;

#[tokio::test]
async fn an_embedding_application_completes_a_job_under_its_own_login_and_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/app.db", dir.path().display());
    let app = sora_example_embedded::start("127.0.0.1:0", &db, "memory://")
        .await
        .unwrap();
    let base = format!("http://{}", app.addr);
    let http = reqwest::Client::new();

    // Without the application's session: refused, in our JSON error shape.
    let res = http
        .post(format!("{base}/media/api/generate"))
        .json(&serde_json::json!({"prompt": "a cat"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    // The application's own login.
    let res = http
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("user=alice")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let cookie = res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    let res = http
        .post(format!("{base}/media/api/generate?renderVersion=v3"))
        .header("cookie", &cookie)
        .json(&serde_json::json!({"prompt": "a cat under the application's prefix", "preset": "draft"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let created: Value = res.json().await.unwrap();
    let status_url = created["statusUrl"].as_str().unwrap().to_owned();
    assert!(
        status_url.starts_with(&format!("{base}/media/api/status?")),
        "{status_url}"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let s: Value = http
            .get(&status_url)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["status"] == "completed" {
            break s;
        }
        assert!(s["status"] != "failed", "{s}");
        assert!(tokio::time::Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let url = status["downloadUrl"].as_str().unwrap();
    assert!(url.starts_with(&format!("{base}/media/api/download?")));
    let bytes = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    assert_eq!(bytes.as_ref(), sora_emulator::media::VIDEO_MP4);

    // Another user of the application does not see alice's job.
    let res = http
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("user=bob")
        .send()
        .await
        .unwrap();
    let bob = res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let res = http
        .get(&status_url)
        .header("cookie", bob)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    app.stop().await;
}

//! The REST contract: idempotency, ownership, downloads, pagination, bad input, operations.

use serde_json::{Value, json};
use sora_e2e::{AppOptions, TestApp};
use sora_emulator::media::VIDEO_MP4;

use crate::JOB_TIMEOUT;

async fn error_of(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("status {status}: body is not JSON: {text}"));
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("status {status}: no error.code in {body}"))
        .to_owned();
    assert!(body["error"]["message"].is_string(), "{body}");
    (status, code)
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_first_answer_and_refuses_another_body() {
    let app = TestApp::spawn_with(AppOptions {
        workers: false,
        ..Default::default()
    })
    .await;
    let send = |body: Value, key: &'static str| {
        app.http
            .post(app.url("/api/generate?renderVersion=v3"))
            .bearer_auth(&app.key)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let body = json!({"prompt": "once only", "preset": "draft"});
    let first = send(body.clone(), "key-1").await.unwrap();
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = send(body.clone(), "key-1").await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["jobId"], first["jobId"]);

    let other = send(json!({"prompt": "something else"}), "key-1")
        .await
        .unwrap();
    assert_eq!(error_of(other).await, (409, "idempotency_conflict".into()));

    // Another owner's identical key is a different record.
    let bob = app.create_key("bob").await;
    let res = app
        .http
        .post(app.url("/api/generate"))
        .bearer_auth(&bob)
        .header("Idempotency-Key", "key-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let bobs: Value = res.json().await.unwrap();
    assert_ne!(bobs["jobId"], first["jobId"]);

    let list: Value = app.get("/api/jobs").await.json().await.unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
    app.stop().await;
}

#[tokio::test]
async fn another_owners_job_is_invisible_on_every_route() {
    let app = TestApp::spawn().await;
    let job = app.create_job("alice's secret").await;
    app.wait_for(&job, "completed", JOB_TIMEOUT).await;
    let bob = app.create_key("bob").await;

    let get = |path: String| app.http.get(app.url(&path)).bearer_auth(&bob).send();
    for path in [
        format!("/api/status?jobId={job}"),
        format!("/api/jobs/{job}"),
        format!("/api/download?jobId={job}"),
        format!("/api/download?jobId={job}&variant=thumbnail"),
    ] {
        assert_eq!(
            error_of(get(path.clone()).await.unwrap()).await,
            (404, "job_not_found".into()),
            "{path}"
        );
    }
    let res = app
        .http
        .delete(app.url(&format!("/api/jobs/{job}")))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res).await, (404, "job_not_found".into()));
    let list: Value = get("/api/jobs".into()).await.unwrap().json().await.unwrap();
    assert_eq!(list["jobs"], json!([]));

    // Nor over a WebSocket.
    let url = format!(
        "ws://{}/api/ws?token={bob}&jobId={job}",
        app.server().addr()
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    use futures::StreamExt;
    let msg = ws.next().await.unwrap().unwrap();
    let msg: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
    assert_eq!(
        (msg["type"].as_str(), msg["code"].as_str()),
        (Some("error"), Some("job_not_found"))
    );

    // Alice still sees it.
    assert_eq!(app.status(&job).await["status"], "completed");
    app.stop().await;
}

#[tokio::test]
async fn downloads_answer_ranges_conditional_requests_and_not_ready() {
    let app = TestApp::spawn().await;
    let pending = TestApp::spawn_with(AppOptions {
        workers: false,
        ..Default::default()
    })
    .await;
    let not_yet = pending.create_job("later").await;
    let res = pending.get(&format!("/api/download?jobId={not_yet}")).await;
    assert_eq!(error_of(res).await, (409, "not_ready".into()));
    pending.stop().await;

    let job = app.create_job("ranges").await;
    app.wait_for(&job, "completed", JOB_TIMEOUT).await;
    let url = format!("/api/download?jobId={job}&renderVersion=v3");
    let range = |r: &'static str| {
        app.http
            .get(app.url(&url))
            .bearer_auth(&app.key)
            .header("Range", r)
            .send()
    };
    let len = VIDEO_MP4.len();
    let res = range("bytes=0-99").await.unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes 0-99/{len}").as_str()
    );
    assert_eq!(res.headers()["content-length"], "100");
    assert_eq!(res.bytes().await.unwrap().as_ref(), &VIDEO_MP4[..100]);

    let res = range("bytes=-10").await.unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap().as_ref(), &VIDEO_MP4[len - 10..]);

    let res = range("bytes=100-").await.unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap().as_ref(), &VIDEO_MP4[100..]);

    let res = range("bytes=999999999-").await.unwrap();
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes */{len}").as_str()
    );
    assert_eq!(error_of(res).await, (416, "range_not_satisfiable".into()));

    let etag = app.get(&url).await.headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let res = app
        .http
        .get(app.url(&url))
        .bearer_auth(&app.key)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);

    // Deleting a finished job deletes its files: the status says so and downloads are gone.
    let res = app
        .http
        .delete(app.url(&format!("/api/jobs/{job}")))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["filesDeleted"], true);
    assert_eq!(body["job"]["status"], "completed");
    let status = app.status(&job).await;
    assert_eq!(status["filesDeleted"], true);
    let list: Value = app.get("/api/jobs").await.json().await.unwrap();
    assert_eq!(list["jobs"][0]["jobId"], job.as_str());
    assert_eq!(list["jobs"][0]["filesDeleted"], true);
    assert!(list["jobs"][0]["downloadUrl"].is_null());
    assert!(status["downloadUrl"].is_null());
    assert_eq!(
        error_of(app.get(&url).await).await,
        (410, "files_deleted".into())
    );
    app.stop().await;
}

#[tokio::test]
async fn jobs_are_listed_newest_first_with_a_cursor_and_a_status_filter() {
    let app = TestApp::spawn_with(AppOptions {
        workers: false,
        ..Default::default()
    })
    .await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(app.create_job(&format!("job {i}")).await);
    }
    let page: Value = app.get("/api/jobs?limit=2").await.json().await.unwrap();
    let ids = |v: &Value| -> Vec<String> {
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["jobId"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&page), vec![created[4].clone(), created[3].clone()]);
    let cursor = page["nextCursor"].as_str().unwrap();
    let page2: Value = app
        .get(&format!("/api/jobs?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&page2), vec![created[2].clone(), created[1].clone()]);
    let cursor = page2["nextCursor"].as_str().unwrap();
    let page3: Value = app
        .get(&format!("/api/jobs?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&page3), vec![created[0].clone()]);
    assert!(page3["nextCursor"].is_null());

    let pending: Value = app
        .get("/api/jobs?status=pending")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&pending).len(), 5);
    let done: Value = app
        .get("/api/jobs?status=completed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&done).len(), 0);
    app.stop().await;
}

#[tokio::test]
async fn bad_input_on_every_route_is_a_4xx_json_error_never_a_500() {
    let app = TestApp::spawn_with(AppOptions {
        workers: false,
        env: vec![("SORA_MAX_UPLOAD_BYTES", "1000".into())],
        ..Default::default()
    })
    .await;
    let job = app.create_job("exists").await;
    let post = |path: &str, body: &'static str, ct: &'static str| {
        app.http
            .post(app.url(path))
            .bearer_auth(&app.key)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let json_ct = "application/json";
    let cases: Vec<(reqwest::Response, u16, &str)> = vec![
        (
            app.http
                .post(app.url("/api/generate"))
                .json(&json!({"prompt": "x"}))
                .send()
                .await
                .unwrap(),
            401,
            "unauthorized",
        ),
        (
            app.http
                .post(app.url("/api/generate"))
                .bearer_auth("wrong")
                .json(&json!({"prompt": "x"}))
                .send()
                .await
                .unwrap(),
            401,
            "unauthorized",
        ),
        (
            app.http
                .post(app.url("/api/generate"))
                .header("authorization", "Basic abc")
                .json(&json!({"prompt": "x"}))
                .send()
                .await
                .unwrap(),
            401,
            "unauthorized",
        ),
        (
            post(
                "/api/generate?renderVersion=v2",
                r#"{"prompt":"x"}"#,
                json_ct,
            )
            .await
            .unwrap(),
            400,
            "invalid_render_version",
        ),
        (
            post("/api/generate", "{not json", json_ct).await.unwrap(),
            400,
            "invalid_json",
        ),
        (
            post("/api/generate", r#"{"prompt": 5}"#, json_ct)
                .await
                .unwrap(),
            400,
            "invalid_json",
        ),
        (
            post("/api/generate", r#"{}"#, json_ct).await.unwrap(),
            400,
            "invalid_request",
        ),
        (
            post("/api/generate", r#"{"prompt":"   "}"#, json_ct)
                .await
                .unwrap(),
            400,
            "invalid_request",
        ),
        (
            post(
                "/api/generate",
                r#"{"prompt":"x","preset":"ultra"}"#,
                json_ct,
            )
            .await
            .unwrap(),
            400,
            "invalid_request",
        ),
        (
            post("/api/generate", r#"{"prompt":"x","size":"1x1"}"#, json_ct)
                .await
                .unwrap(),
            400,
            "invalid_request",
        ),
        (
            post("/api/generate", r#"{"prompt":"x","seconds":"5"}"#, json_ct)
                .await
                .unwrap(),
            400,
            "invalid_request",
        ),
        (
            post("/api/generate", r#"{"prompt":"x","seconds":[4]}"#, json_ct)
                .await
                .unwrap(),
            400,
            "invalid_request",
        ),
        (
            post("/api/generate", r#"{"prompt":"x","model":"veo"}"#, json_ct)
                .await
                .unwrap(),
            400,
            "invalid_request",
        ),
        (
            post(
                "/api/generate",
                r#"{"prompt":"x","remixOf":"job_nope"}"#,
                json_ct,
            )
            .await
            .unwrap(),
            400,
            "invalid_request",
        ),
        (
            post(
                "/api/generate",
                r#"{"prompt":"x","metadata":{"a":1}}"#,
                json_ct,
            )
            .await
            .unwrap(),
            400,
            "invalid_json",
        ),
        (
            post(
                "/api/generate",
                "prompt=x",
                "application/x-www-form-urlencoded",
            )
            .await
            .unwrap(),
            415,
            "unsupported_media_type",
        ),
        (
            post(
                "/api/generate",
                "--x\r\n",
                "multipart/form-data; boundary=x",
            )
            .await
            .unwrap(),
            400,
            "invalid_multipart",
        ),
        (
            app.get("/api/status?renderVersion=v3").await,
            400,
            "invalid_request",
        ),
        (
            app.get("/api/status?jobId=job_123").await,
            400,
            "invalid_request",
        ),
        (
            app.get("/api/status?jobId=job_01ARZ3NDEKTSV4RRFFQ69G5FAV")
                .await,
            404,
            "job_not_found",
        ),
        (
            app.get(&format!("/api/status?jobId={job}&renderVersion=v9"))
                .await,
            400,
            "invalid_render_version",
        ),
        (
            app.get(&format!("/api/download?jobId={job}&variant=poster"))
                .await,
            400,
            "invalid_request",
        ),
        (
            app.get(&format!(
                "/api/download?jobId={job}&expires=1&signature=abc"
            ))
            .await,
            403,
            "invalid_link",
        ),
        (
            app.get(&format!("/api/download?jobId={job}&signature=abc"))
                .await,
            403,
            "invalid_link",
        ),
        (
            app.get("/api/jobs?status=done").await,
            400,
            "invalid_request",
        ),
        (app.get("/api/jobs?limit=0").await, 400, "invalid_request"),
        (
            app.get("/api/jobs?limit=many").await,
            400,
            "invalid_request",
        ),
        (
            app.get("/api/jobs?cursor=garbage!").await,
            400,
            "invalid_request",
        ),
        (app.get("/api/jobs/not-a-job").await, 400, "invalid_request"),
        (app.get("/api/nothing-here").await, 404, "route_not_found"),
        (
            app.http.put(app.url("/api/generate")).send().await.unwrap(),
            405,
            "method_not_allowed",
        ),
        (
            app.http.post(app.url("/api/status")).send().await.unwrap(),
            405,
            "method_not_allowed",
        ),
        (app.get("/api/ws").await, 400, "websocket_handshake"),
        (
            app.http.get(app.url("/api/ws")).send().await.unwrap(),
            401,
            "unauthorized",
        ),
        (app.get("/api/ws?jobId=bad").await, 400, "invalid_request"),
    ];
    for (i, (res, status, code)) in cases.into_iter().enumerate() {
        assert_eq!(error_of(res).await, (status, code.to_owned()), "case {i}");
    }

    // Too large: a prompt over the JSON limit, an image over SORA_MAX_UPLOAD_BYTES.
    let huge = json!({"prompt": "x".repeat(300 * 1024)});
    let res = app.generate(huge).await;
    assert_eq!(error_of(res).await, (413, "payload_too_large".into()));
    let long = json!({"prompt": "é".repeat(32_001)});
    assert_eq!(
        error_of(app.generate(long).await).await,
        (400, "invalid_request".into())
    );
    let form = reqwest::multipart::Form::new().text("prompt", "x").part(
        "inputReference",
        reqwest::multipart::Part::bytes(vec![0u8; 2000]).file_name("a.png"),
    );
    let res = app
        .http
        .post(app.url("/api/generate"))
        .bearer_auth(&app.key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res).await, (413, "payload_too_large".into()));
    let form = reqwest::multipart::Form::new().text("prompt", "x").part(
        "inputReference",
        reqwest::multipart::Part::bytes(b"GIF89a....".to_vec()).file_name("a.gif"),
    );
    let res = app
        .http
        .post(app.url("/api/generate"))
        .bearer_auth(&app.key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res).await, (400, "invalid_request".into()));
    app.stop().await;
}

/// A 1x1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
    0x42, 0x60, 0x82,
];

#[tokio::test]
async fn multipart_create_with_an_input_image_and_a_remix_complete() {
    let app = TestApp::spawn().await;
    let form = reqwest::multipart::Form::new()
        .text("prompt", "from this first frame")
        .text("preset", "draft")
        .text("metadata", r#"{"source":"upload"}"#)
        .part(
            "inputReference",
            reqwest::multipart::Part::bytes(PNG.to_vec())
                .file_name("frame.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let res = app
        .http
        .post(app.url("/api/generate?renderVersion=v3"))
        .bearer_auth(&app.key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let job = res.json::<Value>().await.unwrap()["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = app.wait_for(&job, "completed", JOB_TIMEOUT).await;
    assert_eq!(status["metadata"]["source"], "upload");

    let res = app
        .generate(json!({"prompt": "now at night", "remixOf": job}))
        .await;
    assert_eq!(res.status(), 202);
    let remix = res.json::<Value>().await.unwrap()["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = app.wait_for(&remix, "completed", JOB_TIMEOUT).await;
    assert_eq!(status["remixOf"], job.as_str());
    app.stop().await;
}

#[tokio::test]
async fn health_readiness_metrics_presets_and_openapi_answer() {
    let app = TestApp::spawn().await;
    for path in ["/healthz", "/readyz", "/api/presets", "/api/openapi.json"] {
        let res = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    let presets: Value = app
        .http
        .get(app.url("/api/presets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        presets["presets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "draft")
    );

    let job = app.create_job("for the metrics").await;
    app.wait_for(&job, "completed", JOB_TIMEOUT).await;
    let m = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "sora_http_requests_total{",
        "sora_jobs{status=\"completed\"} 1",
        "sora_provider_calls_total{operation=\"create\",outcome=\"ok\"} 1",
        "sora_provider_call_duration_seconds_bucket",
        "sora_websocket_connections",
    ] {
        assert!(m.contains(name), "missing {name} in\n{m}");
    }

    let doc: Value = app
        .http
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/generate",
        "/api/status",
        "/api/download",
        "/api/webhook/video-events",
        "/api/ws",
        "/api/jobs",
        "/api/jobs/{jobId}",
        "/api/presets",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from openapi.json"
        );
    }
    // The schema is generated from the answer types: a real answer has exactly its fields.
    let status = app.status(&job).await;
    let props = doc["components"]["schemas"]["JobDto"]["properties"]
        .as_object()
        .unwrap();
    for key in status.as_object().unwrap().keys() {
        assert!(props.contains_key(key), "{key} is not in the JobDto schema");
    }
    assert!(
        doc["paths"]["/api/generate"]["post"]["requestBody"]["content"]
            .get("multipart/form-data")
            .is_some()
    );
    app.stop().await;
}

#[tokio::test]
async fn browsers_from_allowed_origins_may_call_and_open_sockets_others_may_not() {
    let app = TestApp::spawn_with(AppOptions {
        workers: false,
        env: vec![("SORA_CORS_ORIGINS", "http://localhost:5173".into())],
        ..Default::default()
    })
    .await;
    // CORS preflight.
    let pre = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/api/generate"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type,idempotency-key",
            )
            .send()
    };
    let ok = pre("http://localhost:5173").await.unwrap();
    assert!(ok.status().is_success());
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    let bad = pre("https://evil.example").await.unwrap();
    assert!(bad.headers().get("access-control-allow-origin").is_none());

    // WebSocket upgrades check the Origin too.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("ws://{}/api/ws?token={}", app.server().addr(), app.key);
    let mut req = url.clone().into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "http://localhost:5173".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 403),
        other => panic!("a foreign origin must be refused, got {other:?}"),
    }
    app.stop().await;
}

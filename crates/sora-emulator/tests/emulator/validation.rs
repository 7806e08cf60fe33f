//! Create and query validation, answered like the real API: 400 with
//! `{"error":{"message","type":"invalid_request_error","param","code"}}`.

use serde_json::{Value, json};
use sora_emulator::EmulatorConfig;
use sora_emulator::media::THUMBNAIL_WEBP;

use super::helpers::{TestEmulator, fast_config};

async fn post_json(emu: &TestEmulator, body: &Value) -> (u16, Value) {
    let res = emu
        .http
        .post(emu.url("/videos"))
        .bearer_auth("sk-test")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

fn assert_invalid(answer: &(u16, Value), param: &str, code: &str) {
    let (status, body) = answer;
    assert_eq!(*status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(body["error"]["param"], param, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

#[tokio::test]
async fn the_prompt_is_required_and_between_1_and_32000_characters() {
    let emu = TestEmulator::start(fast_config()).await;
    assert_invalid(
        &post_json(&emu, &json!({"model": "sora-2"})).await,
        "prompt",
        "missing_required_parameter",
    );
    assert_invalid(
        &post_json(&emu, &json!({"prompt": "  "})).await,
        "prompt",
        "string_too_short",
    );
    // Characters, not bytes: 32,000 two-byte characters are fine, one more is not.
    let longest = "é".repeat(32_000);
    let (status, body) = post_json(&emu, &json!({ "prompt": longest })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "video");
    assert_eq!(body["status"], "queued");
    assert_invalid(
        &post_json(&emu, &json!({ "prompt": "é".repeat(32_001) })).await,
        "prompt",
        "string_above_max_length",
    );
    assert_invalid(
        &post_json(&emu, &json!({ "prompt": 42 })).await,
        "prompt",
        "invalid_type",
    );
}

#[tokio::test]
async fn seconds_must_be_a_string_of_an_allowed_value() {
    let emu = TestEmulator::start(fast_config()).await;
    assert_invalid(
        &post_json(&emu, &json!({"prompt": "p", "seconds": 8})).await,
        "seconds",
        "invalid_type",
    );
    assert_invalid(
        &post_json(&emu, &json!({"prompt": "p", "seconds": "5"})).await,
        "seconds",
        "invalid_value",
    );
    for seconds in ["4", "8", "12"] {
        let (status, body) = post_json(&emu, &json!({"prompt": "p", "seconds": seconds})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["seconds"], seconds);
    }
    // The default is the first allowed value, and the default size likewise.
    let (_, body) = post_json(&emu, &json!({"prompt": "p"})).await;
    assert_eq!(body["seconds"], "4");
    assert_eq!(body["size"], "720x1280");
    assert_eq!(body["model"], "sora-2");
}

#[tokio::test]
async fn the_allowed_values_are_configurable() {
    let emu = TestEmulator::start(EmulatorConfig {
        allowed_seconds: vec!["5".into(), "10".into()],
        allowed_sizes: vec!["1920x1080".into()],
        default_model: "veo-3".into(),
        ..fast_config()
    })
    .await;
    let (status, body) = post_json(&emu, &json!({"prompt": "p", "seconds": "10"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["size"], "1920x1080");
    assert_eq!(body["model"], "veo-3");
    assert_invalid(
        &post_json(&emu, &json!({"prompt": "p", "seconds": "4"})).await,
        "seconds",
        "invalid_value",
    );
}

#[tokio::test]
async fn size_model_and_unknown_parameters_are_checked() {
    let emu = TestEmulator::start(fast_config()).await;
    assert_invalid(
        &post_json(&emu, &json!({"prompt": "p", "size": "640x480"})).await,
        "size",
        "invalid_value",
    );
    assert_invalid(
        &post_json(&emu, &json!({"prompt": "p", "model": ""})).await,
        "model",
        "invalid_value",
    );
    assert_invalid(
        &post_json(&emu, &json!({"prompt": "p", "quality": "high"})).await,
        "quality",
        "unknown_parameter",
    );
    let (status, body) = post_json(
        &emu,
        &json!({"prompt": "p", "model": "sora-2-pro", "size": "1024x1792"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "sora-2-pro");
}

#[tokio::test]
async fn a_json_input_reference_is_a_url_a_file_id_or_an_image_data_url() {
    use base64::Engine;
    let emu = TestEmulator::start(fast_config()).await;
    let webp = base64::engine::general_purpose::STANDARD.encode(THUMBNAIL_WEBP);
    for reference in [
        json!({"image_url": "https://example.com/frame.png"}),
        json!({"file_id": "file-abc123"}),
        json!({"image_url": format!("data:image/webp;base64,{webp}")}),
    ] {
        let (status, body) =
            post_json(&emu, &json!({"prompt": "p", "input_reference": reference})).await;
        assert_eq!(status, 200, "{reference}: {body}");
    }
    let not_an_image = base64::engine::general_purpose::STANDARD.encode(b"plain text");
    assert_invalid(
        &post_json(
            &emu,
            &json!({"prompt": "p", "input_reference": {"image_url": format!("data:image/png;base64,{not_an_image}")}}),
        )
        .await,
        "input_reference",
        "invalid_image_format",
    );
    assert_invalid(
        &post_json(
            &emu,
            &json!({"prompt": "p", "input_reference": {"nothing": 1}}),
        )
        .await,
        "input_reference",
        "invalid_value",
    );
}

#[tokio::test]
async fn a_malformed_body_is_a_400_not_a_500() {
    let emu = TestEmulator::start(fast_config()).await;
    for body in ["{not json", "[1,2]", ""] {
        let res = emu
            .http
            .post(emu.url("/videos"))
            .bearer_auth("sk-test")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{body:?}");
        let json: Value = res.json().await.unwrap();
        assert_eq!(json["error"]["type"], "invalid_request_error");
    }
    let form = reqwest::multipart::Form::new()
        .text("prompt", "p")
        .text("style", "noir");
    let res = emu
        .http
        .post(emu.url("/videos"))
        .bearer_auth("sk-test")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let json: Value = res.json().await.unwrap();
    assert_eq!(json["error"]["code"], "unknown_parameter");
}

#[tokio::test]
async fn list_and_content_parameters_are_checked() {
    let emu = TestEmulator::start(fast_config()).await;
    let get = |path: String| {
        let req = emu.http.get(emu.url(&path)).bearer_auth("sk-test");
        async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    assert_invalid(
        &get("/videos?limit=101".into()).await,
        "limit",
        "invalid_value",
    );
    assert_invalid(
        &get("/videos?limit=-1".into()).await,
        "limit",
        "invalid_value",
    );
    assert_invalid(
        &get("/videos?order=sideways".into()).await,
        "order",
        "invalid_value",
    );
    assert_invalid(
        &get("/videos?after=video_unknown".into()).await,
        "after",
        "invalid_value",
    );
    let (status, body) = get("/videos?limit=0".into()).await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"], json!([]));
    assert_eq!(body["first_id"], Value::Null);

    let (_, video) = post_json(&emu, &json!({"prompt": "p"})).await;
    let id = video["id"].as_str().unwrap();
    assert_invalid(
        &get(format!("/videos/{id}/content?variant=gif")).await,
        "variant",
        "invalid_value",
    );
    let (status, _) = get("/videos/video_unknown/content".into()).await;
    assert_eq!(status, 404);
}

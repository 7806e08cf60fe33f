//! One test per endpoint: what the client sends and how it reads the answer.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use sora_openai::{
    CreateVideo, InputImage, ListOrder, ListQuery, RemixVideo, VideoProvider, VideoStatus,
};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use super::helpers::{KEY, multipart_parts, start, start_with, vid, video_json};

#[tokio::test]
async fn create_sends_json_with_the_bearer_key_and_reads_the_video() {
    let t = start().await;
    Mock::given(method("POST"))
        .and(path("/v1/videos"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "prompt": "a calico cat playing a piano",
            "model": "sora-2",
            "size": "1280x720",
            "seconds": "8"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(video_json("video_1", "queued")))
        .expect(1)
        .mount(&t.server)
        .await;

    let video = t
        .client
        .create(CreateVideo {
            prompt: "a calico cat playing a piano".into(),
            model: Some("sora-2".into()),
            size: Some("1280x720".into()),
            seconds: Some("8".into()),
            input_reference: None,
        })
        .await
        .unwrap();
    assert_eq!(video.id, vid("video_1"));
    assert_eq!(video.status, VideoStatus::Queued);
    assert_eq!(video.model.as_deref(), Some("sora-2"));
    assert_eq!(video.seconds.as_deref(), Some("8"));
}

#[tokio::test]
async fn create_leaves_out_what_the_caller_did_not_choose() {
    let t = start().await;
    Mock::given(method("POST"))
        .and(path("/v1/videos"))
        .and(body_json(json!({"prompt": "waves"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(video_json("video_2", "queued")))
        .expect(1)
        .mount(&t.server)
        .await;
    t.client.create(CreateVideo::new("waves")).await.unwrap();
}

#[tokio::test]
async fn create_with_an_input_image_sends_multipart_parts() {
    let t = start().await;
    Mock::given(method("POST"))
        .and(path("/v1/videos"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(video_json("video_3", "queued")))
        .expect(1)
        .mount(&t.server)
        .await;
    // Bytes that are not valid UTF-8, to check they travel untouched.
    let image: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    t.client
        .create(CreateVideo {
            prompt: "make it move".into(),
            model: Some("sora-2-pro".into()),
            size: Some("720x1280".into()),
            seconds: None,
            input_reference: Some(InputImage {
                filename: "frame.png".into(),
                content_type: "image/png".into(),
                data: Bytes::from(image.clone()),
            }),
        })
        .await
        .unwrap();

    let requests = t.server.received_requests().await.unwrap();
    let request = &requests[0];
    let content_type = request.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("multipart/form-data"),
        "{content_type}"
    );
    let parts = multipart_parts(content_type, &request.body);
    let names: Vec<_> = ["prompt", "model", "size", "seconds", "input_reference"]
        .into_iter()
        .filter(|n| parts.iter().any(|p| p.is_named(n)))
        .collect();
    assert_eq!(names, ["prompt", "model", "size", "input_reference"]);
    let text = |name: &str| {
        let p = parts.iter().find(|p| p.is_named(name)).unwrap();
        String::from_utf8(p.data.clone()).unwrap()
    };
    assert_eq!(text("prompt"), "make it move");
    assert_eq!(text("model"), "sora-2-pro");
    assert_eq!(text("size"), "720x1280");
    let file = parts
        .iter()
        .find(|p| p.is_named("input_reference"))
        .unwrap();
    assert!(
        file.headers.contains("filename=\"frame.png\""),
        "{}",
        file.headers
    );
    assert!(
        file.headers
            .to_ascii_lowercase()
            .contains("content-type: image/png"),
        "{}",
        file.headers
    );
    assert_eq!(file.data, image);
}

#[tokio::test]
async fn create_refuses_an_unusable_image_media_type_without_sending() {
    let t = start().await;
    let err = t
        .client
        .create(CreateVideo {
            input_reference: Some(InputImage {
                filename: "x".into(),
                content_type: "not a media type".into(),
                data: Bytes::from_static(b"x"),
            }),
            ..CreateVideo::new("p")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_request");
    assert!(t.server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn retrieve_gets_the_video_by_id() {
    let t = start().await;
    let mut body = video_json("video_4", "completed");
    body["progress"] = json!(100);
    body["completed_at"] = json!(1_758_941_600);
    body["expires_at"] = json!(1_758_945_200);
    Mock::given(method("GET"))
        .and(path("/v1/videos/video_4"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(1)
        .mount(&t.server)
        .await;
    let video = t.client.retrieve(&vid("video_4")).await.unwrap();
    assert_eq!(video.status, VideoStatus::Completed);
    assert_eq!(video.progress, Some(100));
    assert_eq!(video.completed_at, Some(1_758_941_600));
    let report = video.to_report();
    assert_eq!(report.expires_at.unwrap().timestamp(), 1_758_945_200);
}

#[tokio::test]
async fn list_sends_the_cursor_parameters_and_reads_the_page() {
    let t = start().await;
    Mock::given(method("GET"))
        .and(path("/v1/videos"))
        .and(query_param("limit", "2"))
        .and(query_param("order", "asc"))
        .and(query_param("after", "video_a"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list",
            "data": [video_json("video_b", "completed"), video_json("video_c", "in_progress")],
            "first_id": "video_b",
            "last_id": "video_c",
            "has_more": true
        })))
        .expect(1)
        .mount(&t.server)
        .await;
    let page = t
        .client
        .list(ListQuery {
            limit: Some(2),
            order: Some(ListOrder::Asc),
            after: Some("video_a".into()),
        })
        .await
        .unwrap();
    assert_eq!(page.data.len(), 2);
    assert_eq!(page.data[1].status, VideoStatus::InProgress);
    assert_eq!(page.first_id.as_deref(), Some("video_b"));
    assert_eq!(page.last_id.as_deref(), Some("video_c"));
    assert!(page.has_more);
}

#[tokio::test]
async fn list_without_parameters_sends_no_query() {
    let t = start().await;
    Mock::given(method("GET"))
        .and(path("/v1/videos"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"object": "list", "data": []})),
        )
        .mount(&t.server)
        .await;
    let page = t.client.list(ListQuery::default()).await.unwrap();
    assert!(page.data.is_empty() && !page.has_more);
    let requests = t.server.received_requests().await.unwrap();
    assert_eq!(requests[0].url.query(), None);
}

#[tokio::test]
async fn delete_sends_a_delete_and_reads_the_confirmation() {
    let t = start().await;
    Mock::given(method("DELETE"))
        .and(path("/v1/videos/video_5"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "video_5", "object": "video.deleted", "deleted": true
        })))
        .expect(1)
        .mount(&t.server)
        .await;
    let deleted = t.client.delete(&vid("video_5")).await.unwrap();
    assert_eq!(deleted.id, "video_5");
    assert!(deleted.deleted);
}

#[tokio::test]
async fn remix_posts_the_prompt_to_the_remix_path() {
    let t = start().await;
    let mut body = video_json("video_7", "queued");
    body["remixed_from_video_id"] = json!("video_6");
    Mock::given(method("POST"))
        .and(path("/v1/videos/video_6/remix"))
        .and(body_json(json!({"prompt": "now at night"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(1)
        .mount(&t.server)
        .await;
    let video = t
        .client
        .remix(
            &vid("video_6"),
            RemixVideo {
                prompt: "now at night".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(video.id, vid("video_7"));
    assert_eq!(video.remixed_from_video_id.as_deref(), Some("video_6"));
}

#[tokio::test]
async fn organization_and_project_headers_are_sent_when_configured() {
    let t = start_with(|c| c.with_organization("org-1").with_project("proj_1")).await;
    Mock::given(method("GET"))
        .and(path("/v1/videos/video_8"))
        .and(header("openai-organization", "org-1"))
        .and(header("openai-project", "proj_1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(video_json("video_8", "queued")))
        .expect(1)
        .mount(&t.server)
        .await;
    t.client.retrieve(&vid("video_8")).await.unwrap();
}

#[tokio::test]
async fn the_client_works_behind_the_trait_object() {
    let t = start().await;
    Mock::given(method("GET"))
        .and(path("/v1/videos/video_9"))
        .respond_with(ResponseTemplate::new(200).set_body_json(video_json("video_9", "queued")))
        .mount(&t.server)
        .await;
    let provider: Arc<dyn VideoProvider> = Arc::new(t.client.clone());
    assert_eq!(
        provider.retrieve(&vid("video_9")).await.unwrap().id,
        vid("video_9")
    );
}

#[tokio::test]
async fn tolerant_decoding_accepts_unknown_fields_missing_fields_and_numeric_seconds() {
    let t = start().await;
    Mock::given(method("GET"))
        .and(path("/v1/videos/video_10"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "video_10",
            "status": "in_progress",
            "seconds": 12,
            "progress": 37.6,
            "gateway_route": {"upstream": "veo-3"},
            "size": "1920x1080"
        })))
        .mount(&t.server)
        .await;
    let video = t.client.retrieve(&vid("video_10")).await.unwrap();
    assert_eq!(video.seconds.as_deref(), Some("12"));
    assert_eq!(video.progress, Some(38));
    assert_eq!(video.model, None);
    assert_eq!(video.created_at, None);
    assert_eq!(video.size.as_deref(), Some("1920x1080"));
}

#[tokio::test]
async fn an_unknown_status_is_decoded_as_unknown() {
    let t = start().await;
    Mock::given(method("GET"))
        .and(path("/v1/videos/video_11"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(video_json("video_11", "waiting_for_gpu")),
        )
        .mount(&t.server)
        .await;
    let video = t.client.retrieve(&vid("video_11")).await.unwrap();
    assert_eq!(video.status, VideoStatus::Unknown("waiting_for_gpu".into()));
}

#[tokio::test]
async fn a_failed_generation_is_a_successful_call_with_a_job_error() {
    let t = start().await;
    let mut body = video_json("video_12", "failed");
    body["error"] = json!({"code": "moderation_blocked", "message": "The prompt was blocked."});
    Mock::given(method("GET"))
        .and(path("/v1/videos/video_12"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&t.server)
        .await;
    let video = t.client.retrieve(&vid("video_12")).await.unwrap();
    match video.to_report().status {
        sora_core::ProviderStatus::Failed(e) => {
            assert_eq!(e.code, sora_core::FailureCode::ContentPolicy);
            assert_eq!(e.message, "The prompt was blocked.");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn delete_accepts_an_empty_answer_from_a_gateway() {
    let t = start().await;
    Mock::given(method("DELETE"))
        .and(path("/v1/videos/video_13"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&t.server)
        .await;
    let deleted = t.client.delete(&vid("video_13")).await.unwrap();
    assert_eq!(deleted.id, "video_13");
    assert!(deleted.deleted);
}

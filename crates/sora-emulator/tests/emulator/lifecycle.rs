//! The whole life of a video through the real `OpenAiClient`, and the plain endpoints.

use std::time::Duration;

use bytes::Bytes;
use sora_core::Variant;
use sora_emulator::EmulatorConfig;
use sora_emulator::media::{SPRITESHEET_JPEG, THUMBNAIL_WEBP, VIDEO_MP4};
use sora_openai::{
    CreateVideo, InputImage, ListOrder, ListQuery, ProviderError, RemixVideo, VideoProvider,
    VideoStatus,
};

use super::helpers::{TestEmulator, fast_config};

#[tokio::test]
async fn a_video_goes_from_queued_through_rising_progress_to_completed_and_downloads_the_media() {
    let emu = TestEmulator::start(EmulatorConfig {
        content_ttl: Duration::from_secs(120),
        ..fast_config()
    })
    .await;
    let created = emu
        .client
        .create(CreateVideo {
            model: Some("sora-2".into()),
            size: Some("1280x720".into()),
            seconds: Some("8".into()),
            ..CreateVideo::new("a calico cat on a skateboard")
        })
        .await
        .unwrap();
    assert_eq!(created.status, VideoStatus::Queued);
    assert_eq!(created.progress, Some(0));
    assert!(created.id.as_str().starts_with("video_"));
    assert_eq!(created.size.as_deref(), Some("1280x720"));
    assert_eq!(created.seconds.as_deref(), Some("8"));
    assert!(created.completed_at.is_none() && created.expires_at.is_none());

    // Read as fast as we can: queued, then in progress with a rising progress, then completed.
    let mut seen = Vec::new();
    let done = loop {
        let v = emu.client.retrieve(&created.id).await.unwrap();
        seen.push((v.status.clone(), v.progress.unwrap_or(0)));
        if v.status.is_terminal() {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        seen.iter()
            .any(|(s, p)| *s == VideoStatus::InProgress && *p > 0 && *p < 100),
        "{seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0].1 <= w[1].1),
        "progress went back: {seen:?}"
    );
    assert_eq!(seen.last().unwrap(), &(VideoStatus::Completed, 100));

    assert_eq!(done.status, VideoStatus::Completed);
    assert_eq!(done.progress, Some(100));
    let completed_at = done.completed_at.unwrap();
    assert!(completed_at >= done.created_at.unwrap());
    assert_eq!(done.expires_at, Some(completed_at + 120));
    assert!(done.error.is_none());

    for (variant, media, content_type) in [
        (Variant::Video, VIDEO_MP4, "video/mp4"),
        (Variant::Thumbnail, THUMBNAIL_WEBP, "image/webp"),
        (Variant::Spritesheet, SPRITESHEET_JPEG, "image/jpeg"),
    ] {
        let download = emu.download(&done.id, variant).await.unwrap();
        assert_eq!(download.bytes, media, "{variant:?}");
        assert_eq!(download.content_type.as_deref(), Some(content_type));
        assert_eq!(download.content_length, Some(media.len() as u64));
    }
    emu.handle.stop().await;
}

#[tokio::test]
async fn content_is_not_ready_until_the_video_is_completed() {
    let emu = TestEmulator::start(fast_config()).await;
    let video = emu.create("slow cooking").await.unwrap();
    let err = emu.download(&video.id, Variant::Video).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::ContentNotReady { .. }),
        "{err:?}"
    );
    // The raw answer: a 404 with an OpenAI error body saying "not ready".
    let res = emu
        .http
        .get(emu.url(&format!("/videos/{}/content", video.id)))
        .bearer_auth("sk-test")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not ready")
    );
    assert_eq!(body["error"]["type"], "invalid_request_error");

    emu.retrieve_until(&video.id, |v| v.status == VideoStatus::Completed)
        .await;
    assert!(emu.download(&video.id, Variant::Thumbnail).await.is_ok());
}

#[tokio::test]
async fn list_pages_with_after_limit_and_order() {
    let emu = TestEmulator::start(fast_config()).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            emu.create(&format!("clip {i}"))
                .await
                .unwrap()
                .id
                .to_string(),
        );
    }
    let page = emu
        .client
        .list(ListQuery {
            limit: Some(2),
            order: Some(ListOrder::Asc),
            after: None,
        })
        .await
        .unwrap();
    let got: Vec<String> = page.data.iter().map(|v| v.id.to_string()).collect();
    assert_eq!(got, ids[..2]);
    assert!(page.has_more);
    assert_eq!(page.first_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!(page.last_id.as_deref(), Some(ids[1].as_str()));

    let next = emu
        .client
        .list(ListQuery {
            limit: Some(2),
            order: Some(ListOrder::Asc),
            after: page.last_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(next.data.len(), 1);
    assert_eq!(next.data[0].id.as_str(), ids[2]);
    assert!(!next.has_more);

    let newest_first = emu.client.list(ListQuery::default()).await.unwrap();
    let got: Vec<String> = newest_first.data.iter().map(|v| v.id.to_string()).collect();
    let mut reversed = ids.clone();
    reversed.reverse();
    assert_eq!(got, reversed);
    assert!(!newest_first.has_more);
}

#[tokio::test]
async fn a_deleted_video_is_gone() {
    let emu = TestEmulator::start(fast_config()).await;
    let video = emu.create("ephemeral").await.unwrap();
    let deleted = emu.client.delete(&video.id).await.unwrap();
    assert!(deleted.deleted);
    assert_eq!(deleted.id, video.id.as_str());
    let err = emu.client.retrieve(&video.id).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err:?}");
    let err = emu.client.delete(&video.id).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err:?}");
    let listed = emu.client.list(ListQuery::default()).await.unwrap();
    assert!(listed.data.is_empty());
}

#[tokio::test]
async fn a_completed_video_can_be_remixed_and_an_unfinished_one_cannot() {
    let emu = TestEmulator::start(fast_config()).await;
    let source = emu.create("a dog surfing").await.unwrap();
    let err = emu
        .client
        .remix(
            &source.id,
            RemixVideo {
                prompt: "at night".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::InvalidRequest { .. }),
        "{err:?}"
    );

    emu.retrieve_until(&source.id, |v| v.status == VideoStatus::Completed)
        .await;
    let remix = emu
        .client
        .remix(
            &source.id,
            RemixVideo {
                prompt: "at night".into(),
            },
        )
        .await
        .unwrap();
    assert_ne!(remix.id, source.id);
    assert_eq!(remix.status, VideoStatus::Queued);
    assert_eq!(
        remix.remixed_from_video_id.as_deref(),
        Some(source.id.as_str())
    );
    assert_eq!(remix.prompt.as_deref(), Some("at night"));
    assert_eq!(remix.size, source.size);
    let done = emu
        .retrieve_until(&remix.id, |v| v.status == VideoStatus::Completed)
        .await;
    assert_eq!(
        done.remixed_from_video_id.as_deref(),
        Some(source.id.as_str())
    );

    let missing: sora_core::VideoId = "video_missing".parse().unwrap();
    let err = emu
        .client
        .remix(&missing, RemixVideo { prompt: "x".into() })
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn a_multipart_create_takes_an_image_reference_and_refuses_a_non_image() {
    let emu = TestEmulator::start(fast_config()).await;
    let image = |content_type: &str, data: &'static [u8]| InputImage {
        filename: "first-frame".into(),
        content_type: content_type.into(),
        data: Bytes::from_static(data),
    };
    for (content_type, data) in [
        ("image/webp", THUMBNAIL_WEBP),
        ("image/jpeg", SPRITESHEET_JPEG),
        ("image/png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".as_slice()),
    ] {
        let video = emu
            .client
            .create(CreateVideo {
                input_reference: Some(image(content_type, data)),
                size: Some("1792x1024".into()),
                ..CreateVideo::new("animate this")
            })
            .await
            .unwrap();
        assert_eq!(video.status, VideoStatus::Queued);
        assert_eq!(video.size.as_deref(), Some("1792x1024"));
    }
    // A file that claims to be a PNG but is not one, by its bytes.
    let err = emu
        .client
        .create(CreateVideo {
            input_reference: Some(image("image/png", b"GIF89a not really")),
            ..CreateVideo::new("animate this")
        })
        .await
        .unwrap_err();
    match err {
        ProviderError::InvalidRequest { param, .. } => {
            assert_eq!(param.as_deref(), Some("input_reference"));
        }
        other => panic!("{other:?}"),
    }
    // Multipart fields are validated like JSON ones.
    let err = emu
        .client
        .create(CreateVideo {
            input_reference: Some(image("image/webp", THUMBNAIL_WEBP)),
            seconds: Some("7".into()),
            ..CreateVideo::new("animate this")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::InvalidRequest { param, .. } if param.as_deref() == Some("seconds")),
        "{err:?}"
    );
}

#[tokio::test]
async fn any_bearer_token_is_accepted_by_default_but_none_is_401() {
    let emu = TestEmulator::start_with_key(fast_config(), "whatever-you-like").await;
    assert!(emu.create("hello").await.is_ok());
    for auth in [None, Some("Bearer "), Some("Basic dXNlcjpwYXNz")] {
        let mut req = emu.http.get(emu.url("/videos"));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{auth:?}");
        assert!(res.headers().contains_key("x-request-id"));
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("API key")
        );
    }
}

#[tokio::test]
async fn with_a_configured_key_only_that_key_is_accepted() {
    let config = EmulatorConfig {
        api_key: Some("sk-the-right-one".to_owned().into()),
        ..fast_config()
    };
    let emu = TestEmulator::start_with_key(config, "sk-a-wrong-one").await;
    let err = emu.create("hello").await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("sk-a-wrong-one"));
    assert!(!err.to_string().contains("sk-the-right-one"));
    let right = super::helpers::client_for(&emu.handle, "sk-the-right-one");
    assert!(right.create(CreateVideo::new("hello")).await.is_ok());
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_unknown_routes_are_json_404s() {
    let emu = TestEmulator::start(fast_config()).await;
    let mut ids = Vec::new();
    for path in ["/videos", "/videos/video_nope", "/nothing-here"] {
        let res = emu
            .http
            .get(emu.url(path))
            .bearer_auth("sk-test")
            .send()
            .await
            .unwrap();
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(id.starts_with("req_"), "{id}");
        ids.push(id);
        if path != "/videos" {
            assert_eq!(res.status(), 404);
            let body: serde_json::Value = res.json().await.unwrap();
            assert!(body["error"]["message"].is_string(), "{body}");
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "request ids must be unique");
    // The client reports the request id of a failed call.
    let missing: sora_core::VideoId = "video_nope".parse().unwrap();
    let err = emu.client.retrieve(&missing).await.unwrap_err();
    assert!(err.request_id().unwrap().starts_with("req_"));
}

#[tokio::test]
async fn an_emulator_on_a_fixed_port_and_a_second_one_on_the_same_port_fails_to_start() {
    let first = TestEmulator::start(fast_config()).await;
    let taken = first.handle.addr();
    let err = sora_emulator::Emulator::start(EmulatorConfig {
        bind: taken,
        ..fast_config()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(err, sora_emulator::StartError::Bind { .. }),
        "{err}"
    );
    first.handle.stop().await;
    // Once stopped, the port is free again and a new emulator can take it.
    let again = sora_emulator::Emulator::start(EmulatorConfig {
        bind: taken,
        ..fast_config()
    })
    .await
    .unwrap();
    assert_eq!(again.base_url(), format!("http://{taken}/v1"));
    again.stop().await;
}

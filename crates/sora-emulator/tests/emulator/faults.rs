//! Every fault, by prompt marker and by global configuration, observed through the client.

use std::time::{Duration, Instant};

use sora_core::Variant;
use sora_emulator::{EmulatorConfig, Faults};
use sora_openai::{ProviderError, RemixVideo, VideoProvider, VideoStatus};

use super::helpers::{DURATION, TestEmulator, fast_config};

#[tokio::test]
async fn fail_marker_fails_the_generation_with_that_code() {
    let emu = TestEmulator::start(fast_config()).await;
    let video = emu.create("a protest [fail:content_policy]").await.unwrap();
    let failed = emu
        .retrieve_until(&video.id, |v| v.status.is_terminal())
        .await;
    assert_eq!(failed.status, VideoStatus::Failed);
    let error = failed.error.clone().unwrap();
    assert_eq!(error.code.as_deref(), Some("content_policy"));
    assert!(error.message.unwrap().contains("content_policy"));
    assert!(failed.completed_at.is_none() && failed.expires_at.is_none());
    // The job's own failure, as sora-core sees it: a content policy rejection.
    match failed.to_report().status {
        sora_core::ProviderStatus::Failed(e) => {
            assert_eq!(e.code, sora_core::FailureCode::ContentPolicy);
        }
        other => panic!("{other:?}"),
    }
    // A failed video has no content, and saying so is not "not ready".
    let err = emu.download(&failed.id, Variant::Video).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err:?}");

    let plain = emu.create("[fail]").await.unwrap();
    let failed = emu
        .retrieve_until(&plain.id, |v| v.status.is_terminal())
        .await;
    assert_eq!(
        failed.error.unwrap().code.as_deref(),
        Some(sora_emulator::faults::DEFAULT_FAILURE_CODE)
    );
}

#[tokio::test]
async fn rate_limit_marker_answers_429_with_retry_after_n_times_then_succeeds() {
    let emu = TestEmulator::start(fast_config()).await;
    for _ in 0..2 {
        let err = emu.create("busy hour [429:2]").await.unwrap_err();
        match err {
            ProviderError::RateLimited {
                retry_after,
                request_id,
            } => {
                assert_eq!(retry_after, Some(Duration::from_millis(100)));
                assert!(request_id.is_some());
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(emu.create("busy hour [429:2]").await.is_ok());
    // The count is per prompt text: another prompt has its own.
    assert!(matches!(
        emu.create("other [429]").await,
        Err(ProviderError::RateLimited { .. })
    ));
    assert!(emu.create("other [429]").await.is_ok());
    // The raw answer carries Retry-After in whole seconds and retry-after-ms.
    let res = emu
        .http
        .post(emu.url("/videos"))
        .bearer_auth("sk-test")
        .json(&serde_json::json!({"prompt": "raw [429]"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(res.headers()["retry-after-ms"], "100");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn quota_marker_is_a_429_that_is_not_retryable() {
    let emu = TestEmulator::start(fast_config()).await;
    for _ in 0..2 {
        let err = emu.create("[quota]").await.unwrap_err();
        assert!(
            matches!(err, ProviderError::QuotaExhausted { .. }),
            "{err:?}"
        );
        assert!(!err.is_retryable());
    }
}

#[tokio::test]
async fn server_error_markers_answer_that_status_n_times_then_succeed() {
    let emu = TestEmulator::start(fast_config()).await;
    for _ in 0..2 {
        let err = emu.create("wobbly [503:2]").await.unwrap_err();
        match err {
            ProviderError::Upstream {
                status,
                retry_after,
                ..
            } => {
                assert_eq!(status, 503);
                assert_eq!(retry_after, Some(Duration::from_millis(100)));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(emu.create("wobbly [503:2]").await.is_ok());
    let err = emu.create("oops [500]").await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Upstream { status: 500, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(emu.create("oops [500]").await.is_ok());
}

#[tokio::test]
async fn delay_marker_slows_every_answer_about_the_job() {
    let emu = TestEmulator::start(fast_config()).await;
    let started = Instant::now();
    let video = emu.create("patience [delay:250]").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    let started = Instant::now();
    emu.client.retrieve(&video.id).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Other jobs answer at once.
    let started = Instant::now();
    emu.create("quick").await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(250));
}

#[tokio::test]
async fn a_slow_answer_makes_the_client_time_out() {
    let emu = TestEmulator::start(fast_config()).await;
    let impatient = sora_openai::OpenAiClient::new(
        sora_openai::OpenAiConfig::new(secrecy::SecretString::from("sk-test"))
            .with_base_url(url::Url::parse(&emu.handle.base_url()).unwrap())
            .with_request_timeout(Duration::from_millis(100)),
    )
    .unwrap();
    let err = impatient
        .create(sora_openai::CreateVideo::new("[delay:600]"))
        .await
        .unwrap_err();
    assert_eq!(err, ProviderError::Timeout);
}

#[tokio::test]
async fn expire_early_marker_expires_the_content_at_completion() {
    let emu = TestEmulator::start(fast_config()).await;
    let video = emu.create("fleeting [expire-early]").await.unwrap();
    let done = emu
        .retrieve_until(&video.id, |v| v.status.is_terminal())
        .await;
    assert_eq!(done.status, VideoStatus::Completed);
    assert_eq!(done.expires_at, done.completed_at);
    let err = emu.download(&done.id, Variant::Video).await.unwrap_err();
    match err {
        ProviderError::NotFound { message, .. } => {
            assert!(message.contains("expired"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn stall_marker_keeps_the_job_in_progress_forever() {
    let emu = TestEmulator::start(fast_config()).await;
    let video = emu.create("stuck [stall]").await.unwrap();
    tokio::time::sleep(DURATION * 3).await;
    let v = emu.client.retrieve(&video.id).await.unwrap();
    assert_eq!(v.status, VideoStatus::InProgress);
    assert_eq!(v.progress, Some(99));
    assert!(matches!(
        emu.download(&video.id, Variant::Video).await,
        Err(ProviderError::ContentNotReady { .. })
    ));
}

#[tokio::test]
async fn remix_prompts_honour_markers_too() {
    let emu = TestEmulator::start(fast_config()).await;
    let source = emu.create("base").await.unwrap();
    emu.retrieve_until(&source.id, |v| v.status == VideoStatus::Completed)
        .await;
    let remix = |prompt: &str| {
        emu.client.remix(
            &source.id,
            RemixVideo {
                prompt: prompt.into(),
            },
        )
    };
    assert!(matches!(
        remix("again [429]").await,
        Err(ProviderError::RateLimited { .. })
    ));
    let remixed = remix("again [429]").await.unwrap();
    let remixed = remix_done(&emu, &remixed.id).await;
    assert_eq!(remixed.status, VideoStatus::Completed);
    let failing = remix("worse [fail:moderation_blocked]").await.unwrap();
    let failing = remix_done(&emu, &failing.id).await;
    assert_eq!(
        failing.error.unwrap().code.as_deref(),
        Some("moderation_blocked")
    );
}

async fn remix_done(emu: &TestEmulator, id: &sora_core::VideoId) -> sora_openai::Video {
    emu.retrieve_until(id, |v| v.status.is_terminal()).await
}

#[tokio::test]
async fn global_faults_fail_the_first_creates_then_let_them_through() {
    let emu = TestEmulator::start(EmulatorConfig {
        faults: Faults {
            rate_limit_creates: 1,
            server_error_creates: 2,
            server_error_status: 502,
            ..Faults::default()
        },
        ..fast_config()
    })
    .await;
    assert!(matches!(
        emu.create("a").await,
        Err(ProviderError::RateLimited { .. })
    ));
    for _ in 0..2 {
        assert!(matches!(
            emu.create("a").await,
            Err(ProviderError::Upstream { status: 502, .. })
        ));
    }
    assert!(emu.create("a").await.is_ok());
    assert!(emu.create("a").await.is_ok());
}

#[tokio::test]
async fn global_generation_faults_apply_to_every_job() {
    let emu = TestEmulator::start(EmulatorConfig {
        faults: Faults {
            fail_generation: Some("moderation_blocked".into()),
            ..Faults::default()
        },
        ..fast_config()
    })
    .await;
    let video = emu.create("anything").await.unwrap();
    let done = emu
        .retrieve_until(&video.id, |v| v.status.is_terminal())
        .await;
    assert_eq!(done.status, VideoStatus::Failed);
    assert_eq!(
        done.error.unwrap().code.as_deref(),
        Some("moderation_blocked")
    );

    // Faults can be changed while running; new jobs get the new ones.
    emu.handle.set_faults(Faults {
        stall: true,
        ..Faults::default()
    });
    assert!(emu.handle.faults().stall);
    let stalled = emu.create("anything").await.unwrap();
    emu.handle.set_faults(Faults {
        expire_early: true,
        ..Faults::default()
    });
    let expiring = emu.create("anything").await.unwrap();
    tokio::time::sleep(DURATION * 2).await;
    let v = emu.client.retrieve(&stalled.id).await.unwrap();
    assert_eq!(v.status, VideoStatus::InProgress);
    let v = emu.client.retrieve(&expiring.id).await.unwrap();
    assert_eq!(v.status, VideoStatus::Completed);
    assert!(matches!(
        emu.download(&expiring.id, Variant::Video).await,
        Err(ProviderError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_global_response_delay_slows_every_answer() {
    let emu = TestEmulator::start(fast_config()).await;
    emu.handle.set_faults(Faults {
        response_delay: Duration::from_millis(200),
        ..Faults::default()
    });
    let started = Instant::now();
    emu.client
        .list(sora_openai::ListQuery::default())
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    emu.handle.set_faults(Faults::default());
    let started = Instant::now();
    emu.client
        .list(sora_openai::ListQuery::default())
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(200));
}

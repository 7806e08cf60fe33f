//! One test per error case: how an answer becomes a `ProviderError`, and what is retried.

use std::time::{Duration, SystemTime};

use serde_json::json;
use sora_core::{FailureCode, Variant};
use sora_openai::{CreateVideo, ProviderError, VideoProvider};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use super::helpers::{KEY, error_json, start, start_with, vid, video_json};

/// Mounts one answer for `GET /v1/videos/video_e` and returns the retrieve error.
async fn retrieve_error(answer: ResponseTemplate) -> ProviderError {
    let t = start().await;
    Mock::given(method("GET"))
        .and(path("/v1/videos/video_e"))
        .respond_with(answer)
        .expect(1)
        .mount(&t.server)
        .await;
    let err = t.client.retrieve(&vid("video_e")).await.unwrap_err();
    assert!(!err.to_string().contains(KEY), "the key leaked into {err}");
    err
}

#[tokio::test]
async fn a_400_is_an_invalid_request_with_code_param_message_and_request_id() {
    let err = retrieve_error(
        ResponseTemplate::new(400)
            .insert_header("x-request-id", "req_400")
            .set_body_json(error_json(
                "Invalid size: must be one of 720x1280, 1280x720.",
                "invalid_request_error",
                Some("size"),
                Some("invalid_value"),
            )),
    )
    .await;
    assert_eq!(
        err,
        ProviderError::InvalidRequest {
            code: Some("invalid_value".into()),
            param: Some("size".into()),
            message: "Invalid size: must be one of 720x1280, 1280x720.".into(),
            request_id: Some("req_400".into()),
        }
    );
    assert!(!err.is_retryable());
    assert_eq!(err.to_job_error().code, FailureCode::InvalidRequest);
}

#[tokio::test]
async fn a_401_is_unauthorized_and_an_echoed_key_is_redacted() {
    let err = retrieve_error(
        ResponseTemplate::new(401)
            .insert_header("x-request-id", "req_401")
            .set_body_json(error_json(
                &format!("Incorrect API key provided: {KEY}."),
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            )),
    )
    .await;
    match &err {
        ProviderError::Unauthorized {
            status,
            message,
            request_id,
        } => {
            assert_eq!(*status, 401);
            assert_eq!(message, "Incorrect API key provided: ***.");
            assert_eq!(request_id.as_deref(), Some("req_401"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_403_is_unauthorized() {
    let err = retrieve_error(ResponseTemplate::new(403).set_body_json(error_json(
        "Country, region, or territory not supported",
        "invalid_request_error",
        None,
        Some("unsupported_country_region_territory"),
    )))
    .await;
    assert!(
        matches!(err, ProviderError::Unauthorized { status: 403, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_404_is_not_found() {
    let err = retrieve_error(
        ResponseTemplate::new(404)
            .insert_header("x-request-id", "req_404")
            .set_body_json(error_json(
                "Video with id 'video_e' not found.",
                "invalid_request_error",
                None,
                None,
            )),
    )
    .await;
    assert_eq!(
        err,
        ProviderError::NotFound {
            message: "Video with id 'video_e' not found.".into(),
            request_id: Some("req_404".into()),
        }
    );
    assert_eq!(err.code(), "not_found");
}

#[tokio::test]
async fn a_429_with_retry_after_seconds_is_rate_limited_with_that_delay() {
    let err = retrieve_error(
        ResponseTemplate::new(429)
            .insert_header("retry-after", "7")
            .insert_header("x-request-id", "req_429")
            .set_body_json(error_json(
                "Rate limit reached for requests",
                "requests",
                None,
                Some("rate_limit_exceeded"),
            )),
    )
    .await;
    assert_eq!(
        err,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            request_id: Some("req_429".into()),
        }
    );
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn a_429_with_an_http_date_is_rate_limited_until_that_date() {
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    let err = retrieve_error(
        ResponseTemplate::new(429)
            .insert_header("retry-after", date.as_str())
            .set_body_json(error_json("slow down", "requests", None, None)),
    )
    .await;
    let delay = err.retry_after().expect("a delay");
    // HTTP dates have whole seconds, and a little time passes during the test.
    assert!(
        delay >= Duration::from_secs(117) && delay <= Duration::from_secs(120),
        "{delay:?}"
    );
    assert_eq!(err.code(), "rate_limited");
}

#[tokio::test]
async fn a_429_with_retry_after_ms_uses_the_milliseconds() {
    let err = retrieve_error(
        ResponseTemplate::new(429)
            .insert_header("retry-after-ms", "1250")
            .insert_header("retry-after", "2")
            .set_body_json(error_json("slow down", "requests", None, None)),
    )
    .await;
    assert_eq!(err.retry_after(), Some(Duration::from_millis(1250)));
}

#[tokio::test]
async fn a_429_insufficient_quota_is_quota_exhausted_and_not_retryable() {
    let err = retrieve_error(
        ResponseTemplate::new(429)
            .insert_header("x-request-id", "req_q")
            .set_body_json(error_json(
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                None,
                Some("insufficient_quota"),
            )),
    )
    .await;
    assert_eq!(
        err,
        ProviderError::QuotaExhausted {
            message: "You exceeded your current quota, please check your plan and billing details."
                .into(),
            request_id: Some("req_q".into()),
        }
    );
    assert!(!err.is_retryable());
    assert_eq!(err.to_job_error().code, FailureCode::QuotaExhausted);
}

#[tokio::test]
async fn a_500_is_a_retryable_upstream_error() {
    let err = retrieve_error(
        ResponseTemplate::new(500)
            .insert_header("x-request-id", "req_500")
            .set_body_json(error_json(
                "The server had an error",
                "server_error",
                None,
                None,
            )),
    )
    .await;
    assert_eq!(
        err,
        ProviderError::Upstream {
            status: 500,
            message: "The server had an error".into(),
            retry_after: None,
            request_id: Some("req_500".into()),
        }
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_503_without_a_json_body_is_a_retryable_upstream_error() {
    let err = retrieve_error(
        ResponseTemplate::new(503)
            .insert_header("retry-after", "3")
            .set_body_string("<html>Service Unavailable</html>"),
    )
    .await;
    match &err {
        ProviderError::Upstream {
            status,
            message,
            retry_after,
            ..
        } => {
            assert_eq!(*status, 503);
            assert!(message.contains("Service Unavailable"));
            assert_eq!(*retry_after, Some(Duration::from_secs(3)));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.is_retryable());
}

#[tokio::test]
async fn x_should_retry_false_makes_a_503_permanent() {
    let err = retrieve_error(
        ResponseTemplate::new(503)
            .insert_header("x-should-retry", "false")
            .set_body_json(error_json("gone for good", "server_error", None, None)),
    )
    .await;
    assert!(!err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn x_should_retry_true_makes_a_400_retryable() {
    let err = retrieve_error(
        ResponseTemplate::new(400)
            .insert_header("x-should-retry", "true")
            .set_body_json(error_json("try again", "invalid_request_error", None, None)),
    )
    .await;
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn a_slow_answer_is_a_timeout() {
    let started = std::time::Instant::now();
    let err = retrieve_error(
        ResponseTemplate::new(200)
            .set_body_json(video_json("video_e", "queued"))
            .set_delay(Duration::from_secs(3)),
    )
    .await;
    assert_eq!(err, ProviderError::Timeout);
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn malformed_json_is_a_decode_error_with_the_request_id() {
    let err = retrieve_error(
        ResponseTemplate::new(200)
            .insert_header("x-request-id", "req_bad")
            .insert_header("content-type", "application/json")
            .set_body_string("{\"id\": \"video_e\", \"status\": "),
    )
    .await;
    assert!(matches!(err, ProviderError::Decode { .. }), "{err:?}");
    assert_eq!(err.request_id(), Some("req_bad"));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_video_without_an_id_is_a_decode_error() {
    let err =
        retrieve_error(ResponseTemplate::new(200).set_body_json(json!({"status": "queued"}))).await;
    assert_eq!(err.code(), "decode");
}

#[tokio::test]
async fn a_refused_connection_is_a_connection_error() {
    // A port that was free a moment ago and has no listener now.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = sora_openai::OpenAiClient::new(
        sora_openai::OpenAiConfig::new(KEY)
            .with_base_url(format!("http://127.0.0.1:{port}/v1").parse().unwrap())
            .with_read_retries(0),
    )
    .unwrap();
    let err = client.retrieve(&vid("video_e")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Connection { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(!err.to_string().contains(KEY));
}

#[tokio::test]
async fn reads_are_retried_on_retryable_errors_until_they_succeed() {
    let t = start_with(|c| c.with_read_retries(2)).await;
    Mock::given(method("GET"))
        .and(path("/v1/videos/video_r"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&t.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/videos/video_r"))
        .respond_with(ResponseTemplate::new(200).set_body_json(video_json("video_r", "queued")))
        .mount(&t.server)
        .await;
    let video = t.client.retrieve(&vid("video_r")).await.unwrap();
    assert_eq!(video.id, vid("video_r"));
    assert_eq!(t.server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn reads_give_up_after_the_configured_retries() {
    let t = start_with(|c| c.with_read_retries(2)).await;
    Mock::given(method("GET"))
        .and(path("/v1/videos"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after-ms", "5"))
        .expect(3)
        .mount(&t.server)
        .await;
    let err = t.client.list(Default::default()).await.unwrap_err();
    assert_eq!(err.code(), "rate_limited");
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let t = start_with(|c| c.with_read_retries(3)).await;
    Mock::given(method("GET"))
        .and(path("/v1/videos/video_p"))
        .respond_with(ResponseTemplate::new(404))
        .expect(1)
        .mount(&t.server)
        .await;
    let err = t.client.retrieve(&vid("video_p")).await.unwrap_err();
    assert_eq!(err.code(), "not_found");
}

#[tokio::test]
async fn create_is_never_retried_even_on_a_retryable_error() {
    let t = start_with(|c| c.with_read_retries(3)).await;
    Mock::given(method("POST"))
        .and(path("/v1/videos"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&t.server)
        .await;
    let err = t.client.create(CreateVideo::new("p")).await.unwrap_err();
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_create_that_times_out_is_not_sent_twice() {
    let t = start_with(|c| c.with_read_retries(3)).await;
    Mock::given(method("POST"))
        .and(path("/v1/videos"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(video_json("video_t", "queued"))
                .set_delay(Duration::from_secs(2)),
        )
        .expect(1)
        .mount(&t.server)
        .await;
    let err = t.client.create(CreateVideo::new("p")).await.unwrap_err();
    assert_eq!(err, ProviderError::Timeout);
}

#[tokio::test]
async fn content_404_while_not_ready_is_content_not_ready() {
    let t = start().await;
    Mock::given(method("GET"))
        .and(path("/v1/videos/video_n/content"))
        .respond_with(
            ResponseTemplate::new(404)
                .insert_header("x-request-id", "req_nr")
                .set_body_json(error_json(
                    "Video is not ready yet, use GET /v1/videos/{video_id} to check status.",
                    "invalid_request_error",
                    None,
                    None,
                )),
        )
        .mount(&t.server)
        .await;
    let err = t
        .client
        .download(&vid("video_n"), Variant::Video)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::ContentNotReady { .. }),
        "{err:?}"
    );
    assert_eq!(err.request_id(), Some("req_nr"));
}

#[tokio::test]
async fn content_404_for_another_reason_is_not_found() {
    let t = start().await;
    Mock::given(method("GET"))
        .and(path("/v1/videos/video_gone/content"))
        .respond_with(ResponseTemplate::new(404).set_body_json(error_json(
            "No video found with id video_gone",
            "invalid_request_error",
            None,
            None,
        )))
        .mount(&t.server)
        .await;
    let err = t
        .client
        .download(&vid("video_gone"), Variant::Video)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_found");
}

#[tokio::test]
async fn content_409_is_content_not_ready() {
    let t = start().await;
    Mock::given(method("GET"))
        .and(path("/v1/videos/video_c/content"))
        .respond_with(ResponseTemplate::new(409).set_body_json(error_json(
            "Video is still in progress",
            "invalid_request_error",
            None,
            None,
        )))
        .mount(&t.server)
        .await;
    let err = t
        .client
        .download(&vid("video_c"), Variant::Thumbnail)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "content_not_ready");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_read_is_not_retried_when_the_provider_asks_for_a_long_wait() {
    let t = start_with(|c| c.with_read_retries(2)).await;
    Mock::given(method("GET"))
        .and(path("/v1/videos/video_w"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "120"))
        .expect(1)
        .mount(&t.server)
        .await;
    let err = t.client.retrieve(&vid("video_w")).await.unwrap_err();
    // The caller schedules the retry instead of a worker blocking for two minutes.
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
}

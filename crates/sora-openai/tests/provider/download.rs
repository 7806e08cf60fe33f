//! Content downloads: streamed, typed, redirected.

use futures::StreamExt;
use sora_core::Variant;
use sora_openai::VideoProvider;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::helpers::{KEY, start, start_with, vid};

/// A recognisable multi-megabyte body.
fn big_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn a_multi_megabyte_video_arrives_as_a_stream_of_chunks() {
    let t = start().await;
    let body = big_body(6 * 1024 * 1024 + 17);
    Mock::given(method("GET"))
        .and(path("/v1/videos/video_big/content"))
        .and(query_param("variant", "video"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body.clone(), "video/mp4"))
        .expect(1)
        .mount(&t.server)
        .await;

    let content = t
        .client
        .download(&vid("video_big"), Variant::Video)
        .await
        .unwrap();
    assert_eq!(content.content_type.as_deref(), Some("video/mp4"));
    assert_eq!(content.content_length, Some(body.len() as u64));
    assert!(format!("{content:?}").contains("video/mp4"));

    let mut stream = content.stream;
    let mut chunks = 0usize;
    let mut largest = 0usize;
    let mut received = 0usize;
    let mut position = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert_eq!(&chunk[..], &body[position..position + chunk.len()]);
        position += chunk.len();
        received += chunk.len();
        largest = largest.max(chunk.len());
        chunks += 1;
    }
    assert_eq!(received, body.len());
    // Streamed: many chunks, none of them anywhere near the whole file.
    assert!(chunks > 10, "only {chunks} chunks");
    assert!(largest < body.len() / 4, "a chunk of {largest} bytes");
}

#[tokio::test]
async fn each_variant_is_requested_by_name() {
    let t = start().await;
    for (variant, media) in [
        (Variant::Thumbnail, "image/webp"),
        (Variant::Spritesheet, "image/jpeg"),
    ] {
        Mock::given(method("GET"))
            .and(path("/v1/videos/video_v/content"))
            .and(query_param("variant", variant.as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_raw(media.as_bytes(), media))
            .expect(1)
            .mount(&t.server)
            .await;
    }
    for (variant, media) in [
        (Variant::Thumbnail, "image/webp"),
        (Variant::Spritesheet, "image/jpeg"),
    ] {
        let content = t.client.download(&vid("video_v"), variant).await.unwrap();
        assert_eq!(content.content_type.as_deref(), Some(media));
        let bytes: Vec<u8> = content.stream.map(|c| c.unwrap().to_vec()).concat().await;
        assert_eq!(bytes, media.as_bytes());
    }
}

#[tokio::test]
async fn downloads_follow_redirects_without_sending_the_key_elsewhere() {
    let t = start().await;
    let cdn = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/videos/video_redir/content"))
        .respond_with(ResponseTemplate::new(302).insert_header(
            "location",
            format!("{}/signed/video.mp4", cdn.uri()).as_str(),
        ))
        .expect(1)
        .mount(&t.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/signed/video.mp4"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(b"mp4 bytes".to_vec(), "video/mp4"))
        .expect(1)
        .mount(&cdn)
        .await;

    let content = t
        .client
        .download(&vid("video_redir"), Variant::Video)
        .await
        .unwrap();
    let bytes: Vec<u8> = content.stream.map(|c| c.unwrap().to_vec()).concat().await;
    assert_eq!(bytes, b"mp4 bytes");
    let at_cdn = cdn.received_requests().await.unwrap();
    assert!(
        !at_cdn[0].headers.contains_key("authorization"),
        "the key went to another origin"
    );
}

#[tokio::test]
async fn opening_a_download_is_retried_on_a_server_error() {
    let t = start_with(|c| c.with_read_retries(1)).await;
    Mock::given(method("GET"))
        .and(path("/v1/videos/video_flaky/content"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&t.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/videos/video_flaky/content"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(b"ok".to_vec(), "video/mp4"))
        .mount(&t.server)
        .await;
    let content = t
        .client
        .download(&vid("video_flaky"), Variant::Video)
        .await
        .unwrap();
    let bytes: Vec<u8> = content.stream.map(|c| c.unwrap().to_vec()).concat().await;
    assert_eq!(bytes, b"ok");
    assert_eq!(t.server.received_requests().await.unwrap().len(), 2);
}

/// A one-connection HTTP server that sends the headers of a `len`-byte body, then the body in
/// `chunks` pieces `gap` apart, then (if `stall`) stops sending before the end.
async fn trickle_server(
    len: usize,
    chunks: usize,
    gap: std::time::Duration,
    stall: bool,
) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = vec![0u8; 4096];
        let _ = socket.read(&mut request).await.unwrap();
        let head =
            format!("HTTP/1.1 200 OK\r\ncontent-type: video/mp4\r\ncontent-length: {len}\r\n\r\n");
        socket.write_all(head.as_bytes()).await.unwrap();
        let piece = vec![b'x'; len / chunks];
        let sent_chunks = if stall { chunks / 2 } else { chunks };
        for _ in 0..sent_chunks {
            tokio::time::sleep(gap).await;
            if socket.write_all(&piece).await.is_err() {
                return;
            }
        }
        // Keep the connection open without sending, well past the read timeout.
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    });
    addr
}

fn trickle_client(addr: std::net::SocketAddr) -> sora_openai::OpenAiClient {
    use std::time::Duration;
    sora_openai::OpenAiClient::new(
        sora_openai::OpenAiConfig::new(KEY)
            .with_base_url(format!("http://{addr}/v1").parse().unwrap())
            .with_request_timeout(Duration::from_millis(300))
            .with_download_read_timeout(Duration::from_millis(250))
            .with_read_retries(0),
    )
    .unwrap()
}

#[tokio::test]
async fn a_steady_download_may_outlast_the_request_timeout() {
    use std::time::{Duration, Instant};
    let addr = trickle_server(5000, 5, Duration::from_millis(100), false).await;
    let started = Instant::now();
    let content = trickle_client(addr)
        .download(&vid("video_slow"), Variant::Video)
        .await
        .unwrap();
    let mut total = 0;
    let mut stream = content.stream;
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len();
    }
    assert_eq!(total, 5000);
    assert!(started.elapsed() > Duration::from_millis(400));
}

#[tokio::test]
async fn a_download_that_stalls_fails_with_a_timeout_after_the_read_timeout() {
    use std::time::{Duration, Instant};
    let addr = trickle_server(6000, 6, Duration::from_millis(20), true).await;
    let content = trickle_client(addr)
        .download(&vid("video_stall"), Variant::Video)
        .await
        .unwrap();
    let started = Instant::now();
    let mut stream = content.stream;
    let mut outcome = None;
    while let Some(chunk) = stream.next().await {
        if let Err(e) = chunk {
            outcome = Some(e);
            break;
        }
    }
    assert_eq!(outcome, Some(sora_openai::ProviderError::Timeout));
    assert!(started.elapsed() < Duration::from_secs(2));
}

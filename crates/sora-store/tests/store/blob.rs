//! File storage: whole and ranged reads, metadata, deletion, and a 50 MB streamed upload and
//! ranged read-back with the process's memory staying flat.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use sora_store::{BlobStore, StoreError};

async fn read_all(store: &BlobStore, key: &str, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
    let read = store.get(key, range).await.unwrap();
    let chunks: Vec<Bytes> = read.stream.try_collect().await.unwrap();
    chunks.concat()
}

async fn basic_behaviour(store: &BlobStore) {
    assert_eq!(store.head("a/missing.mp4").await.unwrap(), None);
    assert!(matches!(
        store.get("a/missing.mp4", None).await.unwrap_err(),
        StoreError::NotFound
    ));
    store.delete("a/missing.mp4").await.unwrap();

    let meta = store
        .put_bytes(
            "jobs/j1/video.mp4",
            Bytes::from_static(b"0123456789"),
            "video/mp4",
        )
        .await
        .unwrap();
    assert_eq!(meta.size, 10);
    let head = store.head("jobs/j1/video.mp4").await.unwrap().unwrap();
    assert_eq!(head.size, 10);
    assert!(head.etag.is_some());
    assert_eq!(
        read_all(store, "jobs/j1/video.mp4", None).await,
        b"0123456789"
    );
    let read = store.get("jobs/j1/video.mp4", Some(2..5)).await.unwrap();
    assert_eq!(read.range, 2..5);
    assert_eq!(read.meta.size, 10);
    assert_eq!(
        read_all(store, "jobs/j1/video.mp4", Some(2..5)).await,
        b"234"
    );
    // A range past the end is cut at the end.
    assert_eq!(
        read_all(store, "jobs/j1/video.mp4", Some(8..100)).await,
        b"89"
    );
    for bad in [10..12, 5..5, 20..30] {
        let err = store
            .get("jobs/j1/video.mp4", Some(bad.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::RangeNotSatisfiable { size: 10 }),
            "{bad:?}: {err:?}"
        );
    }

    for range in [None, Some(0..1)] {
        let err = store.get("jobs/j1/missing.mp4", range).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound), "{err:?}");
    }

    // A stream that fails stores nothing.
    let failing = stream::iter(vec![
        Ok(Bytes::from_static(b"abc")),
        Err(std::io::Error::other("client went away")),
    ]);
    let err = store
        .put_stream("jobs/j1/broken.mp4", failing, "video/mp4")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Upload(_)), "{err:?}");
    assert_eq!(store.head("jobs/j1/broken.mp4").await.unwrap(), None);

    let chunks = stream::iter(vec![
        Ok::<_, std::io::Error>(Bytes::from_static(b"hello ")),
        Ok(Bytes::from_static(b"world")),
    ]);
    let meta = store
        .put_stream("jobs/j2/v.mp4", chunks, "video/mp4")
        .await
        .unwrap();
    assert_eq!(meta.size, 11);
    assert_eq!(read_all(store, "jobs/j2/v.mp4", None).await, b"hello world");

    store.delete("jobs/j1/video.mp4").await.unwrap();
    assert_eq!(store.head("jobs/j1/video.mp4").await.unwrap(), None);

    assert!(matches!(
        store.get("../escape", None).await.unwrap_err(),
        StoreError::InvalidKey(_)
    ));
}

#[tokio::test]
async fn the_memory_store_reads_writes_ranges_and_deletes() {
    basic_behaviour(&BlobStore::from_url("memory://").unwrap()).await;
}

#[tokio::test]
async fn the_file_store_creates_its_directory_and_reads_writes_ranges_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("videos/nested");
    let store = BlobStore::from_url(&format!("file://{}", root.display())).unwrap();
    assert!(root.is_dir());
    basic_behaviour(&store).await;
    assert!(root.join("jobs/j2/v.mp4").is_file());
}

#[tokio::test]
async fn a_relative_file_url_is_relative_to_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = std::env::current_dir().unwrap();
    // A relative path from here to the temporary directory.
    let ups = "../".repeat(cwd.components().count() - 1);
    let target = dir.path().join("rel/videos");
    let relative = format!(
        "{ups}{}",
        target.display().to_string().trim_start_matches('/')
    );
    assert!(!relative.starts_with('/'));
    let store = BlobStore::from_url(&format!("file://{relative}")).unwrap();
    assert!(target.is_dir());
    store
        .put_bytes("a.txt", Bytes::from_static(b"hi"), "text/plain")
        .await
        .unwrap();
    assert_eq!(std::fs::read(target.join("a.txt")).unwrap(), b"hi");
}

#[tokio::test]
async fn unknown_storage_urls_are_refused() {
    for url in ["ftp://x/y", "nonsense"] {
        let err = BlobStore::from_url(url).unwrap_err();
        assert!(matches!(err, StoreError::Config(_)), "{url}: {err:?}");
    }
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// The byte at `offset` of the test file: not constant, so misplaced ranges are caught.
fn byte_at(offset: u64) -> u8 {
    (offset.wrapping_mul(31) ^ (offset >> 13)) as u8
}

fn chunk(start: u64, len: u64) -> Bytes {
    (start..start + len)
        .map(byte_at)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_stream_in_and_back_by_ranges_with_flat_memory() {
    const SIZE: u64 = 50 * 1024 * 1024;
    const CHUNK: u64 = 256 * 1024;
    const LIMIT: u64 = 32 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::from_url(&format!("file://{}", dir.path().display())).unwrap();

    let base = rss();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(base));
    let p = peak.clone();
    let body = stream::iter((0..SIZE / CHUNK).map(move |i| {
        p.fetch_max(rss(), std::sync::atomic::Ordering::Relaxed);
        Ok::<_, std::io::Error>(chunk(i * CHUNK, CHUNK))
    }));
    let meta = store
        .put_stream("big/video.mp4", body, "video/mp4")
        .await
        .unwrap();
    assert_eq!(meta.size, SIZE);
    assert_eq!(
        store.head("big/video.mp4").await.unwrap().unwrap().size,
        SIZE
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("big/video.mp4"))
            .unwrap()
            .len(),
        SIZE
    );

    // Read it all back in 10 MiB ranges, checking every byte as it streams past.
    let step = 10 * 1024 * 1024;
    let mut start = 0;
    while start < SIZE {
        let end = (start + step).min(SIZE);
        let read = store.get("big/video.mp4", Some(start..end)).await.unwrap();
        assert_eq!(read.range, start..end);
        let mut offset = start;
        let mut s = read.stream;
        while let Some(bytes) = s.next().await {
            let bytes = bytes.unwrap();
            for (i, b) in bytes.iter().enumerate() {
                assert_eq!(*b, byte_at(offset + i as u64), "byte {}", offset + i as u64);
            }
            offset += bytes.len() as u64;
            peak.fetch_max(rss(), std::sync::atomic::Ordering::Relaxed);
        }
        assert_eq!(offset, end);
        start = end;
    }
    let growth = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(base);
    eprintln!("resident memory growth: {} KiB", growth / 1024);
    assert!(
        growth < LIMIT,
        "resident memory grew by {} MiB while moving a 50 MiB file",
        growth / 1024 / 1024
    );
}

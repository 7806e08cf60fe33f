//! The read side of a download in isolation: how fast a stream of a local file yields bytes
//! through object_store's `LocalFileSystem` as it comes (8 KiB chunks), through the
//! `ChunkedStore` of 512 KiB that `BlobStore` wraps it in for `file://`, and by plain reads of
//! the same file in 1 MiB chunks. Used to explain the download scenario.

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use futures::StreamExt;
use object_store::ObjectStore;
use object_store::chunked::ChunkedStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;

/// The throughput of each way of reading a file, MB/s (10^6 bytes per second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// `LocalFileSystem::get(...).into_stream()`, as object_store streams a local file.
    pub object_store_mb_s: f64,
    /// Average size of the chunks that stream yields, bytes.
    pub object_store_chunk: u64,
    /// The same through `ChunkedStore` with 512 KiB chunks: what `BlobStore::get` streams.
    pub blob_store_mb_s: f64,
    /// Average size of the chunks that stream yields, bytes.
    pub blob_store_chunk: u64,
    /// `std::fs::File::read` in 1 MiB chunks, each on the blocking pool.
    pub chunked_1mib_mb_s: f64,
}

/// Reads `file` whole `rounds` times each way.
pub async fn probe(file: &Path, rounds: u32) -> anyhow::Result<Probe> {
    let dir = file
        .parent()
        .ok_or_else(|| anyhow::anyhow!("the file has no directory"))?;
    let name = file
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("the path has no file name"))?
        .to_string_lossy()
        .into_owned();
    let store = std::sync::Arc::new(LocalFileSystem::new_with_prefix(dir)?);
    let path = ObjectPath::from(name.as_str());
    let (object_store_mb_s, object_store_chunk) = stream_rate(&*store, &path, rounds).await?;
    // The chunk size `sora_store::BlobStore` uses for local files (its `LOCAL_READ_CHUNK`;
    // this crate does not link the store).
    let chunked = ChunkedStore::new(store, 512 * 1024);
    let (blob_store_mb_s, blob_store_chunk) = stream_rate(&chunked, &path, rounds).await?;

    let t = Instant::now();
    let mut bytes2 = 0u64;
    for _ in 0..rounds {
        let mut f = std::fs::File::open(file)?;
        loop {
            let (r, back) = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; 1 << 20];
                let n = f.read(&mut buf);
                (n, f)
            })
            .await?;
            f = back;
            let n = r?;
            if n == 0 {
                break;
            }
            bytes2 += n as u64;
        }
    }
    let chunked_1mib_mb_s = bytes2 as f64 / 1e6 / t.elapsed().as_secs_f64();
    Ok(Probe {
        object_store_mb_s,
        object_store_chunk,
        blob_store_mb_s,
        blob_store_chunk,
        chunked_1mib_mb_s,
    })
}

/// Streams the file whole `rounds` times: MB/s and the average chunk size.
async fn stream_rate(
    store: &dyn ObjectStore,
    path: &ObjectPath,
    rounds: u32,
) -> anyhow::Result<(f64, u64)> {
    let t = Instant::now();
    let mut bytes = 0u64;
    let mut chunks = 0u64;
    for _ in 0..rounds {
        let mut s = store
            .get_opts(path, object_store::GetOptions::default())
            .await?
            .into_stream();
        while let Some(c) = s.next().await {
            bytes += c?.len() as u64;
            chunks += 1;
        }
    }
    Ok((
        bytes as f64 / 1e6 / t.elapsed().as_secs_f64(),
        bytes / chunks.max(1),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_readers_read_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.bin");
        std::fs::write(&file, vec![7u8; 3 * 1024 * 1024 + 5]).unwrap();
        let p = probe(&file, 1).await.unwrap();
        assert!(
            p.object_store_mb_s > 0.0 && p.chunked_1mib_mb_s > 0.0,
            "{p:?}"
        );
        assert!(p.object_store_chunk > 0, "{p:?}");
        assert!(p.blob_store_mb_s > 0.0, "{p:?}");
        assert!(
            p.blob_store_chunk > p.object_store_chunk,
            "the chunked store reads larger chunks: {p:?}"
        );
    }
}

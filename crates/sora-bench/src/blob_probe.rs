//! The read side of a download in isolation: how fast the store's stream of a local file
//! yields bytes (object_store's `LocalFileSystem`, what `BlobStore` uses for `file://`) next to
//! a plain read of the same file in large chunks. Used to explain the download scenario.

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use futures::StreamExt;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;

/// The throughput of each way of reading a file, MB/s (10^6 bytes per second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// `LocalFileSystem::get(...).into_stream()`, as the server reads.
    pub object_store_mb_s: f64,
    /// Average size of the chunks that stream yields, bytes.
    pub object_store_chunk: u64,
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
    let store = LocalFileSystem::new_with_prefix(dir)?;
    let path = ObjectPath::from(name.as_str());

    let t = Instant::now();
    let mut bytes = 0u64;
    let mut chunks = 0u64;
    for _ in 0..rounds {
        let mut s = store
            .get_opts(&path, object_store::GetOptions::default())
            .await?
            .into_stream();
        while let Some(c) = s.next().await {
            bytes += c?.len() as u64;
            chunks += 1;
        }
    }
    let object_store_mb_s = bytes as f64 / 1e6 / t.elapsed().as_secs_f64();
    let object_store_chunk = bytes / chunks.max(1);

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
        chunked_1mib_mb_s,
    })
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
    }
}

//! File storage through `object_store`: a local directory by default, S3-compatible storage with
//! the `s3` feature, memory for tests.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::chunked::ChunkedStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMultipartOptions,
    PutOptions, PutPayload, WriteMultipart,
};

use crate::StoreError;

/// The part size of multipart uploads (S3's minimum).
const PART_SIZE: usize = 5 * 1024 * 1024;
/// How many parts may be in flight at once (memory use is about `PART_SIZE * (1 + this)`).
const PARTS_IN_FLIGHT: usize = 2;

/// The size and entity tag of a stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    /// Size in bytes.
    pub size: u64,
    /// The store's entity tag, when it gives one.
    pub etag: Option<String>,
}

/// A file being read: its metadata, the byte range returned, and the bytes as a stream.
pub struct BlobRead {
    /// The whole file's size and entity tag.
    pub meta: BlobMeta,
    /// The byte range the stream yields (`0..size` for a whole read).
    pub range: Range<u64>,
    /// The bytes.
    pub stream: BoxStream<'static, Result<Bytes, StoreError>>,
}

impl std::fmt::Debug for BlobRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobRead")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// Where finished files are kept.
#[derive(Debug, Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// The local file system refuses attributes such as the content type.
    attributes: bool,
}

/// How much of a local file one read step takes (and one body chunk holds). Measured with `just
/// bench` (docs/performance.md): 512 KiB serves one client at nginx's rate where 256 KiB gave
/// 0.7 of it, for ~1 MiB per download in flight; `sora-bench`'s read probe uses the same size.
const LOCAL_READ_CHUNK: usize = 512 * 1024;

impl BlobStore {
    /// The store a URL names:
    ///
    /// - `file://relative/dir` (relative to the current directory) or `file:///absolute/dir`:
    ///   a local directory, created if missing;
    /// - `memory://`: in memory (tests);
    /// - `s3://bucket/prefix` (with the `s3` feature): S3 or an S3-compatible store, configured
    ///   from the usual `AWS_*` environment variables (`AWS_ENDPOINT`, `AWS_REGION`, ...).
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if let Some(rest) = url.strip_prefix("file://") {
            let path = if rest.starts_with('/') {
                PathBuf::from(rest)
            } else {
                std::env::current_dir()
                    .map_err(|e| StoreError::Config(format!("no current directory: {e}")))?
                    .join(rest)
            };
            std::fs::create_dir_all(&path).map_err(|e| {
                StoreError::Config(format!("cannot create directory {}: {e}", path.display()))
            })?;
            let fs = LocalFileSystem::new_with_prefix(&path)
                .map_err(|e| StoreError::Config(format!("cannot use {}: {e}", path.display())))?
                .with_automatic_cleanup(true);
            // object_store reads local files in 8 KiB chunks, one blocking-pool round trip
            // each, which caps a download at a few hundred MB/s; larger chunks lift that
            // (docs/performance.md) at the cost of one chunk of memory per open read.
            let chunked = ChunkedStore::new(Arc::new(fs), LOCAL_READ_CHUNK);
            return Ok(Self::new(Arc::new(chunked), false));
        }
        if url == "memory://" || url == "memory:" {
            return Ok(Self::new(Arc::new(InMemory::new()), true));
        }
        Self::from_cloud_url(url)
    }

    /// A blob store over any `object_store` implementation. `attributes`: whether it keeps
    /// attributes such as the content type (the local file system does not).
    pub fn new(store: Arc<dyn ObjectStore>, attributes: bool) -> Self {
        Self { store, attributes }
    }

    #[cfg(feature = "s3")]
    fn from_cloud_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("s3://") || url.starts_with("s3a://") {
            let parsed = url::Url::parse(url)
                .map_err(|e| StoreError::Config(format!("invalid storage URL: {e}")))?;
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .build()
                .map_err(|e| StoreError::Config(format!("cannot use S3 storage: {e}")))?;
            let prefix = parsed.path().trim_matches('/');
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
            };
            return Ok(Self::new(store, true));
        }
        Err(unsupported(url))
    }

    #[cfg(not(feature = "s3"))]
    fn from_cloud_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("s3://") || url.starts_with("s3a://") {
            return Err(StoreError::Config(
                "s3:// storage needs sora-store built with the `s3` feature".into(),
            ));
        }
        Err(unsupported(url))
    }

    /// Stores a file from a stream, as a multipart upload: at most a few parts are held in
    /// memory, never the whole file. On a stream error the upload is aborted and nothing is
    /// stored.
    pub async fn put_stream<S, E>(
        &self,
        key: &str,
        stream: S,
        content_type: &str,
    ) -> Result<BlobMeta, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<crate::BoxError>,
    {
        let path = path(key)?;
        let opts = PutMultipartOptions {
            attributes: self.attributes_for(content_type),
            ..Default::default()
        };
        let upload = self.store.put_multipart_opts(&path, opts).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut size = 0u64;
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(StoreError::Upload(e.into()));
                }
            };
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(e.into());
            }
            size += chunk.len() as u64;
            writer.put(chunk);
        }
        let result = writer.finish().await?;
        Ok(BlobMeta {
            size,
            etag: result.e_tag,
        })
    }

    /// Stores a small file from memory.
    pub async fn put_bytes(
        &self,
        key: &str,
        data: Bytes,
        content_type: &str,
    ) -> Result<BlobMeta, StoreError> {
        let path = path(key)?;
        let size = data.len() as u64;
        let opts = PutOptions {
            attributes: self.attributes_for(content_type),
            ..Default::default()
        };
        let result = self
            .store
            .put_opts(&path, PutPayload::from_bytes(data), opts)
            .await?;
        Ok(BlobMeta {
            size,
            etag: result.e_tag,
        })
    }

    /// The file's size and entity tag, or `None` if there is no such file.
    pub async fn head(&self, key: &str) -> Result<Option<BlobMeta>, StoreError> {
        match self.store.head(&path(key)?).await {
            Ok(meta) => Ok(Some(BlobMeta {
                size: meta.size,
                etag: meta.e_tag,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError::Blob(e)),
        }
    }

    /// Reads a file, whole or a byte range of it, as a stream. A range that ends past the end
    /// is cut at the end; one that is empty or starts at or past the end is
    /// `RangeNotSatisfiable`. `NotFound` if there is no such file.
    pub async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<BlobRead, StoreError> {
        let path = path(key)?;
        if let Some(r) = &range
            && r.start >= r.end
        {
            let size = self.head(key).await?.ok_or(StoreError::NotFound)?.size;
            return Err(StoreError::RangeNotSatisfiable { size });
        }
        let opts = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..Default::default()
        };
        // One request on the happy path (a video player's range reads are many and small); the
        // size is asked for only to tell why a ranged read failed.
        let result = match self.store.get_opts(&path, opts).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Err(StoreError::NotFound),
            Err(e) => {
                if let Some(r) = &range {
                    let size = self.head(key).await?.ok_or(StoreError::NotFound)?.size;
                    if r.start >= size {
                        return Err(StoreError::RangeNotSatisfiable { size });
                    }
                }
                return Err(StoreError::Blob(e));
            }
        };
        let meta = BlobMeta {
            size: result.meta.size,
            etag: result.meta.e_tag.clone(),
        };
        let range = result.range.clone();
        let stream = result.into_stream().map_err(StoreError::from).boxed();
        Ok(BlobRead {
            meta,
            range,
            stream,
        })
    }

    /// Deletes a file. A missing file is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.store.delete(&path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::Blob(e)),
        }
    }

    fn attributes_for(&self, content_type: &str) -> Attributes {
        if self.attributes {
            Attributes::from_iter([(Attribute::ContentType, content_type.to_owned())])
        } else {
            Attributes::new()
        }
    }
}

fn unsupported(url: &str) -> StoreError {
    let scheme = url.split(':').next().unwrap_or_default();
    StoreError::Config(format!(
        "unsupported storage URL scheme `{scheme}`: use file://, memory:// or s3://"
    ))
}

fn path(key: &str) -> Result<Path, StoreError> {
    Path::parse(key).map_err(|e| StoreError::InvalidKey(format!("{key:?}: {e}")))
}

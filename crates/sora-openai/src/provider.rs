//! The provider trait: what the job service needs from a video generation API.

use sora_core::{Variant, VideoId};

use crate::error::ProviderError;
use crate::types::{Content, CreateVideo, DeletedVideo, ListQuery, RemixVideo, Video, VideoPage};

/// A video generation provider (the OpenAI Videos API or anything that speaks it).
///
/// The trait is object safe, so a service holds an `Arc<dyn VideoProvider>` and tests swap in
/// `MockVideoProvider` (feature `mock`) or a client pointed at an emulator.
///
/// Implementations must never re-send a [`create`](VideoProvider::create) by themselves: a create
/// that timed out may have succeeded, and sending it again pays twice. Idempotent reads may be
/// retried a bounded number of times.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait::async_trait]
pub trait VideoProvider: Send + Sync {
    /// Starts a generation. Sent as JSON, or as `multipart/form-data` when the request carries an
    /// input image.
    async fn create(&self, request: CreateVideo) -> Result<Video, ProviderError>;

    /// Reads the current state of a generation.
    async fn retrieve(&self, id: &VideoId) -> Result<Video, ProviderError>;

    /// Lists generations, one page at a time (cursor pagination with `after`).
    async fn list(&self, query: ListQuery) -> Result<VideoPage, ProviderError>;

    /// Deletes a generation and its files at the provider.
    async fn delete(&self, id: &VideoId) -> Result<DeletedVideo, ProviderError>;

    /// Starts a new generation that remixes a finished one.
    async fn remix(&self, id: &VideoId, request: RemixVideo) -> Result<Video, ProviderError>;

    /// Opens one file of a finished generation. Streams the bytes; never buffers the whole file.
    async fn download(&self, id: &VideoId, variant: Variant) -> Result<Content, ProviderError>;
}

#[cfg(all(test, feature = "mock"))]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn the_mock_stands_in_for_the_trait_object() {
        let mut mock = MockVideoProvider::new();
        mock.expect_retrieve()
            .returning(|_| Err(ProviderError::Timeout));
        let provider: Arc<dyn VideoProvider> = Arc::new(mock);
        let id: VideoId = "video_1".parse().unwrap();
        assert!(matches!(
            provider.retrieve(&id).await,
            Err(ProviderError::Timeout)
        ));
    }
}

#![doc = include_str!("../README.md")]

pub mod backoff;
pub mod client;
pub mod error;
pub mod provider;
pub mod types;
pub mod webhook;

pub use backoff::Backoff;
pub use client::{ConfigError, OpenAiClient, OpenAiConfig};
pub use error::ProviderError;
#[cfg(feature = "mock")]
pub use provider::MockVideoProvider;
pub use provider::VideoProvider;
pub use types::{
    Content, CreateVideo, DeletedVideo, InputImage, ListOrder, ListQuery, RemixVideo, Video,
    VideoError, VideoPage, VideoStatus,
};

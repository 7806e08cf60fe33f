#![doc = include_str!("../README.md")]

mod api;
pub mod config;
pub mod faults;
pub mod media;
mod server;
mod state;
mod webhook;

pub use api::MAX_PROMPT_CHARS;
pub use config::{ConfigError, EmulatorConfig, Faults, WebhookRetry, WebhookTarget};
pub use faults::PromptFaults;
pub use media::MediaVariant;
pub use server::{Emulator, EmulatorHandle, StartError};

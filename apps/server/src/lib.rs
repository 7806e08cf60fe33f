#![doc = include_str!("../README.md")]

pub mod app;
pub mod auth;
pub mod config;
pub mod demo;
pub mod dto;
pub mod embed;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod ws;

pub use app::{RunningServer, StartOptions, start};
pub use auth::{ApiKeyAuth, AuthContext, Authenticator};
pub use config::Config;
pub use embed::{SoraApi, SoraApiBuilder};
pub use error::ApiError;

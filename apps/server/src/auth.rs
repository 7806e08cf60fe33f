//! Authentication: from a request to the owner of the jobs it may see.
//!
//! The routes know only the [`Authenticator`] trait. This service's own implementation is
//! [`ApiKeyAuth`] (bearer API keys whose hashes live in the store); an application that embeds the
//! routes can bring its own (a session cookie, a JWT) without forking anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::http::header;
use async_trait::async_trait;
use sora_core::OwnerId;
use sora_service::hash_api_key;
use sora_store::JobStore;

use crate::error::ApiError;

/// How long a verified API key is trusted without asking the database again: also the longest a
/// revoked key keeps working.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);
/// The most keys remembered at once.
const KEY_CACHE_MAX: usize = 10_000;

/// Where a credential is being presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthContext {
    /// A REST call: credentials in headers (or cookies) only.
    Api,
    /// A WebSocket upgrade: browsers cannot set headers there, so a `token` query parameter is
    /// accepted too.
    WebSocket,
}

/// Decides who is calling.
#[async_trait(?Send)]
pub trait Authenticator: Send + Sync + 'static {
    /// The owner the request acts for, or a rejection (normally 401).
    async fn authenticate(&self, req: &HttpRequest, ctx: AuthContext) -> Result<OwnerId, ApiError>;
}

/// Bearer API keys created with `sora-server keys create`.
#[derive(Clone)]
pub struct ApiKeyAuth {
    store: Arc<dyn JobStore>,
    /// Recently verified keys: hash to owner and when it was looked up. Saves a database round
    /// trip per request (docs/performance.md); a revoked key keeps working for at most
    /// [`KEY_CACHE_TTL`] in a process that had just seen it.
    cache: Arc<Mutex<HashMap<String, (OwnerId, Instant)>>>,
    /// A key known only to this process (the emulator mode's development key): its hash and
    /// owner. Never stored, so it dies with the process.
    ephemeral: Option<(String, OwnerId)>,
}

impl std::fmt::Debug for ApiKeyAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKeyAuth")
    }
}

impl ApiKeyAuth {
    /// Keys looked up in this store.
    pub fn new(store: Arc<dyn JobStore>) -> Self {
        Self {
            store,
            cache: Arc::default(),
            ephemeral: None,
        }
    }

    fn cached(&self, hash: &str) -> Option<OwnerId> {
        let cache = self.cache.lock().expect("the key cache lock");
        cache
            .get(hash)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(owner, _)| owner.clone())
    }

    /// Also accepts `key` for `owner`, without storing it: it stops working when the process
    /// ends.
    pub fn with_ephemeral_key(mut self, key: &str, owner: OwnerId) -> Self {
        self.ephemeral = Some((hash_api_key(key), owner));
        self
    }
}

/// The bearer token of a request: the `Authorization: Bearer` header, or for a WebSocket the
/// `token` query parameter.
pub fn presented_token(req: &HttpRequest, ctx: AuthContext) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = token.trim();
        return (!token.is_empty()).then(|| token.to_owned());
    }
    if ctx == AuthContext::WebSocket {
        return url::form_urlencoded::parse(req.query_string().as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty());
    }
    None
}

#[async_trait(?Send)]
impl Authenticator for ApiKeyAuth {
    async fn authenticate(&self, req: &HttpRequest, ctx: AuthContext) -> Result<OwnerId, ApiError> {
        let token = presented_token(req, ctx).ok_or_else(|| {
            ApiError::unauthorized("Missing credential: send Authorization: Bearer <api key>")
        })?;
        let hash = hash_api_key(&token);
        if let Some((known, owner)) = &self.ephemeral
            && *known == hash
        {
            return Ok(owner.clone());
        }
        if let Some(owner) = self.cached(&hash) {
            return Ok(owner);
        }
        let record = self.store.find_api_key(&hash).await?;
        let owner = record
            .map(|r| r.owner)
            .ok_or_else(|| ApiError::unauthorized("The API key is not valid"))?;
        let mut cache = self.cache.lock().expect("the key cache lock");
        if cache.len() >= KEY_CACHE_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < KEY_CACHE_TTL);
            if cache.len() >= KEY_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(hash, (owner.clone(), Instant::now()));
        Ok(owner)
    }
}

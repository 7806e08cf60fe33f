//! Configuration, from environment variables (see `docs/operations.md`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sora_openai::webhook::WebhookSecret;
use url::Url;

/// A configuration value that is present but wrong.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    /// The environment variable.
    pub var: &'static str,
    /// What is wrong (never the value of a secret).
    pub message: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything the server reads at start-up. `Debug` shows no secret.
pub struct Config {
    /// `SORA_BIND`: the listen address.
    pub bind: SocketAddr,
    /// `DATABASE_URL`: `sqlite://...` (embedded) or `postgres://...`.
    pub database_url: SecretString,
    /// `SORA_STORAGE_URL`: where finished files go.
    pub storage_url: String,
    /// `OPENAI_API_KEY`: the provider key; without it the built-in emulator serves.
    pub openai_api_key: Option<SecretString>,
    /// `OPENAI_BASE_URL`: any OpenAI-compatible Videos API.
    pub openai_base_url: Url,
    /// `OPENAI_WEBHOOK_SECRET`: one or more `whsec_...` secrets (space or comma separated, for
    /// rotation). Empty: the webhook route answers 503 and polling alone finishes jobs.
    pub webhook_secrets: Vec<WebhookSecret>,
    /// `SORA_POLL_INTERVAL_MS`: the poller's base interval.
    pub poll_interval: Duration,
    /// `SORA_PUBLIC_URL`: the base of links in answers.
    pub public_url: Url,
    /// `SORA_CORS_ORIGINS`: browser origins allowed to call the API and open WebSockets.
    pub cors_origins: Vec<String>,
    /// `SORA_LINK_SECRET`: the key that signs download links (all instances need the same);
    /// random per process when unset.
    pub link_secret: Option<SecretString>,
    /// `SORA_LINK_TTL_SECS`: how long a signed download link lives.
    pub link_ttl: Duration,
    /// `SORA_MAX_ACTIVE_JOBS`: the cap on jobs active at the provider.
    pub max_active_jobs: u64,
    /// `SORA_JOB_DEADLINE_SECS`: a job still active this long after creation fails.
    pub job_deadline: Duration,
    /// `SORA_RETENTION_HOURS`: finished files are deleted after this long (0 keeps them).
    pub retention: Option<Duration>,
    /// `SORA_CATALOGUE`: a JSON file with the models and presets on offer.
    pub catalogue_path: Option<PathBuf>,
    /// `SORA_MAX_UPLOAD_BYTES`: the largest input-reference image.
    pub max_upload_bytes: usize,
    /// `SORA_EMULATOR_DURATION_MS`: how long a generation takes in the built-in emulator.
    pub emulator_duration: Duration,
    /// `SORA_LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: LogFormat,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field(
                "database_url",
                &redact_url(self.database_url.expose_secret()),
            )
            .field("storage_url", &self.storage_url)
            .field(
                "openai_api_key",
                &self.openai_api_key.as_ref().map(|_| "***"),
            )
            .field("openai_base_url", &self.openai_base_url.as_str())
            .field("webhook_secrets", &self.webhook_secrets.len())
            .field("poll_interval", &self.poll_interval)
            .field("public_url", &self.public_url.as_str())
            .field("cors_origins", &self.cors_origins)
            .field("link_secret", &self.link_secret.as_ref().map(|_| "***"))
            .field("link_ttl", &self.link_ttl)
            .field("max_active_jobs", &self.max_active_jobs)
            .field("job_deadline", &self.job_deadline)
            .field("retention", &self.retention)
            .field("catalogue_path", &self.catalogue_path)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("emulator_duration", &self.emulator_duration)
            .field("log_format", &self.log_format)
            .finish()
    }
}

/// A database URL with any password replaced by `***`, for logs.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable url>".into(),
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |k: &'static str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let err = |var: &'static str, message: String| ConfigError { var, message };
        let parse_u64 = |k: &'static str, default: u64| -> Result<u64, ConfigError> {
            match var(k) {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .map_err(|_| err(k, format!("`{v}` is not a whole number"))),
            }
        };

        let bind: SocketAddr = match var("SORA_BIND") {
            None => "127.0.0.1:8080".parse().expect("default bind parses"),
            Some(v) => v.parse().map_err(|_| {
                err(
                    "SORA_BIND",
                    format!("`{v}` is not an address like 127.0.0.1:8080"),
                )
            })?,
        };
        let database_url = var("DATABASE_URL").unwrap_or_else(|| "sqlite://data/sora.db".into());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(err(
                "DATABASE_URL",
                "must start with sqlite:, postgres:// or postgresql://".into(),
            ));
        }
        let storage_url = var("SORA_STORAGE_URL").unwrap_or_else(|| "file://data/videos".into());
        let openai_api_key = var("OPENAI_API_KEY").map(SecretString::from);
        let openai_base_url = match var("OPENAI_BASE_URL") {
            None => Url::parse("https://api.openai.com/v1").expect("default URL parses"),
            Some(v) => Url::parse(&v)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| err("OPENAI_BASE_URL", format!("`{v}` is not an http(s) URL")))?,
        };
        let webhook_secrets = match get("OPENAI_WEBHOOK_SECRET") {
            None => Vec::new(),
            Some(v) => v
                .split([' ', ','])
                .filter(|s| !s.trim().is_empty())
                .map(|s| {
                    s.trim().parse::<WebhookSecret>().map_err(|_| {
                        err(
                            "OPENAI_WEBHOOK_SECRET",
                            "a secret is not valid (a whsec_ secret must be followed by valid base64)".into(),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let poll_ms = parse_u64("SORA_POLL_INTERVAL_MS", 5000)?;
        if poll_ms < 10 {
            return Err(err("SORA_POLL_INTERVAL_MS", "must be at least 10".into()));
        }
        let public_url = match var("SORA_PUBLIC_URL") {
            Some(v) => Url::parse(&v)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| err("SORA_PUBLIC_URL", format!("`{v}` is not an http(s) URL")))?,
            None => {
                let host = if bind.ip().is_unspecified() {
                    "127.0.0.1".to_owned()
                } else if bind.is_ipv6() {
                    format!("[{}]", bind.ip())
                } else {
                    bind.ip().to_string()
                };
                Url::parse(&format!("http://{host}:{}", bind.port()))
                    .map_err(|e| err("SORA_BIND", e.to_string()))?
            }
        };
        let cors_origins = var("SORA_CORS_ORIGINS")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().trim_end_matches('/').to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let retention_hours = parse_u64("SORA_RETENTION_HOURS", 24 * 7)?;
        let log_format = match var("SORA_LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(err(
                    "SORA_LOG_FORMAT",
                    format!("`{other}` is neither text nor json"),
                ));
            }
        };
        Ok(Self {
            bind,
            database_url: SecretString::from(database_url),
            storage_url,
            openai_api_key,
            openai_base_url,
            webhook_secrets,
            poll_interval: Duration::from_millis(poll_ms),
            public_url,
            cors_origins,
            link_secret: var("SORA_LINK_SECRET").map(SecretString::from),
            link_ttl: Duration::from_secs(parse_u64("SORA_LINK_TTL_SECS", 3600)?.max(1)),
            max_active_jobs: parse_u64("SORA_MAX_ACTIVE_JOBS", 16)?.max(1),
            job_deadline: Duration::from_secs(
                parse_u64("SORA_JOB_DEADLINE_SECS", 2 * 3600)?.max(1),
            ),
            retention: (retention_hours > 0).then(|| Duration::from_secs(retention_hours * 3600)),
            catalogue_path: var("SORA_CATALOGUE").map(PathBuf::from),
            max_upload_bytes: parse_u64("SORA_MAX_UPLOAD_BYTES", 10 * 1024 * 1024)? as usize,
            emulator_duration: Duration::from_millis(parse_u64("SORA_EMULATOR_DURATION_MS", 8000)?),
            log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_need_no_configuration() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url.expose_secret(), "sqlite://data/sora.db");
        assert_eq!(c.storage_url, "file://data/videos");
        assert!(c.openai_api_key.is_none());
        assert!(c.webhook_secrets.is_empty());
        assert_eq!(c.poll_interval, Duration::from_secs(5));
        assert_eq!(c.public_url.as_str(), "http://127.0.0.1:8080/");
        assert!(c.cors_origins.is_empty());
    }

    #[test]
    fn bad_values_name_their_variable_and_hide_secrets() {
        assert_eq!(cfg(&[("SORA_BIND", "nope")]).unwrap_err().var, "SORA_BIND");
        assert_eq!(
            cfg(&[("DATABASE_URL", "mysql://x")]).unwrap_err().var,
            "DATABASE_URL"
        );
        let e = cfg(&[("OPENAI_WEBHOOK_SECRET", "whsec_!!!notbase64")]).unwrap_err();
        assert_eq!(e.var, "OPENAI_WEBHOOK_SECRET");
        assert!(!e.to_string().contains("notbase64"));
        assert_eq!(
            cfg(&[("SORA_POLL_INTERVAL_MS", "fast")]).unwrap_err().var,
            "SORA_POLL_INTERVAL_MS"
        );
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let c = cfg(&[
            ("OPENAI_API_KEY", "sk-very-secret"),
            ("DATABASE_URL", "postgres://u:hunter2@db/sora"),
            ("SORA_LINK_SECRET", "link-secret-value"),
        ])
        .unwrap();
        let d = format!("{c:?}");
        for secret in ["sk-very-secret", "hunter2", "link-secret-value"] {
            assert!(!d.contains(secret), "{d}");
        }
    }

    #[test]
    fn public_url_and_cors_origins_are_read() {
        let c = cfg(&[
            ("SORA_BIND", "0.0.0.0:9000"),
            (
                "SORA_CORS_ORIGINS",
                "http://localhost:5173, https://app.example.com/",
            ),
        ])
        .unwrap();
        assert_eq!(c.public_url.as_str(), "http://127.0.0.1:9000/");
        assert_eq!(
            c.cors_origins,
            vec!["http://localhost:5173", "https://app.example.com"]
        );
    }
}

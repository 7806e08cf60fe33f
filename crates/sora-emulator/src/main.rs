//! `sora-emulator`: a local OpenAI Videos API for demos and for other programs' tests.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use secrecy::{ExposeSecret, SecretString};
use sora_emulator::{Emulator, EmulatorConfig, Faults, WebhookRetry, WebhookTarget};
use sora_openai::webhook::WebhookSecret;
use tracing_subscriber::EnvFilter;
use url::Url;

/// A local stand-in for the OpenAI Videos API (`/v1/videos`): jobs that progress over time, real
/// media files, Standard Webhooks-signed `video.completed` / `video.failed` events, and faults on
/// demand.
///
/// Per-job faults are markers anywhere in the prompt:
///   [fail] / [fail:CODE]   the generation fails halfway with error code CODE (default internal_error)
///   [429] / [429:N]        create answers 429 with Retry-After N times (default 1) for this prompt
///   [quota]                create always answers 429 insufficient_quota (not retryable)
///   [500] [502] [503] [504], optionally :N
///                          create answers that status N times (default 1) for this prompt
///   [delay:MS]             every answer about this job is delayed MS milliseconds
///   [drop-webhook]         the job's webhook is never sent
///   [dup-webhook] / [dup-webhook:N]
///                          the webhook is sent N times in all (default 2), same webhook-id
///   [late-webhook:MS]      the webhook is sent MS milliseconds after the job ended
///   [out-of-order]         a stale webhook of the opposite type (older created_at) follows
///   [early-webhook]        the webhook is sent when the job starts in_progress, before it ends
///   [expire-early]         content expires at completion: /content answers 404 expired
///   [stall]                the job stays in_progress forever (progress stops at 99)
#[derive(Debug, Parser)]
#[command(name = "sora-emulator", version, verbatim_doc_comment)]
struct Cli {
    /// The address to listen on.
    #[arg(long, env = "SORA_EMULATOR_BIND", default_value = "127.0.0.1:8090")]
    bind: SocketAddr,

    /// Accept only `Authorization: Bearer KEY` (default: any non-empty bearer token).
    #[arg(long, env = "SORA_EMULATOR_API_KEY", hide_env_values = true)]
    api_key: Option<SecretString>,

    /// POST video.completed / video.failed webhooks to this URL (needs --webhook-secret).
    #[arg(long, env = "SORA_EMULATOR_WEBHOOK_URL", requires = "webhook_secret")]
    webhook_url: Option<Url>,

    /// The Standard Webhooks secret (`whsec_<base64>`) that signs the webhooks.
    #[arg(
        long,
        env = "SORA_EMULATOR_WEBHOOK_SECRET",
        hide_env_values = true,
        requires = "webhook_url"
    )]
    webhook_secret: Option<SecretString>,

    /// How long a generation takes from create to completed, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    duration_ms: u64,

    /// How often jobs are moved forward (and their webhooks sent) when nobody reads them, in
    /// milliseconds.
    #[arg(long, default_value_t = 250)]
    tick_ms: u64,

    /// How long the files of a completed video stay downloadable (expires_at - completed_at), in
    /// seconds.
    #[arg(long, default_value_t = 3600)]
    content_ttl_secs: u64,

    /// The model used when a create names none.
    #[arg(long, default_value = "sora-2")]
    default_model: String,

    /// The accepted `seconds` values, comma-separated; the first is the default.
    #[arg(long, value_delimiter = ',', default_value = "4,8,12")]
    seconds: Vec<String>,

    /// The accepted `size` values, comma-separated; the first is the default.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "720x1280,1280x720,1024x1792,1792x1024"
    )]
    sizes: Vec<String>,

    /// The delay announced by injected 429 and 503 answers (Retry-After, retry-after-ms), in
    /// milliseconds.
    #[arg(long, default_value_t = 1000)]
    retry_after_ms: u64,

    /// Webhook attempts per delivery, the first included.
    #[arg(long, default_value_t = 5)]
    webhook_attempts: u32,

    /// The wait before the second webhook attempt, in milliseconds; it doubles after each failure.
    #[arg(long, default_value_t = 1000)]
    webhook_backoff_ms: u64,

    /// How long one webhook attempt may take, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    webhook_timeout_ms: u64,

    /// Fault: answer the first N creates (and remixes) with 429 and Retry-After.
    #[arg(long, default_value_t = 0, help_heading = "Faults")]
    fail_first_creates_429: u32,

    /// Fault: then answer the next N creates (and remixes) with --server-error-status.
    #[arg(long, default_value_t = 0, help_heading = "Faults")]
    fail_first_creates_5xx: u32,

    /// Fault: the status of the injected server errors (500, 502, 503 or 504).
    #[arg(long, default_value_t = 500, help_heading = "Faults")]
    server_error_status: u16,

    /// Fault: delay every answer by this many milliseconds.
    #[arg(long, default_value_t = 0, help_heading = "Faults")]
    response_delay_ms: u64,

    /// Fault: every generation fails halfway with this error code (e.g. moderation_blocked).
    #[arg(long, help_heading = "Faults")]
    fail_generation: Option<String>,

    /// Fault: every job stays in_progress forever.
    #[arg(long, help_heading = "Faults")]
    stall: bool,

    /// Fault: content expires at the moment of completion (/content answers 404 expired).
    #[arg(long, help_heading = "Faults")]
    expire_early: bool,

    /// Fault: the share (0.0 to 1.0) of webhooks silently never sent.
    #[arg(long, default_value_t = 0.0, help_heading = "Faults")]
    webhook_drop_share: f64,

    /// Fault: send each webhook this many times in all, with the same webhook-id.
    #[arg(long, default_value_t = 1, help_heading = "Faults")]
    webhook_copies: u32,

    /// Fault: send each webhook this many milliseconds after its job ended.
    #[arg(long, default_value_t = 0, help_heading = "Faults")]
    webhook_delay_ms: u64,

    /// Fault: after each webhook, send a stale one of the opposite type with an older created_at.
    #[arg(long, help_heading = "Faults")]
    webhook_out_of_order: bool,

    /// Fault: send each webhook as soon as its job starts in_progress, before retrieve shows the
    /// outcome it announces.
    #[arg(long, help_heading = "Faults")]
    webhook_early: bool,
}

impl Cli {
    /// The configuration these flags describe. The webhook secret is parsed here rather than by
    /// clap, whose error messages would echo the rejected value.
    fn into_config(self) -> anyhow::Result<EmulatorConfig> {
        let webhook = match (self.webhook_url, self.webhook_secret) {
            (Some(url), Some(secret)) => {
                let secret: WebhookSecret = secret.expose_secret().parse().map_err(|_| {
                    anyhow::anyhow!(
                        "invalid value for --webhook-secret: expected `whsec_` followed by                          base64 (the value is not shown)"
                    )
                })?;
                Some(WebhookTarget { url, secret })
            }
            _ => None,
        };
        let config = EmulatorConfig {
            bind: self.bind,
            api_key: self.api_key,
            webhook,
            generation_duration: Duration::from_millis(self.duration_ms),
            tick_interval: Duration::from_millis(self.tick_ms),
            content_ttl: Duration::from_secs(self.content_ttl_secs),
            default_model: self.default_model,
            allowed_seconds: self.seconds,
            allowed_sizes: self.sizes,
            retry_after: Duration::from_millis(self.retry_after_ms),
            webhook_retry: WebhookRetry {
                max_attempts: self.webhook_attempts,
                initial_backoff: Duration::from_millis(self.webhook_backoff_ms),
                timeout: Duration::from_millis(self.webhook_timeout_ms),
            },
            faults: Faults {
                rate_limit_creates: self.fail_first_creates_429,
                server_error_creates: self.fail_first_creates_5xx,
                server_error_status: self.server_error_status,
                response_delay: Duration::from_millis(self.response_delay_ms),
                fail_generation: self.fail_generation,
                stall: self.stall,
                expire_early: self.expire_early,
                webhook_drop_share: self.webhook_drop_share,
                webhook_copies: self.webhook_copies,
                webhook_delay: Duration::from_millis(self.webhook_delay_ms),
                webhook_out_of_order: self.webhook_out_of_order,
                webhook_early: self.webhook_early,
            },
        };
        config.validate()?;
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = Cli::parse().into_config()?;
    let handle = Emulator::start(config)
        .await
        .context("starting the emulator")?;
    tracing::info!(base_url = %handle.base_url(), "ready; press Ctrl-C to stop");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    handle.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_become_the_configuration() {
        let cli = Cli::try_parse_from([
            "sora-emulator",
            "--bind",
            "127.0.0.1:0",
            "--webhook-url",
            "http://127.0.0.1:9/hook",
            "--webhook-secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "--duration-ms",
            "300",
            "--seconds",
            "4,10",
            "--fail-first-creates-429",
            "2",
            "--webhook-drop-share",
            "0.5",
        ])
        .unwrap();
        let config = cli.into_config().unwrap();
        assert_eq!(config.generation_duration, Duration::from_millis(300));
        assert_eq!(config.allowed_seconds, ["4", "10"]);
        assert_eq!(config.faults.rate_limit_creates, 2);
        assert!(config.webhook.is_some());
        assert!(!format!("{config:?}").contains("MfKQ9r8"));
    }

    #[test]
    fn a_webhook_url_needs_a_secret() {
        assert!(
            Cli::try_parse_from(["sora-emulator", "--webhook-url", "http://127.0.0.1:9/h"])
                .is_err()
        );
    }
}

//! Prometheus metrics (`GET /metrics`), and a provider wrapper that measures every call.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sora_core::{JobStatus, VideoId};
use sora_openai::{
    Content, CreateVideo, DeletedVideo, ListQuery, ProviderError, RemixVideo, Video, VideoPage,
    VideoProvider,
};

type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<Labels, Counter>,
    http_latency: Family<Labels, Histogram, fn() -> Histogram>,
    jobs: Family<Labels, Gauge>,
    webhooks: Family<Labels, Counter>,
    webhook_last_verified: Gauge,
    provider_calls: Family<Labels, Counter>,
    provider_latency: Family<Labels, Histogram, fn() -> Histogram>,
    ws_connections: Gauge,
    ws_messages: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sora");
        let http_requests = Family::<Labels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            http_requests.clone(),
        );
        let http_latency =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_latency.clone(),
        );
        let jobs = Family::<Labels, Gauge>::default();
        registry.register("jobs", "Jobs by status, read at scrape time", jobs.clone());
        let webhooks = Family::<Labels, Counter>::default();
        registry.register(
            "webhooks",
            "Webhook deliveries by outcome (recorded, duplicate, ignored, rejected, disabled)",
            webhooks.clone(),
        );
        let webhook_last_verified = Gauge::default();
        registry.register(
            "webhook_last_verified_timestamp_seconds",
            "Unix time of the last webhook whose signature verified (0: none since start); alert when it stops moving while jobs complete",
            webhook_last_verified.clone(),
        );
        let provider_calls = Family::<Labels, Counter>::default();
        registry.register(
            "provider_calls",
            "Provider calls by operation and outcome (ok or the error code)",
            provider_calls.clone(),
        );
        let provider_latency =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "provider_call_duration_seconds",
            "Provider call latency by operation (to the first byte for downloads)",
            provider_latency.clone(),
        );
        let ws_connections = Gauge::default();
        registry.register(
            "websocket_connections",
            "Open WebSocket connections",
            ws_connections.clone(),
        );
        let ws_messages = Counter::default();
        registry.register(
            "websocket_messages_sent",
            "Job messages sent over WebSockets",
            ws_messages.clone(),
        );
        Self {
            registry,
            http_requests,
            http_latency,
            jobs,
            webhooks,
            webhook_last_verified,
            provider_calls,
            provider_latency,
            ws_connections,
            ws_messages,
        }
    }

    /// Counts an HTTP request.
    pub fn http_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("method", method.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
        self.http_latency
            .get_or_create(&vec![("route", route.to_owned())])
            .observe(seconds);
    }

    /// Counts a webhook delivery.
    pub fn webhook(&self, outcome: &'static str) {
        self.webhooks
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
        if matches!(outcome, "recorded" | "duplicate" | "ignored") {
            self.webhook_last_verified
                .set(chrono::Utc::now().timestamp());
        }
    }

    /// Tracks WebSocket connections.
    pub fn ws_connected(&self, delta: i64) {
        self.ws_connections.inc_by(delta);
    }

    /// Counts WebSocket messages sent.
    pub fn ws_sent(&self, n: u64) {
        self.ws_messages.inc_by(n);
    }

    fn provider_call(&self, op: &'static str, outcome: &str, seconds: f64) {
        self.provider_calls
            .get_or_create(&vec![
                ("operation", op.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        self.provider_latency
            .get_or_create(&vec![("operation", op.to_owned())])
            .observe(seconds);
    }

    /// Sets the job gauges from fresh counts.
    pub fn set_job_counts(&self, counts: &[(JobStatus, u64)]) {
        for status in JobStatus::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n);
            self.jobs
                .get_or_create(&vec![("status", status.as_str().to_owned())])
                .set(n as i64);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// A provider that records the latency and outcome of every call of the one it wraps.
#[derive(Clone)]
pub struct MeteredProvider {
    inner: Arc<dyn VideoProvider>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for MeteredProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeteredProvider")
    }
}

impl MeteredProvider {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn VideoProvider>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    fn record<T>(&self, op: &'static str, started: Instant, r: &Result<T, ProviderError>) {
        let outcome = match r {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        self.metrics
            .provider_call(op, outcome, started.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl VideoProvider for MeteredProvider {
    async fn create(&self, request: CreateVideo) -> Result<Video, ProviderError> {
        let t = Instant::now();
        let r = self.inner.create(request).await;
        self.record("create", t, &r);
        r
    }

    async fn retrieve(&self, id: &VideoId) -> Result<Video, ProviderError> {
        let t = Instant::now();
        let r = self.inner.retrieve(id).await;
        self.record("retrieve", t, &r);
        r
    }

    async fn list(&self, query: ListQuery) -> Result<VideoPage, ProviderError> {
        let t = Instant::now();
        let r = self.inner.list(query).await;
        self.record("list", t, &r);
        r
    }

    async fn delete(&self, id: &VideoId) -> Result<DeletedVideo, ProviderError> {
        let t = Instant::now();
        let r = self.inner.delete(id).await;
        self.record("delete", t, &r);
        r
    }

    async fn remix(&self, id: &VideoId, request: RemixVideo) -> Result<Video, ProviderError> {
        let t = Instant::now();
        let r = self.inner.remix(id, request).await;
        self.record("remix", t, &r);
        r
    }

    async fn download(
        &self,
        id: &VideoId,
        variant: sora_core::Variant,
    ) -> Result<Content, ProviderError> {
        let t = Instant::now();
        let r = self.inner.download(id, variant).await;
        self.record("download", t, &r);
        r
    }
}

//! WebSocket fleets (many clients, each reading frames and time-stamping them) and the bare
//! baseline server they are compared with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::stats;

/// How long a client waits for its first frame (the snapshot) after the upgrade.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// The WebSocket settings of the clients and of the bare server: a 4 KiB read buffer instead of
/// tungstenite's default 128 KiB, so that 10,000 idle sockets cost what the kernel and the
/// protocol need rather than what a large buffer reserves (the frames here are a few hundred
/// bytes).
pub fn lean_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// A progress frame one client received.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    /// The client's index in its fleet.
    pub client: usize,
    /// The frame's `version`.
    pub version: u64,
    /// When it was read.
    pub at: Instant,
}

/// The `version` of a live (non-snapshot) `progress` frame; `None` for anything else.
pub fn progress_version(text: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    if v.get("type")?.as_str()? != "progress" {
        return None;
    }
    if v.get("snapshot").and_then(|s| s.as_bool()).unwrap_or(false) {
        return None;
    }
    v.get("version")?.as_u64()
}

/// Many open WebSocket clients. Dropping it closes them.
#[derive(Debug)]
pub struct Fleet {
    /// Clients attempted (the range of `Frame::client`), connected or not.
    attempted: usize,
    readers: Vec<JoinHandle<()>>,
    frames: mpsc::UnboundedReceiver<Frame>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

/// How opening a fleet went.
#[derive(Debug)]
pub struct Ramp {
    /// Clients that got their first frame.
    pub connected: usize,
    /// Clients that failed.
    pub failed: usize,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// Wall time to open them all.
    pub elapsed: Duration,
    /// Per client: from starting the TCP connection to the first frame.
    pub latency: Histogram<u64>,
}

impl Ramp {
    /// Clients connected per second.
    pub fn rate(&self) -> f64 {
        self.connected as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl Fleet {
    /// Opens one client per URL, `concurrency` handshakes at a time; each counts as connected
    /// when its first frame (the server's snapshot or greeting) has arrived.
    pub async fn open(urls: Vec<String>, concurrency: usize) -> (Self, Ramp) {
        let attempted = urls.len();
        let (tx, frames) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let start = Instant::now();
        let mut handshakes = Vec::with_capacity(urls.len());
        for (client, url) in urls.into_iter().enumerate() {
            let permits = permits.clone();
            let tx = tx.clone();
            handshakes.push(tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
                let t = Instant::now();
                let (mut stream, _) = tokio_tungstenite::connect_async_with_config(
                    url.as_str(),
                    Some(lean_config()),
                    true,
                )
                .await
                .map_err(|e| format!("connect: {e}"))?;
                loop {
                    match tokio::time::timeout(FIRST_FRAME_TIMEOUT, stream.next()).await {
                        Err(_) => return Err("no first frame in time".to_owned()),
                        Ok(None) => return Err("closed before the first frame".to_owned()),
                        Ok(Some(Err(e))) => return Err(format!("read: {e}")),
                        Ok(Some(Ok(Message::Text(text)))) => {
                            if text.contains("\"error\"") {
                                return Err(format!("error frame: {text}"));
                            }
                            break;
                        }
                        Ok(Some(Ok(_))) => continue,
                    }
                }
                let latency = t.elapsed();
                let reader = tokio::spawn(async move {
                    while let Some(msg) = stream.next().await {
                        let at = Instant::now();
                        match msg {
                            Ok(Message::Text(text)) => {
                                if let Some(version) = progress_version(&text) {
                                    let _ = tx.send(Frame {
                                        client,
                                        version,
                                        at,
                                    });
                                }
                            }
                            Ok(Message::Close(_)) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                });
                Ok::<_, String>((latency, reader))
            }));
        }
        drop(tx);
        let mut readers = Vec::new();
        let mut ramp = Ramp {
            connected: 0,
            failed: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            latency: stats::histogram(),
        };
        for h in handshakes {
            match h.await {
                Ok(Ok((latency, reader))) => {
                    ramp.connected += 1;
                    stats::record(&mut ramp.latency, latency);
                    readers.push(reader);
                }
                Ok(Err(e)) => {
                    ramp.failed += 1;
                    ramp.first_error.get_or_insert(e);
                }
                Err(e) => {
                    ramp.failed += 1;
                    ramp.first_error.get_or_insert(e.to_string());
                }
            }
        }
        ramp.elapsed = start.elapsed();
        (
            Self {
                attempted,
                readers,
                frames,
            },
            ramp,
        )
    }

    /// How many clients are open.
    pub fn len(&self) -> usize {
        self.readers.len()
    }

    /// Whether no client is open.
    pub fn is_empty(&self) -> bool {
        self.readers.is_empty()
    }

    /// Drops frames already received.
    pub fn drain(&mut self) {
        while self.frames.try_recv().is_ok() {}
    }

    /// Waits until `expected` clients have each received a frame of `version` (or `timeout`
    /// passes), recording each arrival's delay after `t0`. Answers how many arrived.
    pub async fn collect(
        &mut self,
        version: u64,
        expected: usize,
        t0: Instant,
        timeout: Duration,
        latency: &mut Histogram<u64>,
    ) -> usize {
        let mut seen = vec![false; self.attempted];
        let mut got = 0;
        let deadline = tokio::time::Instant::from(t0 + timeout);
        while got < expected {
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Ok(Some(f)) => {
                    if f.version == version && f.client < seen.len() && !seen[f.client] {
                        seen[f.client] = true;
                        got += 1;
                        stats::record(latency, f.at.saturating_duration_since(t0));
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        got
    }
}

/// The baseline: a bare tokio-tungstenite server that greets each client with one frame and
/// relays every `progress` frame any client sends to all clients (one broadcast channel, no
/// authentication, no database). Runs until the listener fails.
pub async fn serve_baseline(listener: TcpListener) -> std::io::Result<()> {
    let (tx, _) = broadcast::channel::<String>(1024);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let tx = tx.clone();
        let mut rx = tx.subscribe();
        tokio::spawn(async move {
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(tcp, Some(lean_config())).await
            else {
                return;
            };
            if ws.send(Message::text(r#"{"type":"hello"}"#)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Text(t))) => {
                            if t.starts_with(r#"{"type":"progress""#) {
                                let _ = tx.send(t.to_string());
                            }
                        }
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                        Some(Ok(_)) => {}
                    },
                    out = rx.recv() => match out {
                        Ok(text) => if ws.send(Message::text(text)).await.is_err() { break },
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
        });
    }
}

/// The same bare broadcast on sora-server's own WebSocket stack (actix-web + actix-ws, as many
/// workers as actix starts by default): what the stack costs, apart from anything sora-server
/// adds (authentication, the database, the hub). Runs until the server stops.
pub fn serve_actix_baseline(listener: std::net::TcpListener) -> std::io::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let (tx, _) = broadcast::channel::<String>(1024);
        actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(actix_web::web::Data::new(tx.clone()))
                .route("/", actix_web::web::get().to(actix_relay))
        })
        .listen(listener)?
        .run()
        .await
    })
}

async fn actix_relay(
    req: actix_web::HttpRequest,
    body: actix_web::web::Payload,
    tx: actix_web::web::Data<broadcast::Sender<String>>,
) -> Result<actix_web::HttpResponse, actix_web::Error> {
    let (response, mut session, mut stream) = actix_ws::handle(&req, body)?;
    let tx = tx.get_ref().clone();
    let mut rx = tx.subscribe();
    actix_web::rt::spawn(async move {
        if session.text(r#"{"type":"hello"}"#).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                msg = stream.recv() => match msg {
                    Some(Ok(actix_ws::Message::Text(t))) => {
                        if t.starts_with(r#"{"type":"progress""#) {
                            let _ = tx.send(t.to_string());
                        }
                    }
                    Some(Ok(actix_ws::Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                out = rx.recv() => match out {
                    Ok(text) => if session.text(text).await.is_err() { break },
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        let _ = session.close(None).await;
    });
    Ok(response)
}

/// A client of the baseline server that sends the frames to relay.
#[derive(Debug)]
pub struct Trigger {
    sink: futures::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        Message,
    >,
    drain: JoinHandle<()>,
}

impl Drop for Trigger {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

impl Trigger {
    /// Connects to the baseline server at `url`.
    pub async fn connect(url: &str) -> Result<Self, String> {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(lean_config()), true)
            .await
            .map_err(|e| e.to_string())?;
        let (sink, mut stream) = ws.split();
        let drain = tokio::spawn(async move { while stream.next().await.is_some() {} });
        Ok(Self { sink, drain })
    }

    /// Asks the server to relay a progress frame of `version` to everyone.
    pub async fn send(&mut self, version: u64) -> Result<(), String> {
        self.sink
            .send(Message::text(format!(
                r#"{{"type":"progress","version":{version}}}"#
            )))
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_progress_frames_count() {
        assert_eq!(
            progress_version(r#"{"type":"progress","jobId":"j","version":7}"#),
            Some(7)
        );
        assert_eq!(
            progress_version(r#"{"type":"progress","version":7,"snapshot":true}"#),
            None
        );
        assert_eq!(progress_version(r#"{"type":"pong"}"#), None);
        assert_eq!(progress_version("not json"), None);
    }

    #[tokio::test]
    async fn clients_that_fail_to_connect_do_not_hide_the_others_frames() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        tokio::spawn(serve_baseline(listener));
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("ws://{}", l.local_addr().unwrap())
        };
        // Failures first, so the connected clients have the highest indices.
        let mut urls = vec![closed.clone(), closed];
        urls.extend(std::iter::repeat_n(url.clone(), 5));
        let (mut fleet, ramp) = Fleet::open(urls, 4).await;
        assert_eq!((ramp.connected, ramp.failed), (5, 2));
        assert!(ramp.first_error.unwrap().contains("connect"));
        let mut trigger = Trigger::connect(&url).await.unwrap();
        let mut h = stats::histogram();
        let t0 = Instant::now();
        trigger.send(1).await.unwrap();
        let got = fleet
            .collect(1, fleet.len(), t0, Duration::from_secs(5), &mut h)
            .await;
        assert_eq!(got, 5);
    }

    #[tokio::test]
    async fn baseline_relays_every_frame_to_every_client() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        tokio::spawn(serve_baseline(listener));
        relays_to_20(&url).await;
    }

    #[tokio::test]
    async fn the_actix_baseline_relays_every_frame_to_every_client() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        std::thread::spawn(move || serve_actix_baseline(listener));
        relays_to_20(&url).await;
    }

    async fn relays_to_20(url: &str) {
        let url = url.to_owned();
        let (mut fleet, ramp) = Fleet::open(vec![url.clone(); 20], 4).await;
        assert_eq!(ramp.connected, 20, "{:?}", ramp.first_error);
        let mut trigger = Trigger::connect(&url).await.unwrap();
        let mut h = stats::histogram();
        for version in 1..=3 {
            let t0 = Instant::now();
            trigger.send(version).await.unwrap();
            let got = fleet
                .collect(version, 20, t0, Duration::from_secs(5), &mut h)
                .await;
            assert_eq!(got, 20);
        }
        assert_eq!(h.len(), 60);
    }
}

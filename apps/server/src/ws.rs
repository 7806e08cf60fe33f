//! The WebSocket broadcaster.
//!
//! One hub task owns every subscription and receives commands over a channel. It listens to the
//! job-event bus (the store's change notices, which cross instances on PostgreSQL); for a job
//! that has subscribers here it renders one message — from the state the notice carries
//! (PostgreSQL), or else from one read of the job (batched across a burst of changes) — and
//! puts the same bytes straight into every subscriber's socket queue (actix-ws' bounded session
//! channel; the hub never waits on it). It also reads the snapshot each new subscription gets,
//! batched the same way, and checks that the job is the subscriber's. A client too slow to keep
//! up fills its queue and is closed with a reason rather than slowing anyone else (it reconnects
//! and gets a snapshot, so nothing is lost).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use bytestring::ByteString;
use futures::FutureExt;
use serde::Deserialize;
use sora_core::{JobId, OwnerId};
use sora_service::VideoService;
use sora_store::ChangeNotice;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::dto::{Links, ProgressMessage};
use crate::metrics::Metrics;

/// How often the server pings a client.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// A client that has answered nothing for this long is dropped.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(45);
/// How many messages may wait for one slow client before it is closed: the capacity of
/// actix-ws' session channel, which is the connection's outbox.
pub const OUTBOX_CAPACITY: usize = 32;
/// The most jobs one connection may watch.
pub const MAX_SUBSCRIPTIONS: usize = 100;
/// The most changed jobs read in one batch.
const MAX_READ_BATCH: usize = 1000;
/// A batch is read in queries of at most this many jobs, side by side: they run in parallel
/// (several connections, both cores), frames go out as soon as the first query answers, and
/// each query stays a small message.
const READ_CHUNK: usize = 500;
/// A burst of change notices has ended when none came for this long...
const BURST_QUIET: Duration = Duration::from_micros(200);
/// ...or when it has been gathered for this long.
const BURST_MAX: Duration = Duration::from_millis(2);
/// How long jobs whose read failed wait before they are read again.
const READ_RETRY: Duration = Duration::from_secs(1);
/// The largest frame a client may send.
const MAX_FRAME: usize = 16 * 1024;

type ConnId = u64;

/// What became of a frame offered to a connection.
enum Offer {
    Queued,
    /// The connection's queue is full: the client is too slow.
    Full,
    /// The connection has closed.
    Closed,
}

/// Where the hub puts a connection's frames, without ever waiting.
trait Outbox: Send + 'static {
    fn offer(&mut self, text: ByteString) -> Offer;
}

impl Outbox for actix_ws::Session {
    fn offer(&mut self, text: ByteString) -> Offer {
        // The session is a bounded channel to the socket's writer: sending completes at once
        // unless the channel is full, and dropping the pending send loses nothing we keep.
        // `unconstrained`: the hub offers one frame to thousands of sockets in one go, and
        // tokio's cooperative budget would otherwise make every send after the 128th of a poll
        // look like a full queue.
        match tokio::task::unconstrained(self.text(text)).now_or_never() {
            Some(Ok(())) => Offer::Queued,
            Some(Err(_)) => Offer::Closed,
            None => Offer::Full,
        }
    }
}

enum Command {
    Connect {
        conn: ConnId,
        owner: OwnerId,
        outbox: Box<dyn Outbox>,
        kill: CancellationToken,
    },
    /// Watch a job: the hub reads it (batched with other reads) and answers with a snapshot,
    /// or with an error frame if the caller may not see it.
    Subscribe {
        conn: ConnId,
        job: JobId,
    },
    Unsubscribe {
        conn: ConnId,
        job: JobId,
    },
    Disconnect {
        conn: ConnId,
    },
    Deliver {
        job: JobId,
        owner: OwnerId,
        version: u64,
        text: ByteString,
    },
    ReadDone,
    /// Jobs whose read failed: read them again.
    Retry(Vec<JobId>),
    /// The answer to a subscription (the snapshot, or an error frame), sent through the hub so
    /// that it reaches the client before any change of that job: changes that the hub renders
    /// between the subscription and its snapshot are held, then sent after it if newer.
    Snapshot {
        conn: ConnId,
        job: JobId,
        /// The snapshot's version; `None` for an error frame.
        version: Option<u64>,
        text: ByteString,
    },
}

/// A handle to the hub task. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    tx: mpsc::UnboundedSender<Command>,
    next_conn: Arc<AtomicU64>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hub")
    }
}

struct Conn {
    owner: OwnerId,
    outbox: Box<dyn Outbox>,
    kill: CancellationToken,
    jobs: HashSet<JobId>,
    /// Subscriptions whose snapshot has not been sent yet, with the newest change held back
    /// for each (usually empty: a snapshot follows its subscription within one read).
    pending: Vec<(JobId, Option<(u64, ByteString)>)>,
}

/// A subscription waiting for its snapshot.
struct SnapshotRequest {
    conn: ConnId,
    /// The connection's owner: only the job's owner gets a snapshot.
    owner: OwnerId,
    job: JobId,
    /// The connection watched the job already (a repeated subscribe): a failed read keeps the
    /// subscription.
    renewed: bool,
}

struct HubState {
    service: VideoService,
    links: Links,
    metrics: Arc<Metrics>,
    tx: mpsc::UnboundedSender<Command>,
    conns: HashMap<ConnId, Conn>,
    subs: HashMap<JobId, HashSet<ConnId>>,
    /// The newest version delivered per watched job, so stale reads are dropped.
    delivered: HashMap<JobId, u64>,
    /// Watched jobs that changed and wait to be read.
    dirty: HashSet<JobId>,
    /// Subscriptions waiting for their snapshot, read with the next batch.
    snapshots: Vec<SnapshotRequest>,
    /// Whether a batch read is in flight.
    reading: bool,
}

impl Hub {
    /// Starts the hub task on the current tokio runtime. It stops when `shutdown` is cancelled.
    pub fn start(
        service: VideoService,
        links: Links,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let changes = service.subscribe();
        Self::start_on(service, links, metrics, shutdown, changes)
    }

    /// Starts the hub on a given stream of change notices.
    fn start_on(
        service: VideoService,
        links: Links,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        changes: broadcast::Receiver<ChangeNotice>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = HubState {
            service,
            links,
            metrics,
            tx: tx.clone(),
            conns: HashMap::new(),
            subs: HashMap::new(),
            delivered: HashMap::new(),
            dirty: HashSet::new(),
            snapshots: Vec::new(),
            reading: false,
        };
        tokio::spawn(state.run(rx, changes, shutdown));
        Self {
            tx,
            next_conn: Arc::new(AtomicU64::new(1)),
        }
    }

    fn send(&self, cmd: Command) {
        // The hub outlives every connection except at shutdown, when dropping is right.
        let _ = self.tx.send(cmd);
    }
}

impl HubState {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        mut changes: broadcast::Receiver<ChangeNotice>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => break,
                },
                notice = changes.recv() => {
                    self.on_notice(notice, &mut changes);
                    // Only when a watched job changed and nothing is being read: otherwise
                    // there is nothing to batch (changes to jobs nobody here watches cost a
                    // hash lookup each, never a wait).
                    if !self.reading && !self.dirty.is_empty() {
                        self.gather_burst(&mut changes).await;
                        self.read_if_idle();
                    }
                }
            }
        }
    }

    fn on_notice(
        &mut self,
        notice: Result<ChangeNotice, broadcast::error::RecvError>,
        changes: &mut broadcast::Receiver<ChangeNotice>,
    ) {
        match notice {
            Ok(ChangeNotice::Changed {
                job_id,
                version,
                state,
            }) => {
                if !self.subs.contains_key(&job_id)
                    || self.delivered.get(&job_id).is_some_and(|v| *v >= version)
                {
                    return;
                }
                match state {
                    // The notice says what the job looks like: no read.
                    Some(state) => {
                        let text = ProgressMessage::changed(job_id, version, &state, &self.links)
                            .to_text();
                        self.deliver(job_id, &state.owner, version, text);
                    }
                    None => {
                        self.dirty.insert(job_id);
                    }
                }
            }
            // Notices were lost (the listener reconnected, or we lagged): re-read every watched
            // job; versions drop what clients already have.
            Ok(ChangeNotice::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                self.dirty.extend(self.subs.keys().copied());
            }
            Err(broadcast::error::RecvError::Closed) => {
                *changes = self.service.subscribe();
            }
        }
    }

    /// A commit that changed many jobs arrives as a burst of notices, parsed one by one off the
    /// listener's socket: gather the burst (until no watched job has changed for
    /// [`BURST_QUIET`], at most [`BURST_MAX`]) so that it is read as one batch, not as a few
    /// that wait on each other.
    async fn gather_burst(&mut self, changes: &mut broadcast::Receiver<ChangeNotice>) {
        let started = Instant::now();
        let mut last = started;
        loop {
            loop {
                let watched = self.dirty.len();
                match changes.try_recv() {
                    Ok(n) => self.on_notice(Ok(n), changes),
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(broadcast::error::TryRecvError::Lagged(k)) => {
                        self.on_notice(Err(broadcast::error::RecvError::Lagged(k)), changes)
                    }
                    Err(broadcast::error::TryRecvError::Closed) => {
                        self.on_notice(Err(broadcast::error::RecvError::Closed), changes);
                        return;
                    }
                }
                if self.dirty.len() > watched {
                    last = Instant::now();
                }
            }
            if self.dirty.len() >= MAX_READ_BATCH
                || last.elapsed() >= BURST_QUIET
                || started.elapsed() >= BURST_MAX
            {
                tracing::debug!(
                    dirty = self.dirty.len(),
                    gather_ms = started.elapsed().as_secs_f64() * 1e3,
                    "gathered change notices"
                );
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Connect {
                conn,
                owner,
                outbox,
                kill,
            } => {
                self.conns.insert(
                    conn,
                    Conn {
                        owner,
                        outbox,
                        kill,
                        jobs: HashSet::new(),
                        pending: Vec::new(),
                    },
                );
            }
            Command::Subscribe { conn, job } => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                let renewed = c.jobs.contains(&job);
                if !renewed && c.jobs.len() >= MAX_SUBSCRIPTIONS {
                    let frame = error_frame(
                        "too_many_subscriptions",
                        &format!("at most {MAX_SUBSCRIPTIONS} jobs per connection"),
                        Some(&job.to_string()),
                    );
                    let offer = c.outbox.offer(frame);
                    if !matches!(offer, Offer::Queued) {
                        self.refused(conn, offer);
                    }
                    return;
                }
                c.jobs.insert(job);
                if !c.pending.iter().any(|(j, _)| *j == job) {
                    c.pending.push((job, None));
                }
                self.subs.entry(job).or_default().insert(conn);
                self.snapshots.push(SnapshotRequest {
                    conn,
                    owner: c.owner.clone(),
                    job,
                    renewed,
                });
                self.read_if_idle();
            }
            Command::Unsubscribe { conn, job } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.jobs.remove(&job);
                    take_pending(c, job);
                }
                self.drop_sub(conn, job);
            }
            Command::Snapshot {
                conn,
                job,
                version,
                text,
            } => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                let held = take_pending(c, job)
                    .filter(|(v, _)| version.is_none_or(|snapshot| *v > snapshot))
                    .map(|(_, t)| t);
                for frame in std::iter::once(text).chain(held) {
                    let offer = c.outbox.offer(frame);
                    if !matches!(offer, Offer::Queued) {
                        self.refused(conn, offer);
                        return;
                    }
                }
            }
            Command::Disconnect { conn } => self.disconnect(conn),
            Command::ReadDone => {
                self.reading = false;
                self.read_if_idle();
            }
            Command::Retry(jobs) => {
                self.dirty
                    .extend(jobs.into_iter().filter(|j| self.subs.contains_key(j)));
                self.read_if_idle();
            }
            Command::Deliver {
                job,
                owner,
                version,
                text,
            } => self.deliver(job, &owner, version, text),
        }
    }

    /// Puts a job's message of this version into the queue of every subscriber that owns the
    /// job, unless a message of this version or a newer one went out already.
    fn deliver(&mut self, job: JobId, owner: &OwnerId, version: u64, text: ByteString) {
        if self.delivered.get(&job).is_some_and(|v| *v >= version) {
            return;
        }
        let Some(conns) = self.subs.get(&job) else {
            return;
        };
        self.delivered.insert(job, version);
        let mut refused = Vec::new();
        let mut sent = 0;
        for conn in conns {
            // Subscriptions are registered before the ownership check answers, so the hub
            // checks again: only the job's owner ever receives it.
            if let Some(c) = self.conns.get_mut(conn).filter(|c| c.owner == *owner) {
                // Not before the subscription's snapshot: held, the newest only.
                if let Some((_, held)) = c.pending.iter_mut().find(|(j, _)| *j == job) {
                    if held.as_ref().is_none_or(|(v, _)| *v < version) {
                        *held = Some((version, text.clone()));
                    }
                    continue;
                }
                match c.outbox.offer(text.clone()) {
                    Offer::Queued => sent += 1,
                    offer => refused.push((*conn, offer)),
                }
            }
        }
        self.metrics.ws_sent(sent);
        for (conn, offer) in refused {
            self.refused(conn, offer);
        }
    }

    /// A connection that did not take a frame: a full queue means a client too slow to keep
    /// up, which is told so and closed; a closed one is simply forgotten.
    fn refused(&mut self, conn: ConnId, offer: Offer) {
        if let (Offer::Full, Some(c)) = (offer, self.conns.get(&conn)) {
            c.kill.cancel();
        }
        self.disconnect(conn);
    }

    fn drop_sub(&mut self, conn: ConnId, job: JobId) {
        if let Some(set) = self.subs.get_mut(&job) {
            set.remove(&conn);
            if set.is_empty() {
                self.subs.remove(&job);
                self.delivered.remove(&job);
            }
        }
    }

    fn disconnect(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            for job in c.jobs {
                self.drop_sub(conn, job);
            }
        }
    }

    /// Starts reading the changed jobs unless a read is in flight. Changed jobs are read in
    /// batches: while a read is in flight, further changes gather for the next one, so a burst
    /// of changes to many jobs costs a few queries, not one each.
    fn read_if_idle(&mut self) {
        let waiting = !self.dirty.is_empty() || !self.snapshots.is_empty();
        if waiting && !self.reading {
            self.start_read();
        }
    }

    /// Reads the changed jobs off the hub task; the rendered messages come back as `Deliver`s,
    /// then a `ReadDone`.
    fn start_read(&mut self) {
        let ids: Vec<JobId> = if self.dirty.len() <= MAX_READ_BATCH {
            self.dirty.drain().collect()
        } else {
            let ids: Vec<JobId> = self.dirty.iter().take(MAX_READ_BATCH).copied().collect();
            for id in &ids {
                self.dirty.remove(id);
            }
            ids
        };
        let snapshots = std::mem::take(&mut self.snapshots);
        if ids.is_empty() && snapshots.is_empty() {
            return;
        }
        self.reading = true;
        let service = self.service.clone();
        let links = self.links.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut reads: Vec<_> = ids
                .chunks(READ_CHUNK)
                .map(|chunk| {
                    tokio::spawn(read_and_render(
                        service.clone(),
                        links.clone(),
                        tx.clone(),
                        chunk.to_vec(),
                    ))
                })
                .collect();
            let requested = snapshots.len();
            for batch in snapshot_batches(snapshots) {
                reads.push(tokio::spawn(read_snapshots(
                    service.clone(),
                    links.clone(),
                    tx.clone(),
                    batch,
                )));
            }
            for read in reads {
                let _ = read.await;
            }
            tracing::debug!(
                jobs = ids.len(),
                snapshots = requested,
                read_ms = started.elapsed().as_secs_f64() * 1e3,
                "read changed jobs and snapshots"
            );
            let _ = tx.send(Command::ReadDone);
        });
    }
}

/// Removes a pending subscription, answering the change held for it, if any.
fn take_pending(c: &mut Conn, job: JobId) -> Option<(u64, ByteString)> {
    let i = c.pending.iter().position(|(j, _)| *j == job)?;
    let (_, held) = c.pending.swap_remove(i);
    if c.pending.is_empty() {
        // Give the memory back: an idle connection keeps nothing here.
        c.pending = Vec::new();
    }
    held
}

/// Reads some changed jobs and sends each one's rendered message to the hub. Jobs that could
/// not be read are sent back to be read again a little later, so no change is dropped.
async fn read_and_render(
    service: VideoService,
    links: Links,
    tx: mpsc::UnboundedSender<Command>,
    ids: Vec<JobId>,
) {
    match service.get_many(&ids).await {
        Ok(views) => {
            for view in views {
                let msg = ProgressMessage::new(&view, &links, false);
                let _ = tx.send(Command::Deliver {
                    job: view.job.id(),
                    owner: view.job.owner().clone(),
                    version: msg.version,
                    text: msg.to_text(),
                });
            }
        }
        Err(e) => {
            tracing::warn!(jobs = ids.len(), error = %e, "could not read changed jobs; retrying");
            tokio::spawn(async move {
                tokio::time::sleep(READ_RETRY).await;
                let _ = tx.send(Command::Retry(ids));
            });
        }
    }
}

/// Splits snapshot requests into batches of at most [`READ_CHUNK`] distinct jobs.
fn snapshot_batches(mut requests: Vec<SnapshotRequest>) -> Vec<Vec<SnapshotRequest>> {
    requests.sort_by_key(|r| r.job);
    let mut batches: Vec<Vec<SnapshotRequest>> = Vec::new();
    let mut jobs = 0;
    for r in requests {
        let new_job = batches
            .last()
            .and_then(|b| b.last())
            .is_none_or(|last| last.job != r.job);
        if new_job && (batches.is_empty() || jobs == READ_CHUNK) {
            batches.push(Vec::new());
            jobs = 0;
        }
        if new_job {
            jobs += 1;
        }
        batches.last_mut().expect("pushed above").push(r);
    }
    batches
}

/// Reads the jobs of some subscriptions (one query) and answers each with its snapshot, or
/// with an error frame when the job is not the subscriber's or cannot be read; a subscription
/// that fails is dropped unless the connection watched the job already.
async fn read_snapshots(
    service: VideoService,
    links: Links,
    tx: mpsc::UnboundedSender<Command>,
    requests: Vec<SnapshotRequest>,
) {
    // `snapshot_batches` sorted the requests by job: `dedup` leaves each job once.
    let mut ids: Vec<JobId> = requests.iter().map(|r| r.job).collect();
    ids.dedup();
    let fail = |r: &SnapshotRequest, text: ByteString| {
        if !r.renewed {
            let _ = tx.send(Command::Unsubscribe {
                conn: r.conn,
                job: r.job,
            });
        }
        let _ = tx.send(Command::Snapshot {
            conn: r.conn,
            job: r.job,
            version: None,
            text,
        });
    };
    match service.get_many(&ids).await {
        Ok(views) => {
            let rendered: HashMap<JobId, (&OwnerId, u64, ByteString)> = views
                .iter()
                .map(|v| {
                    let msg = ProgressMessage::new(v, &links, true);
                    (v.job.id(), (v.job.owner(), msg.version, msg.to_text()))
                })
                .collect();
            for r in &requests {
                match rendered
                    .get(&r.job)
                    .filter(|(owner, ..)| **owner == r.owner)
                {
                    Some((_, version, text)) => {
                        let _ = tx.send(Command::Snapshot {
                            conn: r.conn,
                            job: r.job,
                            version: Some(*version),
                            text: text.clone(),
                        });
                    }
                    None => fail(
                        r,
                        error_frame(
                            "job_not_found",
                            "No such job for this caller",
                            Some(&r.job.to_string()),
                        ),
                    ),
                }
            }
        }
        Err(e) => {
            tracing::warn!(jobs = ids.len(), error = %e, "could not read jobs for subscribers");
            for r in &requests {
                fail(
                    r,
                    error_frame(
                        "unavailable",
                        "Could not read the job; try again",
                        Some(&r.job.to_string()),
                    ),
                );
            }
        }
    }
}

/// What a client may send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Subscribe {
        #[serde(rename = "jobId")]
        job_id: String,
    },
    Unsubscribe {
        #[serde(rename = "jobId")]
        job_id: String,
    },
    Ping,
}

fn shutting_down() -> CloseReason {
    CloseReason {
        code: CloseCode::Away,
        description: Some("server shutting down; reconnect".into()),
    }
}

fn error_frame(code: &str, message: &str, job_id: Option<&str>) -> ByteString {
    serde_json::json!({
        "type": "error",
        "code": code,
        "message": message,
        "jobId": job_id,
    })
    .to_string()
    .into()
}

/// One connection's life: subscriptions, heartbeat, outbox, shutdown.
#[derive(Debug)]
pub struct Connection {
    /// The owner the credential belongs to.
    pub owner: OwnerId,
    /// The hub (which also reads the snapshots and checks ownership).
    pub hub: Hub,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
}

impl Connection {
    /// Upgrades the request and runs the connection on the current task's local set.
    pub fn start(
        self,
        req: &HttpRequest,
        body: web::Payload,
        initial: Vec<JobId>,
    ) -> Result<HttpResponse, actix_web::Error> {
        let (response, session, stream) = actix_ws::handle(req, body)?;
        let stream = stream
            .max_frame_size(MAX_FRAME)
            .aggregate_continuations()
            .max_continuation_size(MAX_FRAME);
        actix_web::rt::spawn(self.run(session, stream, initial));
        Ok(response)
    }

    async fn run(
        self,
        mut session: actix_ws::Session,
        mut stream: actix_ws::AggregatedMessageStream,
        initial: Vec<JobId>,
    ) {
        let conn = self.hub.next_conn.fetch_add(1, Ordering::Relaxed);
        let kill = CancellationToken::new();
        self.hub.send(Command::Connect {
            conn,
            owner: self.owner.clone(),
            outbox: Box::new(session.clone()),
            kill: kill.clone(),
        });
        self.metrics.ws_connected(1);
        // The hub reads the snapshots, off this connection's task and thread, batched with
        // other reads.
        for job in initial {
            self.hub.send(Command::Subscribe { conn, job });
        }

        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        heartbeat.tick().await;
        let mut last_seen = Instant::now();
        let close_reason = loop {
            tokio::select! {
                // Shutdown and the slow-client verdict win over anything else that is ready,
                // so the client learns why it is closed.
                biased;
                _ = kill.cancelled() => break Some(CloseReason {
                    code: CloseCode::Again,
                    description: Some("client too slow; reconnect to get the current state".into()),
                }),
                _ = self.shutdown.cancelled() => break Some(shutting_down()),
                msg = stream.recv() => {
                    last_seen = Instant::now();
                    match msg {
                        Some(Ok(AggregatedMessage::Text(text))) => {
                            // Boxed: a client's messages are rare, and a future awaited
                            // inline would make every idle connection's task as large as
                            // its largest step.
                            if let Err(reason) = Box::pin(self.on_text(conn, &text, &mut session)).await {
                                break reason;
                            }
                        }
                        Some(Ok(AggregatedMessage::Ping(bytes))) => {
                            if session.pong(&bytes).await.is_err() { break None }
                        }
                        Some(Ok(AggregatedMessage::Pong(_))) => {}
                        Some(Ok(AggregatedMessage::Binary(_))) => {
                            let frame = error_frame("unsupported", "binary frames are not supported; send JSON text", None);
                            if session.text(frame).await.is_err() { break None }
                        }
                        Some(Ok(AggregatedMessage::Close(_))) | None => break None,
                        Some(Err(_)) => break Some(CloseReason {
                            code: CloseCode::Protocol,
                            description: Some("protocol error".into()),
                        }),
                    }
                }
                _ = heartbeat.tick() => {
                    if last_seen.elapsed() > CLIENT_TIMEOUT {
                        break Some(CloseReason {
                            code: CloseCode::Normal,
                            description: Some("heartbeat timeout".into()),
                        });
                    }
                    if session.ping(b"").await.is_err() { break None }
                }
            }
        };
        self.hub.send(Command::Disconnect { conn });
        self.metrics.ws_connected(-1);
        let _ = session.close(close_reason).await;
    }

    /// Handles one client message. `Err` closes the connection with the given reason.
    async fn on_text(
        &self,
        conn: ConnId,
        text: &str,
        session: &mut actix_ws::Session,
    ) -> Result<(), Option<CloseReason>> {
        let reply = match serde_json::from_str::<ClientMessage>(text) {
            Err(_) => Some(error_frame(
                "invalid_message",
                r#"expected {"type":"subscribe"|"unsubscribe","jobId":"..."} or {"type":"ping"}"#,
                None,
            )),
            Ok(ClientMessage::Ping) => Some(ByteString::from_static(r#"{"type":"pong"}"#)),
            Ok(ClientMessage::Subscribe { job_id }) => match job_id.parse::<JobId>() {
                // The hub answers: a snapshot, or an error frame.
                Ok(job) => {
                    self.hub.send(Command::Subscribe { conn, job });
                    None
                }
                Err(e) => Some(error_frame("invalid_job_id", &e.to_string(), Some(&job_id))),
            },
            Ok(ClientMessage::Unsubscribe { job_id }) => match job_id.parse::<JobId>() {
                Ok(job) => {
                    self.hub.send(Command::Unsubscribe { conn, job });
                    Some(
                        serde_json::json!({"type": "unsubscribed", "jobId": job})
                            .to_string()
                            .into(),
                    )
                }
                Err(e) => Some(error_frame("invalid_job_id", &e.to_string(), Some(&job_id))),
            },
        };
        if let Some(reply) = reply
            && session.text(reply).await.is_err()
        {
            return Err(None);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sora_openai::MockVideoProvider;
    use sora_service::{LinkSigner, ServiceConfig};
    use sora_store::{BlobStore, SqliteStore};

    use super::*;

    impl Outbox for mpsc::Sender<ByteString> {
        fn offer(&mut self, text: ByteString) -> Offer {
            match self.try_send(text) {
                Ok(()) => Offer::Queued,
                Err(mpsc::error::TrySendError::Full(_)) => Offer::Full,
                Err(mpsc::error::TrySendError::Closed(_)) => Offer::Closed,
            }
        }
    }

    /// A hub and its service. The hub hears only the notices sent on the sender returned (keep
    /// it), not its store's: a job the test creates must not also reach it as a change (a
    /// second frame of version 1, which the protocol allows but the tests do not expect).
    async fn hub() -> (Hub, VideoService, broadcast::Sender<ChangeNotice>) {
        let (notices, changes) = broadcast::channel(16);
        let (hub, service) = hub_on(changes).await;
        (hub, service, notices)
    }

    /// A hub and its service, on the stream of notices `changes`.
    async fn hub_on(changes: broadcast::Receiver<ChangeNotice>) -> (Hub, VideoService) {
        let store = Arc::new(SqliteStore::in_memory().await.unwrap());
        let blobs = Arc::new(BlobStore::from_url("memory://").unwrap());
        let service = VideoService::new(
            store,
            Arc::new(MockVideoProvider::new()),
            blobs,
            ServiceConfig::new("test"),
        );
        let links = Links::new(
            "http://127.0.0.1/".parse().unwrap(),
            LinkSigner::random(Duration::from_secs(60)),
        );
        let hub = Hub::start_on(
            service.clone(),
            links,
            Arc::new(Metrics::new()),
            CancellationToken::new(),
            changes,
        );
        (hub, service)
    }

    /// A new job of `owner_name`'s, at version 1.
    async fn new_job(service: &VideoService, owner_name: &str) -> JobId {
        let request = sora_service::CreateRequest {
            prompt: "a cat on a skateboard".into(),
            ..Default::default()
        };
        let created = service.create(&owner(owner_name), request, None).await;
        created.unwrap().job.id()
    }

    /// The next frame of an outbox, as JSON (`{"text": …}` if it is not JSON).
    async fn next(rx: &mut mpsc::Receiver<ByteString>) -> serde_json::Value {
        let text = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a frame in time")
            .expect("the outbox is open");
        serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({ "text": &*text }))
    }

    /// Asserts that a frame is the snapshot of `job` at `version`.
    fn assert_snapshot(frame: &serde_json::Value, job: JobId, version: u64) {
        assert_eq!(frame["type"], "progress", "{frame}");
        assert_eq!(frame["snapshot"], true, "{frame}");
        assert_eq!(frame["jobId"], job.to_string(), "{frame}");
        assert_eq!(frame["version"], version, "{frame}");
    }

    async fn nothing_else(rx: &mut mpsc::Receiver<ByteString>) {
        let more = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
        assert!(more.is_err(), "nothing else: {more:?}");
    }

    fn owner(s: &str) -> OwnerId {
        s.parse().unwrap()
    }

    /// Connects `conn` as `owner_name`, with an outbox of `capacity` frames.
    fn connect(
        hub: &Hub,
        conn: ConnId,
        owner_name: &str,
        capacity: usize,
    ) -> (mpsc::Receiver<ByteString>, CancellationToken) {
        let (tx, rx) = mpsc::channel(capacity);
        let kill = CancellationToken::new();
        hub.send(Command::Connect {
            conn,
            owner: owner(owner_name),
            outbox: Box::new(tx),
            kill: kill.clone(),
        });
        (rx, kill)
    }

    fn deliver(job: JobId, owner_name: &str, version: u64) -> Command {
        Command::Deliver {
            job,
            owner: owner(owner_name),
            version,
            text: ByteString::from(format!("v{version}")),
        }
    }

    #[tokio::test]
    async fn a_slow_client_is_closed_without_holding_up_the_others() {
        let (hub, service, _notices) = hub().await;
        let job = new_job(&service, "alice").await;
        let (_slow_rx, slow_kill) = connect(&hub, 1, "alice", 1);
        let (mut fast_rx, fast_kill) = connect(&hub, 2, "alice", 16);
        for conn in [1, 2] {
            hub.send(Command::Subscribe { conn, job });
        }
        // Both snapshots went out (the slow client's first); its one-slot outbox is full.
        assert_snapshot(&next(&mut fast_rx).await, job, 1);
        for version in 2..=4 {
            hub.send(deliver(job, "alice", version));
        }
        for want in ["v2", "v3", "v4"] {
            assert_eq!(next(&mut fast_rx).await["text"], want);
        }
        tokio::time::timeout(Duration::from_secs(5), slow_kill.cancelled())
            .await
            .expect("the slow client is closed");
        assert!(!fast_kill.is_cancelled());
    }

    /// An upgraded session whose socket nobody writes: the response (its body is the
    /// session channel's receiver) and the session.
    fn session() -> (HttpResponse, actix_ws::Session) {
        let (req, mut payload) = actix_web::test::TestRequest::get()
            .insert_header(("upgrade", "websocket"))
            .insert_header(("connection", "upgrade"))
            .insert_header(("sec-websocket-version", "13"))
            .insert_header(("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="))
            .to_http_parts();
        let payload = <web::Payload as actix_web::FromRequest>::from_request(&req, &mut payload)
            .now_or_never()
            .expect("the payload is there at once")
            .unwrap();
        let (response, session, _stream) = actix_ws::handle(&req, payload).unwrap();
        (response, session)
    }

    /// The real outbox: actix-ws' session channel, offered to without waiting.
    #[actix_web::test]
    async fn a_session_outbox_queues_until_full_then_says_so_and_notices_a_close() {
        let (response, session) = session();
        let mut outbox: Box<dyn Outbox> = Box::new(session);
        // Nobody writes the socket, so the channel fills and stays full.
        for i in 0..OUTBOX_CAPACITY {
            assert!(
                matches!(
                    outbox.offer(ByteString::from(format!("m{i}"))),
                    Offer::Queued
                ),
                "message {i} fits"
            );
        }
        assert!(matches!(outbox.offer("one too many".into()), Offer::Full));
        // The response body is the channel's receiver: once it is gone, the socket is closed.
        drop(response);
        assert!(matches!(outbox.offer("late".into()), Offer::Closed));
    }

    /// One frame to many sockets in one poll of the hub: every one is queued, however many
    /// (tokio's cooperative budget must not make the later ones look full).
    #[actix_web::test]
    async fn one_frame_is_queued_for_every_one_of_many_sessions_in_one_go() {
        let mut kept = Vec::new();
        let mut outboxes: Vec<Box<dyn Outbox>> = Vec::new();
        for _ in 0..1000 {
            let (response, session) = session();
            kept.push(response);
            outboxes.push(Box::new(session));
        }
        let queued = outboxes
            .iter_mut()
            .map(|o| o.offer("frame".into()))
            .filter(|offer| matches!(offer, Offer::Queued))
            .count();
        assert_eq!(queued, 1000);
    }

    /// A change rendered between a subscription and its snapshot waits for the snapshot, and
    /// is sent after it only if it is newer.
    #[tokio::test]
    async fn the_snapshot_comes_first_and_changes_held_for_it_follow_if_newer() {
        let (hub, service, _notices) = hub().await;
        let (a, b) = (
            new_job(&service, "alice").await,
            new_job(&service, "alice").await,
        );
        let (mut rx, _) = connect(&hub, 1, "alice", 16);
        // All before the hub runs (this runtime has one thread): the changes are rendered
        // before the snapshots are read.
        hub.send(Command::Subscribe { conn: 1, job: a });
        hub.send(Command::Subscribe { conn: 1, job: b });
        hub.send(deliver(a, "alice", 5));
        hub.send(deliver(a, "alice", 6));
        hub.send(deliver(b, "alice", 1));
        let mut of_a = Vec::new();
        let mut of_b = Vec::new();
        for _ in 0..3 {
            let frame = next(&mut rx).await;
            if frame["jobId"] == b.to_string() {
                of_b.push(frame);
            } else {
                of_a.push(frame);
            }
        }
        // a: its snapshot (1), then the newest held change (6); b: only its snapshot (1), the
        // held change being no newer.
        assert_eq!(of_a.len(), 2, "{of_a:?}");
        assert_snapshot(&of_a[0], a, 1);
        assert_eq!(of_a[1]["text"], "v6");
        assert_eq!(of_b.len(), 1, "{of_b:?}");
        assert_snapshot(&of_b[0], b, 1);
        // Then changes go out live.
        hub.send(deliver(a, "alice", 7));
        assert_eq!(next(&mut rx).await["text"], "v7");
        nothing_else(&mut rx).await;
    }

    #[tokio::test]
    async fn stale_versions_and_other_owners_jobs_are_not_delivered() {
        let (hub, service, _notices) = hub().await;
        let job = new_job(&service, "bob").await;
        let (mut rx, _) = connect(&hub, 1, "bob", 16);
        hub.send(Command::Subscribe { conn: 1, job });
        assert_snapshot(&next(&mut rx).await, job, 1);
        // A change claiming to be of alice's job is not for bob.
        hub.send(deliver(job, "alice", 5));
        hub.send(deliver(job, "bob", 6));
        hub.send(deliver(job, "bob", 4));
        hub.send(deliver(job, "bob", 7));
        assert_eq!(next(&mut rx).await["text"], "v6");
        assert_eq!(
            next(&mut rx).await["text"],
            "v7",
            "version 4 is older than what was sent"
        );
        nothing_else(&mut rx).await;
    }

    /// Someone else's job, or no job: an error frame, and the subscription is dropped.
    #[tokio::test]
    async fn a_subscription_to_a_job_not_the_callers_is_refused() {
        let (hub, service, _notices) = hub().await;
        let alices = new_job(&service, "alice").await;
        let (mut rx, _) = connect(&hub, 1, "bob", 16);
        for job in [alices, JobId::new()] {
            hub.send(Command::Subscribe { conn: 1, job });
            let frame = next(&mut rx).await;
            assert_eq!(frame["type"], "error", "{frame}");
            assert_eq!(frame["code"], "job_not_found", "{frame}");
            assert_eq!(frame["jobId"], job.to_string(), "{frame}");
        }
        hub.send(deliver(alices, "alice", 2));
        nothing_else(&mut rx).await;
    }

    #[tokio::test]
    async fn a_connection_watches_at_most_the_maximum_number_of_jobs() {
        let (hub, service, _notices) = hub().await;
        let (mut rx, _) = connect(&hub, 1, "alice", 2 * MAX_SUBSCRIPTIONS);
        let mut jobs = Vec::new();
        for _ in 0..MAX_SUBSCRIPTIONS {
            jobs.push(new_job(&service, "alice").await);
        }
        for job in &jobs {
            hub.send(Command::Subscribe { conn: 1, job: *job });
        }
        let one_more = new_job(&service, "alice").await;
        hub.send(Command::Subscribe {
            conn: 1,
            job: one_more,
        });
        // Subscribing again to a watched job is not one more.
        hub.send(Command::Subscribe {
            conn: 1,
            job: jobs[0],
        });
        let mut snapshots = 0;
        let mut refused = Vec::new();
        for _ in 0..MAX_SUBSCRIPTIONS + 2 {
            let frame = next(&mut rx).await;
            match frame["type"].as_str() {
                Some("progress") => snapshots += 1,
                _ => refused.push(frame),
            }
        }
        assert_eq!(snapshots, MAX_SUBSCRIPTIONS + 1);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0]["code"], "too_many_subscriptions");
        assert_eq!(refused[0]["jobId"], one_more.to_string());
        // After an unsubscribe there is room again.
        hub.send(Command::Unsubscribe {
            conn: 1,
            job: jobs[0],
        });
        hub.send(Command::Subscribe {
            conn: 1,
            job: one_more,
        });
        assert_snapshot(&next(&mut rx).await, one_more, 1);
        nothing_else(&mut rx).await;
    }

    /// A notice that carries the job's state becomes a frame without reading the job (the
    /// store has the job at version 1, pending), for its owner only, and only if newer.
    #[tokio::test]
    async fn a_notice_carrying_the_state_is_rendered_without_a_read() {
        let (notices, changes) = broadcast::channel(16);
        let (hub, service) = hub_on(changes).await;
        // In the store: pending, version 1. The notices below say otherwise, and win.
        let job = new_job(&service, "bob").await;
        let (mut rx, _) = connect(&hub, 1, "bob", 16);
        hub.send(Command::Subscribe { conn: 1, job });
        assert_snapshot(&next(&mut rx).await, job, 1);
        let notice = |version, owner_name: &str, status, error| ChangeNotice::Changed {
            job_id: job,
            version,
            state: Some(Arc::new(sora_store::ChangedState {
                owner: owner(owner_name),
                status,
                progress: 100,
                error,
                video: status == sora_core::JobStatus::Completed,
                thumbnail: true,
            })),
        };
        use sora_core::{FailureCode, JobError, JobStatus};
        notices
            .send(notice(2, "alice", JobStatus::InProgress, None))
            .unwrap();
        notices
            .send(notice(3, "bob", JobStatus::Completed, None))
            .unwrap();
        notices
            .send(notice(2, "bob", JobStatus::InProgress, None))
            .unwrap();
        let error = JobError::new(FailureCode::Timeout, "Took too long");
        notices
            .send(notice(4, "bob", JobStatus::Failed, Some(error)))
            .unwrap();
        let done = next(&mut rx).await;
        assert_eq!(done["version"], 3, "{done}");
        assert_eq!(done["status"], "completed");
        assert_eq!(done["progress"], 100);
        assert_eq!(done["message"], "Ready for download");
        assert!(done["snapshot"].is_null());
        let link = done["downloadUrl"].as_str().unwrap();
        assert!(link.contains(&job.to_string()), "{link}");
        assert!(done["thumbnailUrl"].as_str().is_some());
        let failed = next(&mut rx).await;
        assert_eq!(failed["version"], 4, "version 2 was older: {failed}");
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["message"], "Took too long");
        assert_eq!(failed["error"]["code"], "timeout");
        assert!(failed["downloadUrl"].is_null());
        assert!(failed["thumbnailUrl"].is_null());
        assert!(
            tokio::time::timeout(Duration::from_millis(200), rx.recv())
                .await
                .is_err(),
            "nothing else"
        );
    }
}

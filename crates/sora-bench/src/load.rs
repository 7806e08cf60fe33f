//! Closed-loop (fixed concurrency) and open-loop (fixed rate) drivers for request-shaped work.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::stats;

/// What a load run measured.
#[derive(Debug)]
pub struct LoadResult {
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed.
    pub errors: u64,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// Bytes the successful operations reported (downloads).
    pub bytes: u64,
    /// Wall time from the first start to the last finish.
    pub elapsed: Duration,
    /// Latency of the successful operations (open loop: from the intended start).
    pub latency: Histogram<u64>,
}

impl LoadResult {
    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Megabytes (10^6 bytes) per second.
    pub fn megabytes_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// "N errors (first: ...)" when there were errors.
    pub fn error_note(&self) -> Option<String> {
        (self.errors > 0).then(|| {
            format!(
                "{} errors (first: {})",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            )
        })
    }
}

#[derive(Debug)]
struct Acc {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    bytes: u64,
    latency: Histogram<u64>,
}

impl Acc {
    fn new() -> Self {
        Self {
            ok: 0,
            errors: 0,
            first_error: None,
            bytes: 0,
            latency: stats::histogram(),
        }
    }

    fn add(&mut self, r: Result<u64, String>, latency: Duration) {
        match r {
            Ok(bytes) => {
                self.ok += 1;
                self.bytes += bytes;
                stats::record(&mut self.latency, latency);
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn finish(self, elapsed: Duration) -> LoadResult {
        LoadResult {
            ok: self.ok,
            errors: self.errors,
            first_error: self.first_error,
            bytes: self.bytes,
            elapsed,
            latency: self.latency,
        }
    }
}

/// Runs `op` from `concurrency` workers, each starting the next operation when its last ends,
/// until `duration` has passed (or `max_ops` operations have started). `op` gets a sequence
/// number and answers the bytes it moved, or an error message.
pub async fn closed_loop<F, Fut>(
    concurrency: usize,
    duration: Duration,
    max_ops: u64,
    op: F,
) -> LoadResult
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, String>> + Send + 'static,
{
    let op = Arc::new(op);
    let seq = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let op = op.clone();
        let seq = seq.clone();
        workers.push(tokio::spawn(async move {
            let mut acc = Acc::new();
            while Instant::now() < deadline {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                if n >= max_ops {
                    break;
                }
                let t = Instant::now();
                let r = op(n).await;
                acc.add(r, t.elapsed());
            }
            acc
        }));
    }
    let mut total = Acc::new();
    for w in workers {
        match w.await {
            Ok(acc) => {
                total.ok += acc.ok;
                total.errors += acc.errors;
                total.bytes += acc.bytes;
                if total.first_error.is_none() {
                    total.first_error = acc.first_error;
                }
                let _ = total.latency.add(&acc.latency);
            }
            Err(e) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert(format!("worker panicked: {e}"));
            }
        }
    }
    total.finish(start.elapsed())
}

/// Starts `op` at a fixed `rate` per second for `duration`, whatever the answers' speed (at most
/// `max_in_flight` at once; beyond that starts wait, and their wait counts in their latency).
/// Latency runs from each operation's intended start, so a stall is not hidden
/// ("coordinated omission").
pub async fn open_loop<F, Fut>(
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
    op: F,
) -> LoadResult
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, String>> + Send + 'static,
{
    let op = Arc::new(op);
    let acc = Arc::new(Mutex::new(Acc::new()));
    let permits = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
    let period = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let total = (duration.as_secs_f64() * rate.max(0.1)).ceil() as u64;
    let start = Instant::now();
    for n in 0..total {
        let intended = start + period.mul_f64(n as f64);
        tokio::time::sleep_until(intended.into()).await;
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let op = op.clone();
        let acc = acc.clone();
        tokio::spawn(async move {
            let r = op(n).await;
            let latency = intended.elapsed();
            if let Ok(mut a) = acc.lock() {
                a.add(r, latency);
            }
            drop(permit);
        });
    }
    let _all = permits.acquire_many(max_in_flight.max(1) as u32).await;
    let elapsed = start.elapsed();
    let acc = match Arc::try_unwrap(acc) {
        Ok(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
        Err(shared) => {
            let mut a = shared.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *a, Acc::new())
        }
    };
    acc.finish(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closed_loop_counts_successes_errors_and_bytes() {
        let r = closed_loop(4, Duration::from_secs(5), 100, |n| async move {
            if n % 10 == 0 {
                Err(format!("op {n} failed"))
            } else {
                Ok(3)
            }
        })
        .await;
        assert_eq!(r.ok + r.errors, 100);
        assert_eq!(r.errors, 10);
        assert_eq!(r.bytes, 270);
        assert_eq!(r.latency.len(), 90);
        assert!(r.error_note().unwrap().contains("failed"));
    }

    #[tokio::test]
    async fn open_loop_keeps_its_rate_and_charges_waiting_to_latency() {
        // 100 ops/s for 0.5 s with each op taking 30 ms and only one in flight: the ops queue,
        // so latency from the intended start must grow well beyond 30 ms.
        let r = open_loop(100.0, Duration::from_millis(500), 1, |_| async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(0)
        })
        .await;
        assert_eq!(r.ok, 50);
        assert!(r.latency.max() > 500_000, "max {} us", r.latency.max());
        let fast = open_loop(100.0, Duration::from_millis(500), 64, |_| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(0)
        })
        .await;
        assert_eq!(fast.ok, 50);
        assert!(
            fast.latency.max() < 100_000,
            "max {} us",
            fast.latency.max()
        );
    }
}

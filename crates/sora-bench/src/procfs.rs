//! Resident memory of a process, from `/proc/PID/status`, and a sampler that keeps the peak.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util_free::AbortOnDrop;

/// The memory lines of `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the resident peak over the process's life.
    pub hwm_kib: u64,
}

/// Reads `VmRSS` and `VmHWM` from the text of a `/proc/PID/status` file.
pub fn parse_status(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    Some(Memory {
        rss_kib: field("VmRSS")?,
        hwm_kib: field("VmHWM")?,
    })
}

/// The memory of a running process, or `None` when it is gone.
pub fn memory(pid: u32) -> Option<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&text)
}

/// Samples a process's `VmRSS` every few milliseconds and keeps the largest value seen.
#[derive(Debug)]
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    baseline_kib: u64,
    _task: AbortOnDrop,
}

impl RssSampler {
    /// Starts sampling `pid` every `every`.
    pub fn start(pid: u32, every: Duration) -> Self {
        let baseline_kib = memory(pid).map_or(0, |m| m.rss_kib);
        let peak = Arc::new(AtomicU64::new(baseline_kib));
        let p = peak.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match memory(pid) {
                    Some(m) => {
                        p.fetch_max(m.rss_kib, Ordering::Relaxed);
                    }
                    None => break,
                }
            }
        });
        Self {
            peak,
            baseline_kib,
            _task: AbortOnDrop(task),
        }
    }

    /// `VmRSS` when sampling started, KiB.
    pub fn baseline_kib(&self) -> u64 {
        self.baseline_kib
    }

    /// The largest `VmRSS` seen so far (including one last reading now), KiB.
    pub fn peak_kib(&self, pid: u32) -> u64 {
        if let Some(m) = memory(pid) {
            self.peak.fetch_max(m.rss_kib, Ordering::Relaxed);
        }
        self.peak.load(Ordering::Relaxed)
    }
}

mod tokio_util_free {
    /// Aborts a task when dropped.
    #[derive(Debug)]
    pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_status_file() {
        let text =
            "Name:\tsora-server\nVmPeak:\t  900 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Memory {
                rss_kib: 40960,
                hwm_kib: 51234
            })
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn reads_our_own_process() {
        let m = memory(std::process::id()).expect("our own status");
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib, "{m:?}");
    }
}

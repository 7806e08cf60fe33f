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

/// The kernel's clock ticks per second for `/proc/*/stat` times (`USER_HZ`, 100 on Linux).
pub const TICKS_PER_SEC: u64 = 100;

/// CPU times from the text of a `/proc/PID/stat` file, in clock ticks: `(utime + stime,
/// cutime + cstime)`, the process's own and that of its reaped children.
pub fn parse_stat(text: &str) -> Option<(u64, u64)> {
    // The command name is in parentheses and may hold spaces; fields start after the last `)`.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
    let n = |i: usize| f.get(i - 3)?.parse::<u64>().ok();
    Some((n(14)? + n(15)?, n(16)? + n(17)?))
}

/// The command name in a `/proc/PID/stat` text.
fn stat_comm(text: &str) -> Option<&str> {
    Some(&text[text.find('(')? + 1..text.rfind(')')?])
}

/// A process's CPU time (own, reaped children), ticks.
pub fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The CPU time of every process named `name` (own plus reaped children), ticks. For
/// PostgreSQL this counts live backends and, through the postmaster, those that have exited.
pub fn cpu_ticks_named(name: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if stat_comm(&text) == Some(name)
            && let Some((own, children)) = parse_stat(&text)
        {
            total += own + children;
        }
    }
    total
}

/// CPU time spent by the parties of a scenario, ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSnapshot {
    /// The server under test.
    pub server: u64,
    /// This process (the load generator).
    pub own: u64,
    /// This process's reaped children (pgbench once it has exited).
    pub children: u64,
    /// Every PostgreSQL process.
    pub postgres: u64,
}

impl CpuSnapshot {
    /// Now, for the server `server_pid`.
    pub fn take(server_pid: u32) -> Self {
        let (own, children) = cpu_ticks(std::process::id()).unwrap_or((0, 0));
        Self {
            server: cpu_ticks(server_pid).map_or(0, |c| c.0),
            own,
            children,
            postgres: cpu_ticks_named("postgres"),
        }
    }

    /// What was spent since `earlier`, in microseconds per operation, as a remark such as
    /// `CPU µs/op: server 210, load generator 150, postgres 300`.
    pub fn per_op_since(&self, earlier: &Self, ops: u64, subject: &str, client: &str) -> String {
        let us = |t: u64| t * 1_000_000 / TICKS_PER_SEC / ops.max(1);
        let server = self.server.saturating_sub(earlier.server);
        let client_ticks = if client == "pgbench" {
            self.children.saturating_sub(earlier.children)
        } else {
            self.own.saturating_sub(earlier.own)
        };
        let mut s = String::from("CPU µs/op: ");
        if subject == "sora-server" {
            s.push_str(&format!("server {}, ", us(server)));
        }
        s.push_str(&format!(
            "{client} {}, postgres {}",
            us(client_ticks),
            us(self.postgres.saturating_sub(earlier.postgres))
        ));
        s
    }
}

#[cfg(test)]
mod cpu_tests {
    use super::*;

    #[test]
    fn parses_cpu_fields_even_with_spaces_in_the_name() {
        let text =
            "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0 100 0 0";
        assert_eq!(parse_stat(text), Some((300, 10)));
        assert_eq!(stat_comm(text), Some("my (odd) prog"));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn our_own_cpu_time_is_readable() {
        // Burn a little CPU so the counter is not zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_ticks(std::process::id()).is_some());
    }
}

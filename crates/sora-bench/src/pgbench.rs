//! The database baseline: `pgbench` running a custom script, with its per-transaction log read
//! back into a histogram so that its percentiles compare with ours.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::stats;

/// Why a `pgbench` run gave no result.
#[derive(Debug, thiserror::Error)]
pub enum PgbenchError {
    /// The program could not be started or its logs read.
    #[error("pgbench: {0}")]
    Io(#[from] std::io::Error),
    /// It ran and failed.
    #[error("pgbench failed ({status}): {stderr}")]
    Failed {
        /// Its exit status.
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// Its output had no `tps = ` line.
    #[error("pgbench printed no tps line: {0}")]
    NoTps(String),
}

/// One `pgbench` run.
#[derive(Debug, Clone)]
pub struct PgbenchRun {
    /// The script (`-f`).
    pub script: PathBuf,
    /// Clients (`-c`).
    pub clients: u32,
    /// Threads (`-j`).
    pub threads: u32,
    /// Duration (`-T`), whole seconds.
    pub duration: Duration,
    /// A target rate (`-R`), transactions per second; `None` runs flat out.
    pub rate: Option<f64>,
    /// Where the per-transaction logs go (`--log-prefix`).
    pub log_prefix: PathBuf,
    /// The database, a libpq connection URI.
    pub database_url: String,
}

/// What a `pgbench` run measured.
#[derive(Debug)]
pub struct PgbenchResult {
    /// Transactions per second, as pgbench reports it (without connection time).
    pub tps: f64,
    /// Per-transaction latency (with `-R`: including the schedule lag).
    pub latency: Histogram<u64>,
}

impl PgbenchRun {
    /// The command line's arguments.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "-n".to_owned(),
            "-M".into(),
            "prepared".into(),
            "-c".into(),
            self.clients.to_string(),
            "-j".into(),
            self.threads.to_string(),
            "-T".into(),
            self.duration.as_secs().max(1).to_string(),
            "-f".into(),
            self.script.display().to_string(),
            "-l".into(),
            format!("--log-prefix={}", self.log_prefix.display()),
        ];
        if let Some(rate) = self.rate {
            a.push("-R".into());
            a.push(format!("{:.0}", rate.max(1.0)));
        }
        a.push(self.database_url.clone());
        a
    }

    /// Runs it to the end.
    pub async fn run(&self) -> Result<PgbenchResult, PgbenchError> {
        remove_logs(&self.log_prefix)?;
        let out = tokio::process::Command::new("pgbench")
            .args(self.args())
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            return Err(PgbenchError::Failed {
                status: out.status.to_string(),
                stderr: tail,
            });
        }
        let tps = parse_tps(&stdout).ok_or(PgbenchError::NoTps(stdout))?;
        let mut latency = stats::histogram();
        for file in log_files(&self.log_prefix)? {
            let text = std::fs::read_to_string(&file)?;
            for line in text.lines() {
                if let Some(us) = parse_log_line(line) {
                    latency.saturating_record(us.max(1));
                }
            }
        }
        Ok(PgbenchResult { tps, latency })
    }
}

/// The `tps = N (without initial connection time)` figure of pgbench's report.
pub fn parse_tps(stdout: &str) -> Option<f64> {
    stdout.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("tps = ")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The latency in microseconds of one line of a pgbench transaction log
/// (`client_id transaction_no time script_no time_epoch time_us [schedule_lag]`), with the
/// schedule lag added when there is one. Skipped transactions (`skipped`) and malformed lines
/// give `None`.
pub fn parse_log_line(line: &str) -> Option<u64> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 6 {
        return None;
    }
    let time: u64 = f[2].parse().ok()?;
    let lag: u64 = f.get(6).and_then(|v| v.parse().ok()).unwrap_or(0);
    Some(time + lag)
}

fn log_files(prefix: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = prefix.parent().unwrap_or(Path::new("."));
    let stem = prefix
        .file_name()
        .map(|s| format!("{}.", s.to_string_lossy()))
        .unwrap_or_default();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&stem) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

fn remove_logs(prefix: &Path) -> std::io::Result<()> {
    if let Some(dir) = prefix.parent() {
        std::fs::create_dir_all(dir)?;
    }
    for f in log_files(prefix)? {
        std::fs::remove_file(f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tps_line() {
        let out = "latency average = 1.2 ms\ninitial connection time = 9.1 ms\ntps = 812.345678 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(812.345678));
        assert_eq!(parse_tps("nothing"), None);
    }

    #[test]
    fn reads_log_lines_with_and_without_lag() {
        assert_eq!(parse_log_line("0 12 1543 0 1732700000 123456"), Some(1543));
        assert_eq!(
            parse_log_line("3 7 900 0 1732700000 123456 100"),
            Some(1000)
        );
        assert_eq!(parse_log_line("3 7 skipped 0 1732700000 123456 100"), None);
        assert_eq!(parse_log_line("garbage"), None);
    }

    #[test]
    fn rate_and_log_prefix_reach_the_command_line() {
        let run = PgbenchRun {
            script: "bench/pgbench/create.sql".into(),
            clients: 16,
            threads: 2,
            duration: Duration::from_secs(20),
            rate: Some(400.4),
            log_prefix: "target/bench/pg".into(),
            database_url: "postgres://postgres@127.0.0.1:5432/x".into(),
        };
        let a = run.args().join(" ");
        assert!(a.contains("-c 16 -j 2 -T 20"), "{a}");
        assert!(a.contains("--log-prefix=target/bench/pg"), "{a}");
        assert!(
            a.ends_with("-R 400 postgres://postgres@127.0.0.1:5432/x"),
            "{a}"
        );
    }
}

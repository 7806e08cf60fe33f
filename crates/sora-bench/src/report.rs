//! The result rows, the printed table and the JSON file.

use serde::Serialize;

use crate::stats::Latency;

/// Whether a row's budget holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The budget is met.
    Met,
    /// The budget is missed.
    Missed,
    /// No budget applies to this row (a baseline, or a smoke run).
    None,
}

impl Verdict {
    /// `Met` when `ok`, else `Missed`.
    pub fn of(ok: bool) -> Self {
        if ok { Self::Met } else { Self::Missed }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::Missed => "MISSED",
            Self::None => "",
        }
    }
}

/// One line of the table: one scenario against one subject.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The scenario (`create`, `webhook`, `fanout 1000x1`...).
    pub scenario: String,
    /// What served it (`sora-server`, `pgbench`, `nginx`, `bare ws`).
    pub subject: String,
    /// The throughput figure, in `unit`.
    pub throughput: Option<f64>,
    /// The unit of `throughput` (`req/s`, `tx/s`, `MB/s`, `conn/s`...).
    pub unit: String,
    /// Latency percentiles, when measured.
    pub latency: Option<Latency>,
    /// The subject's peak resident memory during the scenario, MiB.
    pub peak_rss_mib: Option<f64>,
    /// The ratio of this row's key figure to the baseline's (throughput, or latency for
    /// latency-bound scenarios), when there is a baseline.
    pub ratio: Option<f64>,
    /// The budget, in words.
    pub budget: String,
    /// Whether it holds.
    pub verdict: Verdict,
    /// Errors, misses and other remarks.
    pub notes: String,
}

impl Row {
    /// A row with only its names set.
    pub fn new(scenario: impl Into<String>, subject: impl Into<String>) -> Self {
        Self {
            scenario: scenario.into(),
            subject: subject.into(),
            throughput: None,
            unit: String::new(),
            latency: None,
            peak_rss_mib: None,
            ratio: None,
            budget: String::new(),
            verdict: Verdict::None,
            notes: String::new(),
        }
    }

    /// Appends a remark to the notes.
    pub fn note(&mut self, text: impl AsRef<str>) {
        if !self.notes.is_empty() {
            self.notes.push_str("; ");
        }
        self.notes.push_str(text.as_ref());
    }
}

/// Everything one run measured, as written to `target/bench/*.json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// Whether this was a `--smoke` run (short, budgets not judged).
    pub smoke: bool,
    /// CPUs and memory of the machine, and the kernel.
    pub machine: String,
    /// The rows, in scenario order.
    pub rows: Vec<Row>,
    /// Scenarios that could not run at all, with the reason.
    pub failures: Vec<String>,
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// The rows as a Markdown table (printed, and pasted into `docs/performance.md`).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | subject | throughput | p50 ms | p99 ms | max ms | peak RSS MiB | ratio | budget | verdict | notes |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |\n",
    );
    for r in rows {
        let (p50, p99, max) = match r.latency {
            Some(l) if l.count > 0 => (Some(l.p50_ms), Some(l.p99_ms), Some(l.max_ms)),
            _ => (None, None, None),
        };
        let throughput = match r.throughput {
            Some(t) => format!("{} {}", num(Some(t)), r.unit),
            None => "-".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.subject,
            throughput,
            num(p50),
            num(p99),
            num(max),
            num(r.peak_rss_mib),
            r.ratio.map_or("-".into(), |x| format!("{x:.2}")),
            r.budget,
            r.verdict.label(),
            r.notes.replace('|', "/"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_line_per_row_and_marks_misses() {
        let mut a = Row::new("create", "sora-server");
        a.throughput = Some(1234.5);
        a.unit = "req/s".into();
        a.latency = Some(Latency {
            count: 10,
            p50_ms: 1.5,
            p99_ms: 12.4,
            max_ms: 30.0,
            mean_ms: 2.0,
        });
        a.ratio = Some(0.55);
        a.verdict = Verdict::of(false);
        a.note("3 errors | timeouts");
        let b = Row::new("create", "pgbench");
        let t = table(&[a, b]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[2].contains("| 1234 req/s | 1.50 | 12.4 | 30.0 |"),
            "{}",
            lines[2]
        );
        assert!(lines[2].contains("| 0.55 |"), "{}", lines[2]);
        assert!(lines[2].contains("MISSED"), "{}", lines[2]);
        assert!(lines[2].contains("3 errors / timeouts"), "{}", lines[2]);
        assert!(lines[3].contains("| - | - | - | - |"), "{}", lines[3]);
    }
}

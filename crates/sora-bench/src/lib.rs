//! `sora-bench`: the load generator behind `just bench`.
//!
//! One run creates a fresh PostgreSQL database, starts `sora-server` on it (built-in emulator,
//! no workers: the scenarios make every change themselves), and runs each scenario against
//! the server and against its baseline in the same run: `pgbench` with the same inserts,
//! `nginx` (and actix-files) serving the same file, and a bare broadcast server on
//! tokio-tungstenite (and on actix-ws). It prints one
//! Markdown table and writes it, with the raw figures, under `target/bench/`. See
//! `docs/performance.md` for what every number means.

pub mod blob_probe;
pub mod files;
pub mod load;
pub mod pgbench;
pub mod procfs;
pub mod procs;
pub mod report;
pub mod run;
pub mod stats;
pub mod ws;

//! End-to-end tests: the real server, the emulator as the provider, real databases. One binary.

mod api;
mod failures;
mod flow;
mod instances;
mod webhooks;

use std::time::Duration;

/// Generous upper bound for a job to finish in tests (the emulator takes under a second).
pub const JOB_TIMEOUT: Duration = Duration::from_secs(30);

/// A free loopback port (bound, then released) for an instance whose URL must be known before
/// it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

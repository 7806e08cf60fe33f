use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sora_bench::{procfs, stats, ws};

/// Kills the child when the test ends, passed or not.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_baseline_process_relays_to_every_client_and_its_memory_is_readable() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sora-bench"))
        .args(["ws-baseline", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Kill(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let url = format!("ws://{addr}/");

    let before = procfs::memory(child.0.id()).unwrap();
    let (mut fleet, ramp) = ws::Fleet::open(vec![url.clone(); 50], 8).await;
    assert_eq!(ramp.connected, 50, "{:?}", ramp.first_error);
    assert_eq!(ramp.latency.len(), 50);
    let mut trigger = ws::Trigger::connect(&url).await.unwrap();
    let mut h = stats::histogram();
    for version in 1..=5 {
        let t0 = Instant::now();
        trigger.send(version).await.unwrap();
        let got = fleet
            .collect(version, 50, t0, Duration::from_secs(5), &mut h)
            .await;
        assert_eq!(got, 50, "round {version}");
    }
    assert_eq!(h.len(), 250);
    // A frame of a version nobody sent never arrives: collect gives up at its timeout.
    let got = fleet
        .collect(99, 50, Instant::now(), Duration::from_millis(200), &mut h)
        .await;
    assert_eq!(got, 0);
    let after = procfs::memory(child.0.id()).unwrap();
    assert!(after.hwm_kib >= before.rss_kib);
}

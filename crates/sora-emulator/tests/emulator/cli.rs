//! The `sora-emulator` binary: its help and a real run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sora-emulator");

#[test]
fn help_documents_every_option_and_marker() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for option in [
        "--bind",
        "--api-key",
        "--webhook-url",
        "--webhook-secret",
        "--duration-ms",
        "--tick-ms",
        "--content-ttl-secs",
        "--default-model",
        "--seconds",
        "--sizes",
        "--retry-after-ms",
        "--webhook-attempts",
        "--webhook-backoff-ms",
        "--webhook-timeout-ms",
        "--fail-first-creates-429",
        "--fail-first-creates-5xx",
        "--server-error-status",
        "--response-delay-ms",
        "--fail-generation",
        "--stall",
        "--expire-early",
        "--webhook-drop-share",
        "--webhook-copies",
        "--webhook-delay-ms",
        "--webhook-out-of-order",
        "--webhook-early",
    ] {
        assert!(help.contains(option), "--help does not mention {option}");
    }
    for marker in [
        "[fail:CODE]",
        "[429:N]",
        "[quota]",
        "[503]",
        "[delay:MS]",
        "[drop-webhook]",
        "[dup-webhook:N]",
        "[late-webhook:MS]",
        "[out-of-order]",
        "[early-webhook]",
        "[expire-early]",
        "[stall]",
    ] {
        assert!(help.contains(marker), "--help does not mention {marker}");
    }
}

#[test]
fn a_bad_webhook_secret_is_refused_at_start_up() {
    let out = Command::new(BIN)
        .args([
            "--bind",
            "127.0.0.1:0",
            "--webhook-url",
            "http://127.0.0.1:9/hook",
            "--webhook-secret",
            "whsec_!!!not-base64!!!",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--webhook-secret"), "{stderr}");
    assert!(
        !stderr.contains("not-base64"),
        "the secret must not be echoed: {stderr}"
    );
}

#[tokio::test]
async fn the_binary_serves_the_api_until_killed() {
    let mut child = Command::new(BIN)
        .args([
            "--bind",
            "127.0.0.1:0",
            "--api-key",
            "sk-cli",
            "--duration-ms",
            "200",
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(start) = line.find("http://") {
                let url: String = line[start..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                let _ = tx.send(url);
            }
        }
    });
    let base_url = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the binary logs its URL");
    assert!(base_url.ends_with("/v1"), "{base_url}");
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{base_url}/videos"))
        .bearer_auth("sk-cli")
        .json(&serde_json::json!({"prompt": "from the binary"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let wrong = http
        .get(format!("{base_url}/videos"))
        .bearer_auth("sk-other")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    child.kill().unwrap();
    child.wait().unwrap();
}

use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sora-bench"))
}

#[test]
fn an_unknown_scenario_is_refused_before_anything_starts() {
    let out = bench()
        .args(["run", "--smoke", "--only", "create,nonsense"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown scenario `nonsense`"), "{err}");
}

#[test]
fn a_missing_server_binary_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench()
        .args(["run", "--smoke", "--server-bin"])
        .arg(dir.path().join("no-such-server"))
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no server binary"), "{err}");
}

#[test]
fn help_lists_both_commands() {
    let out = bench().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("run") && text.contains("ws-baseline"),
        "{text}"
    );
}

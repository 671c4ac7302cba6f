//! `hcsctl migrate` end to end: two `hcsctl` processes, each its own simulated host, migrate a
//! VM over loopback TCP (the source creates it with `--create`); Ctrl-C cancels cleanly on
//! either side.
#![cfg(unix)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

fn hcsctl() -> Command {
    let bin = std::env::var_os("HCSCTL_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_hcsctl").into());
    let mut c = Command::new(bin);
    c.env_remove("RUST_LOG");
    c
}

/// Starts a destination on a free port; returns it, its stdout reader and its address.
fn destination(extra: &[&str]) -> (Child, BufReader<ChildStdout>, String) {
    let mut child = hcsctl()
        .args(["migrate", "--receive", "--listen", "127.0.0.1:0", "--json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let addr = v["listening"].as_str().unwrap().to_string();
    (child, out, addr)
}

fn lines(out: BufReader<ChildStdout>) -> Vec<Value> {
    out.lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

fn wait(child: &mut Child, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("hcsctl did not exit in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

fn summary(lines: &[Value]) -> &Value {
    lines
        .iter()
        .rfind(|v| v.get("outcome").is_some())
        .expect("a summary line")
}

#[test]
fn a_vm_migrates_between_two_hcsctl_processes_with_equal_checksums() {
    let (mut dst, dst_out, addr) = destination(&[]);
    let src = hcsctl()
        .args([
            "migrate",
            "vm1",
            "--create",
            "--memory-mb",
            "8",
            "--dirty-rate",
            "2000",
            "--to",
            &addr,
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        src.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&src.stderr)
    );
    assert_eq!(wait(&mut dst, Duration::from_secs(30)), 0);
    let src_lines: Vec<Value> = String::from_utf8_lossy(&src.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let dst_lines = lines(dst_out);
    let events: Vec<&str> = src_lines.iter().filter_map(|v| v["event"].as_str()).collect();
    assert_eq!(events.first(), Some(&"SetupDone"), "{src_lines:?}");
    assert!(
        events.ends_with(&["BlackoutStarted", "OfflineDone", "MigrationDone"]),
        "{events:?}"
    );
    let dst_events: Vec<&str> = dst_lines.iter().filter_map(|v| v["event"].as_str()).collect();
    assert_eq!(dst_events, ["BlackoutExited", "MigrationDone"]);
    let (s, d) = (summary(&src_lines), summary(&dst_lines));
    assert_eq!(
        (s["outcome"].as_str(), d["outcome"].as_str()),
        (Some("Success"), Some("Success"))
    );
    assert!(s["guest_checksum"].is_string());
    assert_eq!(
        s["guest_checksum"], d["guest_checksum"],
        "destination memory equals source memory"
    );
    assert_eq!(s["bytes"], d["bytes"]);
    assert!(s["bytes"].as_u64().unwrap() >= 8 << 20);
}

#[test]
fn ctrl_c_on_the_source_mid_transfer_rolls_back_and_the_destination_discards() {
    let (mut dst, dst_out, addr) = destination(&[]);
    let mut src = hcsctl()
        .args([
            "migrate",
            "vm2",
            "--create",
            "--memory-mb",
            "4",
            "--to",
            &addr,
            "--json",
            "--sim-hold-round",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut src_out = BufReader::new(src.stdout.take().unwrap());
    // The hold comes after the first round's progress event.
    let mut line = String::new();
    while src_out.read_line(&mut line).unwrap() > 0 && !line.contains("TransferInProgress") {
        line.clear();
    }
    signal(&src, "-INT");
    assert_eq!(wait(&mut src, Duration::from_secs(30)), 130);
    assert_eq!(wait(&mut dst, Duration::from_secs(30)), 125);
    let src_lines = lines(src_out);
    assert_eq!(summary(&src_lines)["outcome"], "Failed");
    let dst_lines = lines(dst_out);
    let last = dst_lines
        .iter()
        .rfind(|v| v["event"] == "MigrationDone")
        .expect("destination terminal event");
    assert_eq!(last["result"], "MigrationCancelled");
}

#[test]
fn ctrl_c_on_the_destination_mid_transfer_cancels_it_and_the_source_rolls_back() {
    let (mut dst, _dst_out, addr) = destination(&[]);
    let mut src = hcsctl()
        .args([
            "migrate",
            "vm3",
            "--create",
            "--memory-mb",
            "4",
            "--to",
            &addr,
            "--json",
            "--sim-hold-round",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut src_out = BufReader::new(src.stdout.take().unwrap());
    let mut line = String::new();
    while src_out.read_line(&mut line).unwrap() > 0 && !line.contains("TransferInProgress") {
        line.clear();
    }
    signal(&dst, "-INT");
    assert_eq!(wait(&mut dst, Duration::from_secs(30)), 130);
    // The source notices its peer is gone, fails, rolls back.
    assert_eq!(wait(&mut src, Duration::from_secs(30)), 125);
    let src_lines = lines(src_out);
    assert_eq!(summary(&src_lines)["outcome"], "Failed");
    assert!(src_lines.iter().any(|v| v["event"] == "MigrationRecoveryDone"));
}

#[test]
fn sigterm_on_a_waiting_destination_exits_143_and_a_source_without_a_peer_fails() {
    let (mut dst, _out, _addr) = destination(&[]);
    signal(&dst, "-TERM");
    assert_eq!(wait(&mut dst, Duration::from_secs(10)), 143);
    // Nobody listens there any more: the source fails before any transfer and rolls back.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = listener.local_addr().unwrap().to_string();
    drop(listener);
    let src = hcsctl()
        .args(["migrate", "vm4", "--create", "--memory-mb", "4", "--to", &dead])
        .output()
        .unwrap();
    assert_eq!(
        src.status.code(),
        Some(125),
        "{}",
        String::from_utf8_lossy(&src.stderr)
    );
    assert!(String::from_utf8_lossy(&src.stderr).contains("connect"));
}

#[test]
fn migrate_needs_a_side_and_a_source_needs_a_document() {
    let out = hcsctl().args(["migrate", "vm"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = hcsctl()
        .args(["migrate", "vm", "--to", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

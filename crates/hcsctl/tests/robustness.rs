//! End-to-end regression tests of issue 12 (robustness of `hcsctl run`), on the simulator
//! driver with its host-process backend. Honours `HCSCTL_BIN` like `cli.rs`.
#![cfg(unix)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> std::ffi::OsString {
    std::env::var_os("HCSCTL_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_hcsctl").into())
}

fn hcsctl() -> Command {
    let mut c = Command::new(bin());
    c.env_remove("RUST_LOG");
    c
}

/// Runs `hcsctl` with `args` through `sh -c` (for redirections), killed after `limit`.
fn shell(script: &str, limit: Duration) -> (Option<i32>, String, String, Duration) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("HCSCTL", bin())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let code = wait_limited(&mut child, limit);
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (code, out, err, t0.elapsed())
}

/// Waits up to `limit`; kills the child (and returns `None`) when it does not end in time.
fn wait_limited(child: &mut Child, limit: Duration) -> Option<i32> {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn run(args: &[&str]) -> Output {
    hcsctl().args(args).stdin(Stdio::null()).output().unwrap()
}

struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!("hcsctl-rob-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// 1. Our stdout gone: the command must see EPIPE and the run must end.

#[test]
fn endless_output_into_a_closed_pipe_ends_like_the_command_killed_by_sigpipe() {
    let (code, out, err, _) = shell(
        r#""$HCSCTL" run -- yes | head -1; echo "hcsctl rc $?""#,
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(0), "hcsctl run -- yes | head -1 did not end: {err}");
    assert!(out.starts_with("y\n"), "{out}");
    let (code, _, err, _) = shell(
        r#"( "$HCSCTL" run -- yes; echo "rc=$?" >&2 ) | head -1 >/dev/null"#,
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(0));
    assert!(err.contains("rc=141"), "{err}");
}

#[test]
fn endless_output_into_a_full_device_ends_with_a_write_error() {
    let (code, _, err, _) = shell(r#""$HCSCTL" run -- yes >/dev/full"#, Duration::from_secs(20));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("write error on standard output"), "{err}");
}

// 2. Output lost: not a success.

#[test]
fn output_lost_to_a_full_device_or_a_closed_stdout_is_an_error() {
    let big = TempFile::new("big", &vec![b'x'; 3 << 20]);
    let (code, _, err, _) = shell(
        &format!(r#""$HCSCTL" run -- cat {} >/dev/full"#, big.path()),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    let (code, _, err, _) = shell(r#""$HCSCTL" run -- echo hi >&-"#, Duration::from_secs(20));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("write error on standard output"), "{err}");
    // No output, nothing lost.
    let (code, _, err, _) = shell(r#""$HCSCTL" run -- true >&-"#, Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
}

// 3. Durations.

#[test]
fn huge_timeouts_and_grace_periods_mean_no_limit_and_zero_timeout_is_no_limit() {
    for args in [
        &["run", "--timeout", "3000000000000000h", "--", "true"][..],
        &["run", "--grace", "5000000000000000h", "--", "true"][..],
        &["run", "--timeout", "0", "--", "true"][..],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
    }
}

// 4. Input files.

#[test]
fn devices_and_oversized_files_are_refused_as_configuration_or_fault_plan() {
    for opt in ["--config", "--faults"] {
        let (code, _, err, elapsed) = shell(
            &format!(r#""$HCSCTL" run {opt} /dev/zero -- true"#),
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(66), "{opt}: {err}");
        assert!(err.contains("not a regular file"), "{err}");
        assert!(elapsed < Duration::from_secs(10));
    }
    let big = TempFile::new("huge.json", &vec![b' '; (1 << 20) + 10]);
    let o = run(&["run", "--config", big.path(), "--", "true"]);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("1 MiB"), "{}", text(&o.stderr));
    // `-` reads stdin, still capped.
    let (code, _, err, _) = shell(
        r#"head -c 2000000 /dev/zero | "$HCSCTL" run --config - -- true"#,
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(65), "{err}");
    let (code, _, err, _) = shell(
        r#""$HCSCTL" run --print-default-config | "$HCSCTL" run --config - -- true"#,
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(0), "{err}");
}

// 5. A blocked driver call is abandoned after SIGTERM or a second Ctrl-C.

fn blocked_shutdown_plan() -> TempFile {
    TempFile::new(
        "block.json",
        br#"{"rules":[{"op":"ShutdownComputeSystem","action":"block","gate":"g1"}]}"#,
    )
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn sigterm_or_a_second_ctrl_c_abandons_a_blocked_shutdown() {
    let plan = blocked_shutdown_plan();
    for (signals, expected) in [(&["-TERM"][..], 143), (&["-INT", "-INT"][..], 130)] {
        let mut child = hcsctl()
            .args(["run", "--faults", plan.path(), "--", "sleep", "30"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(700));
        for s in signals {
            signal(&child, s);
            std::thread::sleep(Duration::from_millis(300));
        }
        let code = wait_limited(&mut child, Duration::from_secs(15));
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert_eq!(code, Some(expected), "{signals:?}: {err}");
        assert!(err.contains("abandoning"), "{err}");
    }
}

// 6. --timeout bounds create and start.

#[test]
fn timeout_bounds_a_start_that_never_completes() {
    let plan = TempFile::new(
        "never.json",
        br#"{"rules":[{"op":"StartComputeSystem","action":"pending","never":true}]}"#,
    );
    let t0 = Instant::now();
    let o = run(&["run", "--timeout", "1s", "--faults", plan.path(), "--", "true"]);
    assert_eq!(o.status.code(), Some(124), "{}", text(&o.stderr));
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let help = run(&["run", "--help"]);
    assert!(text(&help.stdout).contains("HCSSHIM_TIMEOUT_SYSTEMSTART"));
}

// 10. --json summary on its own line, on every path.

#[test]
fn json_summary_is_on_its_own_line_and_printed_on_failures() {
    let o = run(&["run", "--json", "--", "printf", "abc"]);
    let out = text(&o.stdout);
    assert!(out.starts_with("abc\n{"), "{out}");
    let o = run(&["run", "--json", "--", "no-such-command-hcsctl-test"]);
    assert_eq!(o.status.code(), Some(127));
    let last = text(&o.stdout).lines().last().unwrap_or_default().to_owned();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert!(v["error"].as_str().unwrap().contains("not found"), "{v}");
    let plan = TempFile::new(
        "fail.json",
        br#"{"rules":[{"op":"StartComputeSystem","action":"fail","code":"0x80070005"}]}"#,
    );
    let o = run(&["run", "--json", "--faults", plan.path(), "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
    assert!(v["error"].is_string(), "{v}");
}

// 11. SIGTERM is forwarded as SIGTERM.

#[test]
fn sigterm_is_forwarded_and_the_run_exits_143() {
    let mut child = hcsctl()
        .args(["run", "--", "sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "-TERM");
    assert_eq!(wait_limited(&mut child, Duration::from_secs(15)), Some(143));
}

// 13. Messages.

#[test]
fn empty_ids_and_ids_with_control_characters_are_usage_errors() {
    assert_eq!(run(&["run", "--id=", "--", "true"]).status.code(), Some(2));
    assert_eq!(
        run(&["run", "--id", "a\u{1b}b", "--", "true"]).status.code(),
        Some(2)
    );
}

#[test]
fn disconnect_error_comes_first_with_quoted_fields() {
    let plan = TempFile::new(
        "disc.json",
        br#"{"rules":[{"op":"CreateProcess","action":"disconnect"}]}"#,
    );
    let o = run(&[
        "run",
        "--id",
        "c-disc",
        "--faults",
        plan.path(),
        "--",
        "echo",
        "ok",
    ]);
    assert_eq!(o.status.code(), Some(125));
    let err = text(&o.stderr);
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.contains(r#"cannot create process "echo ok" in compute system "c-disc""#),
        "{err}"
    );
}

// 14. Configurations.

#[test]
fn a_bom_is_accepted_and_invalid_utf8_is_a_data_error() {
    let mut doc = b"\xEF\xBB\xBF".to_vec();
    doc.extend_from_slice(br#"{"SchemaVersion":{"Major":2,"Minor":1},"Container":{}}"#);
    let f = TempFile::new("bom.json", &doc);
    let o = run(&["run", "--config", f.path(), "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let f = TempFile::new("latin1.json", b"{\"Owner\":\"caf\xE9\",\"Container\":{}}");
    let o = run(&["run", "--config", f.path(), "--", "true"]);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("not UTF-8"));
}

#[test]
fn unmodelled_config_members_are_warned_about_and_still_passed_on() {
    let f = TempFile::new(
        "memroy.json",
        br#"{"SchemaVersion":{"Major":2,"Minor":1},"Container":{"Memroy":{"SizeInMB":64}},"Bogus":1}"#,
    );
    let o = run(&["run", "--config", f.path(), "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("warning: configuration")
            && err.contains(r#""Bogus", "Container.Memroy""#)
            && err.contains("not modelled by hcsctl, passed to HCS unchanged"),
        "{err}"
    );
    // A configuration of known members (the default one, printed and read back) warns of nothing.
    let o = run(&["run", "--print-default-config"]);
    let f = TempFile::new("default.json", &o.stdout);
    let o = run(&["run", "--config", f.path(), "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("warning"), "{}", text(&o.stderr));
}

#[test]
fn very_verbose_shows_the_documents_and_default_config_prints() {
    let o = run(&["-vv", "run", "--", "true"]);
    assert!(
        text(&o.stderr).contains("CreateProcess parameters"),
        "{}",
        text(&o.stderr)
    );
    let o = run(&["-v", "run", "--", "true"]);
    assert!(!text(&o.stderr).contains("CreateProcess parameters"));
    let o = run(&["run", "--print-default-config"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["Owner"], "hcsctl");
}

// 7. Containment: nothing the command started outlives it.

#[test]
fn background_children_of_the_command_do_not_outlive_the_run() {
    let marker = format!("27.{:06}", std::process::id() % 1_000_000);
    let o = run(&["run", "--", "sh", "-c", &format!("sleep {marker} & echo started")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    std::thread::sleep(Duration::from_millis(200));
    let left = Command::new("pgrep")
        .args(["-f", &format!("^sleep {marker}$")])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "left running: {}", text(&left.stdout));
}

/// A `sleep` argument unique to this test process (so its processes can be found again).
fn marker(seconds: u32) -> String {
    format!("{seconds}.{:06}", std::process::id() % 1_000_000)
}

/// Live (not zombie) processes whose command line is `sleep <marker>`.
fn sleeping(marker: &str) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-f", &format!("^sleep {marker}$")])
        .output()
        .unwrap();
    text(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                s.rfind(')')
                    .is_some_and(|i| !s[i + 1..].trim_start().starts_with('Z'))
            })
        })
        .collect()
}

/// Asserts that no `sleep <marker>` runs (after up to `within`); kills what it finds first, so
/// that a failure leaves nothing behind either.
fn assert_none_left(markers: &[String], within: Duration, what: &str) {
    let t0 = Instant::now();
    let mut left: Vec<(String, Vec<u32>)>;
    loop {
        left = markers
            .iter()
            .map(|m| (m.clone(), sleeping(m)))
            .filter(|(_, p)| !p.is_empty())
            .collect();
        if left.is_empty() || t0.elapsed() >= within {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in left.iter().flat_map(|(_, p)| p) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert!(
        left.is_empty(),
        "{what}: still running after {within:?}: {left:?}"
    );
}

// 7. Containment of escapees: a session of their own, or a double fork, does not get them out.

#[test]
fn setsid_and_double_forked_children_of_the_command_do_not_outlive_the_run() {
    let (escaped, double_forked) = (marker(28), marker(29));
    // The command waits until the setsid'd sleep leads a session of its own (so that it has
    // escaped before the command ends), and double-forks the other.
    let script = format!(
        "setsid sleep {escaped} & until [ \"$(cut -d' ' -f6 /proc/$!/stat)\" = \"$!\" ]; do sleep 0.01; done; \
         (sleep {double_forked} &); echo started"
    );
    let o = run(&["run", "--", "sh", "-c", &script]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "started\n");
    // Not "soon after": when hcsctl has exited, they are gone.
    assert_none_left(&[escaped, double_forked], Duration::ZERO, "after hcsctl exited");
}

// 8. The command has a session of its own: no controlling terminal to be stopped on.

#[test]
fn a_command_that_opens_the_terminal_gets_an_error_instead_of_hanging() {
    // Under a pseudo-terminal (`script` from util-linux), so that hcsctl really has a
    // controlling terminal the command could share.
    let bin = bin().into_string().unwrap();
    assert!(!bin.contains('\''), "{bin}");
    let cmd = format!("'{bin}' run -- sh -c 'read x </dev/tty; echo rc=$?'");
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("HCSCTL", &bin)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs the command under a pseudo-terminal");
    let code = wait_limited(&mut child, Duration::from_secs(15));
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(code, Some(0), "hung on the terminal (stopped by SIGTTIN?): {out}");
    assert!(out.contains("rc=") && !out.contains("rc=0"), "{out}");
    assert!(out.contains("/dev/tty"), "the open fails with a message: {out}");
}

// 9. `kill -9` of hcsctl takes everything it started with it.

#[test]
fn kill_9_of_hcsctl_leaves_nothing_it_started_running() {
    let markers = [marker(36), marker(37), marker(38), marker(39)];
    let [grouped, escaped, double_forked, main] = &markers;
    let script =
        format!("sleep {grouped} & setsid sleep {escaped} & (sleep {double_forked} &); exec sleep {main}");
    let mut child = hcsctl()
        .args(["run", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while markers.iter().any(|m| sleeping(m).is_empty()) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let started: Vec<_> = markers.iter().map(|m| sleeping(m)).collect();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        started.iter().all(|p| p.len() == 1),
        "not all started: {started:?}"
    );
    assert_none_left(&markers, Duration::from_secs(1), "after kill -9 of hcsctl");
}

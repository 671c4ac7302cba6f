//! End-to-end tests of the `hcsctl` binary on the simulator driver (host-process backend).
#![cfg(unix)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: `$HCSCTL_BIN` when set (CI points it at the static release build
/// from `scripts/build-hcsctl.sh`), else the one Cargo built for this test run.
fn hcsctl() -> Command {
    let bin = std::env::var_os("HCSCTL_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_hcsctl").into());
    let mut c = Command::new(bin);
    c.env_remove("RUST_LOG");
    c
}

fn run(args: &[&str]) -> Output {
    hcsctl()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn hcsctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A file in the temp directory, unique to this test process and `name`, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        let path = std::env::temp_dir().join(format!("hcsctl-test-{}-{name}", std::process::id()));
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

/// A `sleep` duration unique to this test run and `n`, used as a marker to find the process.
fn marker(n: u32) -> String {
    format!("{}.{:06}{n}", 40 + n, std::process::id() % 1_000_000)
}

/// Pids of live `sleep MARKER` processes (argv exactly `["sleep", marker]`, from `/proc`), so
/// neither `hcsctl` itself nor a wrapping `sh -c` counts.
fn sleepers(marker: &str) -> Vec<u32> {
    processes(&["sleep", marker])
}

/// Pids of live (not zombie) processes whose argv is exactly `argv`, from `/proc`.
fn processes(argv: &[&str]) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let found: Vec<&[u8]> = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
        if found.len() == argv.len()
            && found.iter().zip(argv).all(|(f, a)| *f == a.as_bytes())
            && !is_zombie(pid)
        {
            pids.push(pid);
        }
    }
    pids
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn send_sigint(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for `child` with a deadline; kills it (and fails) when it does not exit in time.
fn wait_bounded(child: &mut Child, timeout: Duration) -> (std::process::ExitStatus, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, start.elapsed());
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("hcsctl did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn spawn_sleeper(extra: &[&str], command: &[&str]) -> Child {
    hcsctl()
        .arg("run")
        .args(extra)
        .arg("--")
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn run_echo_prints_hello_and_exits_zero() {
    let o = run(&["run", "--", "echo", "hello"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "hello\n");
    assert_eq!(stderr(&o), "");
}

#[test]
fn run_without_double_dash_takes_the_command_and_its_flags() {
    let o = run(&["run", "printf", "%s-%s", "-n", "x"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "-n-x");
}

#[test]
fn command_exit_code_is_propagated() {
    let o = run(&["run", "--", "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3), "stderr: {}", stderr(&o));
}

#[test]
fn arguments_with_blanks_quotes_and_backslashes_reach_the_command_intact() {
    let o = run(&[
        "run",
        "--",
        "printf",
        "[%s]",
        "a b",
        "say \"hi\"",
        "",
        "tab\there",
        r"back\slash\",
        r#"q\"x"#,
    ]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "[a b][say \"hi\"][][tab\there][back\\slash\\][q\\\"x]"
    );
}

#[test]
fn piped_stdin_reaches_the_command_and_eof_closes_it() {
    let mut child = hcsctl()
        .args(["run", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), input);
}

#[test]
fn stderr_of_the_command_goes_to_stderr_only() {
    let o = run(&["run", "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 4"]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(stdout(&o), "to-out\n");
    assert_eq!(stderr(&o), "to-err\n");
}

#[test]
fn large_output_is_relayed_completely_before_exit() {
    let o = run(&["run", "--", "sh", "-c", "seq 1 50000"]);
    assert_eq!(o.status.code(), Some(0));
    let expected: String = (1..=50000).map(|i| format!("{i}\n")).collect();
    assert!(
        stdout(&o) == expected,
        "output truncated: {} of {} bytes",
        o.stdout.len(),
        expected.len()
    );
}

#[test]
fn json_summary_is_the_last_stdout_line_with_all_fields() {
    let o = run(&[
        "run",
        "--json",
        "--id",
        "json-test-system",
        "--",
        "sh",
        "-c",
        "echo out; exit 5",
    ]);
    assert_eq!(o.status.code(), Some(5), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0], "out");
    let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(v["system_id"], "json-test-system");
    assert_eq!(v["exit_code"], 5);
    assert_eq!(v["timed_out"], false);
    assert_eq!(v["interrupted"], false);
    assert!(v["exit_type"].is_string(), "{v}");
    assert!(v["pid"].as_u64().is_some_and(|p| p > 0), "{v}");
    let started = humantime::parse_rfc3339(v["started_at"].as_str().unwrap()).unwrap();
    let stopped = humantime::parse_rfc3339(v["stopped_at"].as_str().unwrap()).unwrap();
    assert!(stopped >= started);
    let ms = v["duration_ms"].as_u64().unwrap();
    assert!(ms < 10_000, "{v}");
}

#[test]
fn sigint_stops_the_command_promptly_and_leaves_no_process() {
    let m = marker(1);
    let mut child = spawn_sleeper(&[], &["sleep", &m]);
    assert!(
        wait_until(Duration::from_secs(5), || !sleepers(&m).is_empty()),
        "sleep never started"
    );
    send_sigint(&child);
    let (status, elapsed) = wait_bounded(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "SIGINT exit is 128 + 2");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert!(sleepers(&m).is_empty(), "sleep survived");
}

#[test]
fn sigint_is_forwarded_while_nobody_reads_our_stdout() {
    let m = marker(8);
    let argv = ["yes", m.as_str()];
    // `yes` floods its stdout; nobody reads hcsctl's, so both pipes fill and the relay stalls.
    let mut child = hcsctl()
        .args(["run", "--"])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || !processes(&argv).is_empty()),
        "yes never started"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "hcsctl exited early");
    send_sigint(&child);
    assert!(
        wait_until(Duration::from_secs(2), || processes(&argv).is_empty()),
        "the interrupt was not forwarded while our stdout was stalled"
    );
    // The output relay cannot finish (nobody reads); hcsctl stops waiting for it after its
    // drain bound and exits with the command's code.
    let (status, _) = wait_bounded(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "SIGINT exit is 128 + 2");
}

#[test]
fn second_sigint_kills_a_command_that_ignores_the_first() {
    let m = marker(2);
    let script = format!("trap '' INT; sleep {m}");
    let mut child = spawn_sleeper(&["--grace", "60s"], &["sh", "-c", &script]);
    assert!(wait_until(Duration::from_secs(5), || !sleepers(&m).is_empty()));
    send_sigint(&child);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first interrupt is only forwarded"
    );
    send_sigint(&child);
    let (status, elapsed) = wait_bounded(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(137), "killed: 128 + SIGKILL");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert!(wait_until(Duration::from_secs(2), || sleepers(&m).is_empty()));
}

#[test]
fn grace_period_expiry_kills_a_command_that_ignores_sigint() {
    let m = marker(3);
    let script = format!("trap '' INT; sleep {m}");
    let mut child = spawn_sleeper(&["--grace", "300ms", "--json"], &["sh", "-c", &script]);
    assert!(wait_until(Duration::from_secs(5), || !sleepers(&m).is_empty()));
    send_sigint(&child);
    let (status, elapsed) = wait_bounded(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(137));
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "took {elapsed:?}"
    );
    let o = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    assert_eq!(v["interrupted"], true);
    assert!(wait_until(Duration::from_secs(2), || sleepers(&m).is_empty()));
}

#[test]
fn timeout_kills_the_command_and_exits_124() {
    let m = marker(4);
    let start = Instant::now();
    let o = run(&["run", "--timeout", "200ms", "--json", "--", "sleep", &m]);
    let elapsed = start.elapsed();
    assert_eq!(o.status.code(), Some(124), "stderr: {}", stderr(&o));
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    let v: serde_json::Value = serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    assert_eq!(v["timed_out"], true);
    assert!(sleepers(&m).is_empty());
}

#[test]
fn command_finishing_before_the_timeout_keeps_its_exit_code() {
    let o = run(&["run", "--timeout", "10s", "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
}

#[test]
fn config_that_is_not_json_exits_65_naming_line_and_column() {
    let f = TempFile::new("notjson.json", "{\n  \"Container\": {,\n}");
    let o = run(&["run", "--config", f.path(), "--", "echo", "never"]);
    assert_eq!(o.status.code(), Some(65));
    let e = stderr(&o);
    assert!(
        e.contains("not JSON") && e.contains("line 2") && e.contains("column"),
        "{e}"
    );
    assert_eq!(stdout(&o), "");
}

#[test]
fn config_that_is_not_a_compute_system_exits_65_naming_the_json_path() {
    let f = TempFile::new(
        "badmem.json",
        r#"{"VirtualMachine":{"ComputeTopology":{"Memory":{"SizeInMB":0}}}}"#,
    );
    let o = run(&["run", "--config", f.path(), "--", "echo", "never"]);
    assert_eq!(o.status.code(), Some(65));
    assert!(
        stderr(&o).contains("VirtualMachine.ComputeTopology.Memory.SizeInMB"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&o), "");
}

#[test]
fn valid_config_file_is_used() {
    let f = TempFile::new(
        "good.json",
        r#"{"SchemaVersion":{"Major":2,"Minor":1},"Owner":"tests","ShouldTerminateOnLastHandleClosed":true,"Container":{}}"#,
    );
    let o = run(&["run", "--config", f.path(), "--", "echo", "configured"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "configured\n");
}

#[test]
fn unreadable_config_exits_66_naming_the_file() {
    let o = run(&[
        "run",
        "--config",
        "/nonexistent/hcsctl-config.json",
        "--",
        "echo",
        "never",
    ]);
    assert_eq!(o.status.code(), Some(66));
    assert!(
        stderr(&o).contains("/nonexistent/hcsctl-config.json"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn missing_command_exits_127_naming_it() {
    let o = run(&["run", "--", "hcsctl-no-such-command-xyz", "arg"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(
        stderr(&o).contains("hcsctl-no-such-command-xyz: command not found"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&o), "");
}

#[test]
fn non_executable_command_exits_126() {
    let f = TempFile::new("notexec.sh", "echo hi\n");
    let o = run(&["run", "--", f.path()]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
}

#[test]
fn invalid_fault_plan_exits_65_naming_the_field() {
    let f = TempFile::new(
        "badplan.json",
        r#"{"rules":[{"op":"StartComputeSystem","action":"fail","code":"boom"}]}"#,
    );
    let o = run(&["run", "--faults", f.path(), "--", "echo", "never"]);
    assert_eq!(o.status.code(), Some(65));
    assert!(stderr(&o).contains("rules[0].code"), "{}", stderr(&o));
}

#[test]
fn unreadable_fault_plan_exits_66() {
    let o = run(&[
        "run",
        "--faults",
        "/nonexistent/hcsctl-plan.json",
        "--",
        "echo",
        "never",
    ]);
    assert_eq!(o.status.code(), Some(66));
    assert!(
        stderr(&o).contains("/nonexistent/hcsctl-plan.json"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn fault_plan_failing_start_exits_125_and_runs_nothing() {
    let m = marker(5);
    let f = TempFile::new(
        "failstart.json",
        r#"{"rules":[{"op":"StartComputeSystem","action":"fail","code":"0x80370105"}]}"#,
    );
    let o = run(&["run", "--faults", f.path(), "--", "sleep", &m]);
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(
        e.contains("cannot start compute system") && e.contains("0x80370105"),
        "{e}"
    );
    assert!(!e.contains("left behind"), "{e}");
    assert!(sleepers(&m).is_empty());
}

#[test]
fn system_crash_while_the_command_runs_is_reported_and_leaves_nothing() {
    let m = marker(6);
    let f = TempFile::new(
        "crash.json",
        r#"{"rules":[{"op":"CreateProcess","action":"crash","after_ms":300}]}"#,
    );
    let start = Instant::now();
    let o = run(&["run", "--json", "--faults", f.path(), "--", "sleep", &m]);
    assert!(start.elapsed() < Duration::from_secs(10));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(137), "the crash killed the command: {e}");
    assert!(e.contains("exited unexpectedly"), "{e}");
    assert!(!e.contains("left behind"), "{e}");
    let v: serde_json::Value = serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    assert_eq!(v["exit_type"], "UnexpectedExit");
    assert!(wait_until(Duration::from_secs(2), || sleepers(&m).is_empty()));
}

#[test]
fn service_disconnect_at_create_process_exits_125_naming_the_cause() {
    let f = TempFile::new(
        "disconnect.json",
        r#"{"rules":[{"op":"CreateProcess","action":"disconnect"}]}"#,
    );
    let start = Instant::now();
    let o = run(&["run", "--faults", f.path(), "--", "echo", "never"]);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(
        e.contains("cannot create process") && e.contains("RPC_S_SERVER_UNAVAILABLE"),
        "{e}"
    );
    assert_eq!(stdout(&o), "");
}

#[test]
fn sigint_during_a_start_that_never_completes_exits_130_promptly() {
    let m = marker(7);
    let f = TempFile::new(
        "pendstart.json",
        r#"{"rules":[{"op":"StartComputeSystem","action":"pending","never":true}]}"#,
    );
    let mut child = spawn_sleeper(&["--faults", f.path()], &["sleep", &m]);
    // Give hcsctl time to install its handler and reach the start wait.
    std::thread::sleep(Duration::from_millis(500));
    send_sigint(&child);
    let (status, elapsed) = wait_bounded(&mut child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(130));
    assert!(elapsed < Duration::from_secs(12), "took {elapsed:?}");
    let o = child.wait_with_output().unwrap();
    assert!(
        stderr(&o).contains("interrupted before the command started"),
        "{}",
        stderr(&o)
    );
    assert!(sleepers(&m).is_empty());
}

#[test]
fn native_drivers_are_reported_unavailable_with_exit_69() {
    for name in ["vmcompute", "computecore"] {
        let o = run(&["run", "--driver", name, "--", "echo", "never"]);
        assert_eq!(o.status.code(), Some(69));
        assert!(
            stderr(&o).contains(&format!("driver '{name}' is unavailable on this platform")),
            "{}",
            stderr(&o)
        );
        assert_eq!(stdout(&o), "");
    }
}

#[test]
fn unknown_driver_is_a_usage_error() {
    let o = run(&["run", "--driver", "bogus", "--", "echo"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bogus"));
}

#[test]
fn run_without_a_command_is_a_usage_error() {
    let o = run(&["run"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn help_documents_every_exit_code() {
    for args in [&["--help"][..], &["run", "--help"][..]] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(0));
        let h = stdout(&o);
        for code in ["65", "66", "69", "124", "125", "126", "127", "130"] {
            assert!(
                h.contains(&format!("  {code} ")),
                "{args:?} help lacks exit code {code}:\n{h}"
            );
        }
    }
}

#[test]
fn version_prints_the_crate_version() {
    let o = run(&["version"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with(&format!("hcsctl {}", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn list_json_on_a_fresh_simulator_is_an_empty_array() {
    let o = run(&["list", "--driver", "sim", "--json"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v, serde_json::json!([]));
    let o = run(&["list", "--driver", "vmcompute"]);
    assert_eq!(o.status.code(), Some(69));
}

#[test]
fn verbose_logs_hcs_calls_to_stderr_only() {
    let o = run(&["-v", "run", "--", "echo", "quiet"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "quiet\n");
    assert!(stderr(&o).contains("create_compute_system"), "{}", stderr(&o));
}

//! End-to-end tests of `hcsctl` as a complete HCS tool over the simulated service: one
//! `hcsctl daemon` per test on a private socket, and separate `hcsctl` invocations for each step
//! (create → exec → list/inspect/ps → kill → pause/resume → stop → rm), as a user at a terminal
//! would run them, with the exit codes of each outcome.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: `$HCSCTL_BIN` when set (CI points it at the static release build),
/// else the one Cargo built for this test run.
fn bin() -> std::ffi::OsString {
    std::env::var_os("HCSCTL_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_hcsctl").into())
}

/// A running `hcsctl daemon` on a socket of its own; stopped with SIGTERM on drop.
struct Daemon {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Daemon {
    fn start(name: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!("hcsctl-svc-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let socket = dir.join("hcs.sock");
        let child = Command::new(bin())
            .args(["daemon", "--socket"])
            .arg(&socket)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hcsctl daemon");
        let d = Daemon { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !d.socket.exists() {
            assert!(Instant::now() < deadline, "the daemon did not create its socket");
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    /// `hcsctl ARGS` against this daemon, stdin empty.
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn hcsctl")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env("HCS_SIM_SOCKET", &self.socket)
            .env_remove("RUST_LOG");
        c
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(out(o).trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out(o)))
}

#[test]
fn a_system_lives_across_invocations_from_create_to_rm() {
    let d = Daemon::start("life");
    let o = d.run(&["create", "--start", "web"]);
    assert_eq!(code(&o), 0, "create: {}", err(&o));
    assert_eq!(out(&o), "web\n");

    // exec: output relayed, exit code propagated, stdin only with -i.
    let o = d.run(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "echo hello from web; echo oops >&2; exit 7",
    ]);
    assert_eq!(code(&o), 7, "{}", err(&o));
    assert_eq!(out(&o), "hello from web\n");
    assert_eq!(err(&o), "oops\n");
    let mut c = d.cmd(&["exec", "-i", "web", "--", "tr", "a-z", "A-Z"]);
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"piped in\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!((code(&o), out(&o).as_str()), (0, "PIPED IN\n"));

    // list / inspect / ps see it, with a process started from another invocation.
    let mut sleeper = d
        .cmd(&["exec", "web", "--", "sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        let ps = json(&d.run(&["ps", "--json", "web"]));
        if let Some(p) = ps
            .as_array()
            .and_then(|a| a.iter().find(|p| p["ImageName"] == "sleep"))
        {
            break p["ProcessId"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "ps never showed the sleep: {ps}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let list = json(&d.run(&["list", "--json"]));
    let row = &list.as_array().unwrap()[0];
    assert_eq!(
        (row["id"].as_str(), row["state"].as_str()),
        (Some("web"), Some("Running"))
    );
    assert!(
        row["uptime_s"].as_f64().is_some(),
        "uptime of a running system: {row}"
    );
    let o = d.run(&["list"]);
    assert!(
        out(&o)
            .lines()
            .any(|l| l.starts_with("web ") && l.contains("Running")),
        "{}",
        out(&o)
    );
    let inspect = json(&d.run(&["inspect", "--json", "web"]));
    assert_eq!(inspect["Id"], "web");
    assert!(inspect["Statistics"].is_object(), "statistics: {inspect}");
    assert!(
        inspect["ProcessList"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["ProcessId"] == pid),
        "the process list names the sleep: {inspect}"
    );

    // kill --signal: the exec'ing hcsctl ends with 128 + 15; a second kill finds nothing.
    let o = d.run(&["kill", "--signal", "15", "web", &pid.to_string()]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_eq!(sleeper.wait().unwrap().code(), Some(143));
    let o = d.run(&["kill", "web", "999999"]);
    assert_eq!(code(&o), 3, "no such process: {}", err(&o));
    assert!(
        err(&o).contains("999999") && err(&o).contains("\"web\""),
        "{}",
        err(&o)
    );

    // pause / resume, and the states list shows.
    assert_eq!(code(&d.run(&["pause", "web"])), 0);
    assert_eq!(json(&d.run(&["list", "--json"]))[0]["state"], "Paused");
    let o = d.run(&["pause", "web"]);
    assert_eq!(
        code(&o),
        4,
        "pause of a paused system is the wrong state: {}",
        err(&o)
    );
    assert_eq!(code(&d.run(&["resume", "web"])), 0);

    // rm of a running system needs -f; wait sees the stop from another invocation.
    let o = d.run(&["rm", "web"]);
    assert_eq!(code(&o), 4, "{}", err(&o));
    assert!(err(&o).contains("rm -f"), "{}", err(&o));
    let waiter = d
        .cmd(&["wait", "--json", "web"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let o = d.run(&["stop", "--grace", "5s", "web"]);
    assert_eq!(code(&o), 0, "stop: {}", err(&o));
    let o = waiter.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "a stop is a clean exit: {}", out(&o));
    assert_eq!(json(&o)["unexpected"], false);
    // A stopped system nobody holds is gone, as in HCS.
    assert_eq!(json(&d.run(&["list", "--json"])), serde_json::json!([]));
    let o = d.run(&["rm", "web"]);
    assert_eq!(code(&o), 3, "{}", err(&o));
    let o = d.run(&["exec", "web", "--", "true"]);
    assert_eq!(code(&o), 3, "{}", err(&o));
}

#[test]
fn rm_force_terminates_and_events_streams_the_exit() {
    let d = Daemon::start("events");
    assert_eq!(code(&d.run(&["create", "--start", "ev"])), 0);
    let mut events = d
        .cmd(&["events", "--json", "ev"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Give the watcher time to register before the exit.
    std::thread::sleep(Duration::from_millis(300));
    let o = d.run(&["rm", "-f", "ev"]);
    assert_eq!(code(&o), 0, "rm -f: {}", err(&o));
    let lines: Vec<serde_json::Value> = BufReader::new(events.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(
        events.wait().unwrap().code(),
        Some(0),
        "events ID ends with the system"
    );
    let exit = lines.last().expect("at least the exit");
    assert_eq!(
        (exit["id"].as_str(), exit["type"].as_str()),
        (Some("ev"), Some("SystemExited"))
    );
    assert_eq!(json(&d.run(&["list", "--json"])), serde_json::json!([]));
}

#[test]
fn errors_name_what_is_missing_with_distinct_exit_codes() {
    let d = Daemon::start("errors");
    for (args, expected) in [
        (vec!["start", "ghost"], 3),
        (vec!["inspect", "ghost"], 3),
        (vec!["stop", "ghost"], 3),
        (vec!["exec", "ghost", "--", "true"], 3),
    ] {
        let o = d.run(&args);
        assert_eq!(code(&o), expected, "{args:?}: {}", err(&o));
        assert!(
            err(&o).contains("\"ghost\""),
            "{args:?} names the id: {}",
            err(&o)
        );
    }
    assert_eq!(code(&d.run(&["create", "twice"])), 0);
    let o = d.run(&["create", "twice"]);
    assert_eq!(code(&o), 4, "an id in use: {}", err(&o));
    let o = d.run(&["exec", "twice", "--", "true"]);
    assert_ne!(code(&o), 0, "exec in a created, not started system");
    let o = d.run(&["exec", "twice", "--", "no-such-command-xyz"]);
    assert_ne!(code(&o), 0);
    assert_eq!(code(&d.run(&["start", "twice"])), 0);
    let o = d.run(&["exec", "twice", "--", "no-such-command-xyz"]);
    assert_eq!(code(&o), 127, "{}", err(&o));
    let o = d.run(&["create", "--config", "/nonexistent/config.json"]);
    assert_eq!(code(&o), 66, "{}", err(&o));
    assert_eq!(code(&d.run(&["rm", "-f", "twice"])), 0);

    // No service at the socket: 69 with the way out.
    let o = Command::new(bin())
        .args(["list"])
        .env("HCS_SIM_SOCKET", d.dir.join("nobody-here.sock"))
        .output()
        .unwrap();
    assert_eq!(code(&o), 69, "{}", err(&o));
    assert!(err(&o).contains("hcsctl daemon"), "{}", err(&o));
}

#[test]
fn run_uses_the_service_when_asked_and_the_system_is_gone_after() {
    let d = Daemon::start("run");
    let o = d.run(&[
        "run",
        "--driver",
        "service",
        "--",
        "sh",
        "-c",
        "echo via service; exit 4",
    ]);
    assert_eq!((code(&o), out(&o).as_str()), (4, "via service\n"), "{}", err(&o));
    assert_eq!(json(&d.run(&["list", "--json"])), serde_json::json!([]));
    let plan = d.dir.join("plan.json");
    std::fs::write(&plan, r#"{"rules":[]}"#).unwrap();
    let o = d.run(&[
        "run",
        "--driver",
        "service",
        "--faults",
        plan.to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(code(&o), 69, "a fault plan belongs to the service: {}", err(&o));
}

#[test]
fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let d = Daemon::start("second");
    let o = Command::new(bin())
        .args(["daemon", "--socket"])
        .arg(&d.socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(code(&o), 0);
    assert_eq!(code(&d.run(&["list"])), 0, "the first one still serves");
}

#[test]
fn list_shows_the_uptime_of_many_running_systems_and_none_of_stopped_ones() {
    // More running systems than `list` queries one at a time (it spreads its statistics
    // queries over threads beyond a few), and a created-only one without an uptime.
    let d = Daemon::start("many");
    let mut ids: Vec<String> = (0..12).map(|i| format!("m{i:02}")).collect();
    for id in &ids {
        let o = d.run(&["create", "--start", id]);
        assert_eq!(code(&o), 0, "create {id}: {}", err(&o));
    }
    let o = d.run(&["create", "idle"]);
    assert_eq!(code(&o), 0, "create idle: {}", err(&o));
    std::thread::sleep(Duration::from_millis(20));
    let list = json(&d.run(&["list", "--json"]));
    let rows = list.as_array().expect("an array");
    let mut seen: Vec<String> = rows
        .iter()
        .filter(|r| r["state"] == "Running")
        .map(|r| {
            assert!(
                r["uptime_s"].as_f64().is_some(),
                "uptime of a running system: {r}"
            );
            assert_eq!(
                (r["type"].as_str(), r["stopped"].as_bool()),
                (Some("Container"), Some(false)),
                "{r}"
            );
            r["id"].as_str().unwrap().to_owned()
        })
        .collect();
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    let idle = rows
        .iter()
        .find(|r| r["id"] == "idle")
        .expect("the created system is listed");
    assert!(idle["uptime_s"].is_null(), "no uptime before a start: {idle}");
    let o = d.run(&["list"]);
    assert_eq!(
        out(&o).lines().count(),
        14,
        "a header and every system: {}",
        out(&o)
    );
}

/// `exec -t` follows our terminal: the console starts at our terminal's size, and when our
/// terminal is resized (`SIGWINCH` to `hcsctl`) the console is resized too, so the command sees
/// its own `SIGWINCH` and the new size.
#[test]
fn exec_t_follows_a_resize_of_our_terminal() {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    use rustix::termios::{tcsetwinsize, Winsize};
    use std::io::Read;
    use std::sync::{Arc, Mutex};

    let d = Daemon::start("winch");
    let o = d.run(&["create", "--start", "winch"]);
    assert_eq!(code(&o), 0, "{}", err(&o));

    // A terminal of our own for `hcsctl exec -t`: it reads and writes the slave side.
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("open the pty slave");
    let size = |rows, cols| Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    tcsetwinsize(&slave, size(30, 100)).expect("set the first size");
    let slave = std::fs::File::from(slave);
    let mut child = d
        .cmd(&[
            "exec",
            "-t",
            "winch",
            "--",
            "sh",
            "-c",
            "trap 'stty size' WINCH; stty size; while :; do sleep 0.1; done",
        ])
        .stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave)
        .spawn()
        .expect("spawn hcsctl exec -t");
    let seen = Arc::new(Mutex::new(String::new()));
    {
        let seen = seen.clone();
        let mut master = std::fs::File::from(master.try_clone().expect("dup the master"));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let wait_for = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.lock().unwrap().contains(what) {
            assert!(
                Instant::now() < deadline,
                "{what:?} never appeared on the terminal; it shows {:?}",
                seen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("30 100");
    tcsetwinsize(&master, size(40, 120)).expect("resize our terminal");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-WINCH", &pid])
        .status()
        .expect("kill -WINCH")
        .success());
    wait_for("40 120");

    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM")
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "hcsctl exec -t did not end after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(143), "SIGTERM is forwarded: 128 + 15");
    let o = d.run(&["rm", "-f", "winch"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
}

/// `stop` shows its progress on a terminal while it waits for the grace period (a process that
/// ignores `SIGTERM` keeps the system up), clears the line when done, and writes nothing of the
/// kind when its stderr is not a terminal.
#[test]
fn stop_shows_progress_on_a_terminal_only() {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    use std::io::Read;

    let d = Daemon::start("progress");
    let stubborn = "trap '' TERM; while :; do sleep 0.1; done";
    let mut execs = Vec::new();
    for id in ["tty", "piped"] {
        let o = d.run(&["create", "--start", id]);
        assert_eq!(code(&o), 0, "{}", err(&o));
        execs.push(
            d.cmd(&["exec", id, "--", "sh", "-c", stubborn])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn hcsctl exec"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !out(&d.run(&["ps", id, "--json"])).contains(r#""ImageName":"sh""#) {
            assert!(Instant::now() < deadline, "the process never ran in {id}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // On a terminal.
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("open the pty slave");
    let reader = {
        let mut master = std::fs::File::from(master.try_clone().expect("dup the master"));
        std::thread::spawn(move || {
            let mut seen = String::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                if seen.contains("(0s)") && seen.ends_with("\r\x1b[2K") {
                    break;
                }
            }
            seen
        })
    };
    let status = d
        .cmd(&["stop", "--grace", "1s", "tty"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::from(slave))
        .status()
        .expect("run hcsctl stop");
    assert_eq!(status.code(), Some(0));
    let seen = reader.join().expect("reader");
    assert!(
        seen.contains("stopping \"tty\" (0s)"),
        "no progress on the terminal: {seen:?}"
    );
    assert!(
        seen.ends_with("\r\x1b[2K"),
        "the progress line was not cleared: {seen:?}"
    );

    // Not a terminal.
    let o = d.run(&["stop", "--grace", "1s", "piped"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(
        !err(&o).contains("stopping") && !err(&o).contains('\x1b'),
        "progress written to a pipe: {:?}",
        err(&o)
    );
    for mut e in execs {
        let _ = e.wait();
    }
}

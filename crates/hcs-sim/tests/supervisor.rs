//! The per-system supervisor (`hcs_sim::supervisor`), through the simulator configured with the
//! `hcs-sim-supervisor` binary and over a raw link: processes in a session of its own without a
//! terminal, exit reports, signals, escapees caught by the subreaper, the whole tree killed when
//! the system stops (terminate, shutdown timeout, close of the last handle, simulator drop), the
//! supervisor's death as the system's unexpected exit, link EOF and malformed messages.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use hcs::{Driver, HResult, NotificationKind, ProcessHandle, SystemHandle};
use hcs_schema::{ExitType, ProcessStatus, SystemExitStatus};
use hcs_sim::{proc_state, SimConfig, Simulator, SupervisorProgram};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn program() -> SupervisorProgram {
    SupervisorProgram::new(env!("CARGO_BIN_EXE_hcs-sim-supervisor"))
}

fn supervised() -> SimConfig {
    SimConfig::default()
        .all_sync()
        .supervisor(program())
        .shutdown_grace(Duration::from_millis(300))
}

/// A number of seconds unique to this test run, for `sleep` (found again by its argument).
fn marker() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{}.{:05}{:03}", 60 + n, std::process::id() % 100_000, n)
}

/// Fields of `/proc/<pid>/stat` after the command name: state, ppid, pgrp, session, tty_nr.
fn stat(pid: u32) -> Option<(char, u32, u32, u32, i64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s[s.rfind(')')? + 1..].split_whitespace().collect();
    Some((
        f[0].chars().next()?,
        f[1].parse().ok()?,
        f[2].parse().ok()?,
        f[3].parse().ok()?,
        f[4].parse().ok()?,
    ))
}

/// Live (not zombie) processes running `sleep <marker>`.
fn sleeping(marker: &str) -> Vec<u32> {
    let want = format!("sleep\0{marker}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == want.as_bytes()))
        .filter(|p| stat(*p).is_some_and(|s| s.0 != 'Z'))
        .collect()
}

fn one_sleeping(marker: &str) -> u32 {
    let mut found = Vec::new();
    assert!(
        eventually(FIVE_SECONDS, || {
            found = sleeping(marker);
            found.len() == 1
        }),
        "sleep {marker}: {found:?}"
    );
    found[0]
}

fn gone(marker: &str) -> bool {
    eventually(FIVE_SECONDS, || sleeping(marker).is_empty())
}

struct Env {
    sim: Arc<Simulator>,
    rec: Recorder,
    sys: SystemHandle,
    cb: hcs::CallbackHandle,
    id: String,
}

fn running(config: SimConfig, id: &str) -> Env {
    let sim = Simulator::new(config);
    let rec = Recorder::new();
    let sys = sim
        .create_compute_system(id, &container("sup"), rec.ctx())
        .unwrap()
        .value;
    let cb = sim.register_compute_system_callback(sys, rec.ctx()).unwrap();
    sim.start_compute_system(sys, "", rec.ctx()).unwrap();
    Env {
        sim,
        rec,
        sys,
        cb,
        id: id.into(),
    }
}

impl Env {
    fn spawn(&self, p: &str) -> (ProcessHandle, hcs::ProcessInfo, Recorder, hcs::CallbackHandle) {
        let (h, info) = self.sim.create_process(self.sys, p).unwrap().value;
        let r = Recorder::new();
        let cb = self.sim.register_process_callback(h, r.ctx()).unwrap();
        (h, info, r, cb)
    }
    fn exit_of(&self, r: &Recorder) -> u32 {
        let e = r
            .wait(NotificationKind::ProcessExited, FIVE_SECONDS)
            .expect("process exit");
        serde_json::from_str::<ProcessStatus>(e.payload.as_deref().unwrap())
            .unwrap()
            .exit_code
    }
    fn system_exit(&self) -> SystemExitStatus {
        let e = self
            .rec
            .wait(NotificationKind::SystemExited, FIVE_SECONDS)
            .expect("system exit");
        serde_json::from_str(e.payload.as_deref().unwrap()).unwrap()
    }
    fn release(&self, h: ProcessHandle, cb: hcs::CallbackHandle) {
        self.sim.unregister_process_callback(cb).unwrap();
        self.sim.close_process(h).unwrap();
    }
    fn supervisor(&self) -> u32 {
        self.sim.supervisor_pid(&self.id).expect("a supervisor runs")
    }
    fn finish(self) {
        let _ = self.sim.terminate_compute_system(self.sys, "");
        self.sim.unregister_compute_system_callback(self.cb).unwrap();
        self.sim.close_compute_system(self.sys).unwrap();
        self.sim.assert_no_leaks();
    }
}

/// Reads one line from a process's stdout.
fn line(info: &mut hcs::ProcessInfo) -> String {
    let mut r = BufReader::new(info.stdout.as_mut().expect("stdout"));
    let mut s = String::new();
    r.read_line(&mut s).unwrap();
    s
}

#[test]
fn processes_run_in_the_supervisors_own_session_without_a_terminal_and_report_exits() {
    let env = running(supervised(), "sup-basic");
    assert_eq!(env.sim.supervisor_pid(&env.id), None, "started lazily");
    // Output, exit code.
    let (h, mut info, r, cb) = env.spawn(&params(
        "sh -c \"echo out; echo err >&2; exit 3\"",
        false,
        true,
        true,
    ));
    let mut out = String::new();
    let mut err = String::new();
    info.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    info.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    assert_eq!(env.exit_of(&r), 3);
    env.release(h, cb);
    // stdin round trip.
    let (h, mut info, r, cb) = env.spawn(&params("cat", true, true, false));
    info.stdin.as_mut().unwrap().write_all(b"ping\n").unwrap();
    drop(info.stdin.take());
    assert_eq!(line(&mut info), "ping\n");
    assert_eq!(env.exit_of(&r), 0);
    env.release(h, cb);
    // Where it runs: a child of the supervisor, leader of its own group, in the supervisor's
    // session (the supervisor leads it), no controlling terminal.
    let sup = env.supervisor();
    let m = marker();
    let (h, info, r, cb) = env.spawn(&params(&format!("sleep {m}"), false, false, false));
    let (_, ppid, pgrp, session, tty) = stat(info.pid).unwrap();
    assert_eq!((ppid, pgrp, session, tty), (sup, info.pid, sup, 0));
    let (_, _, sup_pgrp, sup_session, sup_tty) = stat(sup).unwrap();
    assert_eq!((sup_pgrp, sup_session, sup_tty), (sup, sup, 0));
    // Signals reach it through the supervisor.
    env.sim.signal_process(h, r#"{"Signal":15}"#).unwrap();
    assert_eq!(env.exit_of(&r), 128 + 15);
    env.release(h, cb);
    let (h, _info, r, cb) = env.spawn(&params("sleep 30", false, false, false));
    env.sim.signal_process(h, r#"{"Signal":0}"#).unwrap();
    assert_eq!(env.exit_of(&r), 128 + 2);
    env.release(h, cb);
    let (h, _info, r, cb) = env.spawn(&params("sleep 30", false, false, false));
    env.sim.terminate_process(h).unwrap();
    assert_eq!(env.exit_of(&r), 128 + 9);
    env.release(h, cb);
    // A missing program is ERROR_FILE_NOT_FOUND with a result document, as without it.
    let e = env
        .sim
        .create_process(env.sys, &params("no-such-program-hcs-sim", false, false, false))
        .unwrap_err();
    assert_eq!(e.code, HResult(0x8007_0002));
    assert!(e.document.unwrap().contains("no-such-program-hcs-sim"));
    // Pause and resume reach it too.
    let (h, info, r, cb) = env.spawn(&params("sleep 30", false, false, false));
    env.sim.pause_compute_system(env.sys, "", env.rec.ctx()).unwrap();
    assert!(eventually(FIVE_SECONDS, || proc_state(info.pid) == Some('T')));
    env.sim.resume_compute_system(env.sys, "", env.rec.ctx()).unwrap();
    assert!(eventually(FIVE_SECONDS, || proc_state(info.pid) != Some('T')));
    env.sim.terminate_process(h).unwrap();
    assert_eq!(env.exit_of(&r), 128 + 9);
    env.release(h, cb);
    env.finish();
    assert!(
        eventually(FIVE_SECONDS, || proc_state(sup).is_none()),
        "the supervisor exits and is reaped once its system stops"
    );
}

#[test]
fn what_a_command_leaves_in_its_group_dies_with_it_and_escapees_die_with_the_system() {
    let env = running(supervised(), "sup-leftovers");
    let (grouped, escaped) = (marker(), marker());
    let (h, _info, r, cb) = env.spawn(&params(
        // It waits until the escapee has its own session (`setsid` ran) before it exits.
        &format!(
            "sh -c \"sleep {grouped} & setsid sleep {escaped} & until [ $(cut -d' ' -f6 /proc/$!/stat) = $! ]; do sleep 0.01; done\""
        ),
        false,
        false,
        false,
    ));
    assert_eq!(env.exit_of(&r), 0);
    assert!(gone(&grouped), "the command's own group is killed when it exits");
    let pid = one_sleeping(&escaped);
    assert_eq!(
        stat(pid).map(|s| s.1),
        Some(env.supervisor()),
        "the escapee came to the subreaper"
    );
    env.release(h, cb);
    env.sim.terminate_compute_system(env.sys, "").unwrap();
    assert_eq!(env.system_exit().exit_type, Some(ExitType::ForcedExit));
    assert!(gone(&escaped), "the escapee dies when its system stops");
    env.finish();
}

/// How a system is stopped in [`escapees_die_however_the_system_stops`].
#[derive(Debug, Clone, Copy)]
enum Stop {
    Terminate,
    ShutdownTimeout,
    CloseLastHandle,
    DropSimulator,
}

#[test]
fn escapees_die_however_the_system_stops() {
    for how in [
        Stop::Terminate,
        Stop::ShutdownTimeout,
        Stop::CloseLastHandle,
        Stop::DropSimulator,
    ] {
        let env = running(supervised(), &format!("sup-stop-{how:?}"));
        let (setsid, double_fork, main) = (marker(), marker(), marker());
        // The command ignores SIGTERM, so that a shutdown has to wait for the grace period.
        let cmd = format!(
            "sh -c \"setsid sleep {setsid} & (sleep {double_fork} &); trap '' TERM; echo ready; exec sleep {main}\""
        );
        let (h, mut info, r, cb) = env.spawn(&params(&cmd, false, true, false));
        assert_eq!(line(&mut info), "ready\n", "{how:?}");
        let sup = env.supervisor();
        let double_forked = one_sleeping(&double_fork);
        one_sleeping(&setsid);
        one_sleeping(&main);
        assert!(
            eventually(FIVE_SECONDS, || stat(double_forked).is_some_and(|s| s.1 == sup)),
            "{how:?}: the double-forked sleep came to the subreaper"
        );
        match how {
            Stop::Terminate => {
                env.sim.terminate_compute_system(env.sys, "").unwrap();
                assert_eq!(env.exit_of(&r), 128 + 9);
                assert_eq!(env.system_exit().exit_type, Some(ExitType::ForcedExit));
                env.release(h, cb);
                env.finish();
            }
            Stop::ShutdownTimeout => {
                env.sim.shutdown_compute_system(env.sys, "").unwrap();
                assert_eq!(env.exit_of(&r), 128 + 9, "killed after the grace period");
                assert_eq!(env.system_exit().exit_type, Some(ExitType::GracefulExit));
                env.release(h, cb);
                env.finish();
            }
            Stop::CloseLastHandle => {
                env.release(h, cb);
                env.sim.unregister_compute_system_callback(env.cb).unwrap();
                env.sim.close_compute_system(env.sys).unwrap();
                env.sim.assert_no_leaks();
            }
            Stop::DropSimulator => {
                drop(env);
                // Not "eventually": when the drop returns, the tree is dead.
                for m in [&setsid, &double_fork, &main] {
                    assert!(sleeping(m).is_empty(), "sleep {m} survived the drop");
                }
            }
        }
        for m in [&setsid, &double_fork, &main] {
            assert!(gone(m), "{how:?}: sleep {m} survived");
        }
        assert!(
            eventually(FIVE_SECONDS, || proc_state(sup).is_none()),
            "{how:?}: supervisor {sup} still there"
        );
    }
}

#[test]
fn the_supervisors_death_is_the_systems_unexpected_exit_and_its_session_is_killed() {
    for signal in [
        nix::sys::signal::Signal::SIGKILL,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        let env = running(supervised(), &format!("sup-death-{signal}"));
        let (m, escaped) = (marker(), marker());
        let (h, mut info, r, cb) = env.spawn(&params(
            &format!("sh -c \"setsid sleep {escaped} & echo ready; exec sleep {m}\""),
            false,
            true,
            false,
        ));
        assert_eq!(line(&mut info), "ready\n");
        one_sleeping(&escaped);
        let sup = env.supervisor();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(sup as i32), signal).unwrap();
        assert_eq!(env.exit_of(&r), 128 + 9, "{signal}");
        let exit = env.system_exit();
        assert_eq!(exit.exit_type, Some(ExitType::UnexpectedExit), "{signal}");
        assert!(
            gone(&m),
            "{signal}: the process in the supervisor's session survived"
        );
        if signal == nix::sys::signal::Signal::SIGTERM {
            // A supervisor that can act kills the whole tree before it goes.
            assert!(gone(&escaped), "SIGTERM: the escapee survived");
        } else {
            // SIGKILL leaves no chance to the supervisor: an escapee in a session of its own
            // is out of the simulator's reach (a documented limit); clean it up here.
            for pid in sleeping(&escaped) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        assert_eq!(env.sim.supervisor_pid(&env.id), None);
        env.release(h, cb);
        env.finish();
    }
}

#[test]
fn a_supervisor_that_sends_garbage_fails_the_call_with_a_clear_error_and_the_system_is_lost() {
    let fake = SupervisorProgram::new("sh")
        .arg("-c")
        .arg("printf 'this is not json' >&0; exec sleep 30");
    let env = running(SimConfig::default().all_sync().supervisor(fake), "sup-garbage");
    let e = env
        .sim
        .create_process(env.sys, &params("true", false, false, false))
        .unwrap_err();
    assert_eq!(e.code, HResult::E_FAIL);
    let doc = e.document.unwrap();
    assert!(doc.contains("malformed message"), "{doc}");
    assert_eq!(env.system_exit().exit_type, Some(ExitType::UnexpectedExit));
    env.finish();
}

// ---- the supervisor program over a raw link

struct Raw {
    child: Child,
    link: Option<OwnedFd>,
}

fn raw() -> Raw {
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_hcs-sim-supervisor"))
        .stdin(Stdio::from(theirs))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Raw {
        child,
        link: Some(ours),
    }
}

impl Raw {
    fn send(&self, msg: &[u8]) {
        rustix::net::send(self.link.as_ref().unwrap(), msg, rustix::net::SendFlags::empty()).unwrap();
    }
    fn recv(&self) -> serde_json::Value {
        let mut buf = vec![0u8; 65536];
        let (n, _) = rustix::net::recv(
            self.link.as_ref().unwrap(),
            &mut buf[..],
            rustix::net::RecvFlags::empty(),
        )
        .unwrap();
        serde_json::from_slice(&buf[..n]).unwrap()
    }
    fn spawn(&self, argv: &[&str]) -> u32 {
        let msg = serde_json::json!({
            "op": "Spawn", "argv": argv, "cwd": null, "env": [],
            "stdin": false, "stdout": false, "stderr": false,
        });
        self.send(msg.to_string().as_bytes());
        let v = self.recv();
        assert_eq!(v["op"], "Spawned", "{v}");
        v["pid"].as_u64().unwrap() as u32
    }
    /// Waits for the supervisor's exit; its status code and stderr.
    fn end(mut self) -> (Option<i32>, String) {
        let mut status = None;
        assert!(
            eventually(FIVE_SECONDS, || {
                status = self.child.try_wait().unwrap();
                status.is_some()
            }),
            "the supervisor did not exit"
        );
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status.unwrap().code(), err)
    }
}

#[test]
fn raw_link_reports_exits_and_forwards_signals() {
    let raw = raw();
    let pid = raw.spawn(&["sh", "-c", "exit 5"]);
    assert_eq!(
        raw.recv(),
        serde_json::json!({"op":"Exited","pid":pid,"code":5,"idle":true})
    );
    let pid = raw.spawn(&["sleep", "30"]);
    raw.send(format!(r#"{{"op":"Signal","pid":{pid},"signal":15}}"#).as_bytes());
    assert_eq!(
        raw.recv(),
        serde_json::json!({"op":"Exited","pid":pid,"code":143,"idle":true})
    );
    // Not idle while an escapee lives below the supervisor (it came to the subreaper).
    let m = marker();
    let script =
        format!("setsid sleep {m} & until [ $(cut -d' ' -f6 /proc/$!/stat) = $! ]; do sleep 0.01; done");
    let pid = raw.spawn(&["sh", "-c", &script]);
    assert_eq!(
        raw.recv(),
        serde_json::json!({"op":"Exited","pid":pid,"code":0,"idle":false})
    );
    one_sleeping(&m);
    let v = {
        raw.send(br#"{"op":"Spawn","argv":["no-such-program-hcs-sim"],"cwd":null,"env":[],"stdin":false,"stdout":false,"stderr":false}"#);
        raw.recv()
    };
    assert_eq!(
        (v["op"].as_str(), v["kind"].as_str()),
        (Some("SpawnFailed"), Some("NotFound")),
        "{v}"
    );
    raw.send(br#"{"op":"KillAll"}"#);
    assert_eq!(raw.end().0, Some(0));
    assert!(
        sleeping(&m).is_empty(),
        "KillAll killed the escapee before the supervisor exited"
    );
}

#[test]
fn raw_link_eof_kills_the_whole_tree_escapees_included() {
    let mut raw = raw();
    let (setsid, double_fork, main) = (marker(), marker(), marker());
    let script = format!("setsid sleep {setsid} & (sleep {double_fork} &); exec sleep {main}");
    raw.spawn(&["sh", "-c", &script]);
    for m in [&setsid, &double_fork, &main] {
        one_sleeping(m);
    }
    drop(raw.link.take());
    assert_eq!(raw.end().0, Some(0));
    for m in [&setsid, &double_fork, &main] {
        assert!(gone(m), "sleep {m} survived the link's end");
    }
}

#[test]
fn raw_link_malformed_messages_are_errors_that_kill_everything() {
    for bad in [
        &b"this is not json"[..],
        br#"{"op":"Spawn","argv":["true"]}"#,
        br#"{"op":"Reboot"}"#,
        // A spawn that asks for a pipe but carries no descriptor.
        br#"{"op":"Spawn","argv":["true"],"cwd":null,"env":[],"stdin":true,"stdout":false,"stderr":false}"#,
    ] {
        let raw = raw();
        let m = marker();
        raw.spawn(&["sh", "-c", &format!("setsid sleep {m} & exec sleep {m}")]);
        assert!(eventually(FIVE_SECONDS, || sleeping(&m).len() == 2));
        raw.send(bad);
        let (code, err) = raw.end();
        assert_eq!(code, Some(2), "{}: {err}", String::from_utf8_lossy(bad));
        assert!(err.contains("killed every process"), "{err}");
        assert!(gone(&m), "{}", String::from_utf8_lossy(bad));
    }
}

/// `/proc/<pid>/stat` field 22: the start time in clock ticks after boot.
fn start_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    s[s.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_prepared_supervisor_is_taken_by_the_first_system_that_needs_one() {
    let sim = Simulator::new(supervised());
    sim.prepare_supervisor();
    std::thread::sleep(Duration::from_millis(150));
    let rec = Recorder::new();
    let sys = sim
        .create_compute_system("sup-prepared", &container("sup"), rec.ctx())
        .unwrap()
        .value;
    sim.start_compute_system(sys, "", rec.ctx()).unwrap();
    let m = marker();
    let (h, info) = sim
        .create_process(sys, &params(&format!("sleep {m}"), false, false, false))
        .unwrap()
        .value;
    let sup = sim.supervisor_pid("sup-prepared").unwrap();
    assert_eq!(stat(info.pid).map(|s| s.1), Some(sup));
    assert!(
        start_ticks(info.pid) >= start_ticks(sup) + 5,
        "the supervisor was started ahead, 150 ms before the process"
    );
    sim.terminate_compute_system(sys, "").unwrap();
    assert!(gone(&m));
    sim.close_process(h).unwrap();
    sim.close_compute_system(sys).unwrap();
    sim.assert_no_leaks();
}

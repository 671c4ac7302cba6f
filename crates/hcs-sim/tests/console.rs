//! Console processes on the host backend (`EmulateConsole`): a pseudo-terminal. Under a
//! supervisor the process has the terminal as stdin/stdout/stderr and as its controlling
//! terminal, in a session of its own; the caller gets the master as stdin and stdout and no
//! stderr; `ConsoleSize` at creation and the `ConsoleSize` modify set the window size; the
//! process dies with its system. Without a supervisor it still runs on the terminal.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use hcs::{Driver, HResult, NotificationKind, PipeReader, ProcessHandle, SystemHandle};
use hcs_schema::ProcessStatus;
use hcs_sim::{SimConfig, Simulator, SupervisorProgram};
use std::io::{Read, Write};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn supervised() -> SimConfig {
    SimConfig::default()
        .all_sync()
        .supervisor(SupervisorProgram::new(env!("CARGO_BIN_EXE_hcs-sim-supervisor")))
        .shutdown_grace(Duration::from_millis(300))
}

/// Process parameters of a console process.
fn console(command_line: &str, size: Option<[u16; 2]>) -> String {
    let mut v = serde_json::json!({
        "CommandLine": command_line,
        "EmulateConsole": true,
        "CreateStdInPipe": true,
        "CreateStdOutPipe": true,
        "CreateStdErrPipe": true,
    });
    if let Some(size) = size {
        v["ConsoleSize"] = serde_json::json!(size);
    }
    v.to_string()
}

/// Everything read from the terminal so far, fed by a reader thread.
struct Output {
    rx: Receiver<Vec<u8>>,
    seen: String,
}

impl Output {
    fn new(mut r: PipeReader) -> Output {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // The master reads EIO once the last slave descriptor is closed: the end.
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Output {
            rx,
            seen: String::new(),
        }
    }

    /// Waits (at most 5 s) until the output holds `want`; panics with what it holds otherwise.
    fn wait_for(&mut self, want: &str) {
        let deadline = Instant::now() + FIVE_SECONDS;
        while !self.seen.contains(want) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!("{want:?} not seen on the terminal; it shows {:?}", self.seen),
            }
        }
    }
}

/// Fields of `/proc/<pid>/stat` after the command name: ppid, pgrp, session, tty_nr.
fn stat(pid: u32) -> (u32, u32, u32, i64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = s[s.rfind(')').unwrap() + 1..].split_whitespace().collect();
    (
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
        f[4].parse().unwrap(),
    )
}

struct Sys {
    sim: Arc<Simulator>,
    /// Kept alive: the system callback delivers to it.
    _rec: Recorder,
    sys: SystemHandle,
    cb: hcs::CallbackHandle,
}

fn running(config: SimConfig, id: &str) -> Sys {
    let sim = Simulator::new(config);
    let rec = Recorder::new();
    let sys = sim
        .create_compute_system(id, &container("console"), rec.ctx())
        .unwrap()
        .value;
    let cb = sim.register_compute_system_callback(sys, rec.ctx()).unwrap();
    sim.start_compute_system(sys, "", rec.ctx()).unwrap();
    Sys {
        sim,
        _rec: rec,
        sys,
        cb,
    }
}

impl Sys {
    fn spawn(&self, p: &str) -> (ProcessHandle, hcs::ProcessInfo, Recorder, hcs::CallbackHandle) {
        let (h, info) = self.sim.create_process(self.sys, p).unwrap().value;
        let r = Recorder::new();
        let cb = self.sim.register_process_callback(h, r.ctx()).unwrap();
        (h, info, r, cb)
    }
    fn finish(self) {
        let _ = self.sim.terminate_compute_system(self.sys, "");
        self.sim.unregister_compute_system_callback(self.cb).unwrap();
        self.sim.close_compute_system(self.sys).unwrap();
        self.sim.assert_no_leaks();
    }
}

fn exit_of(r: &Recorder) -> u32 {
    let e = r
        .wait(NotificationKind::ProcessExited, FIVE_SECONDS)
        .expect("process exit");
    serde_json::from_str::<ProcessStatus>(e.payload.as_deref().unwrap())
        .unwrap()
        .exit_code
}

fn resize(sim: &Simulator, h: ProcessHandle, height: u16, width: u16) {
    let req = serde_json::json!({
        "Operation": "ConsoleSize",
        "ConsoleSize": {"Height": height, "Width": width},
    });
    sim.modify_process(h, &req.to_string()).unwrap();
}

/// The script each test runs: tty checks, the size, then (after a line on stdin) the size again.
const SCRIPT: &str = "sh -c \"test -t 0 && test -t 1 && test -t 2 && echo is-a-tty; \
                      echo size=$(stty size); read x; echo size=$(stty size); exit 5\"";

#[test]
fn a_console_process_runs_on_a_terminal_of_its_own_sized_and_resized() {
    let s = running(supervised(), "console-sup");
    let (h, mut info, r, cb) = s.spawn(&console(SCRIPT, Some([24, 80])));
    // The caller gets the master as stdin and stdout, and no stderr (as HCS does).
    assert!(info.stderr.is_none(), "a console process has no separate stderr");
    let mut out = Output::new(info.stdout.take().expect("stdout"));
    out.wait_for("is-a-tty");
    out.wait_for("size=24 80");
    // A session of its own (it leads it and its group), the terminal its controlling one, a
    // child of the system's supervisor.
    let sup = s.sim.supervisor_pid("console-sup").expect("a supervisor");
    let (ppid, pgrp, session, tty) = stat(info.pid);
    assert_eq!((ppid, pgrp, session), (sup, info.pid, info.pid));
    assert_ne!(tty, 0, "no controlling terminal");
    // Resize, then let the script look again.
    resize(&s.sim, h, 50, 132);
    info.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    out.wait_for("size=50 132");
    assert_eq!(exit_of(&r), 5);
    // A resize after the exit is refused as for any exited process; a resize of a process that
    // has no console changes nothing and is accepted (recorded), as before.
    let e = s
        .sim
        .modify_process(
            h,
            r#"{"Operation":"ConsoleSize","ConsoleSize":{"Height":1,"Width":1}}"#,
        )
        .unwrap_err();
    assert_ne!(e.code, HResult(0));
    s.sim.unregister_process_callback(cb).unwrap();
    s.sim.close_process(h).unwrap();
    let (h, _info, r, cb) = s.spawn(&params("sleep 30", false, false, false));
    resize(&s.sim, h, 10, 10);
    s.sim.terminate_process(h).unwrap();
    assert_eq!(exit_of(&r), 128 + 9);
    s.sim.unregister_process_callback(cb).unwrap();
    s.sim.close_process(h).unwrap();
    // A missing program fails the creation (ERROR_FILE_NOT_FOUND), as without a console.
    let e = s
        .sim
        .create_process(s.sys, &console("no-such-program-hcs-sim-console", None))
        .unwrap_err();
    assert_eq!(e.code, HResult(0x8007_0002));
    s.finish();
}

#[test]
fn a_console_process_and_its_children_die_with_their_system() {
    let s = running(supervised(), "console-contain");
    // The shell starts a background child in the same session and waits.
    let (h, mut info, r, cb) = s.spawn(&console("sh -c \"sleep 300 & echo child=$!; wait\"", None));
    let mut out = Output::new(info.stdout.take().expect("stdout"));
    out.wait_for("child=");
    out.wait_for("\n");
    let child: u32 = out.seen.split("child=").nth(1).unwrap().trim().parse().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{child}")).exists());
    let shell = info.pid;
    s.sim.terminate_compute_system(s.sys, "").unwrap();
    assert_eq!(exit_of(&r), 128 + 9);
    let dead = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| {
            st[st.rfind(')').unwrap() + 1..].trim_start().starts_with('Z')
        })
    };
    assert!(
        eventually(FIVE_SECONDS, || dead(shell) && dead(child)),
        "the console process or its child outlived the system"
    );
    drop(out);
    s.sim.unregister_process_callback(cb).unwrap();
    s.sim.close_process(h).unwrap();
    s.finish();
}

#[test]
fn without_a_supervisor_a_console_process_still_runs_on_a_sized_terminal() {
    let s = running(SimConfig::default().all_sync(), "console-direct");
    let (h, mut info, r, cb) = s.spawn(&console(SCRIPT, Some([30, 100])));
    assert!(info.stderr.is_none());
    let mut out = Output::new(info.stdout.take().expect("stdout"));
    out.wait_for("is-a-tty");
    out.wait_for("size=30 100");
    resize(&s.sim, h, 40, 120);
    info.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    out.wait_for("size=40 120");
    assert_eq!(exit_of(&r), 5);
    s.sim.unregister_process_callback(cb).unwrap();
    s.sim.close_process(h).unwrap();
    s.finish();
}

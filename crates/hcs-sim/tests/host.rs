//! The host process backend: real commands, pipes, exit codes, signals, pause = SIGSTOP,
//! statistics from /proc, graceful shutdown with SIGKILL escalation.

mod common;

use common::*;
use hcs::{Driver, HResult, NotificationKind, ProcessHandle, SystemHandle};
use hcs_schema::ProcessStatus;
use hcs_sim::{proc_state, SimConfig, Simulator};
use serde_json::Value;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Env {
    sim: Arc<Simulator>,
    rec: Recorder,
    sys: SystemHandle,
    cb: hcs::CallbackHandle,
}

fn running(config: SimConfig, id: &str) -> Env {
    let sim = Simulator::new(config.all_sync());
    let rec = Recorder::new();
    let sys = sim
        .create_compute_system(id, &container("host"), rec.ctx())
        .unwrap()
        .value;
    let cb = sim.register_compute_system_callback(sys, rec.ctx()).unwrap();
    sim.start_compute_system(sys, "", rec.ctx()).unwrap();
    Env { sim, rec, sys, cb }
}

impl Env {
    fn spawn(&self, p: &str) -> (ProcessHandle, hcs::ProcessInfo, Recorder, hcs::CallbackHandle) {
        let (h, info) = self.sim.create_process(self.sys, p).unwrap().value;
        let r = Recorder::new();
        let cb = self.sim.register_process_callback(h, r.ctx()).unwrap();
        (h, info, r, cb)
    }
    fn exit_of(&self, r: &Recorder) -> ProcessStatus {
        let e = r
            .wait(NotificationKind::ProcessExited, FIVE_SECONDS)
            .expect("process exit");
        serde_json::from_str(e.payload.as_deref().unwrap()).unwrap()
    }
    fn release(&self, h: ProcessHandle, cb: hcs::CallbackHandle) {
        self.sim.unregister_process_callback(cb).unwrap();
        self.sim.close_process(h).unwrap();
    }
    fn finish(self) {
        let _ = self.sim.terminate_compute_system(self.sys, "");
        self.sim.unregister_compute_system_callback(self.cb).unwrap();
        self.sim.close_compute_system(self.sys).unwrap();
        self.sim.assert_no_leaks();
    }
}

#[test]
fn exit_code_is_reported_in_notification_and_properties() {
    let env = running(SimConfig::default(), "exit");
    let (h, info, r, cb) = env.spawn(&params(r#"sh -c "exit 3""#, false, false, false));
    assert!(info.stdin.is_none() && info.stdout.is_none() && info.stderr.is_none());
    let st = env.exit_of(&r);
    assert_eq!((st.process_id, st.exited, st.exit_code), (info.pid, true, 3));
    let props: ProcessStatus =
        serde_json::from_str(&env.sim.get_process_properties(h).unwrap().value).unwrap();
    assert_eq!(props.exit_code, 3);
    env.release(h, cb);
    env.finish();
}

#[test]
fn with_zero_latency_an_exit_is_delivered_by_the_service_thread_that_reaped_it() {
    let env = running(SimConfig::default().latency(Duration::ZERO), "zero-latency");
    for code in [0, 7] {
        let (h, info, r, cb) = env.spawn(&params(&format!(r#"sh -c "exit {code}""#), false, false, false));
        let seen = r
            .wait(NotificationKind::ProcessExited, FIVE_SECONDS)
            .expect("process exit");
        // One hop: the thread that reaps the child is the one that dispatches the notification.
        assert_eq!(seen.thread_name.as_deref(), Some("hcs-sim-service"));
        let st: ProcessStatus = serde_json::from_str(seen.payload.as_deref().unwrap()).unwrap();
        assert_eq!((st.process_id, st.exit_code), (info.pid, code));
        env.release(h, cb);
    }
    assert_eq!(env.sim.service_threads(), 1);
    env.finish();
}

#[test]
fn tasks_and_exits_wake_the_service_thread_while_it_waits_for_a_child() {
    // A 1 s reap interval puts the safety cap of the wait at 400 s: only the wake-ups (a poke
    // for a new task, the child's exit) can end it within the test's timeouts.
    let sim = Simulator::new(SimConfig::default().reap_interval(Duration::from_secs(1)));
    let rec = Recorder::new();
    let sys = sim
        .create_compute_system("poke", &container("host"), rec.ctx())
        .unwrap()
        .value;
    rec.wait(NotificationKind::SystemCreateCompleted, FIVE_SECONDS)
        .expect("create completes");
    sim.start_compute_system(sys, "", rec.ctx()).unwrap();
    rec.wait(NotificationKind::SystemStartCompleted, FIVE_SECONDS)
        .expect("start completes");
    let cb = sim.register_compute_system_callback(sys, rec.ctx()).unwrap();
    let (h, _) = sim
        .create_process(sys, &params("sleep 30", false, false, false))
        .unwrap()
        .value;
    let r = Recorder::new();
    let pcb = sim.register_process_callback(h, r.ctx()).unwrap();
    std::thread::sleep(Duration::from_millis(20)); // the thread now waits on the child
    let other = sim
        .create_compute_system("poke-2", &container("host"), rec.ctx())
        .unwrap()
        .value;
    assert!(
        rec.wait_nth(NotificationKind::SystemCreateCompleted, 2, FIVE_SECONDS)
            .is_some(),
        "a task queued during the wait is run"
    );
    std::thread::sleep(Duration::from_millis(20));
    assert!(sim.signal_process(h, r#"{"Signal":9}"#).is_ok());
    let seen = r
        .wait(NotificationKind::ProcessExited, FIVE_SECONDS)
        .expect("the exit is seen");
    let st: ProcessStatus = serde_json::from_str(seen.payload.as_deref().unwrap()).unwrap();
    assert_eq!(st.exit_code, 137);
    sim.unregister_process_callback(pcb).unwrap();
    sim.close_process(h).unwrap();
    sim.terminate_compute_system(sys, "").unwrap();
    sim.unregister_compute_system_callback(cb).unwrap();
    sim.close_compute_system(sys).unwrap();
    sim.close_compute_system(other).unwrap();
    sim.assert_no_leaks();
}

#[test]
fn stdout_and_stderr_are_captured_through_pipes() {
    let env = running(SimConfig::default(), "out");
    let (h, mut info, r, cb) = env.spawn(&params(
        r#"sh -c "echo hello; echo oops 1>&2""#,
        false,
        true,
        true,
    ));
    let mut out = String::new();
    info.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut err = String::new();
    info.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(out, "hello\n");
    assert_eq!(err, "oops\n");
    assert_eq!(env.exit_of(&r).exit_code, 0);
    env.release(h, cb);
    env.finish();
}

#[test]
fn stdin_round_trips_through_cat_and_closing_it_ends_the_process() {
    let env = running(SimConfig::default(), "cat");
    let (h, mut info, r, cb) = env.spawn(&params("cat", true, true, false));
    let mut stdin = info.stdin.take().unwrap();
    stdin.write_all(b"ping\npong\n").unwrap();
    drop(stdin);
    let mut out = String::new();
    info.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(out, "ping\npong\n");
    assert_eq!(env.exit_of(&r).exit_code, 0);
    env.release(h, cb);
    env.finish();
}

#[test]
fn working_directory_environment_and_quoted_arguments_are_honoured() {
    let env = running(SimConfig::default(), "env");
    let p = serde_json::json!({
        "CommandLine": r#"sh -c "printf '%s|%s|%s' \"$PWD\" \"$SIM_VAR\" \"$0\"" "a b""#,
        "WorkingDirectory": "/tmp",
        "Environment": {"SIM_VAR": "x y"},
        "CreateStdOutPipe": true,
    })
    .to_string();
    let (h, mut info, r, cb) = env.spawn(&p);
    let mut out = String::new();
    info.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(out, "/tmp|x y|a b");
    env.exit_of(&r);
    env.release(h, cb);
    env.finish();
}

#[test]
fn missing_command_fails_with_file_not_found_and_a_result_document() {
    let env = running(SimConfig::default(), "missing");
    let err = env
        .sim
        .create_process(env.sys, &params("/no/such/program --flag", false, false, false))
        .unwrap_err();
    assert_eq!(err.code, HResult(0x8007_0002));
    let doc = hcs_schema::ResultDocument::parse(err.document.as_deref().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(doc.error as u32, 0x8007_0002);
    assert!(doc.error_events[0].message.contains("/no/such/program"));
    let bad_dir = serde_json::json!({"CommandLine": "true", "WorkingDirectory": "/no/such/dir"}).to_string();
    assert_eq!(
        env.sim.create_process(env.sys, &bad_dir).unwrap_err().code,
        HResult(0x8007_010B)
    );
    assert_eq!(env.sim.handle_counts().processes, 0);
    env.finish();
}

#[test]
fn signal_delivers_the_signal_and_exited_process_reports_gone() {
    let env = running(SimConfig::default(), "sig");
    let (h, _info, r, cb) = env.spawn(&params("sleep 30", false, false, false));
    env.sim.signal_process(h, r#"{"Signal":15}"#).unwrap();
    assert_eq!(env.exit_of(&r).exit_code, 128 + 15);
    // V1: signalling an exited process is invalid-state (hcsshim's "already gone" family)
    assert_eq!(
        env.sim.signal_process(h, r#"{"Signal":15}"#).unwrap_err().code,
        HResult(0xC037_0105)
    );
    assert_eq!(
        env.sim.terminate_process(h).unwrap_err().code,
        HResult::E_ACCESSDENIED
    );
    assert_eq!(
        env.sim.signal_process(h, r#"{"Signal":99}"#).unwrap_err().code,
        HResult::E_INVALIDARG
    );
    env.release(h, cb);
    // CtrlC (0) arrives as SIGINT
    let (h, _info, r, cb) = env.spawn(&params("sleep 30", false, false, false));
    env.sim.signal_process(h, r#"{"Signal":0}"#).unwrap();
    assert_eq!(env.exit_of(&r).exit_code, 128 + 2);
    env.release(h, cb);
    // terminate is SIGKILL
    let (h, _info, r, cb) = env.spawn(&params("sleep 30", false, false, false));
    env.sim.terminate_process(h).unwrap();
    assert_eq!(env.exit_of(&r).exit_code, 128 + 9);
    env.release(h, cb);
    env.finish();
}

#[test]
fn pause_stops_processes_and_resume_continues_them() {
    let env = running(SimConfig::default(), "pause");
    let (h, info, r, cb) = env.spawn(&params("sleep 30", false, false, false));
    env.sim.pause_compute_system(env.sys, "", env.rec.ctx()).unwrap();
    assert!(
        eventually(FIVE_SECONDS, || proc_state(info.pid) == Some('T')),
        "paused process is stopped"
    );
    env.sim.resume_compute_system(env.sys, "", env.rec.ctx()).unwrap();
    assert!(
        eventually(FIVE_SECONDS, || matches!(proc_state(info.pid), Some('S' | 'R'))),
        "resumed process runs"
    );
    env.sim.terminate_process(h).unwrap();
    env.exit_of(&r);
    env.release(h, cb);
    env.finish();
}

#[test]
fn statistics_and_process_list_come_from_real_processes() {
    let env = running(SimConfig::default(), "stats");
    let (h, info, r, cb) = env.spawn(&params(
        r#"sh -c "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 30""#,
        false,
        false,
        false,
    ));
    assert!(eventually(FIVE_SECONDS, || {
        let v: Value = serde_json::from_str(
            &env.sim
                .get_compute_system_properties(env.sys, r#"{"PropertyTypes":["Statistics"]}"#)
                .unwrap()
                .value,
        )
        .unwrap();
        v["Statistics"]["Processor"]["TotalRuntime100ns"]
            .as_u64()
            .unwrap()
            > 0
            && v["Statistics"]["Memory"]["MemoryUsageCommitBytes"]
                .as_u64()
                .unwrap()
                > 0
    }));
    let v: Value = serde_json::from_str(
        &env.sim
            .get_compute_system_properties(env.sys, r#"{"PropertyTypes":["ProcessList"]}"#)
            .unwrap()
            .value,
    )
    .unwrap();
    let list = v["ProcessList"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["ProcessId"], info.pid);
    assert_eq!(list[0]["ImageName"], "sh");
    env.sim.terminate_process(h).unwrap();
    env.exit_of(&r);
    env.release(h, cb);
    env.finish();
}

#[test]
fn graceful_shutdown_sends_sigterm_and_escalates_to_sigkill_after_the_grace_period() {
    let env = running(
        SimConfig::default().shutdown_grace(Duration::from_millis(300)),
        "grace",
    );
    let (h1, _, r1, c1) = env.spawn(&params("sleep 30", false, false, false));
    let (h2, mut info2, r2, c2) = env.spawn(&params(
        r#"sh -c "trap '' TERM; echo ready; while :; do sleep 0.05; done""#,
        false,
        true,
        false,
    ));
    let mut ready = [0u8; 6];
    info2.stdout.take().unwrap().read_exact(&mut ready).unwrap();
    let t = Instant::now();
    env.sim.shutdown_compute_system(env.sys, "").unwrap();
    assert_eq!(
        env.exit_of(&r1).exit_code,
        128 + 15,
        "SIGTERM ends a normal process"
    );
    assert_eq!(
        env.exit_of(&r2).exit_code,
        128 + 9,
        "SIGKILL ends one that ignores SIGTERM"
    );
    assert!(t.elapsed() >= Duration::from_millis(250));
    let e = env
        .rec
        .wait(NotificationKind::SystemExited, FIVE_SECONDS)
        .unwrap();
    let s: hcs_schema::SystemExitStatus = serde_json::from_str(e.payload.as_deref().unwrap()).unwrap();
    assert_eq!(s.exit_type, Some(hcs_schema::ExitType::GracefulExit));
    env.release(h1, c1);
    env.release(h2, c2);
    env.finish();
}

#[test]
fn dropping_the_simulator_kills_its_host_processes() {
    let env = running(SimConfig::default(), "drop");
    let (_h, info, _r, _cb) = env.spawn(&params("sleep 30", false, false, false));
    assert_eq!(env.sim.running_host_processes(), 1);
    let pid = info.pid;
    drop(env);
    assert!(
        eventually(FIVE_SECONDS, || proc_state(pid).is_none()),
        "child {pid} still alive"
    );
}

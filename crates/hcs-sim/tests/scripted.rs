//! The scripted backend: deterministic pids, output, exit codes and timing.

mod common;

use common::*;
use hcs::{Driver, HResult, NotificationKind};
use hcs_sim::{Script, ScriptedProcess, SimConfig, Simulator};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn script() -> Script {
    Script::new()
        .on(
            "cmd /c echo hi",
            ScriptedProcess::exits(0).stdout("hi\r\n").stderr("warn\r\n"),
        )
        .on("cmd /c exit 3", ScriptedProcess::exits(3))
        .on("server", ScriptedProcess::forever())
        .on("stubborn", ScriptedProcess::forever().ignoring_signals())
        .on(
            "slow",
            ScriptedProcess::exits(5).runtime(Duration::from_millis(150)),
        )
}

/// Runs a fixed scenario and returns what a client observes.
fn scenario() -> Vec<String> {
    let sim = Simulator::new(SimConfig::default().scripted(script()).all_sync());
    let rec = Recorder::new();
    let sys = sim
        .create_compute_system("s", &container("o"), rec.ctx())
        .unwrap()
        .value;
    sim.start_compute_system(sys, "", rec.ctx()).unwrap();
    let mut out = Vec::new();
    for cmd in ["cmd /c echo hi", "cmd /c exit 3", "cmd /c echo hi"] {
        let (h, mut info) = sim
            .create_process(sys, &params(cmd, true, true, true))
            .unwrap()
            .value;
        let r = Recorder::new();
        let cb = sim.register_process_callback(h, r.ctx()).unwrap();
        let mut stdout = String::new();
        info.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        let mut stderr = String::new();
        info.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        let e = r.wait(NotificationKind::ProcessExited, FIVE_SECONDS).unwrap();
        out.push(format!(
            "{} {stdout:?} {stderr:?} {}",
            info.pid,
            e.payload.unwrap()
        ));
        sim.unregister_process_callback(cb).unwrap();
        sim.close_process(h).unwrap();
    }
    sim.terminate_compute_system(sys, "").unwrap();
    sim.close_compute_system(sys).unwrap();
    sim.assert_no_leaks();
    out
}

#[test]
fn the_same_scenario_gives_the_same_observations_every_time() {
    let first = scenario();
    assert_eq!(first.len(), 3);
    assert!(first[0].contains(r#""hi\r\n" "warn\r\n""#), "{first:?}");
    assert!(first[1].contains(r#""ExitCode":3"#), "{first:?}");
    for _ in 0..3 {
        assert_eq!(scenario(), first);
    }
}

#[test]
fn unknown_command_without_default_is_file_not_found() {
    let sim = Simulator::new(SimConfig::default().scripted(script()).all_sync());
    let rec = Recorder::new();
    let sys = sim
        .create_compute_system("s", &container("o"), rec.ctx())
        .unwrap()
        .value;
    sim.start_compute_system(sys, "", rec.ctx()).unwrap();
    let err = sim
        .create_process(sys, &params("nope.exe", false, false, false))
        .unwrap_err();
    assert_eq!(err.code, HResult(0x8007_0002));
    assert!(err.document.is_some());
    sim.close_compute_system(sys).unwrap();
    sim.assert_no_leaks();
}

#[test]
fn runtime_is_honoured_and_pause_freezes_it() {
    let sim = Simulator::new(SimConfig::default().scripted(script()).all_sync());
    let rec = Recorder::new();
    let sys = sim
        .create_compute_system("s", &container("o"), rec.ctx())
        .unwrap()
        .value;
    sim.start_compute_system(sys, "", rec.ctx()).unwrap();
    let t = Instant::now();
    let (h, _) = sim
        .create_process(sys, &params("slow", false, false, false))
        .unwrap()
        .value;
    let r = Recorder::new();
    let cb = sim.register_process_callback(h, r.ctx()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    sim.pause_compute_system(sys, "", rec.ctx()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        r.count(NotificationKind::ProcessExited),
        0,
        "a paused process does not finish"
    );
    sim.resume_compute_system(sys, "", rec.ctx()).unwrap();
    let e = r.wait(NotificationKind::ProcessExited, FIVE_SECONDS).unwrap();
    assert!(e.payload.unwrap().contains(r#""ExitCode":5"#));
    assert!(t.elapsed() >= Duration::from_millis(340), "{:?}", t.elapsed());
    sim.unregister_process_callback(cb).unwrap();
    sim.close_process(h).unwrap();
    sim.terminate_compute_system(sys, "").unwrap();
    sim.close_compute_system(sys).unwrap();
    sim.assert_no_leaks();
}

#[test]
fn signals_end_scripted_processes_unless_ignored_and_stdin_is_recorded() {
    let sim = Simulator::new(
        SimConfig::default()
            .scripted(script())
            .all_sync()
            .shutdown_grace(Duration::from_millis(100)),
    );
    let rec = Recorder::new();
    let sys = sim
        .create_compute_system("s", &container("o"), rec.ctx())
        .unwrap()
        .value;
    let scb = sim.register_compute_system_callback(sys, rec.ctx()).unwrap();
    sim.start_compute_system(sys, "", rec.ctx()).unwrap();
    let (a, mut ia) = sim
        .create_process(sys, &params("server", true, false, false))
        .unwrap()
        .value;
    ia.stdin.take().unwrap().write_all(b"input").unwrap();
    assert_eq!(sim.scripted_stdin("s", ia.pid).unwrap(), b"input");
    let (b, ib) = sim
        .create_process(sys, &params("stubborn", false, false, false))
        .unwrap()
        .value;
    assert_ne!(ia.pid, ib.pid);
    let (ra, rb) = (Recorder::new(), Recorder::new());
    let ca = sim.register_process_callback(a, ra.ctx()).unwrap();
    let cb = sim.register_process_callback(b, rb.ctx()).unwrap();
    sim.signal_process(b, r#"{"Signal":15}"#).unwrap();
    sim.shutdown_compute_system(sys, "").unwrap();
    let ea = ra.wait(NotificationKind::ProcessExited, FIVE_SECONDS).unwrap();
    assert!(ea.payload.unwrap().contains(r#""ExitCode":143"#));
    let eb = rb.wait(NotificationKind::ProcessExited, FIVE_SECONDS).unwrap();
    assert!(
        eb.payload.unwrap().contains(r#""ExitCode":137"#),
        "escalated to SIGKILL"
    );
    assert!(rec.wait(NotificationKind::SystemExited, FIVE_SECONDS).is_some());
    for (h, c) in [(a, ca), (b, cb)] {
        sim.unregister_process_callback(c).unwrap();
        sim.close_process(h).unwrap();
    }
    sim.unregister_compute_system_callback(scb).unwrap();
    sim.close_compute_system(sys).unwrap();
    sim.assert_no_leaks();
}

#[test]
fn modify_process_requests_are_recorded() {
    let sim = Simulator::new(SimConfig::default().scripted(script()).all_sync());
    let rec = Recorder::new();
    let sys = sim
        .create_compute_system("s", &container("o"), rec.ctx())
        .unwrap()
        .value;
    sim.start_compute_system(sys, "", rec.ctx()).unwrap();
    let (h, _) = sim
        .create_process(sys, &params("server", true, false, false))
        .unwrap()
        .value;
    let close = serde_json::to_string(&hcs_schema::ProcessModifyRequest::close_stdin()).unwrap();
    sim.modify_process(h, &close).unwrap();
    assert_eq!(
        sim.modify_process(h, r#"{"Operation":"Explode"}"#)
            .unwrap_err()
            .code,
        HResult::E_INVALIDARG
    );
    assert_eq!(sim.modify_process(h, "{").unwrap_err().code, HResult(0xC037_010D));
    assert_eq!(
        sim.system_info("s").unwrap().processes[0].modify_requests,
        [close]
    );
    sim.close_process(h).unwrap();
    sim.terminate_compute_system(sys, "").unwrap();
    sim.close_compute_system(sys).unwrap();
    sim.assert_no_leaks();
}

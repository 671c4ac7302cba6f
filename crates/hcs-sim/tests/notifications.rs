//! Notifications: pending completions from the simulator's thread, synchronous operations, exit
//! types and statuses, delivery to every handle's registration, unregister draining.

mod common;

use common::*;
use hcs::notify::Subscription;
use hcs::{ApiGeneration, Driver, HResult, Method, NotificationKind};
use hcs_schema::{ExitType, SystemExitStatus};
use hcs_sim::{Script, ScriptedProcess, SimConfig, Simulator};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn scripted() -> SimConfig {
    SimConfig::default().scripted(Script::new().otherwise(ScriptedProcess::forever()))
}

fn exit_status(seen: &Seen) -> SystemExitStatus {
    serde_json::from_str(seen.payload.as_deref().expect("SystemExited carries a payload")).unwrap()
}

#[test]
fn pending_create_and_start_complete_later_from_a_simulator_thread() {
    let sim = Simulator::new(SimConfig::default().latency(Duration::from_millis(20)));
    let rec = Recorder::new();
    let started = Instant::now();
    let created = sim
        .create_compute_system("p", &container("o"), rec.ctx())
        .unwrap();
    assert!(created.pending, "V1 default: create answers pending");
    assert_eq!(
        rec.count(NotificationKind::SystemCreateCompleted),
        0,
        "not before the latency"
    );
    let done = rec
        .wait(NotificationKind::SystemCreateCompleted, FIVE_SECONDS)
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(20));
    assert_ne!(done.thread, std::thread::current().id());
    assert_eq!(done.status, HResult::S_OK);
    let start = sim.start_compute_system(created.value, "", rec.ctx()).unwrap();
    assert!(start.pending);
    let done = rec
        .wait(NotificationKind::SystemStartCompleted, FIVE_SECONDS)
        .unwrap();
    assert_ne!(done.thread, std::thread::current().id());
    // pause/resume/save complete with their own kinds
    assert!(
        sim.pause_compute_system(created.value, "", rec.ctx())
            .unwrap()
            .pending
    );
    assert!(rec
        .wait(NotificationKind::SystemPauseCompleted, FIVE_SECONDS)
        .is_some());
    assert!(
        sim.resume_compute_system(created.value, "", rec.ctx())
            .unwrap()
            .pending
    );
    assert!(rec
        .wait(NotificationKind::SystemResumeCompleted, FIVE_SECONDS)
        .is_some());
    assert!(
        sim.save_compute_system(created.value, "", rec.ctx())
            .unwrap()
            .pending
    );
    assert!(rec
        .wait(NotificationKind::SystemSaveCompleted, FIVE_SECONDS)
        .is_some());
    assert!(sim.terminate_compute_system(created.value, "").unwrap().pending);
    sim.close_compute_system(created.value).unwrap();
    sim.assert_no_leaks();
}

#[test]
fn sync_ops_answer_done_without_completion() {
    let sim = Simulator::new(SimConfig::default().sync(Method::StartComputeSystem));
    let rec = Recorder::new();
    let h = sim
        .create_compute_system("s", &container("o"), rec.ctx())
        .unwrap();
    assert!(h.pending);
    let start = sim.start_compute_system(h.value, "", rec.ctx()).unwrap();
    assert!(!start.pending);
    assert!(rec
        .wait(NotificationKind::SystemCreateCompleted, FIVE_SECONDS)
        .is_some());
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(rec.count(NotificationKind::SystemStartCompleted), 0);
    sim.terminate_compute_system(h.value, "").unwrap();
    sim.close_compute_system(h.value).unwrap();
    sim.assert_no_leaks();
}

fn stop_and_observe(generation: ApiGeneration, how: &str) -> Vec<(Seen, Seen)> {
    let sim = Simulator::new(scripted().generation(generation).all_sync());
    let (r1, r2) = (Recorder::new(), Recorder::new());
    let h1 = sim
        .create_compute_system("x", &container("o"), r1.ctx())
        .unwrap()
        .value;
    let h2 = sim.open_compute_system("x").unwrap().value;
    let c1 = sim.register_compute_system_callback(h1, r1.ctx()).unwrap();
    let c2 = sim.register_compute_system_callback(h2, r2.ctx()).unwrap();
    sim.start_compute_system(h1, "", r1.ctx()).unwrap();
    let (p, _) = sim
        .create_process(h1, &params("svc", false, false, false))
        .unwrap()
        .value;
    let pr = Recorder::new();
    let pc = sim.register_process_callback(p, pr.ctx()).unwrap();
    match how {
        "shutdown" => drop(sim.shutdown_compute_system(h1, "").unwrap()),
        "terminate" => drop(sim.terminate_compute_system(h2, "").unwrap()),
        "crash" => sim.crash("x").unwrap(),
        _ => unreachable!(),
    }
    let e1 = r1
        .wait(NotificationKind::SystemExited, FIVE_SECONDS)
        .expect("handle 1 sees the exit");
    let e2 = r2
        .wait(NotificationKind::SystemExited, FIVE_SECONDS)
        .expect("handle 2 sees the exit");
    let pe = pr
        .wait(NotificationKind::ProcessExited, FIVE_SECONDS)
        .expect("the process exits with its system");
    let ps: hcs_schema::ProcessStatus = serde_json::from_str(pe.payload.as_deref().unwrap()).unwrap();
    assert!(ps.exited);
    sim.unregister_process_callback(pc).unwrap();
    sim.close_process(p).unwrap();
    for (c, h) in [(c1, h1), (c2, h2)] {
        sim.unregister_compute_system_callback(c).unwrap();
        sim.close_compute_system(h).unwrap();
    }
    sim.assert_no_leaks();
    vec![(e1, e2)]
}

#[test]
fn shutdown_is_graceful_exit_with_status_zero_on_every_registration() {
    for (e1, e2) in stop_and_observe(ApiGeneration::V1, "shutdown") {
        for e in [e1, e2] {
            assert_eq!(e.status, HResult::S_OK);
            let s = exit_status(&e);
            assert_eq!((s.status, s.exit_type), (0, Some(ExitType::GracefulExit)));
        }
    }
}

#[test]
fn terminate_is_forced_exit() {
    for (e1, e2) in stop_and_observe(ApiGeneration::V1, "terminate") {
        for e in [e1, e2] {
            let s = exit_status(&e);
            assert_eq!((s.status, s.exit_type), (0, Some(ExitType::ForcedExit)));
        }
    }
}

#[test]
fn crash_is_unexpected_exit_with_unexpected_exit_status_in_both_encodings() {
    // (generation, notification status, payload Status): V1 passes the crash status as the
    // notification's status; V2 (computecore.dll events carry no status) dispatches S_OK and
    // has the status only in the payload.
    for (generation, status, code) in [
        (ApiGeneration::V1, 0xC037_0106u32, 0xC037_0106u32),
        (ApiGeneration::V2, 0, 0x8037_0106),
    ] {
        for (e1, e2) in stop_and_observe(generation, "crash") {
            for e in [e1, e2] {
                assert_eq!(e.status, HResult(status));
                let s = exit_status(&e);
                assert_eq!(
                    (s.status as u32, s.exit_type),
                    (code, Some(ExitType::UnexpectedExit))
                );
            }
        }
    }
}

#[test]
fn registering_on_a_stopped_system_still_reports_the_exit() {
    let sim = Simulator::new(SimConfig::default().all_sync());
    let rec = Recorder::new();
    let h = sim
        .create_compute_system("z", &container("o"), rec.ctx())
        .unwrap()
        .value;
    sim.terminate_compute_system(h, "").unwrap();
    let cb = sim.register_compute_system_callback(h, rec.ctx()).unwrap();
    let e = rec.wait(NotificationKind::SystemExited, FIVE_SECONDS).unwrap();
    assert_eq!(exit_status(&e).exit_type, Some(ExitType::ForcedExit));
    sim.unregister_compute_system_callback(cb).unwrap();
    sim.close_compute_system(h).unwrap();
    sim.assert_no_leaks();
}

#[test]
fn unregister_waits_for_a_running_callback_and_none_arrives_after_it_returns() {
    let sim = Simulator::new(SimConfig::default().all_sync());
    let entered = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let (e2, f2, c2) = (entered.clone(), finished.clone(), calls.clone());
    let sub = Subscription::new(move |kind, _, _| {
        if kind == NotificationKind::SystemExited {
            c2.fetch_add(1, Ordering::SeqCst);
            e2.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(150));
            f2.store(true, Ordering::SeqCst);
        }
    });
    let h = sim
        .create_compute_system("u", &container("o"), sub.context())
        .unwrap()
        .value;
    let cb = sim.register_compute_system_callback(h, sub.context()).unwrap();
    sim.terminate_compute_system(h, "").unwrap();
    assert!(eventually(FIVE_SECONDS, || entered.load(Ordering::SeqCst)));
    let t = Instant::now();
    sim.unregister_compute_system_callback(cb).unwrap();
    assert!(
        finished.load(Ordering::SeqCst),
        "unregister returned while the callback was running"
    );
    assert!(t.elapsed() >= Duration::from_millis(50));
    // a later exit-like event (registering again would be a new registration) never reaches it
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(sim.handle_counts().callbacks, 0);
    sim.close_compute_system(h).unwrap();
    sim.assert_no_leaks();
}

#[test]
fn notifications_queued_for_an_unregistered_registration_are_not_delivered() {
    let sim = Simulator::new(SimConfig::default().all_sync().latency(Duration::from_millis(40)));
    let rec = Recorder::new();
    let h = sim
        .create_compute_system("q", &container("o"), rec.ctx())
        .unwrap()
        .value;
    let cb = sim.register_compute_system_callback(h, rec.ctx()).unwrap();
    sim.terminate_compute_system(h, "").unwrap(); // SystemExited queued for +40 ms
    sim.unregister_compute_system_callback(cb).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(rec.count(NotificationKind::SystemExited), 0);
    sim.close_compute_system(h).unwrap();
    sim.assert_no_leaks();
}

#[test]
fn closing_a_handle_drops_its_registrations() {
    let sim = Simulator::new(SimConfig::default().all_sync());
    let rec = Recorder::new();
    let h = sim
        .create_compute_system("r", &container("o"), rec.ctx())
        .unwrap()
        .value;
    let h2 = sim.open_compute_system("r").unwrap().value;
    let cb = sim.register_compute_system_callback(h2, rec.ctx()).unwrap();
    assert_eq!(sim.handle_counts().callbacks, 1);
    sim.close_compute_system(h2).unwrap();
    assert_eq!(sim.handle_counts().callbacks, 0);
    assert_eq!(
        sim.unregister_compute_system_callback(cb).unwrap_err().code,
        HResult::E_HANDLE
    );
    sim.close_compute_system(h).unwrap();
    sim.assert_no_leaks();
}

#[test]
fn process_exit_goes_to_every_process_registration_with_a_process_status() {
    let sim = Simulator::new(SimConfig::default().all_sync().scripted(Script::new().on(
        "job",
        ScriptedProcess::exits(7).runtime(Duration::from_millis(30)),
    )));
    let rec = Recorder::new();
    let h = sim
        .create_compute_system("p", &container("o"), rec.ctx())
        .unwrap()
        .value;
    sim.start_compute_system(h, "", rec.ctx()).unwrap();
    let (p, info) = sim
        .create_process(h, &params("job", false, false, false))
        .unwrap()
        .value;
    let p2 = sim.open_process(h, info.pid).unwrap().value;
    let (ra, rb) = (Recorder::new(), Recorder::new());
    let ca = sim.register_process_callback(p, ra.ctx()).unwrap();
    let cb = sim.register_process_callback(p2, rb.ctx()).unwrap();
    for r in [&ra, &rb] {
        let e = r.wait(NotificationKind::ProcessExited, FIVE_SECONDS).unwrap();
        let s: hcs_schema::ProcessStatus = serde_json::from_str(e.payload.as_deref().unwrap()).unwrap();
        assert_eq!(
            s,
            hcs_schema::ProcessStatus {
                process_id: info.pid,
                exited: true,
                exit_code: 7,
                last_wait_result: 0
            }
        );
    }
    // V1 reads the exit code through the properties query
    let props: hcs_schema::ProcessStatus =
        serde_json::from_str(&sim.get_process_properties(p).unwrap().value).unwrap();
    assert_eq!(props.exit_code, 7);
    assert!(props.exited);
    // a system registration never sees ProcessExited
    assert_eq!(rec.count(NotificationKind::ProcessExited), 0);
    sim.unregister_process_callback(ca).unwrap();
    sim.unregister_process_callback(cb).unwrap();
    sim.close_process(p).unwrap();
    sim.close_process(p2).unwrap();
    sim.terminate_compute_system(h, "").unwrap();
    sim.close_compute_system(h).unwrap();
    sim.assert_no_leaks();
}

/// `inline_deliveries` (what `hcs-simd` runs with): a zero-latency notification a call makes
/// is delivered on the calling thread before the call returns; without it (the default), by
/// the simulator's service thread. Delays still go through the service thread, and order is
/// kept either way (the process's exit, then its system's).
#[test]
fn inline_deliveries_run_a_calls_zero_latency_notifications_on_its_thread_before_it_returns() {
    for inline in [true, false] {
        let sim = Simulator::new(
            scripted()
                .all_sync()
                .latency(Duration::ZERO)
                .inline_deliveries(inline),
        );
        let (sr, pr) = (Recorder::new(), Recorder::new());
        let h = sim
            .create_compute_system("i", &container("o"), sr.ctx())
            .unwrap()
            .value;
        let cb = sim.register_compute_system_callback(h, sr.ctx()).unwrap();
        sim.start_compute_system(h, "", sr.ctx()).unwrap();
        let (p, _) = sim
            .create_process(h, &params("svc", false, false, false))
            .unwrap()
            .value;
        let pc = sim.register_process_callback(p, pr.ctx()).unwrap();
        sim.terminate_compute_system(h, "").unwrap();
        if inline {
            let (pe, se) = (pr.events(), sr.events());
            assert_eq!(
                pe.len(),
                1,
                "the process's exit was delivered before terminate returned"
            );
            assert_eq!(
                se.len(),
                1,
                "the system's exit was delivered before terminate returned"
            );
            assert_eq!(pe[0].kind, NotificationKind::ProcessExited);
            assert_eq!(se[0].kind, NotificationKind::SystemExited);
            for e in pe.iter().chain(&se) {
                assert_eq!(
                    e.thread,
                    std::thread::current().id(),
                    "{:?} on the caller's thread",
                    e.kind
                );
            }
        } else {
            let se = sr
                .wait(NotificationKind::SystemExited, FIVE_SECONDS)
                .expect("the system's exit");
            assert_ne!(se.thread, std::thread::current().id(), "from the service thread");
            assert!(pr.wait(NotificationKind::ProcessExited, FIVE_SECONDS).is_some());
        }
        sim.unregister_process_callback(pc).unwrap();
        sim.close_process(p).unwrap();
        sim.unregister_compute_system_callback(cb).unwrap();
        sim.close_compute_system(h).unwrap();
        sim.assert_no_leaks();
    }
}

//! No thread per system: thousands of idle systems cost memory, not threads, and the one
//! service thread also reaps host processes. (Its own test binary, so no other test's threads
//! are counted.)

mod common;

use common::*;
use hcs::Driver;
use hcs_sim::{SimConfig, Simulator};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn two_thousand_idle_systems_add_no_threads() {
    let sim = Simulator::new(SimConfig::default());
    let rec = Recorder::new();
    // Warm up: one system starts the service thread.
    let first = sim
        .create_compute_system("warm", &container("o"), rec.ctx())
        .unwrap()
        .value;
    assert!(rec
        .wait(hcs::NotificationKind::SystemCreateCompleted, FIVE_SECONDS)
        .is_some());
    let baseline = threads();
    let mut handles = Vec::new();
    for i in 0..2000 {
        let h = sim
            .create_compute_system(&format!("idle-{i}"), &container("o"), rec.ctx())
            .unwrap();
        assert!(h.pending);
        sim.start_compute_system(h.value, "", rec.ctx()).unwrap();
        handles.push(h.value);
    }
    assert!(
        rec.wait_nth(hcs::NotificationKind::SystemStartCompleted, 2000, FIVE_SECONDS)
            .is_some(),
        "every start completed"
    );
    assert_eq!(threads(), baseline, "idle systems must not add threads");
    assert_eq!(sim.service_threads(), 1, "one service thread for every system");
    // The first host process adds no thread either: its exit is reaped and delivered by the
    // same service thread that delivered the completions.
    let started = rec
        .wait(hcs::NotificationKind::SystemStartCompleted, FIVE_SECONDS)
        .unwrap();
    let (proc, _) = sim
        .create_process(handles[0], &params("sh -c \"exit 3\"", false, false, false))
        .unwrap()
        .value;
    let prec = Recorder::new();
    let pcb = sim.register_process_callback(proc, prec.ctx()).unwrap();
    let exited = prec
        .wait(hcs::NotificationKind::ProcessExited, FIVE_SECONDS)
        .expect("process exit");
    let status: hcs_schema::ProcessStatus = serde_json::from_str(&exited.payload.unwrap()).unwrap();
    assert_eq!(status.exit_code, 3);
    assert_eq!(
        exited.thread, started.thread,
        "exits come from the service thread"
    );
    assert_eq!(exited.thread_name.as_deref(), Some("hcs-sim-service"));
    assert_eq!(threads(), baseline, "host processes must not add threads");
    assert_eq!(sim.service_threads(), 1, "no reaper thread");
    sim.unregister_process_callback(pcb).unwrap();
    sim.close_process(proc).unwrap();
    assert_eq!(sim.live_systems().len(), 2001);
    for h in handles {
        sim.close_compute_system(h).unwrap();
    }
    sim.close_compute_system(first).unwrap();
    sim.assert_no_leaks();
}

//! No thread per system: thousands of idle systems cost memory, not threads. (Its own test
//! binary, so no other test's threads are counted.)

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
    // Warm up: one system starts the scheduler thread.
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
    assert_eq!(
        sim.service_threads(),
        1,
        "only the scheduler; the reaper starts with the first host process"
    );
    assert_eq!(sim.live_systems().len(), 2001);
    for h in handles {
        sim.close_compute_system(h).unwrap();
    }
    sim.close_compute_system(first).unwrap();
    sim.assert_no_leaks();
}

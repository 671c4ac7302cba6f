//! Handle and registration accounting, and leak reports.

mod common;

use common::*;
use hcs::Driver;
use hcs_sim::{HandleCounts, SimConfig, Simulator};

#[test]
fn counts_follow_every_open_and_close_and_return_to_zero() {
    let sim = Simulator::new(SimConfig::default().all_sync());
    let rec = Recorder::new();
    assert_eq!(sim.handle_counts(), HandleCounts::default());
    let h = sim
        .create_compute_system("a", &container("o"), rec.ctx())
        .unwrap()
        .value;
    let h2 = sim.open_compute_system("a").unwrap().value;
    let cb = sim.register_compute_system_callback(h, rec.ctx()).unwrap();
    sim.start_compute_system(h, "", rec.ctx()).unwrap();
    let (p, info) = sim
        .create_process(h, &params("sleep 30", true, true, true))
        .unwrap()
        .value;
    let p2 = sim.open_process(h2, info.pid).unwrap().value;
    let pcb = sim.register_process_callback(p2, rec.ctx()).unwrap();
    assert_eq!(
        sim.handle_counts(),
        HandleCounts {
            systems: 2,
            processes: 2,
            callbacks: 2
        }
    );
    assert_eq!(sim.running_host_processes(), 1);
    let leaks = sim.leaks();
    assert_eq!(leaks.len(), 2 + 2 + 2 + 1 + 1, "{leaks:#?}");
    assert!(leaks
        .iter()
        .any(|l| l.contains(&format!("host process {} still running", info.pid))));

    sim.unregister_process_callback(pcb).unwrap();
    sim.close_process(p2).unwrap();
    sim.close_process(p).unwrap();
    sim.unregister_compute_system_callback(cb).unwrap();
    sim.close_compute_system(h2).unwrap();
    assert_eq!(
        sim.handle_counts(),
        HandleCounts {
            systems: 1,
            processes: 0,
            callbacks: 0
        }
    );
    // the last handle: ShouldTerminateOnLastHandleClosed kills the process too
    sim.close_compute_system(h).unwrap();
    sim.assert_no_leaks();
    assert_eq!(sim.handle_counts(), HandleCounts::default());
    assert_eq!(sim.running_host_processes(), 0);
    drop(info);
}

#[test]
#[should_panic(expected = "callback registration")]
fn assert_no_leaks_names_a_forgotten_registration() {
    let sim = Simulator::new(SimConfig::default().all_sync());
    let rec = Recorder::new();
    let h = sim
        .create_compute_system("a", &container("o"), rec.ctx())
        .unwrap()
        .value;
    let _cb = sim.register_compute_system_callback(h, rec.ctx()).unwrap();
    sim.assert_no_leaks();
}

#[test]
fn failed_calls_acquire_nothing() {
    let sim = Simulator::new(SimConfig::default().all_sync());
    let rec = Recorder::new();
    assert!(sim.create_compute_system("bad", "{", rec.ctx()).is_err());
    let h = sim
        .create_compute_system("a", &container("o"), rec.ctx())
        .unwrap()
        .value;
    assert!(sim
        .create_compute_system("a", &container("o"), rec.ctx())
        .is_err());
    assert!(sim
        .create_process(h, &params("true", false, false, false))
        .is_err()); // not started
    sim.start_compute_system(h, "", rec.ctx()).unwrap();
    assert!(sim
        .create_process(h, &params("/does/not/exist", true, true, true))
        .is_err());
    assert!(sim.open_process(h, 999_999).is_err());
    assert_eq!(
        sim.handle_counts(),
        HandleCounts {
            systems: 1,
            processes: 0,
            callbacks: 0
        }
    );
    sim.close_compute_system(h).unwrap();
    sim.assert_no_leaks();
}

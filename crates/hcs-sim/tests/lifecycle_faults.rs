//! Fault plans driven through the lifecycle layer (`hcs::System` / `hcs::Process` over the
//! simulator, in process): pending calls that never complete, crashes, service disconnects,
//! late, duplicated, dropped and delayed notifications, failures carrying result documents, and
//! a JSON plan file. The checks themselves are in `common/fault_checks.rs`, shared with the
//! same tests through the service (`hcs-simd/tests/faults.rs`); this file says how the
//! in-process simulator puts a plan in force and answers what really happened. Every test ends
//! with no leaked handle, registration, system or host process.
#![cfg(unix)]

#[path = "common/fault_checks.rs"]
#[macro_use]
mod fault_checks;

use fault_checks::Env;
use hcs::{ApiGeneration, Driver};
use hcs_sim::{FaultPlan, SimConfig, Simulator};
use std::sync::Arc;

/// The in-process simulator as a check environment.
struct InProcess(Arc<Simulator>);

impl Env for InProcess {
    fn driver(&self) -> Arc<dyn Driver> {
        self.0.clone()
    }
    fn crash(&self, id: &str) {
        self.0.crash(id).expect("crash");
    }
    fn restart_service(&self) {
        self.0.restart_service();
    }
    fn system_exists(&self, id: &str) -> bool {
        self.0.system_info(id).is_some()
    }
    fn system_exited(&self, id: &str) -> bool {
        self.0.system_info(id).is_some_and(|i| i.exit_type.is_some())
    }
    fn process_runs(&self, id: &str, pid: u32) -> bool {
        self.0
            .system_info(id)
            .is_some_and(|i| i.processes.iter().any(|q| q.pid == pid && q.exit_code.is_none()))
    }
    fn assert_no_leaks(&self) {
        self.0.assert_no_leaks();
        assert_eq!(self.0.running_host_processes(), 0, "host processes left running");
    }
}

fn make(generation: ApiGeneration, plan: FaultPlan) -> Box<dyn Env> {
    Box::new(InProcess(Simulator::new(
        SimConfig::default().generation(generation).faults(plan),
    )))
}

shared_checks!(make);

/// The plan arrives as a file, parsed by `FaultPlan::from_file` and put in force with
/// `set_fault_plan`.
#[test]
fn json_fault_plan_file_drives_the_lifecycle() {
    let path = std::env::temp_dir().join(format!("hcs-sim-lifecycle-plan-{}.json", std::process::id()));
    std::fs::write(&path, fault_checks::JSON_PLAN).expect("write the plan file");
    let parsed = FaultPlan::from_file(&path);
    let _ = std::fs::remove_file(&path);
    let sim = Simulator::new(SimConfig::default());
    sim.set_fault_plan(parsed.expect("the plan file parses"))
        .expect("a valid plan");
    fault_checks::lifecycle_under_the_json_plan(&InProcess(sim));
}

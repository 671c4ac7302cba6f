//! The lifecycle fault-plan tests through the service: `hcs::System`/`hcs::Process` over
//! [`hcs_simd::ClientDriver`] against a real `hcs-simd`, with the fault plan given to the
//! service per test (rules naming a system id target that system) or at its start
//! (`--fault-plan FILE`). The checks are the in-process simulator's own
//! (`hcs-sim/tests/common/fault_checks.rs`, included by path); this file says how the service
//! puts a plan in force and answers what really happened. Every test ends with no handle,
//! registration, notification context, system or host process left in the service.
#![cfg(unix)]

mod common;
#[path = "../../hcs-sim/tests/common/fault_checks.rs"]
#[macro_use]
mod fault_checks;

use common::Daemon;
use fault_checks::{Env, CONFIG, LIMIT};
use hcs::schema::PropertyType;
use hcs::{ApiGeneration, Driver, System, Timeouts};
use hcs_sim::FaultPlan;
use hcs_simd::ClientDriver;
use std::sync::Arc;
use std::time::Duration;

/// A service with a fault plan in force, and a client.
struct Svc {
    client: Arc<ClientDriver>,
    daemon: Daemon,
}

fn service_with(generation: ApiGeneration, plan: FaultPlan) -> Svc {
    let daemon = Daemon::start(match generation {
        ApiGeneration::V1 => &["--generation", "v1"],
        ApiGeneration::V2 => &["--generation", "v2"],
    });
    let client = daemon.client();
    client
        .set_fault_plan(plan.to_json())
        .expect("the service takes the plan");
    Svc { client, daemon }
}

fn make(generation: ApiGeneration, plan: FaultPlan) -> Box<dyn Env> {
    Box::new(service_with(generation, plan))
}

impl Svc {
    /// System `id`'s properties through a handle of its own (`None`: no such system).
    fn properties(&self, id: &str, types: &[PropertyType]) -> Option<hcs::schema::ContainerProperties> {
        let sys = match System::open(self.driver(), id) {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return None,
            Err(e) => panic!("open {id}: {e}"),
        };
        let props = sys.properties(types).expect("properties");
        sys.close().expect("close the extra handle");
        Some(props)
    }
}

impl Env for Svc {
    fn driver(&self) -> Arc<dyn Driver> {
        self.client.clone()
    }
    fn crash(&self, id: &str) {
        self.client.crash(id).expect("crash");
    }
    fn restart_service(&self) {
        self.client
            .restart_service()
            .expect("restart the simulated service");
    }
    fn system_exists(&self, id: &str) -> bool {
        self.properties(id, &[]).is_some()
    }
    fn system_exited(&self, id: &str) -> bool {
        self.properties(id, &[])
            .is_some_and(|p| p.stopped || !p.exit_type.is_empty())
    }
    /// The service's `ProcessList` holds the processes that have not exited.
    fn process_runs(&self, id: &str, pid: u32) -> bool {
        self.properties(id, &[PropertyType::ProcessList])
            .is_some_and(|p| p.process_list.iter().any(|q| q.process_id == pid))
    }
    fn assert_no_leaks(&self) {
        let s = Daemon::wait_stats(&self.client, Duration::from_secs(3), |s| {
            s.systems == 0
                && s.processes == 0
                && s.callbacks == 0
                && s.live_systems == 0
                && s.host_processes == 0
                && s.contexts == 0
        });
        assert_eq!(s.connections, 1, "{s:?}");
        let _ = &self.daemon;
    }
}

shared_checks!(make);

/// The plan arrives as the service's `--fault-plan FILE`.
#[test]
fn fault_plan_file_given_at_service_start_drives_the_lifecycle() {
    let dir = common::temp_dir("plan");
    let path = dir.join("plan.json");
    std::fs::write(&path, fault_checks::JSON_PLAN).expect("write the plan file");
    let daemon = Daemon::start_at(
        dir.clone(),
        dir.join("hcs.sock"),
        &["--fault-plan", path.to_str().expect("a UTF-8 path")],
    );
    let svc = Svc {
        client: daemon.client(),
        daemon,
    };
    fault_checks::lifecycle_under_the_json_plan(&svc);
}

#[test]
fn an_invalid_fault_plan_is_refused_with_a_clear_error_and_changes_nothing() {
    let svc = service_with(ApiGeneration::V1, FaultPlan::new());
    let e = svc
        .client
        .set_fault_plan(serde_json::json!({"rules": [{"op": "NoSuchCall", "action": "fail"}]}))
        .expect_err("an unknown method is refused");
    assert_eq!(e.code, hcs::HResult::E_INVALIDARG);
    assert!(e.document.unwrap_or_default().contains("NoSuchCall"));
    let sys =
        System::create_with(svc.driver(), "still-works", CONFIG, Timeouts::uniform(LIMIT)).expect("create");
    sys.start().expect("start");
    fault_checks::stop(sys);
    svc.assert_no_leaks();
}

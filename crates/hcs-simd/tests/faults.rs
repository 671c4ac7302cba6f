//! The lifecycle fault-plan tests (`crates/hcs-sim/tests/lifecycle_faults.rs`) through the
//! service: `hcs::System`/`hcs::Process` over [`hcs_simd::ClientDriver`] against a real
//! `hcs-simd`, with the fault plan given to the service per test (rules naming a system id
//! target that system) or at its start (`--fault-plan FILE`). Every test ends with no handle,
//! registration, notification context, system or host process left in the service.
#![cfg(unix)]

mod common;

use common::Daemon;
use hcs::{CallOptions, Driver, Method, NotificationKind, System, Timeouts};
use hcs_sim::{FaultPlan, Rule};
use hcs_simd::ClientDriver;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"{"Owner":"faults","SchemaVersion":{"Major":2,"Minor":1},"Container":{}}"#;
const LIMIT: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(100);

fn params(command_line: &str) -> String {
    serde_json::json!({ "CommandLine": command_line }).to_string()
}

/// A service with `plan` in force, and a client.
struct Svc {
    client: Arc<ClientDriver>,
    daemon: Daemon,
}

fn service_with(plan: FaultPlan) -> Svc {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    client
        .set_fault_plan(plan.to_json())
        .expect("the service takes the plan");
    Svc { client, daemon }
}

impl Svc {
    fn driver(&self) -> Arc<dyn Driver> {
        self.client.clone()
    }
    fn create(&self, id: &str, timeouts: Timeouts) -> System {
        System::create_with(self.driver(), id, CONFIG, timeouts).expect("create")
    }
    fn running(&self, id: &str) -> System {
        let s = self.create(id, Timeouts::uniform(LIMIT));
        s.start().expect("start");
        s
    }
    fn no_leaks(&self) {
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

fn stop(sys: System) {
    sys.terminate().expect("terminate");
    sys.wait_timeout(LIMIT).expect("wait for the exit");
    sys.close().expect("close");
}

#[test]
fn start_pending_forever_times_out_then_close_leaks_nothing() {
    let svc = service_with(FaultPlan::new().rule(Rule::call(Method::StartComputeSystem).never_complete()));
    let sys = svc.create("start-never", Timeouts::uniform(LIMIT));
    let began = Instant::now();
    let e = sys
        .start_with(&CallOptions::timeout(SHORT))
        .expect_err("start must time out");
    assert!(
        e.is_timeout(),
        "start with a completion that never comes: timeout, got {e}"
    );
    assert!(began.elapsed() < Duration::from_secs(5));
    sys.terminate().expect("terminate after a timed-out start");
    sys.close().expect("close after a timed-out start");
    drop(sys);
    svc.no_leaks();
}

#[test]
fn create_pending_forever_times_out_terminates_and_leaks_nothing() {
    let svc = service_with(FaultPlan::new().rule(Rule::call(Method::CreateComputeSystem).never_complete()));
    let e = System::create_with(svc.driver(), "create-never", CONFIG, Timeouts::uniform(SHORT))
        .expect_err("create must time out");
    assert!(
        e.is_timeout(),
        "create with a completion that never comes: timeout, got {e}"
    );
    assert_eq!(e.system_id(), Some("create-never"));
    svc.no_leaks();
}

#[test]
fn crash_during_start_fails_start_and_completes_wait_with_unexpected_exit() {
    let svc = service_with(
        FaultPlan::new().rule(Rule::call(Method::StartComputeSystem).crash(Duration::from_millis(5))),
    );
    let sys = svc.create("crash-start", Timeouts::uniform(LIMIT));
    let e = sys.start().expect_err("start must fail when the system crashes");
    assert!(
        e.is_unexpected_exit(),
        "start during a crash: unexpected exit, got {e}"
    );
    sys.wait_timeout(LIMIT).expect("wait completes after a crash");
    let exit = sys.exit_status().expect("exit status");
    assert!(exit.unexpected, "a crash is an unexpected exit: {exit:?}");
    assert_eq!(exit.exit_type.map(|t| t.as_str()), Some("UnexpectedExit"));
    sys.close().expect("close");
    drop(sys);
    svc.no_leaks();
}

#[test]
fn crash_of_a_running_system_ends_its_process_waits() {
    let svc = service_with(FaultPlan::new());
    let sys = svc.running("crash-running");
    let p = sys.create_process(&params("sleep 30")).expect("create process");
    svc.client.crash("crash-running").expect("crash");
    sys.wait_timeout(LIMIT).expect("system wait after a crash");
    assert!(sys.exit_status().expect("exit status").unexpected);
    if let Err(e) = p.wait_timeout(LIMIT) {
        assert!(
            !e.is_timeout(),
            "the process wait must end when its system crashed: {e}"
        );
    }
    assert!(p.exit().is_some());
    p.close().expect("close process");
    sys.close().expect("close system");
    drop((p, sys));
    svc.no_leaks();
}

#[test]
fn service_disconnect_of_the_simulated_hcs_reaches_the_client_then_restart_works() {
    // A per-system rule: only dc-b's start disconnects the (simulated) service.
    let svc = service_with(
        FaultPlan::new().rule(Rule::call(Method::StartComputeSystem).system("dc-b").disconnect()),
    );
    let a = Arc::new(svc.running("dc-a"));
    let p = Arc::new(a.create_process(&params("sleep 30")).expect("create process"));
    let (tx, rx) = mpsc::channel();
    {
        let (a, p, tx) = (a.clone(), p.clone(), tx.clone());
        std::thread::spawn(move || {
            let _ = tx.send(("system", a.wait()));
            let _ = tx.send(("process", p.wait()));
        });
    }
    drop(tx);
    let b = svc.create("dc-b", Timeouts::uniform(LIMIT));
    let e = b.start().expect_err("start must fail on a disconnect");
    assert!(
        e.is_service_disconnected(),
        "pending start during a disconnect: {e}"
    );
    for _ in 0..2 {
        let (what, r) = rx
            .recv_timeout(LIMIT)
            .expect("waiters are released by the disconnect");
        let e = r.expect_err("a wait ended by a disconnect is an error");
        assert!(e.is_service_disconnected(), "{what} wait after a disconnect: {e}");
    }
    let e = p.close().expect_err("close while disconnected");
    assert!(e.is_service_disconnected(), "close while disconnected: {e}");

    svc.client
        .restart_service()
        .expect("restart the simulated service");
    p.close().expect("close retried after the restart");
    for id in ["dc-a", "dc-b"] {
        stop(System::open(svc.driver(), id).expect("reopen after restart"));
    }
    a.close().expect("close a");
    b.close().expect("close b");
    let c = svc.running("dc-c");
    let q = c
        .create_process(&params(r#"sh -c "exit 7""#))
        .expect("a new process after the restart");
    q.wait_timeout(LIMIT).expect("wait");
    assert_eq!(q.exit_code().expect("exit code"), 7);
    q.close().expect("close");
    stop(c);
    drop((p, a, b, q));
    svc.no_leaks();
}

#[test]
fn duplicated_notifications_collapse() {
    let plan = FaultPlan::new()
        .rule(Rule::notification(NotificationKind::ProcessExited).duplicate(2))
        .rule(Rule::notification(NotificationKind::SystemExited).duplicate(2))
        .rule(Rule::notification(NotificationKind::SystemPauseCompleted).duplicate(2))
        .rule(Rule::notification(NotificationKind::SystemStartCompleted).duplicate(2));
    let svc = service_with(plan);
    let sys = svc.running("dup");
    sys.pause().expect("pause");
    sys.resume().expect("resume");
    sys.pause().expect("pause again");
    sys.resume().expect("resume again");
    let p = sys
        .create_process(&params(r#"sh -c "exit 5""#))
        .expect("create process");
    p.wait_timeout(LIMIT).expect("wait");
    assert_eq!(p.exit_code().expect("exit code"), 5);
    p.close().expect("close");
    sys.shutdown().expect("shutdown");
    sys.wait_timeout(LIMIT).expect("wait");
    let exit = sys.exit_status().expect("exit status");
    assert!(!exit.unexpected);
    assert_eq!(exit.exit_type.map(|t| t.as_str()), Some("GracefulExit"));
    sys.close().expect("close");
    drop((p, sys));
    svc.no_leaks();
}

#[test]
fn dropped_exit_times_out_the_wait_and_close_releases_waiters_with_already_closed() {
    let plan = FaultPlan::new()
        .rule(Rule::notification(NotificationKind::SystemExited).drop_it())
        .rule(Rule::notification(NotificationKind::ProcessExited).drop_it());
    let svc = service_with(plan);
    let sys = Arc::new(svc.running("dropped"));
    let p = Arc::new(
        sys.create_process(&params(r#"sh -c "exit 0""#))
            .expect("create process"),
    );
    let e = p
        .wait_timeout(Duration::from_millis(200))
        .expect_err("the process exit was dropped");
    assert!(
        e.is_timeout(),
        "process wait with a dropped exit: timeout, got {e}"
    );
    sys.terminate().expect("terminate");
    let e = sys
        .wait_timeout(Duration::from_millis(200))
        .expect_err("the system exit was dropped");
    assert!(
        e.is_timeout(),
        "system wait with a dropped exit: timeout, got {e}"
    );
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    {
        let (sys, p, tx) = (sys.clone(), p.clone(), tx.clone());
        std::thread::spawn(move || {
            let _ = ready_tx.send(());
            let _ = tx.send(("process", p.wait()));
            let _ = tx.send(("system", sys.wait()));
        });
    }
    drop(tx);
    ready_rx.recv().expect("the waiter thread runs");
    p.close().expect("close process");
    sys.close().expect("close system");
    for _ in 0..2 {
        let (what, r) = rx.recv_timeout(LIMIT).expect("close releases the waiter");
        let e = r.expect_err("released by close");
        assert!(
            e.is_already_closed(),
            "{what} waiter released by close: already-closed, got {e}"
        );
    }
    drop((p, sys));
    svc.no_leaks();
}

#[test]
fn failure_with_result_document_carries_the_events() {
    let doc = r#"{"Error":-2143878907,"ErrorMessage":"refused","ErrorEvents":[{"Message":"the start was refused","EventId":42,"Provider":"sim"},{"Message":"second event"}]}"#;
    let plan = FaultPlan::new()
        .rule(
            Rule::call(Method::StartComputeSystem)
                .nth(1)
                .fail_with_document(0x8037_0105u32, doc),
        )
        .rule(
            Rule::call(Method::CreateProcess)
                .nth(1)
                .fail_with_document(0x8037_0105u32, doc),
        );
    let svc = service_with(plan);
    let sys = svc.create("events", Timeouts::uniform(LIMIT));
    let e = sys.start().expect_err("scripted start failure");
    assert!(e.is_invalid_state(), "{e}");
    assert_eq!(e.hresult(), Some(hcs::HResult(0x8037_0105)));
    let messages: Vec<&str> = e.events().iter().map(|ev| ev.message.as_str()).collect();
    assert_eq!(messages, ["the start was refused", "second event"]);
    assert_eq!(e.events()[0].event_id, 42);
    sys.start().expect("the rule fired once; start works now");
    let e = sys
        .create_process(&params("sleep 1"))
        .expect_err("scripted create-process failure");
    assert_eq!(e.operation(), "hcs::System::CreateProcess");
    assert_eq!(e.events().len(), 2);
    stop(sys);
    svc.no_leaks();
}

#[test]
fn fault_plan_file_given_at_service_start_drives_the_lifecycle() {
    let plan = r#"{"rules": [
        {"op": "StartComputeSystem", "system": "json", "nth": 1, "action": "fail",
         "code": "0xC0370105", "document": {"Error": -1070137083, "ErrorEvents": [{"Message": "from the plan file"}]}},
        {"op": "PauseComputeSystem", "action": "pending", "complete_after_ms": 30},
        {"notification": "ProcessExited", "action": "duplicate", "copies": 1},
        {"notification": "SystemExited", "action": "delay", "ms": 20}
    ]}"#;
    let dir = common::temp_dir("plan");
    let path = dir.join("plan.json");
    std::fs::write(&path, plan).expect("write the plan file");
    let daemon = Daemon::start_at(
        dir.clone(),
        dir.join("hcs.sock"),
        &["--fault-plan", path.to_str().expect("a UTF-8 path")],
    );
    let svc = Svc {
        client: daemon.client(),
        daemon,
    };
    let sys = svc.create("json", Timeouts::uniform(LIMIT));
    let e = sys.start().expect_err("the plan fails the first start");
    assert!(e.is_invalid_state(), "{e}");
    assert_eq!(e.events().len(), 1);
    assert_eq!(e.events()[0].message, "from the plan file");
    sys.start().expect("second start");
    let began = Instant::now();
    sys.pause().expect("pause completes late");
    assert!(began.elapsed() >= Duration::from_millis(30));
    sys.resume().expect("resume");
    let p = sys.create_process(&params(r#"sh -c "exit 9""#)).expect("process");
    p.wait_timeout(LIMIT).expect("wait");
    assert_eq!(p.exit_code().expect("exit code"), 9);
    p.close().expect("close");
    drop(p);
    stop(sys);
    svc.no_leaks();
}

#[test]
fn an_invalid_fault_plan_is_refused_with_a_clear_error_and_changes_nothing() {
    let svc = service_with(FaultPlan::new());
    let e = svc
        .client
        .set_fault_plan(serde_json::json!({"rules": [{"op": "NoSuchCall", "action": "fail"}]}))
        .expect_err("an unknown method is refused");
    assert_eq!(e.code, hcs::HResult::E_INVALIDARG);
    assert!(e.document.unwrap_or_default().contains("NoSuchCall"));
    stop(svc.running("still-works"));
    svc.no_leaks();
}

//! The lifecycle fault-plan checks, written once and run twice: over an in-process simulator
//! (`hcs-sim/tests/lifecycle_faults.rs`) and through the simulated service over its client
//! driver (`hcs-simd/tests/faults.rs`, which includes this file by path). Each check drives
//! `hcs::System` / `hcs::Process` through a fault plan and ends with [`Env::assert_no_leaks`].
//! A test file provides the [`Env`]: where the plan is put in force, and how the model is asked
//! what really happened.
#![allow(dead_code)] // each including test binary uses its own part

use hcs::{ApiGeneration, CallOptions, Driver, Method, NotificationKind, System, Timeouts};
use hcs_sim::{FaultPlan, Rule};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The compute-system document every check creates.
pub const CONFIG: &str = r#"{"Owner":"faults","SchemaVersion":{"Major":2,"Minor":1},"Container":{}}"#;
/// Defines one `#[test]` per shared check (each named like its check), running it with the
/// including file's `make` ([`Make`]).
macro_rules! shared_checks {
    ($make:ident) => {
        shared_checks!($make;
            start_pending_forever_times_out_then_close_leaks_nothing,
            create_pending_forever_times_out_terminates_and_leaks_nothing,
            crash_during_start_fails_start_and_completes_wait_with_unexpected_exit,
            crash_of_a_running_system_ends_its_process_waits,
            service_disconnect_fails_pending_start_and_every_wait_then_restart_works,
            late_callbacks_after_unregistration_have_no_effect,
            a_late_callback_during_the_handle_close_publishes_nothing,
            duplicated_notifications_collapse,
            dropped_exit_times_out_the_wait_and_close_releases_waiters_with_already_closed,
            delayed_notifications_arrive_late_but_count,
            completion_arriving_after_its_wait_timed_out_is_dropped,
            failure_with_result_document_carries_the_events,
            second_stdio_call_without_fresh_streams_is_an_error_not_silence,
        );
    };
    ($make:ident; $($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            fault_checks::$name(&$make);
        }
    )*};
}

/// The bound of every wait expected to succeed.
pub const LIMIT: Duration = Duration::from_secs(10);
/// The bound of a wait expected to time out.
pub const SHORT: Duration = Duration::from_millis(100);

/// A process document for `command_line`.
pub fn params(command_line: &str) -> String {
    serde_json::json!({ "CommandLine": command_line }).to_string()
}

/// Where a check runs: a simulated HCS with a fault plan in force.
pub trait Env {
    /// The driver the lifecycle layer uses.
    fn driver(&self) -> Arc<dyn Driver>;
    /// Crashes system `id` (its unexpected exit).
    fn crash(&self, id: &str);
    /// Ends a simulated service disconnect that a fault plan caused.
    fn restart_service(&self);
    /// Whether the model still has system `id`.
    fn system_exists(&self, id: &str) -> bool;
    /// Whether the model has recorded an exit of system `id` (`false` for an unknown id).
    fn system_exited(&self, id: &str) -> bool;
    /// Whether process `pid` of system `id` still runs in the model.
    fn process_runs(&self, id: &str, pid: u32) -> bool;
    /// Asserts that nothing is left: handles, registrations, systems, host processes.
    fn assert_no_leaks(&self);
}

/// Makes an [`Env`] simulating `generation` (with the simulator's default pending operations)
/// with `plan` in force.
pub type Make<'a> = &'a dyn Fn(ApiGeneration, FaultPlan) -> Box<dyn Env>;

fn v1(make: Make<'_>, plan: FaultPlan) -> Box<dyn Env> {
    make(ApiGeneration::V1, plan)
}

fn create(env: &dyn Env, id: &str, timeouts: Timeouts) -> System {
    System::create_with(env.driver(), id, CONFIG, timeouts).expect("create")
}

fn running(env: &dyn Env, id: &str) -> System {
    let s = create(env, id, Timeouts::uniform(LIMIT));
    s.start().expect("start");
    s
}

/// Runs `sh -c "exit CODE"` in `sys`, waits for it, checks its exit code and closes it.
fn exits_with(sys: &System, code: i64) {
    let p = sys
        .create_process(&params(&format!(r#"sh -c "exit {code}""#)))
        .expect("create process");
    p.wait_timeout(LIMIT).expect("wait");
    assert_eq!(p.exit_code().expect("exit code"), code);
    p.close().expect("close");
}

/// Terminates, waits, closes.
pub fn stop(sys: System) {
    sys.terminate().expect("terminate");
    sys.wait_timeout(LIMIT).expect("wait for the exit");
    sys.close().expect("close");
}

pub fn start_pending_forever_times_out_then_close_leaks_nothing(make: Make<'_>) {
    let env = v1(
        make,
        FaultPlan::new().rule(Rule::call(Method::StartComputeSystem).never_complete()),
    );
    let sys = create(&*env, "start-never", Timeouts::uniform(LIMIT));
    let began = Instant::now();
    let e = sys
        .start_with(&CallOptions::timeout(SHORT))
        .expect_err("start must time out");
    assert!(
        e.is_timeout(),
        "start with a completion that never comes: timeout, got {e}"
    );
    assert_eq!(e.operation(), "hcs::System::Start");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "the timeout ended the wait promptly"
    );
    // The start took effect inside HCS; the owner stops it and closes.
    sys.terminate().expect("terminate after a timed-out start");
    sys.close().expect("close after a timed-out start");
    drop(sys);
    env.assert_no_leaks();
}

pub fn create_pending_forever_times_out_terminates_and_leaks_nothing(make: Make<'_>) {
    let env = v1(
        make,
        FaultPlan::new().rule(Rule::call(Method::CreateComputeSystem).never_complete()),
    );
    let began = Instant::now();
    let e = System::create_with(env.driver(), "create-never", CONFIG, Timeouts::uniform(SHORT))
        .expect_err("create must time out");
    assert!(
        e.is_timeout(),
        "create with a completion that never comes: timeout, got {e}"
    );
    assert_eq!(e.system_id(), Some("create-never"));
    assert!(began.elapsed() < Duration::from_secs(5));
    // The lifecycle terminated the half-created system and closed its handle.
    env.assert_no_leaks();
    assert!(!env.system_exists("create-never"), "the timed-out system is gone");
}

pub fn crash_during_start_fails_start_and_completes_wait_with_unexpected_exit(make: Make<'_>) {
    let env = v1(
        make,
        FaultPlan::new().rule(Rule::call(Method::StartComputeSystem).crash(Duration::from_millis(5))),
    );
    let sys = create(&*env, "crash-start", Timeouts::uniform(LIMIT));
    let e = sys.start().expect_err("start must fail when the system crashes");
    assert!(
        e.is_unexpected_exit(),
        "start during a crash: unexpected exit, got {e}"
    );
    sys.wait_timeout(LIMIT)
        .expect("wait completes with Ok after a crash");
    let exit = sys.exit_status().expect("exit status");
    assert!(exit.unexpected, "a crash is an unexpected exit: {exit:?}");
    assert_eq!(exit.exit_type.map(|t| t.as_str()), Some("UnexpectedExit"));
    let err = sys.exit_error().expect("exit_error after a crash");
    assert!(err.is_unexpected_exit(), "exit_error after a crash: {err}");
    sys.close().expect("close");
    drop(sys);
    env.assert_no_leaks();
}

pub fn crash_of_a_running_system_ends_its_process_waits(make: Make<'_>) {
    let env = v1(make, FaultPlan::new());
    let sys = running(&*env, "crash-running");
    let p = sys.create_process(&params("sleep 30")).expect("create process");
    env.crash("crash-running");
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
    env.assert_no_leaks();
}

/// A disconnect of the simulated HCS (a per-system rule: only dc-b's start causes it) fails the
/// pending start and every wait, later waits too; close is retryable after the restart.
pub fn service_disconnect_fails_pending_start_and_every_wait_then_restart_works(make: Make<'_>) {
    let env = v1(
        make,
        FaultPlan::new().rule(Rule::call(Method::StartComputeSystem).system("dc-b").disconnect()),
    );
    let a = Arc::new(running(&*env, "dc-a"));
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
    let b = create(&*env, "dc-b", Timeouts::uniform(LIMIT));
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
    let e = b.wait_timeout(SHORT).expect_err("b's wait after the disconnect");
    assert!(
        e.is_service_disconnected(),
        "a later wait also sees the disconnect: {e}"
    );
    let e = p.wait_timeout(SHORT).expect_err("p's later wait");
    assert!(
        e.is_service_disconnected(),
        "a later process wait also sees the disconnect: {e}"
    );
    // Close needs the service: it fails and the object stays open (retryable).
    let e = p.close().expect_err("close while disconnected");
    assert!(e.is_service_disconnected(), "close while disconnected: {e}");

    env.restart_service();
    p.close().expect("close retried after the restart");
    // The old objects latched the disconnect (stop is a no-op on them); stop through new handles.
    for id in ["dc-a", "dc-b"] {
        stop(System::open(env.driver(), id).expect("reopen after restart"));
    }
    a.close().expect("close a");
    b.close().expect("close b");
    let c = running(&*env, "dc-c");
    exits_with(&c, 7);
    stop(c);
    drop((p, a, b));
    env.assert_no_leaks();
}

pub fn late_callbacks_after_unregistration_have_no_effect(make: Make<'_>) {
    let plan = FaultPlan::new()
        .rule(
            Rule::call(Method::UnregisterProcessCallback)
                .late_callback(NotificationKind::ProcessExited, Duration::from_millis(5)),
        )
        .rule(
            Rule::call(Method::UnregisterComputeSystemCallback)
                .late_callback(NotificationKind::SystemExited, Duration::from_millis(5)),
        )
        .rule(
            Rule::call(Method::UnregisterComputeSystemCallback)
                .late_callback(NotificationKind::ServiceDisconnect, Duration::from_millis(5)),
        );
    let env = v1(make, plan);
    let sys = running(&*env, "late");
    let other = System::open(env.driver(), "late").expect("second handle");
    let p = sys.create_process(&params("sleep 30")).expect("create process");
    p.close().expect("close the running process");
    sys.close().expect("close the running system");
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        p.wait().expect_err("closed process").is_already_closed(),
        "a late ProcessExited changed nothing"
    );
    assert!(p.exit_code().is_err(), "a late ProcessExited set no exit code");
    assert!(
        sys.wait().expect_err("closed system").is_already_closed(),
        "a late SystemExited changed nothing"
    );
    assert!(
        sys.exit_status().is_none(),
        "a late SystemExited set no exit status"
    );
    let e = other
        .wait_timeout(SHORT)
        .expect_err("the other handle has not seen an exit");
    assert!(
        e.is_timeout(),
        "late callbacks to a stale context do not reach another object: {e}"
    );
    // The process was not closed inside HCS; terminating the system ends it.
    stop(other);
    drop((p, sys));
    env.assert_no_leaks();
}

/// The window between a close's unregister and the end of its handle close: a late callback
/// arriving there (here a fabricated "exited with 0" for a process that still runs, and a
/// graceful exit for a running system, while the handle close is slowed down) reached the
/// object through its still-registered context and published an exit that never happened (the
/// fault soak caught it under load: "reports exit code 0 but is still running").
pub fn a_late_callback_during_the_handle_close_publishes_nothing(make: Make<'_>) {
    for generation in [ApiGeneration::V1, ApiGeneration::V2] {
        late_callback_during_the_handle_close(make, generation);
    }
}

fn late_callback_during_the_handle_close(make: Make<'_>, generation: ApiGeneration) {
    let plan = FaultPlan::new()
        .rule(
            Rule::call(Method::UnregisterProcessCallback)
                .late_callback(NotificationKind::ProcessExited, Duration::ZERO),
        )
        .rule(Rule::call(Method::CloseProcess).delay(Duration::from_millis(60)))
        .rule(
            Rule::call(Method::UnregisterComputeSystemCallback)
                .late_callback(NotificationKind::SystemExited, Duration::ZERO),
        )
        .rule(Rule::call(Method::CloseComputeSystem).delay(Duration::from_millis(60)));
    let env = make(generation, plan);
    let sys = running(&*env, "late-window");
    let p = sys.create_process(&params("sleep 30")).expect("create process");
    let pid = p.pid();
    p.close().expect("close the running process");
    assert_eq!(
        p.exit(),
        Some(hcs::ExitCode::Unknown),
        "{generation:?}: a late ProcessExited during the close published an exit code"
    );
    assert!(
        p.wait()
            .expect_err("a closed process that never exited")
            .is_already_closed(),
        "{generation:?}: a late ProcessExited during the close published an exit"
    );
    assert!(
        env.process_runs("late-window", pid),
        "{generation:?}: the process still runs"
    );
    sys.close().expect("close the running system");
    assert!(
        sys.exit_status().is_none(),
        "{generation:?}: a late SystemExited during the close published an exit"
    );
    assert!(
        env.system_exists("late-window") && !env.system_exited("late-window"),
        "{generation:?}: the system still runs"
    );
    let other = System::open(env.driver(), "late-window").expect("reopen");
    stop(other);
    drop((p, sys));
    env.assert_no_leaks();
}

pub fn duplicated_notifications_collapse(make: Make<'_>) {
    let plan = FaultPlan::new()
        .rule(Rule::notification(NotificationKind::ProcessExited).duplicate(2))
        .rule(Rule::notification(NotificationKind::SystemExited).duplicate(2))
        .rule(Rule::notification(NotificationKind::SystemPauseCompleted).duplicate(2))
        .rule(Rule::notification(NotificationKind::SystemStartCompleted).duplicate(2));
    let env = v1(make, plan);
    let sys = running(&*env, "dup");
    sys.pause().expect("pause");
    sys.resume().expect("resume");
    sys.pause().expect("pause again");
    sys.resume().expect("resume again");
    exits_with(&sys, 5);
    sys.shutdown().expect("shutdown");
    sys.wait_timeout(LIMIT).expect("wait");
    let exit = sys.exit_status().expect("exit status");
    assert!(!exit.unexpected);
    assert_eq!(exit.exit_type.map(|t| t.as_str()), Some("GracefulExit"));
    sys.close().expect("close");
    drop(sys);
    env.assert_no_leaks();
}

pub fn dropped_exit_times_out_the_wait_and_close_releases_waiters_with_already_closed(make: Make<'_>) {
    let plan = FaultPlan::new()
        .rule(Rule::notification(NotificationKind::SystemExited).drop_it())
        .rule(Rule::notification(NotificationKind::ProcessExited).drop_it());
    let env = v1(make, plan);
    let sys = Arc::new(running(&*env, "dropped"));
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
    // Most likely blocked in the waits by now; a wait that starts after the close ends the
    // same way.
    std::thread::sleep(Duration::from_millis(20));
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
    env.assert_no_leaks();
}

pub fn delayed_notifications_arrive_late_but_count(make: Make<'_>) {
    let plan = FaultPlan::new()
        .rule(Rule::notification(NotificationKind::SystemStartCompleted).delay(Duration::from_millis(150)))
        .rule(Rule::notification(NotificationKind::SystemExited).delay(Duration::from_millis(150)));
    let env = v1(make, plan);
    let sys = create(&*env, "delayed", Timeouts::uniform(LIMIT));
    let began = Instant::now();
    sys.start()
        .expect("a delayed completion still completes the start");
    assert!(
        began.elapsed() >= Duration::from_millis(150),
        "start waited for the delayed completion"
    );
    sys.terminate().expect("terminate");
    let e = sys
        .wait_timeout(Duration::from_millis(20))
        .expect_err("the exit is delayed");
    assert!(e.is_timeout());
    sys.wait_timeout(LIMIT).expect("the delayed exit arrives");
    sys.close().expect("close");
    drop(sys);
    env.assert_no_leaks();
}

pub fn completion_arriving_after_its_wait_timed_out_is_dropped(make: Make<'_>) {
    // The first pause completes 300 ms late (after its 50 ms wait gave up); the second pause never
    // completes. The stale completion must not be handed to the second pause (I3).
    let plan = FaultPlan::new()
        .rule(
            Rule::call(Method::PauseComputeSystem)
                .nth(1)
                .complete_late(Duration::from_millis(300)),
        )
        .rule(Rule::call(Method::PauseComputeSystem).nth(2).never_complete());
    let env = v1(make, plan);
    let sys = running(&*env, "stale");
    let e = sys
        .pause_with(&CallOptions::timeout(Duration::from_millis(50)))
        .expect_err("first pause times out");
    assert!(e.is_timeout(), "{e}");
    sys.resume().expect("resume the (actually paused) system");
    let e = sys
        .pause_with(&CallOptions::timeout(Duration::from_millis(600)))
        .expect_err("the second pause never completes; the first one's late completion must not satisfy it");
    assert!(e.is_timeout(), "{e}");
    stop(sys);
    env.assert_no_leaks();
}

pub fn failure_with_result_document_carries_the_events(make: Make<'_>) {
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
    let env = v1(make, plan);
    let sys = create(&*env, "events", Timeouts::uniform(LIMIT));
    let e = sys.start().expect_err("scripted start failure");
    assert!(e.is_invalid_state(), "{e}");
    assert_eq!(e.hresult(), Some(hcs::HResult(0x8037_0105)));
    assert_eq!(e.operation(), "hcs::System::Start");
    assert_eq!(e.system_id(), Some("events"));
    let messages: Vec<&str> = e.events().iter().map(|ev| ev.message.as_str()).collect();
    assert_eq!(messages, ["the start was refused", "second event"]);
    assert_eq!(e.events()[0].event_id, 42);
    assert!(
        e.to_string().contains("the start was refused"),
        "the message shows the events: {e}"
    );
    sys.start().expect("the rule fired once; start works now");
    let e = sys
        .create_process(&params("sleep 1"))
        .expect_err("scripted create-process failure");
    assert_eq!(e.operation(), "hcs::System::CreateProcess");
    assert_eq!(e.detail(), Some(r#"command line "sleep 1""#));
    assert_eq!(e.events().len(), 2);
    stop(sys);
    env.assert_no_leaks();
}

/// The JSON fault plan of [`lifecycle_under_the_json_plan`], as a plan file holds it.
pub const JSON_PLAN: &str = r#"{"rules": [
    {"op": "StartComputeSystem", "system": "json", "nth": 1, "action": "fail",
     "code": "0xC0370105", "document": {"Error": -1070137083, "ErrorEvents": [{"Message": "from the plan file"}]}},
    {"op": "PauseComputeSystem", "action": "pending", "complete_after_ms": 30},
    {"notification": "ProcessExited", "action": "duplicate", "copies": 1},
    {"notification": "SystemExited", "action": "delay", "ms": 20}
]}"#;

/// The lifecycle under [`JSON_PLAN`], already in force in `env` (each test file puts it there
/// its own way: a parsed file, or the service's `--fault-plan`).
pub fn lifecycle_under_the_json_plan(env: &dyn Env) {
    let sys = create(env, "json", Timeouts::uniform(LIMIT));
    let e = sys.start().expect_err("the plan fails the first start");
    assert!(e.is_invalid_state(), "{e}");
    assert_eq!(e.events().len(), 1);
    assert_eq!(e.events()[0].message, "from the plan file");
    sys.start().expect("second start");
    let began = Instant::now();
    sys.pause().expect("pause completes late");
    assert!(began.elapsed() >= Duration::from_millis(30));
    sys.resume().expect("resume");
    exits_with(&sys, 9);
    stop(sys);
    env.assert_no_leaks();
}

/// A second `stdio()` call on a driver that cannot hand a process's streams out again (the
/// simulator hands its host pipes over once; the service hands its descriptors over once) is a
/// clear error, never a silently empty set.
pub fn second_stdio_call_without_fresh_streams_is_an_error_not_silence(make: Make<'_>) {
    let env = make(ApiGeneration::V2, FaultPlan::new());
    let s = create(&*env, "stdio2", Timeouts::uniform(LIMIT));
    s.start().unwrap();
    let p = s
        .create_process_from(&hcs::schema::ProcessParameters {
            command_line: Some("true".into()),
            create_std_out_pipe: Some(true),
            ..Default::default()
        })
        .unwrap();
    let first = p.stdio().unwrap();
    assert!(first.stdout.is_some(), "the first call hands out the streams");
    let e = p.stdio().unwrap_err();
    assert!(e.is_not_supported(), "{e}");
    assert!(e.to_string().contains("taken by an earlier stdio() call"), "{e}");
    p.wait_timeout(LIMIT).unwrap();
    p.close().unwrap();
    drop(first);
    s.terminate().unwrap();
    s.close().unwrap();
    drop((p, s));
    env.assert_no_leaks();
}

//! Fault plans: every fault kind, direct controls, and plan validation messages.

mod common;

use common::*;
use hcs::{Driver, HResult, Method, NotificationKind};
use hcs_sim::{FaultPlan, PlanError, Rule, Script, ScriptedProcess, SimConfig, Simulator};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn sim_with(plan: FaultPlan) -> Arc<Simulator> {
    Simulator::new(
        SimConfig::default()
            .scripted(Script::new().otherwise(ScriptedProcess::forever()))
            .faults(plan),
    )
}

fn cleanup(sim: &Simulator, h: hcs::SystemHandle) {
    let _ = sim.terminate_compute_system(h, "");
    sim.close_compute_system(h).unwrap();
}

#[test]
fn fail_rule_fires_on_the_nth_matching_call_of_the_named_system_with_its_document() {
    let sim = sim_with(
        FaultPlan::new().rule(
            Rule::call(Method::StartComputeSystem)
                .system("b")
                .nth(2)
                .fail_with_document(0x8037_0118u32, r#"{"Error":-2143878888,"ErrorMessage":"boom"}"#),
        ),
    );
    let rec = Recorder::new();
    let a = sim
        .create_compute_system("a", &container("o"), rec.ctx())
        .unwrap()
        .value;
    let b = sim
        .create_compute_system("b", &container("o"), rec.ctx())
        .unwrap()
        .value;
    assert!(
        sim.start_compute_system(a, "", rec.ctx()).is_ok(),
        "other system unaffected"
    );
    assert!(
        sim.start_compute_system(b, "", rec.ctx()).is_ok(),
        "first call passes"
    );
    let err = sim.start_compute_system(b, "", rec.ctx()).unwrap_err();
    assert_eq!(err.code, HResult::HCS_E_OPERATION_TIMEOUT);
    assert!(err.document.unwrap().contains("boom"));
    // third call reaches the model again (and fails there: already running)
    assert_eq!(
        sim.start_compute_system(b, "", rec.ctx()).unwrap_err().code,
        HResult(0xC037_0105)
    );
    cleanup(&sim, a);
    cleanup(&sim, b);
    sim.assert_no_leaks();
}

#[test]
fn pending_rules_complete_late_never_or_with_the_wrong_kind() {
    let sim = sim_with(
        FaultPlan::new()
            .rule(Rule::call(Method::StartComputeSystem).complete_late(Duration::from_millis(120)))
            .rule(Rule::call(Method::PauseComputeSystem).never_complete())
            .rule(Rule::call(Method::ResumeComputeSystem).complete_with(
                Duration::ZERO,
                0u32,
                Some(NotificationKind::SystemPauseCompleted),
            )),
    );
    let rec = Recorder::new();
    let h = sim
        .create_compute_system("p", &container("o"), rec.ctx())
        .unwrap()
        .value;
    let t = Instant::now();
    assert!(sim.start_compute_system(h, "", rec.ctx()).unwrap().pending);
    rec.wait(NotificationKind::SystemStartCompleted, FIVE_SECONDS)
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(120));
    assert!(sim.pause_compute_system(h, "", rec.ctx()).unwrap().pending);
    assert!(sim.resume_compute_system(h, "", rec.ctx()).unwrap().pending);
    rec.wait(NotificationKind::SystemPauseCompleted, FIVE_SECONDS)
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        rec.count(NotificationKind::SystemPauseCompleted),
        1,
        "the only one is resume's wrong kind"
    );
    assert_eq!(rec.count(NotificationKind::SystemResumeCompleted), 0);
    cleanup(&sim, h);
    sim.assert_no_leaks();
}

#[test]
fn crash_during_start_exits_unexpectedly_and_never_completes_the_start() {
    let sim = sim_with(
        FaultPlan::new().rule(Rule::call(Method::StartComputeSystem).crash(Duration::from_millis(10))),
    );
    let rec = Recorder::new();
    let h = sim
        .create_compute_system("c", &container("o"), rec.ctx())
        .unwrap()
        .value;
    let cb = sim.register_compute_system_callback(h, rec.ctx()).unwrap();
    assert!(sim.start_compute_system(h, "", rec.ctx()).unwrap().pending);
    let e = rec.wait(NotificationKind::SystemExited, FIVE_SECONDS).unwrap();
    assert_eq!(e.status, HResult(0xC037_0106));
    assert!(e.payload.unwrap().contains("UnexpectedExit"));
    assert_eq!(rec.count(NotificationKind::SystemStartCompleted), 0);
    sim.unregister_compute_system_callback(cb).unwrap();
    sim.close_compute_system(h).unwrap();
    sim.assert_no_leaks();
}

#[test]
fn disconnect_rule_notifies_every_registration_and_fails_later_calls_until_restart() {
    let sim = sim_with(FaultPlan::new().rule(Rule::call(Method::CreateProcess).disconnect()));
    let (r1, r2) = (Recorder::new(), Recorder::new());
    let a = sim
        .create_compute_system("a", &container("o"), r1.ctx())
        .unwrap()
        .value;
    let b = sim
        .create_compute_system("b", &container("o"), r2.ctx())
        .unwrap()
        .value;
    let ca = sim.register_compute_system_callback(a, r1.ctx()).unwrap();
    let cb = sim.register_compute_system_callback(b, r2.ctx()).unwrap();
    sim.start_compute_system(a, "", r1.ctx()).unwrap();
    let started = Instant::now();
    // the injected disconnect fails the call itself and takes the service down
    let err = sim
        .create_process(a, &params("x", false, false, false))
        .unwrap_err();
    assert_eq!(err.code, HResult(0x8007_06BA));
    for r in [&r1, &r2] {
        r.wait(NotificationKind::ServiceDisconnect, FIVE_SECONDS).unwrap();
    }
    assert!(started.elapsed() < FIVE_SECONDS);
    assert!(!sim.is_connected());
    assert_eq!(
        sim.open_compute_system("a").unwrap_err().code,
        HResult(0x8007_06BA)
    );
    assert_eq!(
        sim.close_compute_system(a).unwrap_err().code,
        HResult(0x8007_06BA)
    );
    assert_eq!(
        sim.enumerate_compute_systems("").unwrap_err().code,
        HResult(0x8007_06BA)
    );
    sim.restart_service();
    sim.clear_faults();
    for (h, c) in [(a, ca), (b, cb)] {
        sim.unregister_compute_system_callback(c).unwrap();
        cleanup(&sim, h);
    }
    sim.assert_no_leaks();
}

#[test]
fn direct_disconnect_drops_queued_completions() {
    let sim = Simulator::new(SimConfig::default().latency(Duration::from_millis(50)));
    let rec = Recorder::new();
    let h = sim
        .create_compute_system("d", &container("o"), rec.ctx())
        .unwrap()
        .value;
    let cb = sim.register_compute_system_callback(h, rec.ctx()).unwrap();
    sim.disconnect();
    rec.wait(NotificationKind::ServiceDisconnect, FIVE_SECONDS)
        .unwrap();
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(rec.count(NotificationKind::SystemCreateCompleted), 0);
    sim.restart_service();
    sim.unregister_compute_system_callback(cb).unwrap();
    cleanup(&sim, h);
    sim.assert_no_leaks();
}

#[test]
fn delayed_and_blocked_calls_do_not_stall_other_systems() {
    let sim = sim_with(
        FaultPlan::new()
            .rule(Rule::call(Method::PauseComputeSystem).delay(Duration::from_millis(100)))
            .rule(
                Rule::call(Method::TerminateComputeSystem)
                    .system("stuck")
                    .block("g"),
            ),
    );
    let rec = Recorder::new();
    let stuck = sim
        .create_compute_system("stuck", &container("o"), rec.ctx())
        .unwrap()
        .value;
    let free = sim
        .create_compute_system("free", &container("o"), rec.ctx())
        .unwrap()
        .value;
    sim.start_compute_system(free, "", rec.ctx()).unwrap();
    let t = Instant::now();
    sim.pause_compute_system(free, "", rec.ctx()).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(100));

    let s2 = Arc::clone(&sim);
    let blocked = std::thread::spawn(move || s2.terminate_compute_system(stuck, "").map(|r| r.pending));
    assert!(eventually(FIVE_SECONDS, || sim.blocked_on("g") == 1));
    // meanwhile the other system works normally
    sim.resume_compute_system(free, "", rec.ctx()).unwrap();
    sim.terminate_compute_system(free, "").unwrap();
    assert!(!blocked.is_finished());
    sim.release("g");
    assert!(blocked.join().unwrap().unwrap());
    sim.close_compute_system(stuck).unwrap();
    sim.close_compute_system(free).unwrap();
    sim.assert_no_leaks();
}

#[test]
fn notification_rules_delay_duplicate_and_drop() {
    let sim = Simulator::new(
        SimConfig::default()
            .scripted(Script::new().otherwise(ScriptedProcess::exits(0).runtime(Duration::from_millis(5))))
            .faults(
                FaultPlan::new()
                    .rule(
                        Rule::notification(NotificationKind::SystemExited).delay(Duration::from_millis(150)),
                    )
                    .rule(Rule::notification(NotificationKind::ProcessExited).duplicate(1))
                    .rule(Rule::notification(NotificationKind::SystemStartCompleted).drop_it()),
            ),
    );
    let rec = Recorder::new();
    let h = sim
        .create_compute_system("n", &container("o"), rec.ctx())
        .unwrap()
        .value;
    let cb = sim.register_compute_system_callback(h, rec.ctx()).unwrap();
    assert!(sim.start_compute_system(h, "", rec.ctx()).unwrap().pending);
    let (p, _) = sim
        .create_process(h, &params("job", false, false, false))
        .unwrap()
        .value;
    let pr = Recorder::new();
    let pc = sim.register_process_callback(p, pr.ctx()).unwrap();
    assert!(
        pr.wait_nth(NotificationKind::ProcessExited, 2, FIVE_SECONDS)
            .is_some(),
        "duplicated"
    );
    let t = Instant::now();
    sim.terminate_compute_system(h, "").unwrap();
    rec.wait(NotificationKind::SystemExited, FIVE_SECONDS).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150), "delayed");
    assert_eq!(rec.count(NotificationKind::SystemStartCompleted), 0, "dropped");
    sim.unregister_process_callback(pc).unwrap();
    sim.close_process(p).unwrap();
    sim.unregister_compute_system_callback(cb).unwrap();
    sim.close_compute_system(h).unwrap();
    sim.assert_no_leaks();
}

#[test]
fn late_callback_reaches_the_context_after_unregister_returned() {
    let sim = sim_with(
        FaultPlan::new().rule(
            Rule::call(Method::UnregisterComputeSystemCallback)
                .late_callback(NotificationKind::SystemExited, Duration::from_millis(20)),
        ),
    );
    let rec = Recorder::new();
    let h = sim
        .create_compute_system("l", &container("o"), rec.ctx())
        .unwrap()
        .value;
    let cb = sim.register_compute_system_callback(h, rec.ctx()).unwrap();
    sim.unregister_compute_system_callback(cb).unwrap();
    let after = Instant::now();
    assert_eq!(rec.count(NotificationKind::SystemExited), 0);
    rec.wait(NotificationKind::SystemExited, FIVE_SECONDS)
        .expect("late callback");
    assert!(after.elapsed() >= Duration::from_millis(15));
    cleanup(&sim, h);
    sim.assert_no_leaks();
}

#[test]
fn reboot_forgets_everything_and_kills_host_processes() {
    let sim = Simulator::new(SimConfig::default().all_sync());
    let rec = Recorder::new();
    let h = sim
        .create_compute_system("r", &container("o"), rec.ctx())
        .unwrap()
        .value;
    sim.register_compute_system_callback(h, rec.ctx()).unwrap();
    sim.start_compute_system(h, "", rec.ctx()).unwrap();
    let (_p, info) = sim
        .create_process(h, &params("sleep 30", false, false, false))
        .unwrap()
        .value;
    assert_eq!(sim.running_host_processes(), 1);
    sim.reboot();
    assert_eq!(sim.running_host_processes(), 0);
    assert!(hcs_sim::proc_state(info.pid).is_none());
    assert!(sim.live_systems().is_empty());
    assert_eq!(
        sim.open_compute_system("r").unwrap_err().code,
        HResult(0xC037_010E)
    );
    assert_eq!(sim.close_compute_system(h).unwrap_err().code, HResult::E_HANDLE);
    // the id can be reused after the reboot
    let h2 = sim
        .create_compute_system("r", &container("o"), rec.ctx())
        .unwrap()
        .value;
    assert_ne!(h, h2);
    sim.close_compute_system(h2).unwrap();
    sim.assert_no_leaks();
}

#[test]
fn json_plan_parses_every_action() {
    let plan = FaultPlan::from_json(
        r#"{"rules": [
          {"op": "StartComputeSystem", "system": "c1", "nth": 2, "action": "fail",
           "code": "0x80370105", "document": {"Error": -2143878907, "ErrorMessage": "boom"}},
          {"op": "PauseComputeSystem", "action": "pending", "complete_after_ms": 500},
          {"op": "ResumeComputeSystem", "action": "pending", "never": true},
          {"op": "HcsStartComputeSystem", "action": "crash", "after_ms": 5},
          {"op": "CreateProcess", "action": "disconnect"},
          {"op": "*", "action": "delay", "ms": 20},
          {"op": "TerminateComputeSystem", "action": "block", "gate": "g1"},
          {"op": "UnregisterComputeSystemCallback", "action": "late_callback", "kind": "SystemExited", "after_ms": 5},
          {"notification": "SystemExited", "action": "delay", "ms": 100},
          {"notification": "ProcessExited", "action": "duplicate", "copies": 1},
          {"notification": "SystemStartCompleted", "action": "drop"},
          {"op": "OpenComputeSystem", "action": "fail", "code": -2143878898}
        ]}"#,
    )
    .unwrap();
    assert_eq!(plan.rules.len(), 12);
    assert_eq!(
        plan.rules[11].action,
        hcs_sim::Action::Fail {
            code: HResult(0x8037_010E),
            document: None,
            performed: false,
        }
    );
    // serde round trip
    let text = serde_json::to_string(&plan).unwrap();
    let back: FaultPlan = serde_json::from_str(&text).unwrap();
    assert_eq!(back, plan);
}

fn plan_error(text: &str) -> String {
    match FaultPlan::from_json(text) {
        Err(e @ PlanError::Invalid { .. }) => e.to_string(),
        other => panic!("expected an invalid plan, got {other:?}"),
    }
}

#[test]
fn invalid_plans_are_rejected_with_the_path_of_the_bad_field() {
    let three = |third: &str| {
        format!(
            r#"{{"rules":[{{"op":"StartComputeSystem","action":"fail","code":"0x1"}},{{"op":"*","action":"delay","ms":1}},{third}]}}"#
        )
    };
    let e = plan_error(&three(
        r#"{"op":"StartComputeSystem","action":"fail","code":"boom"}"#,
    ));
    assert!(e.starts_with("rules[2].code: expected HRESULT"), "{e}");
    let e = plan_error(&three(
        r#"{"op":"StartComputeSystem","action":"fail","code":"0x1FFFFFFFF"}"#,
    ));
    assert!(e.starts_with("rules[2].code:"), "{e}");
    let e = plan_error(&three(r#"{"op":"StartSystem","action":"fail","code":1}"#));
    assert!(
        e.starts_with("rules[2].op: unknown operation `StartSystem`"),
        "{e}"
    );
    let e = plan_error(&three(
        r#"{"op":"StartComputeSystem","action":"fail","code":"0x00000000"}"#,
    ));
    assert_eq!(e, "rules[2].code: `fail` needs an error code, not S_OK (0)");
    let e = plan_error(&three(r#"{"op":"StartComputeSystem","action":"explode"}"#));
    assert!(e.starts_with("rules[2].action:"), "{e}");
    let e = plan_error(&three(r#"{"op":"StartComputeSystem","action":"fail"}"#));
    assert!(e.starts_with("rules[2].code: missing field"), "{e}");
    let e = plan_error(&three(
        r#"{"op":"StartComputeSystem","action":"fail","code":1,"cdoe":2}"#,
    ));
    assert!(e.starts_with("rules[2].cdoe: unknown field"), "{e}");
    let e = plan_error(&three(
        r#"{"op":"StartComputeSystem","nth":0,"action":"fail","code":1}"#,
    ));
    assert!(e.starts_with("rules[2].nth:"), "{e}");
    let e = plan_error(&three(r#"{"op":"CreateProcess","action":"pending"}"#));
    assert!(e.starts_with("rules[2].action: `pending` applies"), "{e}");
    let e = plan_error(&three(
        r#"{"notification":"SystemExited","action":"fail","code":1}"#,
    ));
    assert!(e.starts_with("rules[2].action:"), "{e}");
    let e = plan_error(&three(r#"{"notification":"Bogus","action":"drop"}"#));
    assert!(
        e.starts_with("rules[2].notification: unknown notification"),
        "{e}"
    );
    let e = plan_error(&three(
        r#"{"op":"StartComputeSystem","action":"delay","ms":"soon"}"#,
    ));
    assert!(e.starts_with("rules[2].ms: expected milliseconds"), "{e}");
    let e = plan_error(&three(r#"{"action":"drop"}"#));
    assert!(e.starts_with("rules[2]: missing trigger"), "{e}");
    assert!(plan_error(r#"{"rulez":[]}"#).starts_with("rulez: unknown field"));
    assert!(plan_error("[1]").starts_with("$: expected an object"));
    assert!(plan_error("{").starts_with("$: invalid JSON"));
    // code-built plans get the same checks
    let bad = FaultPlan::new().rule(Rule::call(Method::OpenProcess).never_complete());
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .starts_with("rules[0].action:"));
    assert!(Simulator::try_new(SimConfig::default().faults(bad)).is_err());
}

#[test]
fn plans_load_from_files() {
    let path = std::env::temp_dir().join(format!("hcs-sim-plan-{}.json", std::process::id()));
    std::fs::write(
        &path,
        r#"{"rules":[{"op":"OpenComputeSystem","action":"fail","code":"0x80070005"}]}"#,
    )
    .unwrap();
    let plan = FaultPlan::from_file(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let sim = sim_with(plan);
    assert_eq!(
        sim.open_compute_system("x").unwrap_err().code,
        HResult::E_ACCESSDENIED
    );
    assert!(matches!(FaultPlan::from_file(&path), Err(PlanError::Io { .. })));
}

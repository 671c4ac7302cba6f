//! Behaviour of the scripted fake driver.

use hcs::notify::Subscription;
use hcs::{ApiGeneration, CallbackHandle, Driver, HResult, NotificationKind, NotifyContext, SystemHandle};
use hcs_testkit::{system_exited, Answer, ExitKind, FakeDriver, Gate, HandleCounts, Method};
use std::io::{Read, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

/// One observed notification: kind, status, payload and the thread that delivered it.
type Seen = (NotificationKind, HResult, Option<String>, thread::ThreadId);

/// A subscription that forwards every notification (with the delivering thread) to a channel.
fn listener() -> (Subscription, mpsc::Receiver<Seen>) {
    let (tx, rx) = mpsc::channel();
    let sub = Subscription::new(move |kind, status, payload| {
        let _ = tx.send((kind, status, payload.map(str::to_owned), thread::current().id()));
    });
    (sub, rx)
}

fn unregistered_ctx() -> NotifyContext {
    NotifyContext::new(u64::MAX - 1).unwrap()
}

fn create(fake: &FakeDriver, id: &str) -> SystemHandle {
    fake.create_compute_system(id, "{}", unregistered_ctx())
        .unwrap()
        .value
}

#[test]
fn scripted_answers_are_used_in_fifo_order_then_the_default_applies() {
    let fake = FakeDriver::new();
    let system = create(&fake, "fifo");
    fake.script(
        Method::GetComputeSystemProperties,
        Answer::ok_with(r#"{"first":1}"#),
    );
    fake.script(Method::GetComputeSystemProperties, Answer::fail(HResult::E_FAIL));
    fake.script(
        Method::GetComputeSystemProperties,
        Answer::ok_with(r#"{"third":3}"#),
    );
    assert_eq!(fake.scripted_remaining(Method::GetComputeSystemProperties), 3);

    let first = fake.get_compute_system_properties(system, "q1").unwrap();
    assert_eq!(first.value, r#"{"first":1}"#);
    assert!(!first.pending);
    let second = fake.get_compute_system_properties(system, "q2").unwrap_err();
    assert_eq!(second.code, HResult::E_FAIL);
    assert_eq!(second.document, None);
    assert_eq!(
        fake.get_compute_system_properties(system, "q3").unwrap().value,
        r#"{"third":3}"#
    );
    // Queue empty: built-in default with the creation id.
    let default = fake.get_compute_system_properties(system, "q4").unwrap().value;
    let parsed: serde_json::Value = serde_json::from_str(&default).unwrap();
    assert_eq!(parsed["Id"], "fifo");
    assert_eq!(parsed["SystemType"], "Container");
    assert_eq!(parsed["RuntimeOsType"], "windows");
    assert_eq!(parsed["Owner"], "fake");

    // A configured default replaces the built-in one, and scripts still come first.
    fake.set_default(Method::GetComputeSystemProperties, Answer::ok_with("{}"));
    fake.script(Method::GetComputeSystemProperties, Answer::ok_with("[1]"));
    assert_eq!(
        fake.get_compute_system_properties(system, "").unwrap().value,
        "[1]"
    );
    assert_eq!(
        fake.get_compute_system_properties(system, "").unwrap().value,
        "{}"
    );
    assert_eq!(
        fake.get_compute_system_properties(system, "").unwrap().value,
        "{}"
    );
    fake.clear_default(Method::GetComputeSystemProperties);
    assert!(fake
        .get_compute_system_properties(system, "")
        .unwrap()
        .value
        .contains("\"fifo\""));

    let queries: Vec<String> = fake
        .calls_of(Method::GetComputeSystemProperties)
        .into_iter()
        .map(|c| c.arg)
        .collect();
    assert_eq!(&queries[..4], ["q1", "q2", "q3", "q4"]);
    assert_eq!(fake.count(Method::GetComputeSystemProperties), 8);
    fake.close_compute_system(system).unwrap();
    fake.assert_no_leaks();
}

#[test]
fn failure_carries_code_and_result_document_and_issues_no_handle() {
    let fake = FakeDriver::new();
    let doc = r#"{"Error":-2143878898,"ErrorEvents":[{"Message":"boom"}]}"#;
    fake.script(
        Method::CreateComputeSystem,
        Answer::fail_with_document(HResult::HCS_E_SYSTEM_ALREADY_EXISTS, doc),
    );
    let failure = fake
        .create_compute_system("dup", "{}", unregistered_ctx())
        .unwrap_err();
    assert_eq!(failure.code, HResult::HCS_E_SYSTEM_ALREADY_EXISTS);
    assert_eq!(failure.document.as_deref(), Some(doc));
    assert_eq!(fake.open_handles(), HandleCounts::default());

    // with_document on a success rides along in the reply.
    fake.script(
        Method::CreateComputeSystem,
        Answer::ok().with_document("{\"note\":1}"),
    );
    let reply = fake
        .create_compute_system("ok", "{}", unregistered_ctx())
        .unwrap();
    assert_eq!(reply.document.as_deref(), Some("{\"note\":1}"));
    assert_eq!(reply.value.raw(), 0x1000);

    // A failing create_process issues no process handle either.
    fake.script(Method::CreateProcess, Answer::fail(HResult::ERROR_FILE_NOT_FOUND));
    let err = fake.create_process(reply.value, "{}").unwrap_err();
    assert_eq!(err.code, HResult::ERROR_FILE_NOT_FOUND);
    assert_eq!(fake.open_handles().processes, 0);
    fake.close_compute_system(reply.value).unwrap();
    fake.assert_no_leaks();
}

#[test]
fn defaults_issue_unique_handles_pids_and_realistic_documents() {
    let fake = FakeDriver::new();
    assert_eq!(fake.name(), "fake");
    assert_eq!(fake.generation(), ApiGeneration::V1);
    assert_eq!(
        FakeDriver::with_generation(ApiGeneration::V2).generation(),
        ApiGeneration::V2
    );

    let a = create(&fake, "a");
    let b = fake.open_compute_system("b").unwrap().value;
    let a2 = fake.open_compute_system("a").unwrap().value;
    assert_eq!([a.raw(), b.raw(), a2.raw()], [0x1000, 0x1001, 0x1002]);

    let (p1, info1) = fake.create_process(a, r#"{"CommandLine":"cmd"}"#).unwrap().value;
    let (p2, info2) = fake.create_process(a, "{}").unwrap().value;
    assert_eq!([p1.raw(), p2.raw()], [0x2000, 0x2001]);
    assert_eq!([info1.pid, info2.pid], [100, 101]);
    assert!(info1.stdin.is_none() && info1.stdout.is_none() && info1.stderr.is_none());
    let p3 = fake.open_process(b, 77).unwrap().value;
    assert_eq!(p3.raw(), 0x2002);

    let props: serde_json::Value =
        serde_json::from_str(&fake.get_process_properties(p3).unwrap().value).unwrap();
    assert_eq!(
        props,
        serde_json::json!({"ProcessId":77,"Exited":true,"ExitCode":0,"LastWaitResult":0})
    );

    let list: serde_json::Value =
        serde_json::from_str(&fake.enumerate_compute_systems("{}").unwrap().value).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);

    let cb = fake.register_process_callback(p1, unregistered_ctx()).unwrap();
    assert_eq!(cb.raw(), 0x3000);
    fake.unregister_process_callback(cb).unwrap();

    // Closed handles are never reused.
    fake.close_compute_system(b).unwrap();
    assert_eq!(create(&fake, "c").raw(), 0x1003);
    assert!(fake.get_service_properties("{}").is_ok());
    assert_eq!(fake.calls_of(Method::OpenProcess)[0].arg, "77");
    assert_eq!(fake.calls_of(Method::OpenProcess)[0].id.as_deref(), Some("b"));
}

#[test]
fn stdio_answer_gives_in_memory_pipes_and_records_stdin() {
    let fake = FakeDriver::new();
    let system = create(&fake, "io");
    fake.script(Method::CreateProcess, Answer::ok_with_stdio("hello\n", "oops"));
    let (process, info) = fake.create_process(system, "{}").unwrap().value;
    let mut out = String::new();
    info.stdout.unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(out, "hello\n");
    let mut err = String::new();
    info.stderr.unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(err, "oops");
    let mut stdin = info.stdin.unwrap();
    stdin.write_all(b"input").unwrap();
    assert_eq!(fake.stdin_written(info.pid), b"input");
    assert!(fake.stdin_written(9999).is_empty());

    fake.script(Method::GetProcessInfo, Answer::ok().with_stdio("again", ""));
    let info2 = fake.get_process_info(process).unwrap().value;
    assert_eq!(info2.pid, info.pid);
    info2.stdin.unwrap().write_all(b" more").unwrap();
    assert_eq!(fake.stdin_written(info.pid), b"input more");

    fake.script(Method::CreateProcess, Answer::ok().with_pid(4242));
    assert_eq!(fake.create_process(system, "{}").unwrap().value.1.pid, 4242);
}

#[test]
fn pending_start_with_completion_arrives_on_another_thread() {
    let fake = FakeDriver::new();
    let (sub, rx) = listener();
    let system = create(&fake, "pending");
    let cb = fake
        .register_compute_system_callback(system, sub.context())
        .unwrap();
    fake.script(
        Method::StartComputeSystem,
        Answer::pending().then_complete(
            NotificationKind::SystemStartCompleted,
            HResult::ERROR_VMCOMPUTE_TERMINATED_DURING_START,
            Some(r#"{"x":1}"#.to_owned()),
            Duration::from_millis(20),
        ),
    );
    let start = Instant::now();
    let reply = fake.start_compute_system(system, "", sub.context()).unwrap();
    assert!(reply.pending);
    assert_eq!(
        fake.pending_context(Method::StartComputeSystem),
        Some(sub.context())
    );
    assert_eq!(fake.pending_context(Method::PauseComputeSystem), None);

    let (kind, status, payload, thread) = rx.recv_timeout(WAIT).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert_eq!(kind, NotificationKind::SystemStartCompleted);
    assert_eq!(status, HResult::ERROR_VMCOMPUTE_TERMINATED_DURING_START);
    assert_eq!(payload.as_deref(), Some(r#"{"x":1}"#));
    assert_ne!(thread, thread::current().id());
    assert!(fake.wait_for_deliveries(WAIT));

    // A call without ctx completes to the handle's registered context.
    fake.script(
        Method::TerminateComputeSystem,
        Answer::pending().then_complete(NotificationKind::SystemExited, 0u32, None, Duration::ZERO),
    );
    assert!(fake.terminate_compute_system(system, "").unwrap().pending);
    assert_eq!(rx.recv_timeout(WAIT).unwrap().0, NotificationKind::SystemExited);

    fake.unregister_compute_system_callback(cb).unwrap();
    fake.close_compute_system(system).unwrap();
    fake.assert_no_leaks();
}

#[test]
fn pending_create_returns_a_fresh_handle_and_completes_to_ctx() {
    let fake = FakeDriver::new();
    let (sub, rx) = listener();
    fake.script(
        Method::CreateComputeSystem,
        Answer::pending().then_complete(
            NotificationKind::SystemCreateCompleted,
            0u32,
            None,
            Duration::from_millis(5),
        ),
    );
    let reply = fake.create_compute_system("p", "{}", sub.context()).unwrap();
    assert!(reply.pending);
    assert_eq!(reply.value.raw(), 0x1000);
    assert_eq!(fake.open_handles().systems, 1);
    assert_eq!(
        rx.recv_timeout(WAIT).unwrap().0,
        NotificationKind::SystemCreateCompleted
    );
    let call = &fake.calls_of(Method::CreateComputeSystem)[0];
    assert_eq!(call.ctx, Some(sub.context()));
    assert_eq!(call.arg, "{}");
    fake.close_compute_system(reply.value).unwrap();
}

#[test]
fn completion_scheduled_before_unregister_is_not_delivered_after_it() {
    let fake = FakeDriver::new();
    let (sub, rx) = listener();
    let system = create(&fake, "late");
    let cb = fake
        .register_compute_system_callback(system, sub.context())
        .unwrap();
    fake.script(
        Method::ShutdownComputeSystem,
        Answer::pending().then_complete(
            NotificationKind::SystemExited,
            0u32,
            None,
            Duration::from_millis(50),
        ),
    );
    fake.shutdown_compute_system(system, "").unwrap();
    fake.unregister_compute_system_callback(cb).unwrap();
    assert!(fake.wait_for_deliveries(WAIT));
    assert!(
        rx.try_recv().is_err(),
        "the driver itself must not call back after unregister"
    );
    fake.close_compute_system(system).unwrap();
}

#[test]
fn late_fire_after_unregister_reaches_nobody_once_the_listener_is_gone() {
    let fake = FakeDriver::new();
    let (sub, rx) = listener();
    let system = create(&fake, "late-fire");
    let cb = fake
        .register_compute_system_callback(system, sub.context())
        .unwrap();
    assert_eq!(fake.last_system_context(), Some(sub.context()));
    assert!(fake.fire(sub.context(), NotificationKind::SystemExited, 0u32, None));
    assert_eq!(rx.recv_timeout(WAIT).unwrap().0, NotificationKind::SystemExited);

    fake.unregister_compute_system_callback(cb).unwrap();
    let ctx = fake
        .system_context(system.raw())
        .expect("context kept after unregister");
    assert_eq!(ctx, sub.context());
    drop(sub); // the object removes its registry entry
    assert!(!fake.fire(ctx, NotificationKind::SystemExited, 0u32, None));
    assert!(rx.try_recv().is_err());
    fake.close_compute_system(system).unwrap();
    fake.assert_no_leaks();
}

#[test]
fn process_contexts_are_tracked_and_completion_targets_the_new_process() {
    let fake = FakeDriver::new();
    let (sub, rx) = listener();
    let system = create(&fake, "proc");
    fake.script(
        Method::CreateProcess,
        Answer::ok().then_complete(
            NotificationKind::ProcessExited,
            0u32,
            Some(r#"{"ExitCode":3}"#.into()),
            Duration::from_millis(30),
        ),
    );
    let (process, _) = fake.create_process(system, "{}").unwrap().value;
    // Registered after create returns, before the delay elapses: like hcsshim.
    let cb = fake.register_process_callback(process, sub.context()).unwrap();
    assert_eq!(fake.process_context(process.raw()), Some(sub.context()));
    assert_eq!(fake.last_process_context(), Some(sub.context()));
    let (kind, _, payload, _) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(kind, NotificationKind::ProcessExited);
    assert_eq!(payload.as_deref(), Some(r#"{"ExitCode":3}"#));
    fake.unregister_process_callback(cb).unwrap();
    fake.close_process(process).unwrap();
    fake.close_compute_system(system).unwrap();
    fake.assert_no_leaks();
}

#[test]
fn blocking_gate_holds_the_call_inside_the_driver_until_opened() {
    let fake = FakeDriver::new();
    let system = create(&fake, "gate");
    let gate = Gate::new();
    fake.script(Method::CloseComputeSystem, Answer::ok().blocking(gate.clone()));
    let f2 = Arc::clone(&fake);
    let closer = thread::spawn(move || f2.close_compute_system(system));
    assert!(gate.wait_entered(WAIT));
    assert_eq!(gate.entered(), 1);
    // Logged on entry, but the handle is still open while the call is inside.
    assert_eq!(fake.count(Method::CloseComputeSystem), 1);
    thread::sleep(Duration::from_millis(20));
    assert!(!closer.is_finished());
    assert_eq!(fake.open_handles().systems, 1);
    gate.open();
    closer.join().unwrap().unwrap();
    assert_eq!(fake.open_handles().systems, 0);
    // An open gate lets later calls straight through.
    fake.script(Method::OpenComputeSystem, Answer::ok().blocking(gate.clone()));
    let again = fake.open_compute_system("gate").unwrap().value;
    assert_eq!(gate.entered(), 2);
    fake.close_compute_system(again).unwrap();
}

#[test]
fn handle_accounting_counts_and_leak_report_lists_what_leaked() {
    let fake = FakeDriver::new();
    let system = create(&fake, "leaky");
    let (process, _) = fake.create_process(system, "{}").unwrap().value;
    let cb = fake
        .register_compute_system_callback(system, unregistered_ctx())
        .unwrap();
    assert_eq!(
        fake.open_handles(),
        HandleCounts {
            systems: 1,
            processes: 1,
            callbacks: 1
        }
    );

    // A failed close leaves the handle open.
    fake.script(Method::CloseProcess, Answer::fail(HResult::E_FAIL));
    assert_eq!(fake.close_process(process).unwrap_err().code, HResult::E_FAIL);
    assert_eq!(fake.open_handles().processes, 1);
    // A pending answer for a call that cannot be pending is a failure with the pending code.
    fake.script(Method::UnregisterComputeSystemCallback, Answer::pending());
    assert_eq!(
        fake.unregister_compute_system_callback(cb).unwrap_err().code,
        HResult::ERROR_VMCOMPUTE_OPERATION_PENDING
    );
    assert_eq!(fake.open_handles().callbacks, 1);

    let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fake.assert_no_leaks()))
        .expect_err("leaks must panic");
    let message = report.downcast_ref::<String>().unwrap();
    assert!(message.contains("1 system handle(s), 1 process handle(s), 1 callback registration(s)"));
    assert!(message.contains("system handle 0x1000 (id \"leaky\")"));
    assert!(message.contains("process handle 0x2000 (pid 100"));
    assert!(message.contains("system callback 0x3000"));

    fake.unregister_compute_system_callback(cb).unwrap();
    fake.close_process(process).unwrap();
    fake.close_compute_system(system).unwrap();
    assert_eq!(fake.open_handles(), HandleCounts::default());
    fake.assert_no_leaks();
}

#[test]
fn closing_or_unregistering_unknown_or_closed_handles_fails_with_invalid_handle() {
    let fake = FakeDriver::new();
    let unknown = SystemHandle::new(0xDEAD).unwrap();
    assert_eq!(
        fake.close_compute_system(unknown).unwrap_err().code,
        HResult::ERROR_INVALID_HANDLE
    );
    let system = create(&fake, "twice");
    fake.close_compute_system(system).unwrap();
    assert_eq!(
        fake.close_compute_system(system).unwrap_err().code,
        HResult::ERROR_INVALID_HANDLE
    );
    // Use after close fails the same way.
    assert_eq!(
        fake.start_compute_system(system, "", unregistered_ctx())
            .unwrap_err()
            .code,
        HResult::ERROR_INVALID_HANDLE
    );
    let bogus_cb = CallbackHandle::new(0x3999).unwrap();
    assert_eq!(
        fake.unregister_process_callback(bogus_cb).unwrap_err().code,
        HResult::ERROR_INVALID_HANDLE
    );
    // Invalid-handle calls are logged but consume no scripted answer.
    fake.script(Method::CloseComputeSystem, Answer::fail(HResult::E_FAIL));
    assert_eq!(
        fake.close_compute_system(system).unwrap_err().code,
        HResult::ERROR_INVALID_HANDLE
    );
    assert_eq!(fake.scripted_remaining(Method::CloseComputeSystem), 1);
    let closes = fake.calls_of(Method::CloseComputeSystem);
    assert_eq!(closes.len(), 4);
    assert_eq!(closes[0].handle, Some(0xDEAD));
    assert_eq!(fake.count(Method::UnregisterProcessCallback), 1);
    fake.clear_calls();
    assert!(fake.calls().is_empty());
}

#[test]
fn unregister_waits_for_an_in_flight_delivery() {
    let fake = FakeDriver::new();
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let sub = Subscription::new(move |_, _, _| {
        let _ = entered_tx.send(());
        // Hold the callback until the test releases it.
        let _ = release_rx.lock().unwrap().recv_timeout(WAIT);
    });
    let system = create(&fake, "inflight");
    let cb = fake
        .register_compute_system_callback(system, sub.context())
        .unwrap();
    fake.script(
        Method::ModifyComputeSystem,
        Answer::ok().then_complete(NotificationKind::Other(0xC), 0u32, None, Duration::ZERO),
    );
    fake.modify_compute_system(system, "{}").unwrap();
    entered_rx.recv_timeout(WAIT).unwrap(); // the delivery is inside the callback

    let f2 = Arc::clone(&fake);
    let unregister = thread::spawn(move || {
        let r = f2.unregister_compute_system_callback(cb);
        (r, Instant::now())
    });
    thread::sleep(Duration::from_millis(50));
    assert!(
        !unregister.is_finished(),
        "unregister returned while a callback was running"
    );
    let released_at = Instant::now();
    release_tx.send(()).unwrap();
    let (result, returned_at) = unregister.join().unwrap();
    result.unwrap();
    assert!(returned_at >= released_at);
    assert_eq!(fake.open_handles().callbacks, 0);
    assert!(fake.wait_for_deliveries(WAIT));
    fake.close_compute_system(system).unwrap();
    fake.assert_no_leaks();
}

#[test]
fn fake_is_send_sync_and_usable_as_dyn_driver() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FakeDriver>();
    assert_send_sync::<Answer>();
    assert_send_sync::<Gate>();
    let fake = FakeDriver::new();
    let driver: Arc<dyn Driver> = fake.clone();
    let system = driver.open_compute_system("dyn").unwrap().value;
    driver.close_compute_system(system).unwrap();
    assert_eq!(Method::ALL.len(), 33);
    assert_eq!(Method::StartComputeSystem.to_string(), "StartComputeSystem");
    assert!(Method::SaveComputeSystem.is_pending_capable());
    assert!(!Method::ShutdownComputeSystem.is_pending_capable());
    fake.assert_no_leaks();
}

/// A V2 crash as `computecore.dll` sends it: `SystemExited` with `S_OK`, the unexpected exit
/// only in the payload (`ExitType: UnexpectedExit`, `Status: HCS_E_UNEXPECTED_EXIT`). The
/// lifecycle must still classify it as unexpected, and `exit_error` must say so.
#[test]
fn v2_crash_delivered_as_s_ok_with_unexpected_exit_payload_is_unexpected() {
    let fake = FakeDriver::with_generation(ApiGeneration::V2);
    let system = hcs::System::create(fake.clone(), "v2-crash", "{}").unwrap();
    system.start().unwrap();
    let ctx = fake
        .last_system_context()
        .expect("the system registered a callback");

    // The wire values, spelled out once.
    let (status, payload) = system_exited(ApiGeneration::V2, ExitKind::Unexpected);
    assert_eq!(status, HResult::S_OK);
    let json: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(json["Status"], HResult::HCS_E_UNEXPECTED_EXIT.as_i32());
    assert_eq!(json["ExitType"], "UnexpectedExit");

    assert!(fake.fire_exit(ctx, ExitKind::Unexpected));
    system.wait_timeout(WAIT).unwrap();
    let exit = system.exit_status().expect("exit_status after the crash");
    assert!(exit.unexpected, "a V2 crash must be unexpected: {exit:?}");
    assert_eq!(exit.status, HResult::HCS_E_UNEXPECTED_EXIT);
    assert_eq!(exit.exit_type.map(|t| t.as_str()), Some("UnexpectedExit"));
    let err = system.exit_error().expect("a crash has an exit_error");
    assert!(err.is_unexpected_exit(), "exit_error of a V2 crash: {err}");
    assert_eq!(err.hresult(), Some(HResult::HCS_E_UNEXPECTED_EXIT));
    system.close().unwrap();
    fake.assert_no_leaks();
}

/// The same crash with a payload whose status is success: `ExitType` alone makes it unexpected,
/// and `exit_error` falls back to the generation's unexpected-exit code.
#[test]
fn v2_crash_with_only_the_exit_type_is_unexpected_too() {
    let fake = FakeDriver::with_generation(ApiGeneration::V2);
    let system = hcs::System::create(fake.clone(), "v2-crash-type", "{}").unwrap();
    system.start().unwrap();
    let ctx = fake.last_system_context().unwrap();
    let payload = r#"{"Status":0,"ExitType":"UnexpectedExit"}"#;
    assert!(fake.fire(ctx, NotificationKind::SystemExited, HResult::S_OK, Some(payload)));
    system.wait_timeout(WAIT).unwrap();
    assert!(system.exit_status().unwrap().unexpected);
    let err = system.exit_error().expect("a crash has an exit_error");
    assert!(err.is_unexpected_exit(), "{err}");
    assert_eq!(err.hresult(), Some(HResult::HCS_E_UNEXPECTED_EXIT));
    system.close().unwrap();
    fake.assert_no_leaks();
}

/// Graceful and forced exits, and the V1 encoding of a crash, as `system_exited` builds them.
#[test]
fn system_exited_follows_each_generation() {
    for generation in [ApiGeneration::V1, ApiGeneration::V2] {
        for (kind, exit_type) in [
            (ExitKind::Graceful, "GracefulExit"),
            (ExitKind::Forced, "ForcedExit"),
        ] {
            let (status, payload) = system_exited(generation, kind);
            assert_eq!(status, HResult::S_OK);
            assert_eq!(payload, format!(r#"{{"Status":0,"ExitType":"{exit_type}"}}"#));
        }
    }
    let (status, payload) = system_exited(ApiGeneration::V1, ExitKind::Unexpected);
    assert_eq!(status, HResult::ERROR_VMCOMPUTE_UNEXPECTED_EXIT);
    let json: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(json["Status"], HResult::ERROR_VMCOMPUTE_UNEXPECTED_EXIT.as_i32());

    // A V1 crash through the lifecycle: unexpected from the status.
    let fake = FakeDriver::new();
    let system = hcs::System::create(fake.clone(), "v1-crash", "{}").unwrap();
    system.start().unwrap();
    assert!(fake.fire_exit(fake.last_system_context().unwrap(), ExitKind::Unexpected));
    system.wait_timeout(WAIT).unwrap();
    assert!(system.exit_status().unwrap().unexpected);
    assert!(system.exit_error().unwrap().is_unexpected_exit());
    system.close().unwrap();
    fake.assert_no_leaks();
}

//! The contract corrections of the renovation: V2 crash exits classified from the payload, one
//! spelling for pending, timeouts at every entry point, a driver's underlying error as the
//! error's `source()`, per-object registry hygiene, typed process parameters, and the
//! `is_already_exists` / not-found classifiers.

mod common;

use common::*;
use hcs::hresult::{sets, CodePair};
use hcs::{ApiGeneration, CallOptions, Failure, HResult, NotificationKind, System, Timeouts};
use hcs_testkit::{Answer, FakeDriver, Method};
use std::time::{Duration, Instant};

/// A V2 driver dispatches `SystemExited` with `S_OK` (computecore events carry no status) and
/// says "UnexpectedExit" in the payload: that is a crash, and the exit error says so.
#[test]
fn v2_crash_exit_with_s_ok_status_is_unexpected_from_the_payload() {
    let fake = FakeDriver::with_generation(ApiGeneration::V2);
    let s = System::create_with(fake.clone(), "v2crash", CONFIG, Timeouts::uniform(LONG)).unwrap();
    s.start().unwrap();
    let ctx = fake.last_system_context().unwrap();
    let payload = format!(
        r#"{{"Status":{},"ExitType":"UnexpectedExit"}}"#,
        HResult::HCS_E_UNEXPECTED_EXIT.as_i32()
    );
    assert!(fake.fire(ctx, NotificationKind::SystemExited, HResult::S_OK, Some(&payload)));
    s.wait_timeout(LONG)
        .expect("an unexpected exit is a normal end of the wait");
    let x = s.exit_status().unwrap();
    assert!(x.unexpected, "ExitType UnexpectedExit is a crash: {x:?}");
    assert_eq!(x.status, HResult::HCS_E_UNEXPECTED_EXIT, "the payload's status");
    let e = s.exit_error().expect("a crash has an exit error");
    assert!(e.is_unexpected_exit(), "{e}");
    assert_eq!(e.hresult(), Some(HResult::HCS_E_UNEXPECTED_EXIT));
    s.close().unwrap();
    fake.assert_no_leaks();
}

/// Same, with a payload that carries status 0: the error is the generation's unexpected-exit
/// code, never `S_OK`.
#[test]
fn v2_crash_exit_with_zero_payload_status_wraps_the_unexpected_exit_code() {
    let fake = FakeDriver::with_generation(ApiGeneration::V2);
    let s = System::create_with(fake.clone(), "v2crash0", CONFIG, Timeouts::uniform(LONG)).unwrap();
    let ctx = fake.last_system_context().unwrap();
    let payload = r#"{"Status":0,"ExitType":"UnexpectedExit"}"#;
    assert!(fake.fire(ctx, NotificationKind::SystemExited, 0u32, Some(payload)));
    s.wait_timeout(LONG).unwrap();
    assert!(s.exit_status().unwrap().unexpected);
    let e = s.exit_error().unwrap();
    assert_eq!(e.hresult(), Some(CodePair::UNEXPECTED_EXIT.v2), "{e}");
    assert!(e.is_unexpected_exit());
    s.close().unwrap();
}

/// A V2 graceful exit is neither unexpected nor an error.
#[test]
fn v2_graceful_exit_is_clean() {
    let fake = FakeDriver::with_generation(ApiGeneration::V2);
    let s = System::create_with(fake.clone(), "v2ok", CONFIG, Timeouts::uniform(LONG)).unwrap();
    let ctx = fake.last_system_context().unwrap();
    let payload = r#"{"Status":0,"ExitType":"GracefulExit"}"#;
    assert!(fake.fire(ctx, NotificationKind::SystemExited, 0u32, Some(payload)));
    s.wait_timeout(LONG).unwrap();
    assert!(!s.exit_status().unwrap().unexpected);
    assert!(s.exit_error().is_none());
    s.close().unwrap();
}

/// Pending has one spelling: a pending HRESULT returned as a failure is a failure (the caller
/// sees `is_pending()`), for start as for create, and nothing waits for a completion.
#[test]
fn a_pending_code_returned_as_failure_is_never_waited_for() {
    for code in sets::PENDING.iter().copied() {
        let (fake, s) = system();
        fake.script(Method::StartComputeSystem, Answer::fail(code));
        let t = Instant::now();
        let e = s.start().unwrap_err();
        assert!(e.is_pending(), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2), "no wait for a completion");
        s.close().unwrap();
        fake.assert_no_leaks();

        let fake = FakeDriver::new();
        fake.script(Method::CreateComputeSystem, Answer::fail(code));
        let e = System::create_with(fake.clone(), "p", CONFIG, Timeouts::uniform(LONG)).unwrap_err();
        assert!(e.is_pending(), "{e}");
        fake.assert_no_leaks();
    }
    // `Reply::pending` is the spelling that waits.
    let (fake, s) = system();
    fake.script(
        Method::StartComputeSystem,
        pending_then(NotificationKind::SystemStartCompleted, 0, ms(5)),
    );
    s.start().unwrap();
    s.close().unwrap();
    fake.assert_no_leaks();
}

/// `System::open_with` passes its timeouts to the opened object's pending operations.
#[test]
fn open_with_timeouts_bound_pending_operations() {
    let fake = FakeDriver::new();
    let created = System::create_with(fake.clone(), "opened", CONFIG, Timeouts::uniform(LONG)).unwrap();
    let opened = System::open_with(fake.clone(), "opened", Timeouts::uniform(ms(100))).unwrap();
    assert_eq!(opened.timeouts(), Timeouts::uniform(ms(100)));
    fake.script(Method::StartComputeSystem, Answer::pending());
    let t = Instant::now();
    let e = opened.start().unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the open_with timeout, not the default"
    );
    opened.close().unwrap();
    created.close().unwrap();
}

/// Per-call options still apply to an opened system.
#[test]
fn per_call_timeout_applies_to_opened_system() {
    let fake = FakeDriver::new();
    let created = System::create_with(fake.clone(), "opened2", CONFIG, Timeouts::uniform(LONG)).unwrap();
    let opened = System::open_with(fake.clone(), "opened2", Timeouts::uniform(LONG)).unwrap();
    fake.script(Method::PauseComputeSystem, Answer::pending());
    let e = opened.pause_with(&CallOptions::timeout(ms(50))).unwrap_err();
    assert!(e.is_timeout());
    opened.close().unwrap();
    created.close().unwrap();
}

#[derive(Debug)]
struct Transport;
impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by peer")
    }
}
impl std::error::Error for Transport {}

/// A driver can attach its underlying error; the lifecycle's error returns it from `source()`
/// and keeps classifying by the code.
#[test]
fn a_drivers_underlying_error_is_the_source() {
    let f = Failure::new(HResult::HCS_E_SERVICE_DISCONNECT).with_source(Transport);
    assert_eq!(
        f,
        Failure::new(HResult::HCS_E_SERVICE_DISCONNECT),
        "equality ignores the source"
    );
    let e = hcs::Error::from_failure(&f);
    let src = std::error::Error::source(&e).expect("the transport error");
    assert_eq!(src.to_string(), "connection reset by peer");
    assert!(e.is_service_disconnected());
    assert!(std::error::Error::source(&hcs::Error::from_failure(&Failure::new(1u32 << 31))).is_none());
}

/// Each object tells whether it is still registered.
#[test]
fn notify_context_is_live_until_close() {
    let (fake, s) = system();
    let ctx = s.notify_context().expect("registered while open");
    assert_eq!(Some(ctx), fake.last_system_context());
    fake.script(Method::CreateProcess, Answer::ok().with_pid(9));
    let p = s.create_process(r#"{"CommandLine":"x"}"#).unwrap();
    let pctx = p.notify_context().expect("registered while open");
    assert_ne!(pctx, ctx);
    p.close().unwrap();
    assert_eq!(p.notify_context(), None, "removed at close");
    assert!(s.notify_context().is_some());
    s.close().unwrap();
    assert_eq!(s.notify_context(), None);
    assert!(!hcs::dispatch(
        ctx.raw(),
        NotificationKind::SystemExited,
        0u32,
        None
    ));
    fake.assert_no_leaks();
}

/// Typed process parameters reach the driver as the JSON document.
#[test]
fn create_process_from_serialises_typed_parameters() {
    let (fake, s) = system();
    fake.script(Method::CreateProcess, Answer::ok().with_pid(4));
    let params = hcs::schema::ProcessParameters {
        command_line: Some("cmd /c echo hi".into()),
        create_std_out_pipe: Some(true),
        ..Default::default()
    };
    let p = s.create_process_from(&params).unwrap();
    assert_eq!(p.pid(), 4);
    let call = fake.calls_of(Method::CreateProcess).pop().unwrap();
    let doc: serde_json::Value = serde_json::from_str(&call.arg).unwrap();
    assert_eq!(doc["CommandLine"], "cmd /c echo hi");
    assert_eq!(doc["CreateStdOutPipe"], true);
    p.close().unwrap();
    s.close().unwrap();
}

/// `is_already_exists` names a duplicate id in both encodings; a missing program is not found.
#[test]
fn already_exists_and_missing_program_classifiers() {
    for code in [
        CodePair::SYSTEM_ALREADY_EXISTS.v1,
        CodePair::SYSTEM_ALREADY_EXISTS.v2,
    ] {
        let fake = FakeDriver::new();
        fake.script(Method::CreateComputeSystem, Answer::fail(code));
        let e = System::create(fake.clone(), "dup", CONFIG).unwrap_err();
        assert!(e.is_already_exists(), "{e}");
        assert!(!e.is_not_found());
    }
    for code in [0x8007_0002_u32, 0x8007_0003] {
        let (fake, s) = system();
        fake.script(Method::CreateProcess, Answer::fail(code));
        let e = s
            .create_process(r#"{"CommandLine":"no-such-program"}"#)
            .unwrap_err();
        assert!(e.is_not_found(), "a missing program is not found: {e}");
        assert!(!e.is_already_exists());
        s.close().unwrap();
    }
}

/// The service-level calls: `service_properties` returns HCS's document as it is (empty is an
/// unexpected value), `modify_service_settings` passes the settings verbatim, and a failure is
/// an error of the named operation carrying the result document's events.
#[test]
fn service_calls_return_and_pass_documents_verbatim_and_name_their_failures() {
    let fake = FakeDriver::new();
    fake.script(
        Method::GetServiceProperties,
        Answer::ok_with(r#"{"Properties":[1]}"#),
    );
    assert_eq!(
        hcs::service_properties(&*fake, r#"{"PropertyTypes":["Basic"]}"#).unwrap(),
        r#"{"Properties":[1]}"#
    );
    assert_eq!(
        fake.calls_of(Method::GetServiceProperties)[0].arg,
        r#"{"PropertyTypes":["Basic"]}"#
    );
    fake.script(Method::GetServiceProperties, Answer::ok_with("  "));
    assert_eq!(
        hcs::service_properties(&*fake, "{}").unwrap_err().cause(),
        &hcs::Cause::UnexpectedValue
    );
    fake.script(
        Method::GetServiceProperties,
        Answer::fail_with_document(
            HResult::E_ACCESSDENIED,
            r#"{"ErrorEvents":[{"Message":"denied"}]}"#,
        ),
    );
    let e = hcs::service_properties(&*fake, "{}").unwrap_err();
    assert_eq!(e.operation(), "hcs::GetServiceProperties");
    assert_eq!(e.events()[0].message, "denied");

    hcs::modify_service_settings(&*fake, r#"{"PropertyType":"X"}"#).unwrap();
    assert_eq!(
        fake.calls_of(Method::ModifyServiceSettings)[0].arg,
        r#"{"PropertyType":"X"}"#
    );
    fake.script(
        Method::ModifyServiceSettings,
        Answer::fail_with_document(HResult::E_FAIL, r#"{"ErrorEvents":[{"Message":"no"}]}"#),
    );
    let e = hcs::modify_service_settings(&*fake, "{}").unwrap_err();
    assert_eq!(e.operation(), "hcs::ModifyServiceSettings");
    assert_eq!(e.hresult(), Some(HResult::E_FAIL));
    assert_eq!(e.events()[0].message, "no");
}

//! Correct under a second fault: objects the library owns are released even when their close
//! fails, a create that fails after HCS made the system terminates it, nested deadlines, Kill of
//! a process whose exit never arrives, and a status that says the process has not exited.

mod common;

use common::*;
use hcs::{ExitCode, HResult, NotificationKind, System, Timeouts};
use hcs_testkit::{Answer, FakeDriver, Method};
use std::time::{Duration, Instant};

const PARAMS: &str = r#"{"CommandLine":"cmd /c exit 3"}"#;

/// A half-built System (create succeeded, the first properties query failed) whose close
/// fails once is still released: the library retries, and nothing leaks.
#[test]
fn half_built_system_is_released_when_its_close_fails_once() {
    let fake = FakeDriver::new();
    fake.script(Method::GetComputeSystemProperties, Answer::fail(HResult::E_FAIL));
    fake.script(Method::CloseComputeSystem, Answer::fail(HResult::E_FAIL));
    let e = System::create_with(fake.clone(), "half", CONFIG, Timeouts::uniform(LONG)).unwrap_err();
    assert_eq!(e.hresult(), Some(HResult::E_FAIL));
    assert_eq!(
        fake.count(Method::CloseComputeSystem),
        2,
        "retried after the failed close"
    );
    let ctx = fake.calls_of(Method::CreateComputeSystem)[0].ctx.unwrap();
    assert!(
        !hcs::dispatch(ctx.raw(), NotificationKind::SystemExited, 0u32, None),
        "the half-built system's registry entry is gone"
    );
    fake.assert_no_leaks();
}

/// When the close of an object nobody can reach keeps failing, the registry entry is removed
/// regardless after a bounded number of attempts (the driver's handle is then the driver's
/// problem, and it is logged).
#[test]
fn unreachable_object_whose_close_always_fails_leaves_no_registry_entry() {
    let fake = FakeDriver::new();
    let s = System::create_with(fake.clone(), "stuck", CONFIG, Timeouts::uniform(LONG)).unwrap();
    let ctx = s.notify_context().unwrap();
    fake.set_default(Method::CloseComputeSystem, Answer::fail(HResult::E_FAIL));
    let t = Instant::now();
    drop(s);
    assert_eq!(fake.count(Method::CloseComputeSystem), 3, "bounded retry");
    assert!(
        t.elapsed() >= Duration::from_millis(30),
        "the attempts back off 10 ms, then 20 ms"
    );
    assert!(
        !hcs::dispatch(ctx.raw(), NotificationKind::SystemExited, 0u32, None),
        "the registry entry is gone"
    );
    fake.clear_default(Method::CloseComputeSystem);
}

/// A half-built System whose close always fails is given up on exactly once: after the bounded
/// attempts its handle is forgotten, so dropping the half-built object tries no further close.
#[test]
fn half_built_system_whose_close_always_fails_is_given_up_once() {
    let fake = FakeDriver::new();
    fake.script(Method::GetComputeSystemProperties, Answer::fail(HResult::E_FAIL));
    fake.set_default(Method::CloseComputeSystem, Answer::fail(HResult::E_FAIL));
    let e = System::create_with(fake.clone(), "given-up", CONFIG, Timeouts::uniform(LONG)).unwrap_err();
    assert_eq!(e.hresult(), Some(HResult::E_FAIL));
    assert_eq!(
        fake.count(Method::CloseComputeSystem),
        3,
        "three attempts in all, none after the handle was forgotten"
    );
    let ctx = fake.calls_of(Method::CreateComputeSystem)[0].ctx.unwrap();
    assert!(!hcs::dispatch(
        ctx.raw(),
        NotificationKind::SystemExited,
        0u32,
        None
    ));
    fake.clear_default(Method::CloseComputeSystem);
}

/// A caller-owned close that fails with an invalid handle (the service restarted and every old
/// handle is dead) does not keep a registry entry forever: a dead handle is released.
#[test]
fn close_after_the_handles_died_releases_the_registry_entry() {
    for method in [
        Method::UnregisterComputeSystemCallback,
        Method::CloseComputeSystem,
    ] {
        for code in [HResult::E_HANDLE, HResult::ERROR_INVALID_HANDLE] {
            let (fake, s) = system();
            let ctx = s.notify_context().unwrap();
            fake.script(method, Answer::fail(code));
            s.close().unwrap();
            assert_eq!(s.notify_context(), None, "{method} {code}");
            assert!(!hcs::dispatch(
                ctx.raw(),
                NotificationKind::SystemExited,
                0u32,
                None
            ));
            assert!(s.wait().unwrap_err().is_already_closed());
        }
    }
    // Any other failure stays retryable for the caller.
    let (fake, s) = system();
    fake.script(Method::CloseComputeSystem, Answer::fail(HResult::E_FAIL));
    assert!(s.close().is_err());
    assert!(
        s.properties(&[]).is_ok(),
        "the object stays usable after a retryable failure"
    );
    s.close().unwrap();
}

/// Kill's temporary handles are released even when their close fails once.
#[test]
fn kills_temporary_handles_are_released_when_their_close_fails_once() {
    let (fake, s) = system();
    let p = s.create_process(PARAMS).unwrap();
    fake.script(Method::CloseProcess, Answer::fail(HResult::E_FAIL));
    fake.script(Method::CloseComputeSystem, Answer::fail(HResult::E_FAIL));
    assert!(p.kill().unwrap());
    p.close().unwrap();
    s.close().unwrap();
    fake.assert_no_leaks();
}

/// A create that fails after HCS has made the system terminates it (unless the failure says
/// the system is gone), so a retry under the same id does not meet "already exists".
#[test]
fn create_failing_after_the_handle_exists_terminates_the_system() {
    // The first properties query fails.
    let fake = FakeDriver::new();
    fake.script(Method::GetComputeSystemProperties, Answer::fail(HResult::E_FAIL));
    System::create_with(fake.clone(), "c1", CONFIG, Timeouts::uniform(LONG)).unwrap_err();
    assert_eq!(fake.count(Method::TerminateComputeSystem), 1);
    fake.assert_no_leaks();

    // The create completion reports failure.
    let fake = FakeDriver::new();
    fake.script(
        Method::CreateComputeSystem,
        pending_then(NotificationKind::SystemCreateCompleted, HResult::E_FAIL.0, ms(5)),
    );
    let e = System::create_with(fake.clone(), "c2", CONFIG, Timeouts::uniform(LONG)).unwrap_err();
    assert_eq!(e.hresult(), Some(HResult::E_FAIL));
    assert_eq!(fake.count(Method::TerminateComputeSystem), 1);
    fake.assert_no_leaks();

    // ... unless the failure says the system is gone.
    let fake = FakeDriver::new();
    fake.script(
        Method::CreateComputeSystem,
        pending_then(
            NotificationKind::SystemCreateCompleted,
            HResult::HCS_E_SYSTEM_NOT_FOUND.0,
            ms(5),
        ),
    );
    let e = System::create_with(fake.clone(), "c3", CONFIG, Timeouts::uniform(LONG)).unwrap_err();
    assert!(e.is_not_found());
    assert_eq!(fake.count(Method::TerminateComputeSystem), 0);
    fake.assert_no_leaks();
}

/// Kill of a process that is already gone, whose exit notification never arrives: its waits
/// still end (after one second, as Signal's do), and the exit code is unknown, not a hang.
#[test]
fn kill_of_a_gone_process_whose_exit_never_arrives_unblocks_waits() {
    for (method, code) in [
        (Method::TerminateProcess, HResult::E_ACCESSDENIED),
        (Method::TerminateProcess, HResult::HCS_E_PROCESS_ALREADY_STOPPED),
        (Method::TerminateProcess, HResult::ERROR_VMCOMPUTE_INVALID_STATE),
        (Method::OpenProcess, HResult::HCS_E_PROCESS_ALREADY_STOPPED),
    ] {
        let (fake, s) = system();
        let p = s.create_process(PARAMS).unwrap();
        fake.script(method, Answer::fail(code));
        p.kill().unwrap();
        let t = Instant::now();
        let r = p.wait_timeout(Duration::from_secs(5));
        assert!(
            r.is_err(),
            "{method} {code}: the forced end is an error, not a clean exit"
        );
        assert!(t.elapsed() < Duration::from_secs(3), "{method} {code}: no hang");
        assert_eq!(p.exit(), Some(ExitCode::Unknown), "{method} {code}");
        p.close().unwrap();
        s.close().unwrap();
    }
}

/// A real exit arriving before the forced end wins: the exit code is the real one.
#[test]
fn kill_force_unblock_never_overrides_a_real_exit() {
    let (fake, s) = system();
    fake.set_default(
        Method::GetProcessProperties,
        Answer::ok_with(r#"{"Exited":true,"ExitCode":137}"#),
    );
    let p = s.create_process(PARAMS).unwrap();
    fake.script(Method::TerminateProcess, Answer::fail(HResult::E_ACCESSDENIED));
    p.kill().unwrap();
    let ctx = p.notify_context().unwrap();
    assert!(fake.fire(ctx, NotificationKind::ProcessExited, 0u32, None));
    p.wait_timeout(LONG).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(p.exit(), Some(ExitCode::Code(137)));
    p.close().unwrap();
    s.close().unwrap();
}

/// V1: a stray `ProcessExited` answered by a status saying `Exited: false` is never a clean
/// exit with code 0: the code is unknown.
#[test]
fn a_status_saying_not_exited_is_an_unknown_exit_code_never_zero() {
    let (fake, s) = system();
    fake.set_default(
        Method::GetProcessProperties,
        Answer::ok_with(r#"{"ProcessId":1,"Exited":false,"ExitCode":0,"LastWaitResult":0}"#),
    );
    let p = s.create_process(PARAMS).unwrap();
    let ctx = p.notify_context().unwrap();
    assert!(fake.fire(ctx, NotificationKind::ProcessExited, 0u32, None));
    p.wait_timeout(LONG).unwrap();
    assert_eq!(p.exit(), Some(ExitCode::Unknown));
    assert_eq!(p.exit_code().unwrap(), -1);
    p.close().unwrap();
    s.close().unwrap();
}

/// A caller's close whose handle close fails leaves the object open for a retry, and still
/// hearing its notifications: a wait on it ends when the system exits (found by the fault soak:
/// the callback had been unregistered and the registry entry removed, so the wait hung).
#[test]
fn an_object_whose_close_failed_still_hears_its_exit() {
    let (fake, s) = system();
    fake.script(Method::CloseComputeSystem, Answer::fail(HResult::E_FAIL));
    assert!(s.close().is_err());
    let ctx = s.notify_context().expect("still registered");
    assert_eq!(
        fake.last_system_context(),
        Some(ctx),
        "the callback was registered again"
    );
    exit_system(&fake, 0, "GracefulExit");
    s.wait_timeout(Duration::from_secs(5))
        .expect("the exit reached the open object");
    s.close().unwrap();
    fake.assert_no_leaks();

    // The same for a process.
    let (fake, s) = system();
    let p = s.create_process(PARAMS).unwrap();
    fake.script(Method::CloseProcess, Answer::fail(HResult::E_FAIL));
    assert!(p.close().is_err());
    let pctx = p.notify_context().expect("still registered");
    fake.set_default(
        Method::GetProcessProperties,
        Answer::ok_with(r#"{"Exited":true,"ExitCode":2}"#),
    );
    assert!(fake.fire(pctx, NotificationKind::ProcessExited, 0u32, None));
    p.wait_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(p.exit(), Some(ExitCode::Code(2)));
    p.close().unwrap();
    s.close().unwrap();
    fake.assert_no_leaks();
}

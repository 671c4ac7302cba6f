//! Tests that notice: each one fails when a piece of lifecycle code is replaced by a no-op or a
//! constant (the survivors of a `cargo mutants -p hcs` run listed in issue 13), so none of that
//! code can silently stop doing its job.

mod common;

use common::*;
use hcs::{ExitCode, NotificationKind, System, Timeouts};
use hcs_testkit::{Answer, FakeDriver, Gate, Method};
use std::io::Read;
use std::time::{Duration, Instant};

const PARAMS: &str =
    r#"{"CommandLine":"x","CreateStdInPipe":true,"CreateStdOutPipe":true,"CreateStdErrPipe":true}"#;

/// `Notifier::disarm`: a synchronous answer must leave no armed expectation behind, or the next
/// pending operation's completion would be handed to the stale one and that operation would time
/// out.
#[test]
fn a_synchronous_answer_leaves_no_armed_expectation_behind() {
    let fake = FakeDriver::new();
    let s = System::create_with(fake.clone(), "disarm", CONFIG, Timeouts::uniform(ms(500))).unwrap();
    s.start().unwrap(); // synchronous: armed, then disarmed
    fake.script(
        Method::StartComputeSystem,
        pending_then(NotificationKind::SystemStartCompleted, 0, ms(5)),
    );
    s.start()
        .expect("the completion reaches the operation waiting for it");
    // A failure answer disarms too.
    fake.script(Method::PauseComputeSystem, Answer::fail(hcs::HResult::E_FAIL));
    assert!(s.pause().is_err());
    fake.script(
        Method::PauseComputeSystem,
        pending_then(NotificationKind::SystemPauseCompleted, 0, ms(5)),
    );
    s.pause().unwrap();
    s.close().unwrap();
}

/// `Notifier::set_closing`: a pending wait ends with "already closed" as soon as close begins,
/// not when close has finished (here close is held inside the driver's unregister).
#[test]
fn close_ends_pending_waits_when_it_begins_not_when_it_ends() {
    let (fake, s) = system();
    let s = std::sync::Arc::new(s);
    fake.script(Method::StartComputeSystem, Answer::pending());
    let gate = Gate::new();
    fake.script(
        Method::UnregisterComputeSystemCallback,
        Answer::ok().blocking(gate.clone()),
    );
    let starter = {
        let s = s.clone();
        std::thread::spawn(move || s.start())
    };
    while fake.count(Method::StartComputeSystem) == 0 {
        std::thread::sleep(ms(1));
    }
    let closer = {
        let s = s.clone();
        std::thread::spawn(move || s.close())
    };
    assert!(gate.wait_entered(LONG), "close reached unregister");
    let t = Instant::now();
    let r = loop {
        if starter.is_finished() {
            break starter.join().unwrap();
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the pending start still waits while close is held"
        );
        std::thread::sleep(ms(1));
    };
    assert!(r.unwrap_err().is_already_closed());
    gate.open();
    closer.join().unwrap().unwrap();
}

/// `ExitCode::as_i64`: unknown is -1, a code is itself (never 0).
#[test]
fn exit_code_as_i64_is_minus_one_for_unknown_and_the_code_otherwise() {
    assert_eq!(ExitCode::Unknown.as_i64(), -1);
    assert_eq!(ExitCode::Code(0).as_i64(), 0);
    assert_eq!(ExitCode::Code(7).as_i64(), 7);
    assert_eq!(ExitCode::Code(0xC000_013A).as_i64(), 0xC000_013A);
}

/// `Process::exit_code` after an exit whose code is unknown is -1, never 1 or 0; and the sign of
/// `LastWaitResult` does not matter: any non-zero value means unknown.
#[test]
fn unknown_exit_codes_are_minus_one_whatever_the_sign_of_last_wait_result() {
    for lwr in [1_i64, -1, -2_147_023_436] {
        let (fake, s) = system();
        fake.set_default(
            Method::GetProcessProperties,
            Answer::ok_with(format!(
                r#"{{"Exited":true,"ExitCode":3,"LastWaitResult":{lwr}}}"#
            )),
        );
        let p = s.create_process(PARAMS).unwrap();
        let ctx = p.notify_context().unwrap();
        assert!(fake.fire(ctx, NotificationKind::ProcessExited, 0u32, None));
        p.wait_timeout(LONG).unwrap();
        assert_eq!(p.exit_code().unwrap(), -1, "LastWaitResult {lwr}");
        assert_eq!(p.exit(), Some(ExitCode::Unknown));
        p.close().unwrap();
        s.close().unwrap();
    }
}

/// `take_stdin/stdout/stderr` hand out the cached streams once; `close_stdout/close_stderr` drop
/// the local reader (a later take finds nothing).
#[test]
fn take_and_close_of_single_streams_do_what_they_say() {
    let (fake, s) = system();
    fake.script(
        Method::CreateProcess,
        Answer::ok_with_stdio("out", "err").with_pid(3),
    );
    let p = s.create_process(PARAMS).unwrap();
    assert!(p.take_stdin().is_some());
    assert!(p.take_stdin().is_none(), "taken once");
    let mut out = String::new();
    p.take_stdout().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(out, "out");
    let mut err = String::new();
    p.take_stderr().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(err, "err");
    p.close().unwrap();
    s.close().unwrap();

    let (fake, s) = system();
    fake.script(
        Method::CreateProcess,
        Answer::ok_with_stdio("out", "err").with_pid(4),
    );
    let p = s.create_process(PARAMS).unwrap();
    p.close_stdout().unwrap();
    p.close_stderr().unwrap();
    assert!(p.take_stdout().is_none(), "close_stdout dropped the reader");
    assert!(p.take_stderr().is_none(), "close_stderr dropped the reader");
    assert!(p.take_stdin().is_some(), "only the named streams are dropped");
    p.close().unwrap();
    s.close().unwrap();
}

/// `Process::modify` (resize, close stdin): a pending answer is an error, never "done".
#[test]
fn a_pending_answer_to_process_modify_is_an_error() {
    let (fake, s) = system();
    let p = s.create_process(PARAMS).unwrap();
    fake.script(Method::ModifyProcess, Answer::pending());
    assert!(p.resize_console(80, 25).unwrap_err().is_pending());
    fake.script(Method::ModifyProcess, Answer::pending());
    assert!(p.close_stdin().unwrap_err().is_pending());
    p.resize_console(80, 25).unwrap();
    p.close().unwrap();
    s.close().unwrap();
}

/// Signal's force-unblock happens only for a gone process that has not exited: a process whose
/// exit was already seen keeps its real code.
#[test]
fn signal_force_unblock_never_overrides_an_exit_already_seen() {
    let (fake, s) = system();
    fake.set_default(
        Method::GetProcessProperties,
        Answer::ok_with(r#"{"Exited":true,"ExitCode":5}"#),
    );
    let p = s.create_process(PARAMS).unwrap();
    let ctx = p.notify_context().unwrap();
    assert!(fake.fire(ctx, NotificationKind::ProcessExited, 0u32, None));
    p.wait_timeout(LONG).unwrap();
    fake.script(
        Method::SignalProcess,
        Answer::fail(hcs::HResult::HCS_E_PROCESS_ALREADY_STOPPED),
    );
    assert!(!p.signal(r#"{"Signal":15}"#).unwrap());
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(p.exit(), Some(ExitCode::Code(5)));
    p.close().unwrap();
    s.close().unwrap();
}

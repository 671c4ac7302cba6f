//! Process lifecycle rules (design §5; C8, I8, I12, I13, Q18, Q19) against the
//! scripted fake driver.

mod common;
use common::*;
use hcs::{ApiGeneration, Cause, ExitCode, HResult, NotificationKind, System, Timeouts};
use hcs_testkit::{Answer, FakeDriver, Method};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const PARAMS: &str = r#"{"CommandLine":"cmd /c exit 3","CreateStdInPipe":true,"CreateStdOutPipe":true}"#;

fn exit_process(fake: &FakeDriver, payload: Option<&str>) {
    let ctx = fake.last_process_context().expect("process registered");
    assert!(fake.fire(ctx, NotificationKind::ProcessExited, 0u32, payload));
}

#[test]
fn v1_exit_code_comes_from_a_properties_query_and_survives_close() {
    let (fake, s) = system();
    fake.script(Method::CreateProcess, Answer::ok().with_pid(42));
    let p = s.create_process(PARAMS).unwrap();
    assert_eq!(p.pid(), 42);
    let e = p.exit_code().unwrap_err();
    assert_eq!(e.cause(), &Cause::InvalidProcessState);
    assert_eq!(e.operation(), "hcs::Process::ExitCode");
    fake.script(
        Method::GetProcessProperties,
        Answer::ok_with(r#"{"ProcessId":42,"Exited":true,"ExitCode":3221225786,"LastWaitResult":0}"#),
    );
    exit_process(&fake, Some("ignored by V1"));
    p.wait_timeout(LONG).unwrap();
    assert_eq!(
        p.exit_code().unwrap(),
        0xC000_013A_i64,
        "u32 codes are neither negative nor -1"
    );
    assert_eq!(p.exit(), Some(ExitCode::Code(0xC000_013A)));
    p.close().unwrap();
    assert_eq!(p.exit_code().unwrap(), 0xC000_013A_i64);
    assert_eq!(fake.count(Method::GetProcessProperties), 1);
    drop(p);
    drop(s);
    fake.assert_no_leaks();
}

#[test]
fn v1_exit_with_last_wait_result_gives_unknown_minus_one() {
    let (fake, s) = system();
    let p = s.create_process(PARAMS).unwrap();
    fake.script(
        Method::GetProcessProperties,
        Answer::ok_with(r#"{"ProcessId":1,"Exited":true,"ExitCode":0,"LastWaitResult":5}"#),
    );
    exit_process(&fake, None);
    p.wait_timeout(LONG).unwrap();
    assert_eq!(p.exit_code().unwrap(), -1);
    assert_eq!(p.exit(), Some(ExitCode::Unknown));
}

#[test]
fn v1_properties_failure_becomes_the_wait_error() {
    let (fake, s) = system();
    let p = s.create_process(PARAMS).unwrap();
    fake.script(Method::GetProcessProperties, Answer::fail(0x8037_011F_u32));
    exit_process(&fake, None);
    let e = p.wait_timeout(LONG).unwrap_err();
    assert_eq!(e.operation(), "hcs::Process::waitBackground");
    assert_eq!(e.pid(), Some(p.pid()));
    assert!(p.exit_code().is_err());
    assert_eq!(
        p.exit(),
        Some(hcs::ExitCode::Unknown),
        "a failed query leaves the code unknown"
    );
}

#[test]
fn v2_exit_code_comes_from_the_payload() {
    let fake = FakeDriver::with_generation(ApiGeneration::V2);
    let s = System::create_with(fake.clone(), "sys", CONFIG, Timeouts::uniform(LONG)).unwrap();
    let p = s.create_process(PARAMS).unwrap();
    exit_process(
        &fake,
        Some(r#"{"ProcessId":1,"Exited":true,"ExitCode":7,"LastWaitResult":0}"#),
    );
    p.wait_timeout(LONG).unwrap();
    assert_eq!(p.exit_code().unwrap(), 7);
    assert_eq!(
        fake.count(Method::GetProcessProperties),
        0,
        "V2 makes no properties query"
    );

    let p = s.create_process(PARAMS).unwrap();
    exit_process(&fake, None);
    p.wait_timeout(LONG).unwrap();
    assert_eq!(p.exit_code().unwrap(), -1, "empty payload: unknown, no error");

    let p = s.create_process(PARAMS).unwrap();
    exit_process(&fake, Some("{garbage"));
    assert!(matches!(
        p.wait_timeout(LONG).unwrap_err().cause(),
        Cause::Json(_)
    ));
    assert_eq!(
        p.exit(),
        Some(hcs::ExitCode::Unknown),
        "a malformed payload has no exit code"
    );
}

/// V1: a properties query answered with an empty or malformed document after an exit is the
/// wait error, and the exit code is unknown (never a made-up number).
#[test]
fn v1_empty_or_malformed_status_after_exit_is_an_error_with_unknown_exit_code() {
    let (fake, s) = system();
    for (doc, json_error) in [("", false), ("{garbage", true)] {
        let p = s.create_process(PARAMS).unwrap();
        fake.script(Method::GetProcessProperties, Answer::ok_with(doc));
        exit_process(&fake, None);
        let e = p.wait_timeout(LONG).unwrap_err();
        if json_error {
            assert!(matches!(e.cause(), Cause::Json(_)), "{doc:?}: {e}");
        } else {
            assert_eq!(e.cause(), &Cause::UnexpectedValue, "{doc:?}: {e}");
        }
        assert_eq!(p.exit(), Some(hcs::ExitCode::Unknown), "{doc:?}");
        assert!(p.exit_code().is_err(), "{doc:?}");
    }
}

#[test]
fn failing_exit_status_and_disconnect_are_wait_errors() {
    let (fake, s) = system();
    let p = s.create_process(PARAMS).unwrap();
    let ctx = fake.last_process_context().unwrap();
    fake.fire(ctx, NotificationKind::ProcessExited, 0x8007_0006_u32, None);
    let e = p.wait_timeout(LONG).unwrap_err();
    assert!(e.is_invalid_handle());
    assert_eq!(fake.count(Method::GetProcessProperties), 0);
    assert_eq!(
        p.exit(),
        Some(hcs::ExitCode::Unknown),
        "a failed exit has no exit code"
    );
    assert!(p.exit_code().unwrap_err().is_invalid_handle());

    let p = s.create_process(PARAMS).unwrap();
    let ctx = fake.last_process_context().unwrap();
    fake.fire(ctx, NotificationKind::ServiceDisconnect, 0u32, None);
    let e = p.wait_timeout(LONG).unwrap_err();
    assert!(e.is_service_disconnected());
    assert_eq!(p.exit_code().unwrap_err().cause(), &Cause::ServiceDisconnected);
}

#[test]
fn create_process_failure_names_the_command_line_in_its_own_field() {
    let (fake, s) = system();
    fake.script(
        Method::CreateProcess,
        Answer::fail_with_document(0x8007_0002_u32, r#"{"ErrorEvents":[{"Message":"no such file"}]}"#),
    );
    let e = s.create_process(PARAMS).unwrap_err();
    assert_eq!(e.operation(), "hcs::System::CreateProcess");
    assert_eq!(e.detail(), Some(r#"command line "cmd /c exit 3""#));
    assert_eq!(e.system_id(), Some("sys"));
    let shown = e.to_string();
    assert!(
        shown.starts_with(r#"hcs::System::CreateProcess sys: "#)
            && shown.contains(r#" (command line "cmd /c exit 3")"#),
        "operation, id, cause and the quoted command line are separate fields: {shown}"
    );
    assert_eq!(e.hresult(), Some(HResult(2)));
    assert_eq!(e.events()[0].message, "no such file");
    fake.assert_no_leaks_processes();
}

trait ProcLeak {
    fn assert_no_leaks_processes(&self);
}
impl ProcLeak for FakeDriver {
    fn assert_no_leaks_processes(&self) {
        let c = self.open_handles();
        assert_eq!(c.processes, 0, "leaked process handles: {c:?}");
    }
}

#[test]
fn process_registration_failure_closes_the_process_handle_i8() {
    let (fake, s) = system();
    fake.script(Method::RegisterProcessCallback, Answer::fail(0x8000_4005_u32));
    let e = s.create_process(PARAMS).unwrap_err();
    assert_eq!(e.operation(), "hcs::System::CreateProcess");
    assert_eq!(fake.count(Method::CloseProcess), 1);
    fake.script(Method::RegisterProcessCallback, Answer::fail(0x8000_4005_u32));
    let e = s.open_process(9).unwrap_err();
    assert_eq!(e.operation(), "hcs::System::OpenProcess");
    assert_eq!(fake.count(Method::CloseProcess), 2);
    fake.assert_no_leaks_processes();
}

#[test]
fn stdio_is_handed_out_once_then_requeried() {
    let (fake, s) = system();
    fake.script(
        Method::CreateProcess,
        Answer::ok_with_stdio("out!", "err!").with_pid(5),
    );
    let p = s.create_process(PARAMS).unwrap();
    let mut io = p.stdio().unwrap();
    let mut out = String::new();
    io.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(out, "out!");
    io.stdin.take().unwrap().write_all(b"in!").unwrap();
    assert_eq!(fake.stdin_written(5), b"in!");
    assert_eq!(fake.count(Method::GetProcessInfo), 0);
    let _again = p.stdio().unwrap();
    assert_eq!(
        fake.count(Method::GetProcessInfo),
        1,
        "second request queries HCS"
    );
    p.close().unwrap();
    assert!(p.stdio().unwrap_err().is_already_closed());
}

#[test]
fn signal_delivered_gone_and_error_paths_i12() {
    let (fake, s) = system();
    let p = s.create_process(PARAMS).unwrap();
    assert!(p.signal(r#"{"Signal":15}"#).unwrap());
    assert_eq!(fake.calls_of(Method::SignalProcess)[0].arg, r#"{"Signal":15}"#);
    fake.script(Method::SignalProcess, Answer::fail(0x8007_0057_u32));
    let e = p.signal("{}").unwrap_err();
    assert_eq!(e.operation(), "hcs::Process::Signal");
    assert_eq!(e.hresult(), Some(HResult(0x57)));
    assert!(
        p.wait_timeout(ms(1200)).unwrap_err().is_timeout(),
        "non-gone errors do not force the wait"
    );
}

#[test]
fn signal_to_a_gone_process_force_unblocks_the_wait_with_the_raw_code_q19() {
    for code in [
        0xC037_0105_u32,
        0x8037_0105,
        0xC037_010E,
        0x8037_010E,
        0x8007_0490,
        0x8037_011F,
    ] {
        let (fake, s) = system();
        let p = s.create_process(PARAMS).unwrap();
        fake.script(Method::SignalProcess, Answer::fail(code));
        let t = Instant::now();
        assert!(!p.signal("{}").unwrap(), "{code:#x}: not delivered");
        let e = p.wait_timeout(LONG).unwrap_err();
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "force-unblock fired early"
        );
        assert_eq!(e.hresult(), Some(HResult(code).to_win32_form()));
        assert_eq!(e.operation(), "", "the raw, unwrapped error is published");
        assert_eq!(
            p.exit_code().unwrap_err().hresult(),
            Some(HResult(code).to_win32_form())
        );
        assert_eq!(p.exit(), Some(hcs::ExitCode::Unknown), "{code:#x}: no exit code");
    }
}

#[test]
fn kill_uses_a_second_handle_on_the_same_driver_in_order() {
    let (fake, s) = system();
    fake.script(Method::CreateProcess, Answer::ok().with_pid(77));
    let p = s.create_process(PARAMS).unwrap();
    fake.clear_calls();
    assert!(p.kill().unwrap());
    let methods: Vec<Method> = fake.calls().iter().map(|c| c.method).collect();
    assert_eq!(
        methods,
        [
            Method::OpenComputeSystem,
            Method::RegisterComputeSystemCallback,
            Method::GetComputeSystemProperties,
            Method::OpenProcess,
            Method::RegisterProcessCallback,
            Method::TerminateProcess,
            Method::UnregisterProcessCallback,
            Method::CloseProcess,
            Method::UnregisterComputeSystemCallback,
            Method::CloseComputeSystem,
        ]
    );
    assert_eq!(fake.calls_of(Method::OpenProcess)[0].arg, "77");
    assert_eq!(
        fake.calls_of(Method::OpenComputeSystem)[0].id.as_deref(),
        Some("sys")
    );
    fake.clear_calls();
    assert!(p.kill().unwrap(), "idempotent once delivered");
    assert!(fake.calls().is_empty(), "no driver calls after delivery");
    drop(p);
    drop(s);
    fake.assert_no_leaks();
}

#[test]
fn kill_access_denied_or_already_stopped_counts_as_delivered_but_retries() {
    for code in [0x8007_0005_u32, 0x8037_011F, 0xC037_0110] {
        let (fake, s) = system();
        let p = s.create_process(PARAMS).unwrap();
        fake.script(Method::TerminateProcess, Answer::fail(code));
        assert!(p.kill().unwrap(), "{code:#x}");
        assert!(p.kill().unwrap());
        assert_eq!(
            fake.count(Method::TerminateProcess),
            2,
            "{code:#x}: delivered flag must not be set"
        );
    }
}

#[test]
fn kill_gone_family_is_not_delivered_and_other_errors_surface() {
    let (fake, s) = system();
    let p = s.create_process(PARAMS).unwrap();
    fake.script(Method::TerminateProcess, Answer::fail(0xC037_0105_u32));
    assert!(!p.kill().unwrap());
    fake.script(Method::TerminateProcess, Answer::fail(0x8007_0057_u32));
    let e = p.kill().unwrap_err();
    assert_eq!(e.operation(), "hcs::Process::Kill");
    fake.script(Method::OpenProcess, Answer::fail(0x8037_011F_u32));
    assert!(
        p.kill().unwrap(),
        "open-process already stopped counts as delivered"
    );
    fake.script(Method::OpenProcess, Answer::fail(0x8000_4005_u32));
    assert_eq!(p.kill().unwrap_err().operation(), "hcs::System::OpenProcess");
    drop(p);
    drop(s);
    fake.assert_no_leaks();
}

#[test]
fn kill_fallback_terminates_but_leaves_the_callers_system_open_i13() {
    let (fake, s) = system();
    let p = s.create_process(PARAMS).unwrap();
    fake.script(Method::OpenComputeSystem, Answer::fail(0x8007_06BA_u32));
    assert!(p.kill().unwrap());
    assert_eq!(fake.count(Method::TerminateComputeSystem), 1);
    assert!(!s.is_closed(), "the caller's System must stay open");
    s.properties(&[]).unwrap();
}

#[test]
fn kill_after_exit_or_close_is_an_error_without_calls() {
    let (fake, s) = system();
    let p = s.create_process(PARAMS).unwrap();
    exit_process(&fake, None);
    p.wait_timeout(LONG).unwrap();
    fake.clear_calls();
    let e = p.kill().unwrap_err();
    assert!(e.is_already_stopped());
    p.close().unwrap();
    assert!(p.kill().unwrap_err().is_already_closed());
    assert!(fake.calls().iter().all(|c| c.method != Method::OpenComputeSystem));
}

#[test]
fn close_stdin_always_tells_hcs_while_running_and_only_locally_after_exit() {
    let (fake, s) = system();
    let p = s.create_process(r#"{"CommandLine":"x"}"#).unwrap();
    p.close_stdin().unwrap();
    assert_eq!(
        fake.calls_of(Method::ModifyProcess)[0].arg,
        r#"{"Operation":"CloseHandle","CloseHandle":{"Handle":"StdIn"}}"#
    );
    fake.script(Method::ModifyProcess, Answer::fail(0x8000_4005_u32));
    assert_eq!(
        p.close_stdin().unwrap_err().operation(),
        "hcs::Process::CloseStdin"
    );
    exit_process(&fake, None);
    p.wait_timeout(LONG).unwrap();
    p.close_stdin().unwrap();
    assert_eq!(fake.count(Method::ModifyProcess), 2, "no request after exit");
    p.close().unwrap();
    assert!(p.close_stdin().unwrap_err().is_already_closed());
    assert!(p.close_stdout().is_ok() && p.close_stderr().is_ok(), "Q18");
}

/// The race a socket between the caller and HCS widens: the process read EOF and exited, and
/// `close_stdin` reaches HCS before the exit notification reaches us. HCS says the process is
/// gone, which is what closing its stdin wanted: success, local pipe dropped. Another failure is
/// still an error.
#[test]
fn close_stdin_of_a_process_that_just_exited_is_done() {
    let (fake, s) = system();
    let p = s
        .create_process(r#"{"CommandLine":"x","CreateStdInPipe":true}"#)
        .unwrap();
    for code in [0x8037_011F_u32, 0xC037_0105, 0x8037_0105] {
        fake.script(Method::ModifyProcess, Answer::fail(code));
        p.close_stdin()
            .unwrap_or_else(|e| panic!("{code:#x}: the process is gone, its stdin too: {e}"));
    }
    assert!(p.take_stdin().is_none(), "the local stdin was dropped");
    fake.script(Method::ModifyProcess, Answer::fail(0x8007_0005_u32));
    assert!(p.close_stdin().is_err(), "access denied is still a failure");
}

#[test]
fn resize_console_omits_zero_dimensions() {
    let (fake, s) = system();
    let p = s.create_process(PARAMS).unwrap();
    p.resize_console(120, 0).unwrap();
    assert_eq!(
        fake.calls_of(Method::ModifyProcess)[0].arg,
        r#"{"Operation":"ConsoleSize","ConsoleSize":{"Width":120}}"#
    );
}

#[test]
fn closed_process_guards_and_wait_after_close() {
    let (fake, s) = system();
    let p = s.create_process(PARAMS).unwrap();
    p.close().unwrap();
    fake.clear_calls();
    assert!(p.signal("{}").unwrap_err().is_already_closed());
    assert!(p.resize_console(1, 1).unwrap_err().is_already_closed());
    assert!(p.terminate().unwrap_err().is_already_closed());
    assert!(p.wait().unwrap_err().is_already_closed());
    assert!(block_on(p.wait_async(), LONG)
        .unwrap()
        .unwrap_err()
        .is_already_closed());
    assert!(p.close().is_ok());
    assert!(fake.calls().is_empty());
    let ctx = fake.last_process_context().unwrap();
    assert!(
        !fake.fire(ctx, NotificationKind::ProcessExited, 0u32, None),
        "late callback dropped"
    );
}

#[test]
fn many_waiters_on_one_process_exit() {
    let (fake, s) = system();
    let p = std::sync::Arc::new(s.create_process(PARAMS).unwrap());
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || p.wait())
        })
        .collect();
    fake.set_default(Method::GetProcessProperties, Answer::ok_with(r#"{"ExitCode":4}"#));
    exit_process(&fake, None);
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert_eq!(p.exit_code().unwrap(), 4);
}

#[test]
fn process_terminate_swallows_only_the_gone_family() {
    let (fake, s) = system();
    let p = s.create_process(PARAMS).unwrap();
    p.terminate().unwrap();
    fake.script(Method::TerminateProcess, Answer::fail(0x8037_011F_u32));
    p.terminate().unwrap();
    fake.script(Method::TerminateProcess, Answer::fail(0x8007_0005_u32));
    assert!(p.terminate().unwrap_err().is_access_denied());
}

#[test]
fn close_racing_the_v1_exit_resolution_keeps_the_exit_code() {
    let (fake, s) = system();
    fake.set_default(Method::GetProcessProperties, Answer::ok_with(r#"{"ExitCode":9}"#));
    for _ in 0..200 {
        let p = s.create_process(PARAMS).unwrap();
        exit_process(&fake, None);
        p.close().unwrap();
        assert_eq!(
            p.exit_code().unwrap(),
            9,
            "exit observed before close must keep its code"
        );
        p.wait().unwrap();
    }
    drop(s);
    fake.assert_no_leaks();
}

/// `{:?}` of a System and a Process names what they are, for logs and panics.
#[test]
fn debug_output_names_the_system_and_the_process() {
    let (_fake, s) = system();
    let p = s.create_process(PARAMS).unwrap();
    assert_eq!(
        format!("{p:?}"),
        format!(r#"Process {{ system_id: "sys", pid: {} }}"#, p.pid())
    );
    assert_eq!(format!("{s:?}"), r#"System { id: "sys", driver: "fake" }"#);
    assert_eq!(s.id(), "sys");
    assert_eq!(format!("{:?}", s.wait_async()), r#"SystemWait { id: "sys" }"#);
    assert_eq!(
        format!("{:?}", p.wait_async()),
        format!("ProcessWait {{ pid: {} }}", p.pid())
    );
}

/// `stdio()` hands out the creation streams once; a later call asks HCS again. When the first
/// call handed out any stream (here only stdout) and the driver has none to give again, the
/// later call is a not-supported error, never a silently empty set.
#[test]
fn second_stdio_call_after_a_partial_hand_out_is_an_error_when_the_driver_has_none() {
    let (fake, s) = system();
    fake.script(
        Method::CreateProcess,
        Answer::ok().with_streams(false, Some(b"out".to_vec()), None),
    );
    let p = s.create_process(PARAMS).unwrap();
    assert_eq!(p.system_id(), "sys");
    let first = p.stdio().unwrap();
    assert!(first.stdin.is_none() && first.stdout.is_some() && first.stderr.is_none());
    fake.script(
        Method::GetProcessInfo,
        Answer::ok().with_streams(false, None, None),
    );
    let e = p.stdio().unwrap_err();
    assert!(e.is_not_supported(), "{e}");
    assert!(e.to_string().contains("taken by an earlier stdio() call"), "{e}");
    // A driver that can hand them out again does.
    fake.script(
        Method::GetProcessInfo,
        Answer::ok().with_streams(false, None, Some(b"err".to_vec())),
    );
    assert!(p.stdio().unwrap().stderr.is_some());
}

/// A process created without pipes has no streams to hand out, and asking again is no error.
#[test]
fn stdio_of_a_process_without_pipes_is_empty_every_time() {
    let (fake, s) = system();
    let p = s.create_process(PARAMS).unwrap();
    for call in 0..2 {
        let io = p.stdio().unwrap();
        assert!(
            io.stdin.is_none() && io.stdout.is_none() && io.stderr.is_none(),
            "call {call}"
        );
    }
    assert_eq!(fake.count(Method::GetProcessInfo), 1, "the second call asked HCS");
}

/// Creating a process in a closed System is the already-closed error, with no command line
/// attached and no driver call.
#[test]
fn create_process_on_a_closed_system_is_the_already_closed_error_without_details() {
    let (fake, s) = system();
    s.close().unwrap();
    let e = s.create_process(PARAMS).unwrap_err();
    assert!(e.is_already_closed());
    assert_eq!(e.detail(), None);
    assert_eq!(
        e.to_string(),
        "hcs::System::CreateProcess sys: hcsshim: the handle has already been closed"
    );
    assert_eq!(fake.count(Method::CreateProcess), 0);
}

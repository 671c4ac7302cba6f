//! The driver conformance suite (architecture rule 8): one set of checks every [`Driver`] must
//! pass, run through the lifecycle layer ([`hcs::System`], [`hcs::Process`]) and, where a rule is
//! about the driver itself, directly against the [`Driver`] trait.
//!
//! A driver's test crate implements [`Harness`] (how to reach the driver, and which documents
//! make a system and the few processes the checks need) and calls the checks, one test each:
//!
//! ```no_run
//! use hcs_testkit::conformance::{self, Harness};
//! use std::sync::Arc;
//!
//! struct MyHarness {
//!     driver: Arc<dyn hcs::Driver>, // the driver under test
//! }
//!
//! impl Harness for MyHarness {
//!     fn driver(&self) -> Arc<dyn hcs::Driver> {
//!         self.driver.clone()
//!     }
//!     fn system_config(&self) -> String {
//!         r#"{"SchemaVersion":{"Major":2,"Minor":1},"Container":{}}"#.into()
//!     }
//!     fn process_exiting_with(&self, code: u32) -> String {
//!         format!(r#"{{"CommandLine":"cmd /c exit {code}"}}"#)
//!     }
//!     fn process_printing(&self, text: &str) -> String {
//!         serde_json::json!({"CommandLine": format!("cmd /c echo {}", text.trim_end()),
//!                            "CreateStdOutPipe": true}).to_string()
//!     }
//!     fn process_echoing_stdin(&self) -> Option<String> {
//!         Some(r#"{"CommandLine":"findstr x*","CreateStdInPipe":true,"CreateStdOutPipe":true}"#.into())
//!     }
//!     fn process_running_until_killed(&self) -> String {
//!         r#"{"CommandLine":"ping -t localhost"}"#.into()
//!     }
//!     fn max_exit_code(&self) -> u32 {
//!         u32::MAX
//!     }
//! }
//!
//! fn harness() -> MyHarness {
//!     MyHarness { driver: hcs_testkit::FakeDriver::new() } // e.g. your driver instead
//! }
//!
//! // In the driver's tests, one `#[test]` per check:
//! fn lifecycle_transitions() {
//!     conformance::lifecycle_transitions(&harness())
//! }
//! // ... or every check at once:
//! fn conformance() {
//!     conformance::run_all(&harness())
//! }
//! ```
//!
//! [`CHECKS`] lists every check by name, so a driver can generate one test per check with a
//! small macro. Each check panics with a message naming the rule that failed.
//!
//! # What every check also verifies
//!
//! Each check wraps the harness's driver in a recording pass-through driver and, when it ends:
//!
//! * every callback context the lifecycle handed to the driver is gone from the notification
//!   registry (a probe with an untracked notification kind through [`hcs::dispatch`] reaches
//!   nobody), so no System or Process leaked its registration;
//! * the driver's open handles and registrations ([`Harness::open_handles`], when the driver
//!   can count them) are back to what they were when the check began;
//! * [`Harness::assert_no_leaks`] passes (the simulator checks its host processes and systems).
//!
//! The process-global [`hcs::live_registrations`] count is deliberately not compared: tests run
//! in parallel and share the registry. The per-context probes above are exact instead.
//!
//! # Harness rules
//!
//! * Give each check its own driver instance, or at least make sure [`Harness::open_handles`]
//!   counts only what this check did: counts are compared before and after the check.
//! * Compute-system ids come from [`Harness::unique_id`]; the default is unique per process.

use crate::fake::HandleCounts;
use hcs::notify::Subscription;
use hcs::{
    ApiGeneration, CallbackHandle, Driver, DriverResult, ExitCode, Failure, MigrationStep, NotificationKind,
    NotifyContext, PipeReader, ProcessHandle, ProcessInfo, System, SystemHandle, Timeouts,
};
use std::future::Future;
use std::io::{Read, Write};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// The text the suite asks [`Harness::process_printing`] to print (drivers with scripted
/// processes can script exactly this string).
pub const GREETING: &str = "hello from the hcs conformance suite\n";

/// The text the suite writes to [`Harness::process_echoing_stdin`] and expects back.
pub const ECHO_INPUT: &str = "ping\npong\n";

/// Exit codes the [`process_exit_codes`] check always uses (each must be at most
/// [`Harness::max_exit_code`]).
pub const BASIC_EXIT_CODES: [u32; 3] = [0, 3, 255];

/// A Windows-style large exit code (`STATUS_CONTROL_C_EXIT`), checked when
/// [`Harness::max_exit_code`] allows it.
pub const LARGE_EXIT_CODE: u32 = 0xC000_013A;

/// Results of stop calls the lifecycle treats as success (`hcs-behavior.md` C7/I11): already
/// stopped, not found and pending, each in the V1 and V2 encodings. A driver's stop call on an
/// exited system must succeed or fail with one of these, or `System::shutdown`/`terminate`
/// would not be idempotent on that driver.
pub const STOP_SWALLOW_CODES: [u32; 6] = [
    0xC037_0110,
    0x8037_0110,
    0xC037_010E,
    0x8037_010E,
    0xC037_0103,
    0x8037_0117,
];

/// What a driver's test supplies to run the suite.
pub trait Harness: Send + Sync {
    /// The driver under test. Called once per check; return the same instance every time or
    /// a fresh one, as long as [`Harness::open_handles`] counts the returned driver's handles.
    fn driver(&self) -> Arc<dyn Driver>;
    /// A valid compute-system configuration document (passed verbatim to create).
    fn system_config(&self) -> String;
    /// Process parameters for a process that exits at once with `code` (no stdio pipes needed).
    fn process_exiting_with(&self, code: u32) -> String;
    /// Process parameters for a process that writes `text` (always [`GREETING`]) to stdout and
    /// exits with 0; the stdout pipe must be requested.
    fn process_printing(&self, text: &str) -> String;
    /// Process parameters for a `cat`-like process: copies stdin to stdout until EOF, then exits
    /// with 0 (stdin and stdout pipes requested). `None` when the driver cannot run one (e.g. a
    /// scripted backend); the echo parts of [`stdio_round_trip`] are then skipped.
    fn process_echoing_stdin(&self) -> Option<String>;
    /// Process parameters for a process that runs until it is signalled or killed.
    fn process_running_until_killed(&self) -> String;
    /// The largest exit code the driver's processes can report (255 on a POSIX host, `u32::MAX`
    /// on Windows and for scripted processes).
    fn max_exit_code(&self) -> u32;
    /// `SignalProcessOptions` that end [`Harness::process_running_until_killed`] (e.g.
    /// `{"Signal":15}`), or `None` to skip the signal part of [`signal_and_kill`].
    fn terminating_signal(&self) -> Option<String> {
        None
    }
    /// Open handles and registrations of the driver, or `None` when the driver cannot count.
    fn open_handles(&self) -> Option<HandleCounts> {
        None
    }
    /// Completion-wait timeouts for the systems the checks create: short but safe.
    fn timeouts(&self) -> Timeouts {
        Timeouts::uniform(Duration::from_secs(30))
    }
    /// How long a check waits for an exit, an EOF or a notification before it fails.
    fn wait_limit(&self) -> Duration {
        Duration::from_secs(30)
    }
    /// How long a check waits to be confident that something does *not* happen (a callback
    /// after unregistration, ...).
    fn quiet_period(&self) -> Duration {
        Duration::from_millis(100)
    }
    /// A compute-system id no other check (or test) uses.
    fn unique_id(&self, tag: &str) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        format!(
            "conformance-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }
    /// Extra leak checks at the end of every check (the simulator asserts it has no handles,
    /// registrations, systems or host processes left). Defaults to nothing.
    fn assert_no_leaks(&self) {}
}

/// A conformance check: panics when the harness's driver breaks the rule it documents.
pub type Check = fn(&dyn Harness);

/// Every check, by name, in a sensible order.
pub const CHECKS: &[(&str, Check)] = &[
    ("lifecycle_transitions", lifecycle_transitions),
    ("terminate_forces_exit", terminate_forces_exit),
    (
        "invalid_transitions_are_invalid_state",
        invalid_transitions_are_invalid_state,
    ),
    ("open_unknown_is_not_found", open_unknown_is_not_found),
    ("stop_is_idempotent", stop_is_idempotent),
    ("process_exit_codes", process_exit_codes),
    ("stdio_round_trip", stdio_round_trip),
    ("signal_and_kill", signal_and_kill),
    (
        "many_waiters_released_by_one_exit",
        many_waiters_released_by_one_exit,
    ),
    (
        "wait_after_close_is_already_closed",
        wait_after_close_is_already_closed,
    ),
    ("unregister_drains_callbacks", unregister_drains_callbacks),
    (
        "late_callbacks_after_close_are_noops",
        late_callbacks_after_close_are_noops,
    ),
    ("handle_hygiene", handle_hygiene),
];

/// Runs every check in [`CHECKS`], in order; the first failure panics with the check's name.
pub fn run_all(h: &dyn Harness) {
    for (name, check) in CHECKS {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(h)));
        if let Err(p) = r {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("conformance check `{name}` failed: {msg}");
        }
    }
}

// ------------------------------------------------------------------------------------ checks

/// Create → start → pause → resume → shutdown → wait: every step succeeds, the exit is normal
/// (status success, not unexpected, exit type absent or `GracefulExit`), start/stop times are
/// set, and the exit outcome survives `close`.
pub fn lifecycle_transitions(h: &dyn Harness) {
    let s = Session::new(h);
    let sys = s.create("lifecycle");
    assert!(
        sys.exit_status().is_none(),
        "a new system must not report an exit"
    );
    let not_exited = sys
        .exit_error()
        .expect("exit_error before the exit must be `container not exited`");
    assert_eq!(
        *not_exited.cause(),
        hcs::Cause::NotExited,
        "exit_error before the exit: {not_exited}"
    );
    ok("start", sys.start());
    assert!(
        sys.started_at().is_some(),
        "started_at must be set after a successful start"
    );
    ok("pause a running system", sys.pause());
    ok("resume a paused system", sys.resume());
    ok("shutdown", sys.shutdown());
    ok("wait for the shutdown exit", sys.wait_timeout(h.wait_limit()));
    let exit = sys.exit_status().expect("exit_status after the exit");
    assert!(
        exit.status.is_success(),
        "a shutdown exit must have a success status, got {}",
        exit.status
    );
    assert!(
        !exit.unexpected,
        "a shutdown exit must not be unexpected: {exit:?}"
    );
    let t = exit.exit_type.map(|t| t.as_str());
    assert!(
        matches!(t, None | Some("None" | "GracefulExit")),
        "a shutdown's exit type must be absent or GracefulExit, got {t:?}"
    );
    assert!(sys.exit_error().is_none(), "a normal exit has no exit_error");
    assert!(
        sys.stopped_at().is_some(),
        "stopped_at must be set after the exit"
    );
    ok("close", sys.close());
    assert!(sys.is_closed());
    ok(
        "wait after close of an exited system keeps the exit outcome",
        sys.wait(),
    );
    assert_eq!(
        sys.exit_status(),
        Some(exit),
        "the exit status must survive close"
    );
    drop(sys);
    s.finish();
}

/// Terminate → the system exits (not unexpectedly; exit type absent or `ForcedExit`), and
/// processes inside it stop waiting.
pub fn terminate_forces_exit(h: &dyn Harness) {
    let s = Session::new(h);
    let sys = s.create_started("terminate");
    let p = ok(
        "create a long-running process",
        sys.create_process(&h.process_running_until_killed()),
    );
    ok("terminate", sys.terminate());
    ok("wait for the terminate exit", sys.wait_timeout(h.wait_limit()));
    let exit = sys.exit_status().expect("exit_status after terminate");
    assert!(
        exit.status.is_success(),
        "a terminate exit must have a success status, got {}",
        exit.status
    );
    assert!(
        !exit.unexpected,
        "a terminate exit must not be unexpected: {exit:?}"
    );
    let t = exit.exit_type.map(|t| t.as_str());
    assert!(
        matches!(t, None | Some("None" | "ForcedExit")),
        "a terminate's exit type must be absent or ForcedExit, got {t:?}"
    );
    if let Err(e) = p.wait_timeout(h.wait_limit()) {
        assert!(
            !e.is_timeout(),
            "a process in a terminated system must stop waiting: {e}"
        );
    }
    assert!(
        p.exit().is_some(),
        "a process in a terminated system must report an exit (code or unknown)"
    );
    ok("close the process", p.close());
    ok("close the system", sys.close());
    drop((p, sys));
    s.finish();
}

/// Operations invalid in the current state fail with an error for which `is_invalid_state()`
/// holds and which names the operation and the system: pause and resume before start, start
/// twice, resume while running. The system stays usable afterwards.
pub fn invalid_transitions_are_invalid_state(h: &dyn Harness) {
    let s = Session::new(h);
    let sys = s.create("invalid-state");
    let id = sys.id().to_owned();
    let expect_invalid = |what: &str, op: &str, r: hcs::Result<()>| {
        let e = r.err().unwrap_or_else(|| panic!("{what} must fail"));
        assert!(
            e.is_invalid_state(),
            "{what} must be classified invalid-state, got {e} ({e:?})"
        );
        assert_eq!(e.operation(), op, "{what}: the error must name the operation");
        assert_eq!(
            e.system_id(),
            Some(id.as_str()),
            "{what}: the error must name the system"
        );
    };
    expect_invalid("pause before start", "hcs::System::Pause", sys.pause());
    expect_invalid("resume before start", "hcs::System::Resume", sys.resume());
    ok("start after rejected calls", sys.start());
    expect_invalid("a second start", "hcs::System::Start", sys.start());
    expect_invalid("resume while running", "hcs::System::Resume", sys.resume());
    ok("pause after rejected calls", sys.pause());
    expect_invalid("pause while paused", "hcs::System::Pause", sys.pause());
    ok("resume", sys.resume());
    s.stop_and_close(sys);
    s.finish();
}

/// Opening an unknown system id, and an unknown pid in a running system, fails with an error
/// for which `is_not_found()` holds; opening a known id works.
pub fn open_unknown_is_not_found(h: &dyn Harness) {
    let s = Session::new(h);
    let unknown = h.unique_id("never-created");
    let e = System::open(s.driver(), &unknown).expect_err("open of an unknown id must fail");
    assert!(
        e.is_not_found(),
        "open of an unknown id must be classified not-found, got {e} ({e:?})"
    );
    assert_eq!(
        e.system_id(),
        Some(unknown.as_str()),
        "the error must name the id"
    );
    let sys = s.create_started("open");
    let e = sys
        .open_process(0xFFFF_FFF0)
        .expect_err("open of an unknown pid must fail");
    assert!(
        e.is_not_found(),
        "open of an unknown pid must be classified not-found, got {e} ({e:?})"
    );
    let again = ok("open of a known id", System::open(s.driver(), sys.id()));
    assert_eq!(again.id(), sys.id());
    ok("close the second handle", again.close());
    drop(again);
    s.stop_and_close(sys);
    s.finish();
}

/// Shutdown and terminate are idempotent through the lifecycle (twice in a row, after the exit,
/// after close), and the driver's own stop calls on an exited system succeed or fail only with
/// a code in [`STOP_SWALLOW_CODES`].
pub fn stop_is_idempotent(h: &dyn Harness) {
    let s = Session::new(h);
    let a = s.create_started("stop-shutdown");
    ok("shutdown", a.shutdown());
    ok("a second shutdown", a.shutdown());
    ok("wait", a.wait_timeout(h.wait_limit()));
    ok("shutdown after the exit", a.shutdown());
    ok("terminate after the exit", a.terminate());
    ok("close", a.close());
    ok("shutdown after close", a.shutdown());
    ok("terminate after close", a.terminate());
    drop(a);

    let b = s.create_started("stop-terminate");
    ok("terminate", b.terminate());
    ok("a second terminate", b.terminate());
    ok("wait", b.wait_timeout(h.wait_limit()));
    ok("terminate after the exit", b.terminate());
    ok("shutdown after the exit", b.shutdown());

    // The driver itself, on a second handle to the exited system.
    let d = s.driver();
    let raw = d
        .open_compute_system(b.id())
        .unwrap_or_else(|f| panic!("driver: open of an exited but still open system failed: {f}"))
        .value;
    for (what, r) in [
        ("shutdown_compute_system", d.shutdown_compute_system(raw, "")),
        ("terminate_compute_system", d.terminate_compute_system(raw, "")),
    ] {
        if let Err(f) = r {
            assert!(
                STOP_SWALLOW_CODES.contains(&f.code.0),
                "driver: {what} on an exited system must succeed or fail with already-stopped/not-found/pending, got {}",
                f.code
            );
        }
    }
    d.close_compute_system(raw)
        .unwrap_or_else(|f| panic!("driver: close of the second handle failed: {f}"));
    ok("close", b.close());
    drop(b);
    s.finish();
}

/// Process exit codes are reported exactly (0, 3, 255, and `0xC000013A` when the driver can
/// report it), through `exit_code()` and `exit()`, and survive `close`.
pub fn process_exit_codes(h: &dyn Harness) {
    let s = Session::new(h);
    let sys = s.create_started("exit-codes");
    let mut codes: Vec<u32> = BASIC_EXIT_CODES
        .iter()
        .copied()
        .filter(|c| *c <= h.max_exit_code())
        .collect();
    if h.max_exit_code() >= LARGE_EXIT_CODE {
        codes.push(LARGE_EXIT_CODE);
    }
    for code in codes {
        let p = ok(
            "create process",
            sys.create_process(&h.process_exiting_with(code)),
        );
        ok("wait for the process", p.wait_timeout(h.wait_limit()));
        assert_eq!(
            p.exit_code().ok(),
            Some(i64::from(code)),
            "exit_code() of a process exiting with {code:#x}"
        );
        assert_eq!(
            p.exit(),
            Some(ExitCode::Code(code)),
            "exit() of a process exiting with {code:#x}"
        );
        ok("close the process", p.close());
        assert_eq!(
            p.exit_code().ok(),
            Some(i64::from(code)),
            "the exit code ({code:#x}) must survive close"
        );
        ok("wait after close of an exited process keeps the exit", p.wait());
    }
    s.stop_and_close(sys);
    s.finish();
}

/// Standard streams: a printing process's stdout reads back exactly and ends with EOF; an
/// echoing process round-trips stdin; `close_stdin()` alone gives the process EOF; closing the
/// streams of a running or exited process is harmless.
pub fn stdio_round_trip(h: &dyn Harness) {
    let s = Session::new(h);
    let sys = s.create_started("stdio");
    let limit = h.wait_limit();

    let p = ok(
        "create a printing process",
        sys.create_process(&h.process_printing(GREETING)),
    );
    let stdio = ok("stdio of the printing process", p.stdio());
    let out = stdio
        .stdout
        .expect("the printing process must have a stdout pipe");
    assert_eq!(
        read_all(out, limit, "stdout of the printing process"),
        GREETING,
        "printed text"
    );
    ok("wait for the printing process", p.wait_timeout(limit));
    assert_eq!(p.exit_code().ok(), Some(0), "the printing process exits with 0");
    ok("close_stdin after the exit", p.close_stdin());
    ok("close the printing process", p.close());
    drop(p);

    if let Some(params) = h.process_echoing_stdin() {
        let p = ok("create an echoing process", sys.create_process(&params));
        let stdio = ok("stdio of the echoing process", p.stdio());
        let mut stdin = stdio.stdin.expect("the echoing process must have a stdin pipe");
        let out = stdio.stdout.expect("the echoing process must have a stdout pipe");
        let reader = spawn_read(out);
        stdin.write_all(ECHO_INPUT.as_bytes()).expect("write to stdin");
        stdin.flush().expect("flush stdin");
        drop(stdin);
        ok("close_stdin of the echoing process", p.close_stdin());
        assert_eq!(
            finish_read(reader, limit, "stdout of the echoing process"),
            ECHO_INPUT,
            "echoed text"
        );
        ok("wait for the echoing process", p.wait_timeout(limit));
        assert_eq!(
            p.exit_code().ok(),
            Some(0),
            "the echoing process exits with 0 at EOF"
        );
        ok("close the echoing process", p.close());
        drop(p);

        // close_stdin alone (the writer still cached in the Process) gives EOF.
        let p = ok("create a second echoing process", sys.create_process(&params));
        let out = p
            .take_stdout()
            .expect("the echoing process must have a stdout pipe");
        ok("close_stdin with the writer still cached", p.close_stdin());
        ok("close_stdin again", p.close_stdin());
        assert_eq!(
            finish_read(spawn_read(out), limit, "stdout after close_stdin"),
            "",
            "no input, no output"
        );
        ok("the process ends at EOF", p.wait_timeout(limit));
        assert_eq!(
            p.exit_code().ok(),
            Some(0),
            "the echoing process exits with 0 at EOF"
        );
        ok("close", p.close());
        drop(p);
    }

    let p = ok(
        "create a long-running process",
        sys.create_process(&h.process_running_until_killed()),
    );
    ok("close_stdin of a running process", p.close_stdin());
    ok("close_stdout", p.close_stdout());
    ok("close_stderr", p.close_stderr());
    assert!(ok("kill", p.kill()), "kill of a running process is delivered");
    ok("wait after kill", p.wait_timeout(limit));
    ok("close", p.close());
    ok("close_stdout after close", p.close_stdout());
    drop(p);
    s.stop_and_close(sys);
    s.finish();
}

/// Signal and kill (`hcs-behavior.md` §5.5, §5.6): a terminating signal is delivered and ends
/// the process, a signal to a gone process reports "not delivered" without error; kill is
/// delivered, the wait completes, a repeated kill is `Ok(true)` or an already-stopped error,
/// never another error; on a closed process both fail with already-closed.
pub fn signal_and_kill(h: &dyn Harness) {
    let s = Session::new(h);
    let sys = s.create_started("signal-kill");
    let limit = h.wait_limit();
    if let Some(sig) = h.terminating_signal() {
        let p = ok(
            "create a long-running process",
            sys.create_process(&h.process_running_until_killed()),
        );
        assert!(
            ok("signal a running process", p.signal(&sig)),
            "a signal to a running process is delivered"
        );
        ok("wait after the signal", p.wait_timeout(limit));
        assert!(
            matches!(p.exit(), Some(ExitCode::Code(_))),
            "a signalled process reports an exit code, got {:?}",
            p.exit()
        );
        assert!(
            !ok("signal an exited process", p.signal(&sig)),
            "a signal to an exited process is not delivered"
        );
        ok("close", p.close());
        let e = p.signal(&sig).expect_err("signal after close must fail");
        assert!(
            e.is_already_closed(),
            "signal after close must be already-closed, got {e}"
        );
        drop(p);
    }
    let p = ok(
        "create a long-running process",
        sys.create_process(&h.process_running_until_killed()),
    );
    assert!(
        ok("kill a running process", p.kill()),
        "kill of a running process is delivered"
    );
    let repeat = |what: &str| match p.kill() {
        Ok(true) => {}
        Ok(false) => panic!("{what}: a repeated kill must not report `not delivered`"),
        Err(e) => assert!(
            e.is_already_stopped(),
            "{what}: a repeated kill fails only with already-stopped, got {e}"
        ),
    };
    repeat("kill again at once");
    ok("wait after kill", p.wait_timeout(limit));
    assert!(p.exit().is_some(), "a killed process reports an exit");
    repeat("kill after the exit");
    ok("close", p.close());
    let e = p.kill().expect_err("kill after close must fail");
    assert!(
        e.is_already_closed(),
        "kill after close must be already-closed, got {e}"
    );
    drop(p);
    s.stop_and_close(sys);
    s.finish();
}

/// One exit releases every waiter: blocking waits on many threads, a timed wait and a `Future`
/// for a process, then for its system; a waiter arriving after the exit returns at once.
pub fn many_waiters_released_by_one_exit(h: &dyn Harness) {
    const WAITERS: usize = 6;
    let s = Session::new(h);
    let limit = h.wait_limit();
    let sys = Arc::new(s.create_started("waiters"));
    let p = Arc::new(ok(
        "create a long-running process",
        sys.create_process(&h.process_running_until_killed()),
    ));
    let (tx, rx) = mpsc::channel::<(&'static str, hcs::Result<()>)>();
    for i in 0..WAITERS {
        let (p, sys, tx) = (p.clone(), sys.clone(), tx.clone());
        std::thread::spawn(move || {
            let r = if i % 2 == 0 {
                ("process wait", p.wait())
            } else {
                ("process wait_timeout", p.wait_timeout(Duration::from_secs(3600)))
            };
            let _ = tx.send(r);
            let _ = tx.send(("system wait", sys.wait()));
        });
    }
    {
        let (p, sys, tx) = (p.clone(), sys.clone(), tx.clone());
        std::thread::spawn(move || {
            let _ = tx.send(("process wait_async", block_on(p.wait_async())));
            let _ = tx.send(("system wait_async", block_on(sys.wait_async())));
        });
    }
    drop(tx);
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        rx.try_recv().is_err(),
        "no waiter may return before anything exited"
    );
    assert!(ok("kill", p.kill()), "kill of a running process is delivered");
    let deadline = Instant::now() + limit;
    let mut process_done = 0;
    while process_done < WAITERS + 1 {
        let (what, r) = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                panic!(
                    "only {process_done} of {} process waiters were released by the exit",
                    WAITERS + 1
                )
            });
        assert!(
            what.starts_with("process"),
            "a system waiter returned before the system exited: {what} {r:?}"
        );
        ok(what, r);
        process_done += 1;
    }
    ok(
        "a process waiter after the exit",
        p.wait_timeout(Duration::from_millis(1)),
    );
    let code = p.exit();
    assert!(code.is_some(), "the killed process reports an exit");
    ok("terminate", sys.terminate());
    let mut system_done = 0;
    while system_done < WAITERS + 1 {
        let (what, r) = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                panic!(
                    "only {system_done} of {} system waiters were released by the exit",
                    WAITERS + 1
                )
            });
        ok(what, r);
        system_done += 1;
    }
    ok(
        "a system waiter after the exit",
        sys.wait_timeout(Duration::from_millis(1)),
    );
    assert_eq!(p.exit(), code, "the exit code is stable");
    ok("close the process", p.close());
    ok("close the system", sys.close());
    drop((p, sys));
    s.finish();
}

/// Close of an object that had not exited releases its waiters with already-closed (blocked
/// and later waiters alike), later operations fail with already-closed (stop calls and close
/// are still `Ok`), and the system can still be stopped through another handle.
pub fn wait_after_close_is_already_closed(h: &dyn Harness) {
    let s = Session::new(h);
    let limit = h.wait_limit();
    let sys = Arc::new(s.create_started("wait-after-close"));
    let other = ok("open a second handle", System::open(s.driver(), sys.id()));
    let p = Arc::new(ok(
        "create a long-running process",
        sys.create_process(&h.process_running_until_killed()),
    ));
    let pid = p.pid();
    let (tx, rx) = mpsc::channel::<(&'static str, hcs::Result<()>)>();
    {
        let (p, tx) = (p.clone(), tx.clone());
        std::thread::spawn(move || {
            let _ = tx.send(("process", p.wait()));
        });
    }
    {
        let (sys, tx) = (sys.clone(), tx.clone());
        std::thread::spawn(move || {
            let _ = tx.send(("system", sys.wait()));
        });
    }
    drop(tx);
    std::thread::sleep(Duration::from_millis(20));

    ok("close the running process", p.close());
    let (what, r) = rx
        .recv_timeout(limit)
        .expect("a blocked process waiter must be released by close");
    assert_eq!(
        what, "process",
        "only the process waiter may return after the process closed"
    );
    let e = r.expect_err("a process waiter released by close must fail");
    assert!(
        e.is_already_closed(),
        "a process waiter released by close: already-closed, got {e}"
    );
    let e = p.wait().expect_err("process wait after close must fail");
    assert!(
        e.is_already_closed(),
        "process wait after close: already-closed, got {e}"
    );
    let e = p
        .wait_timeout(Duration::from_millis(1))
        .expect_err("process wait_timeout after close must fail");
    assert!(
        e.is_already_closed(),
        "process wait_timeout after close: already-closed, got {e}"
    );
    assert!(
        p.exit_code().is_err(),
        "a closed, never-exited process has no exit code"
    );
    ok("close is idempotent", p.close());

    ok("close the running system", sys.close());
    let (what, r) = rx
        .recv_timeout(limit)
        .expect("a blocked system waiter must be released by close");
    assert_eq!(what, "system");
    let e = r.expect_err("a system waiter released by close must fail");
    assert!(
        e.is_already_closed(),
        "a system waiter released by close: already-closed, got {e}"
    );
    let e = sys.wait().expect_err("system wait after close must fail");
    assert!(
        e.is_already_closed(),
        "system wait after close: already-closed, got {e}"
    );
    assert!(
        sys.exit_status().is_none(),
        "a closed, never-exited system has no exit status"
    );
    for (what, r) in [
        ("start", sys.start()),
        ("pause", sys.pause()),
        ("resume", sys.resume()),
    ] {
        let e = r.err().unwrap_or_else(|| panic!("{what} after close must fail"));
        assert!(
            e.is_already_closed(),
            "{what} after close: already-closed, got {e}"
        );
    }
    let e = sys
        .create_process(&h.process_exiting_with(0))
        .expect_err("create_process after close must fail");
    assert!(
        e.is_already_closed(),
        "create_process after close: already-closed, got {e}"
    );
    let e = sys
        .open_process(pid)
        .expect_err("open_process after close must fail");
    assert!(
        e.is_already_closed(),
        "open_process after close: already-closed, got {e}"
    );
    ok("shutdown after close", sys.shutdown());
    ok("terminate after close", sys.terminate());
    ok("close is idempotent", sys.close());

    ok("terminate through the other handle", other.terminate());
    ok("the other handle sees the exit", other.wait_timeout(limit));
    ok("close the other handle", other.close());
    drop((p, sys, other));
    s.finish();
}

/// Directly against the driver: `unregister_compute_system_callback` waits for a callback
/// already running for that registration, and after it returns no further callback arrives for
/// it — neither a notification in flight nor one caused later (a terminate after unregister).
pub fn unregister_drains_callbacks(h: &dyn Harness) {
    let s = Session::new(h);
    let d = s.driver();
    let limit = h.wait_limit();

    // 1. A SystemExited callback is running (slowly) while we unregister.
    let rec = Recorder::new(Duration::from_millis(50));
    let (raw, cb) = raw_started_system(h, &*d, &rec, "drain-running");
    if let Err(f) = d.terminate_compute_system(raw, "") {
        panic!("driver: terminate failed: {f}");
    }
    assert!(
        rec.wait_entered(NotificationKind::SystemExited, limit),
        "driver: no SystemExited callback after terminate"
    );
    d.unregister_compute_system_callback(cb)
        .unwrap_or_else(|f| panic!("driver: unregister failed: {f}"));
    rec.mark_unregistered();
    assert_eq!(
        rec.running.load(Ordering::SeqCst),
        0,
        "driver: unregister returned while a callback for the registration was still running"
    );
    assert!(
        rec.finished(NotificationKind::SystemExited) >= 1,
        "driver: unregister did not wait for the running callback"
    );
    std::thread::sleep(h.quiet_period());
    assert_eq!(
        rec.late.load(Ordering::SeqCst),
        0,
        "driver: a callback ran after unregister returned"
    );
    d.close_compute_system(raw)
        .unwrap_or_else(|f| panic!("driver: close failed: {f}"));
    assert_eq!(
        rec.late.load(Ordering::SeqCst),
        0,
        "driver: a callback ran after unregister returned"
    );
    drop(rec);

    // 2. Activity after unregister reaches nobody.
    let rec = Recorder::new(Duration::ZERO);
    let (raw, cb) = raw_started_system(h, &*d, &rec, "drain-after");
    d.unregister_compute_system_callback(cb)
        .unwrap_or_else(|f| panic!("driver: unregister failed: {f}"));
    rec.mark_unregistered();
    if let Err(f) = d.terminate_compute_system(raw, "") {
        panic!("driver: terminate failed: {f}");
    }
    std::thread::sleep(h.quiet_period());
    assert_eq!(
        rec.late.load(Ordering::SeqCst),
        0,
        "driver: a notification was delivered to a registration after unregister returned"
    );
    d.close_compute_system(raw)
        .unwrap_or_else(|f| panic!("driver: close failed: {f}"));
    drop(rec);
    s.finish();
}

/// Late callbacks after close are no-ops: dispatching an exit, a completion or a disconnect to
/// the context of a closed System or Process reaches nobody and changes nothing it reports.
pub fn late_callbacks_after_close_are_noops(h: &dyn Harness) {
    let s = Session::new(h);
    let limit = h.wait_limit();
    let crash = r#"{"Status":-1070137082,"ExitType":"UnexpectedExit"}"#;

    // An exited process and system, then closed.
    let sys = s.create_started("late-exited");
    let p = ok("create process", sys.create_process(&h.process_exiting_with(3)));
    let p_ctx = s
        .spy
        .last_process_ctx()
        .expect("the process registered a callback context");
    ok("wait for the process", p.wait_timeout(limit));
    ok("close the process", p.close());
    let late = r#"{"ProcessId":1,"Exited":true,"ExitCode":99,"LastWaitResult":0}"#;
    assert!(
        !hcs::dispatch(p_ctx.raw(), NotificationKind::ProcessExited, 0u32, Some(late)),
        "a closed process's context must be gone"
    );
    assert!(
        !hcs::dispatch(p_ctx.raw(), NotificationKind::ServiceDisconnect, 0u32, None),
        "a closed process's context must be gone"
    );
    assert_eq!(
        p.exit_code().ok(),
        Some(3),
        "a late ProcessExited must not change the exit code"
    );
    let sys_ctx = s
        .spy
        .last_system_ctx()
        .expect("the system registered a callback context");
    ok("terminate", sys.terminate());
    ok("wait", sys.wait_timeout(limit));
    let exit = sys.exit_status();
    ok("close", sys.close());
    for kind in [
        NotificationKind::SystemExited,
        NotificationKind::SystemStartCompleted,
        NotificationKind::ServiceDisconnect,
    ] {
        assert!(
            !hcs::dispatch(sys_ctx.raw(), kind, 0xC037_0106u32, Some(crash)),
            "a closed system's context must be gone ({kind})"
        );
    }
    assert_eq!(
        sys.exit_status(),
        exit,
        "a late SystemExited must not change the exit status"
    );
    ok("the exit outcome survives", sys.wait());
    drop((p, sys));

    // A running system closed (stopped through a second handle afterwards).
    let sys = s.create_started("late-running");
    let sys_ctx = s
        .spy
        .last_system_ctx()
        .expect("the system registered a callback context");
    let other = ok("open a second handle", System::open(s.driver(), sys.id()));
    ok("close the running system", sys.close());
    assert!(
        !hcs::dispatch(
            sys_ctx.raw(),
            NotificationKind::SystemExited,
            0xC037_0106u32,
            Some(crash)
        ),
        "a closed system's context must be gone"
    );
    let e = sys.wait().expect_err("wait after close must fail");
    assert!(
        e.is_already_closed(),
        "a late SystemExited must not replace already-closed, got {e}"
    );
    assert!(
        sys.exit_status().is_none(),
        "a late SystemExited must not set an exit status"
    );
    s.stop_and_close(other);
    drop(sys);
    s.finish();
}

/// Handle hygiene over a busy workload (two handles to one system, processes that exit, print,
/// are opened twice and killed through a second handle, failed create and open): afterwards
/// every callback context is gone and the driver's handle counts are back where they started.
pub fn handle_hygiene(h: &dyn Harness) {
    let s = Session::new(h);
    let limit = h.wait_limit();
    let sys = s.create_started("hygiene");
    let dup = System::create_with(s.driver(), sys.id(), &h.system_config(), h.timeouts());
    assert!(
        dup.is_err(),
        "creating a second system with the same id must fail"
    );
    drop(dup);
    let unknown = h.unique_id("hygiene-unknown");
    assert!(
        System::open(s.driver(), &unknown).is_err(),
        "open of an unknown id must fail"
    );
    let second = ok("open a second handle", System::open(s.driver(), sys.id()));

    let exits = ok("create process", sys.create_process(&h.process_exiting_with(0)));
    let printer = ok(
        "create printing process",
        second.create_process(&h.process_printing(GREETING)),
    );
    let out = ok("stdio", printer.stdio()).stdout.expect("stdout pipe");
    assert_eq!(read_all(out, limit, "stdout"), GREETING);
    let runner = ok(
        "create long-running process",
        sys.create_process(&h.process_running_until_killed()),
    );
    let reopened = ok(
        "open the running process by pid",
        second.open_process(runner.pid()),
    );
    assert_eq!(reopened.pid(), runner.pid());
    assert!(
        ok("kill through the reopened process", reopened.kill()),
        "kill is delivered"
    );
    for (what, p) in [
        ("exiting", &exits),
        ("printing", &printer),
        ("killed", &runner),
        ("reopened", &reopened),
    ] {
        ok(what, p.wait_timeout(limit));
    }
    for p in [&exits, &printer, &runner, &reopened] {
        ok("close process", p.close());
    }
    drop((exits, printer, runner, reopened));
    ok("close the second handle", second.close());
    drop(second);
    s.stop_and_close(sys);
    s.finish();
}

// ----------------------------------------------------------------------------------- helpers

fn ok<T, E: std::fmt::Display + std::fmt::Debug>(what: &str, r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e} ({e:?})"),
    }
}

/// One check's view of the harness: a recording driver and the starting handle counts.
struct Session<'a> {
    h: &'a dyn Harness,
    spy: Arc<Spy>,
    start: Option<HandleCounts>,
}

impl<'a> Session<'a> {
    fn new(h: &'a dyn Harness) -> Self {
        let spy = Arc::new(Spy {
            inner: h.driver(),
            contexts: Mutex::new(Vec::new()),
        });
        Session {
            h,
            spy,
            start: h.open_handles(),
        }
    }

    fn driver(&self) -> Arc<dyn Driver> {
        self.spy.clone()
    }

    fn create(&self, tag: &str) -> System {
        let id = self.h.unique_id(tag);
        ok(
            "create",
            System::create_with(self.driver(), &id, &self.h.system_config(), self.h.timeouts()),
        )
    }

    fn create_started(&self, tag: &str) -> System {
        let sys = self.create(tag);
        ok("start", sys.start());
        sys
    }

    /// Terminates, waits for the exit, closes.
    fn stop_and_close(&self, sys: System) {
        ok("terminate", sys.terminate());
        ok("wait for the exit", sys.wait_timeout(self.h.wait_limit()));
        ok("close", sys.close());
    }

    /// The leak checks every check ends with.
    fn finish(self) {
        for (what, ctx) in self.spy.contexts() {
            assert!(
                !hcs::dispatch(ctx.raw(), NotificationKind::Other(0x7FFF_FFFF), 0u32, None),
                "the {what} callback context {} is still registered after everything was closed",
                ctx.raw()
            );
        }
        if let Some(start) = self.start {
            let end = self.h.open_handles().expect("open_handles was Some at the start");
            assert_eq!(
                end, start,
                "driver handle counts after closing everything differ from the start"
            );
        }
        self.h.assert_no_leaks();
    }
}

/// A pass-through driver that records the callback contexts the lifecycle hands out.
struct Spy {
    inner: Arc<dyn Driver>,
    contexts: Mutex<Vec<(&'static str, NotifyContext)>>,
}

impl Spy {
    fn record(&self, what: &'static str, ctx: NotifyContext) {
        let mut c = self.contexts.lock().unwrap_or_else(|p| p.into_inner());
        if !c.iter().any(|(_, x)| *x == ctx) {
            c.push((what, ctx));
        }
    }
    fn contexts(&self) -> Vec<(&'static str, NotifyContext)> {
        self.contexts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn last(&self, what: &str) -> Option<NotifyContext> {
        self.contexts()
            .into_iter()
            .rev()
            .find(|(w, _)| *w == what)
            .map(|(_, c)| c)
    }
    fn last_system_ctx(&self) -> Option<NotifyContext> {
        self.last("system")
    }
    fn last_process_ctx(&self) -> Option<NotifyContext> {
        self.last("process")
    }
}

impl Driver for Spy {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn generation(&self) -> ApiGeneration {
        self.inner.generation()
    }
    fn enumerate_compute_systems(&self, query: &str) -> DriverResult<String> {
        self.inner.enumerate_compute_systems(query)
    }
    fn create_compute_system(
        &self,
        id: &str,
        configuration: &str,
        ctx: NotifyContext,
    ) -> DriverResult<SystemHandle> {
        self.record("system", ctx);
        self.inner.create_compute_system(id, configuration, ctx)
    }
    fn open_compute_system(&self, id: &str) -> DriverResult<SystemHandle> {
        self.inner.open_compute_system(id)
    }
    fn close_compute_system(&self, system: SystemHandle) -> Result<(), Failure> {
        self.inner.close_compute_system(system)
    }
    fn start_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.inner.start_compute_system(system, options, ctx)
    }
    fn shutdown_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.inner.shutdown_compute_system(system, options)
    }
    fn terminate_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.inner.terminate_compute_system(system, options)
    }
    fn pause_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.inner.pause_compute_system(system, options, ctx)
    }
    fn resume_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.inner.resume_compute_system(system, options, ctx)
    }
    fn save_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.inner.save_compute_system(system, options, ctx)
    }
    fn get_compute_system_properties(&self, system: SystemHandle, query: &str) -> DriverResult<String> {
        self.inner.get_compute_system_properties(system, query)
    }
    fn modify_compute_system(&self, system: SystemHandle, configuration: &str) -> DriverResult<()> {
        self.inner.modify_compute_system(system, configuration)
    }
    fn register_compute_system_callback(
        &self,
        system: SystemHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        self.record("system", ctx);
        self.inner.register_compute_system_callback(system, ctx)
    }
    fn unregister_compute_system_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        self.inner.unregister_compute_system_callback(callback)
    }
    fn create_process(
        &self,
        system: SystemHandle,
        parameters: &str,
    ) -> DriverResult<(ProcessHandle, ProcessInfo)> {
        self.inner.create_process(system, parameters)
    }
    fn open_process(&self, system: SystemHandle, pid: u32) -> DriverResult<ProcessHandle> {
        self.inner.open_process(system, pid)
    }
    fn close_process(&self, process: ProcessHandle) -> Result<(), Failure> {
        self.inner.close_process(process)
    }
    fn terminate_process(&self, process: ProcessHandle) -> DriverResult<()> {
        self.inner.terminate_process(process)
    }
    fn signal_process(&self, process: ProcessHandle, options: &str) -> DriverResult<()> {
        self.inner.signal_process(process, options)
    }
    fn get_process_info(&self, process: ProcessHandle) -> DriverResult<ProcessInfo> {
        self.inner.get_process_info(process)
    }
    fn get_process_properties(&self, process: ProcessHandle) -> DriverResult<String> {
        self.inner.get_process_properties(process)
    }
    fn modify_process(&self, process: ProcessHandle, settings: &str) -> DriverResult<()> {
        self.inner.modify_process(process, settings)
    }
    fn register_process_callback(
        &self,
        process: ProcessHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        self.record("process", ctx);
        self.inner.register_process_callback(process, ctx)
    }
    fn unregister_process_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        self.inner.unregister_process_callback(callback)
    }
    fn get_service_properties(&self, query: &str) -> DriverResult<String> {
        self.inner.get_service_properties(query)
    }
    fn modify_service_settings(&self, settings: &str) -> DriverResult<()> {
        self.inner.modify_service_settings(settings)
    }
    fn cancel_pending(&self, ctx: NotifyContext, kind: NotificationKind) -> Result<(), Failure> {
        self.inner.cancel_pending(ctx, kind)
    }
    fn live_migration_step(
        &self,
        system: SystemHandle,
        step: MigrationStep,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.inner.live_migration_step(system, step, options, ctx)
    }
}

/// Records raw notifications for the driver-level checks.
struct Recorder {
    sub: Subscription,
    state: Arc<RecState>,
    late: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    unregistered: Arc<AtomicBool>,
}

#[derive(Default)]
struct RecState {
    entered: Mutex<Vec<NotificationKind>>,
    finished: Mutex<Vec<NotificationKind>>,
    cv: Condvar,
}

impl Recorder {
    /// `slow_exit`: how long a `SystemExited` callback sleeps (to be running during unregister).
    fn new(slow_exit: Duration) -> Self {
        let state = Arc::new(RecState::default());
        let late = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let unregistered = Arc::new(AtomicBool::new(false));
        let (st, l, r, u) = (state.clone(), late.clone(), running.clone(), unregistered.clone());
        let sub = Subscription::new(move |kind, _status, _payload| {
            if u.load(Ordering::SeqCst) {
                l.fetch_add(1, Ordering::SeqCst);
            }
            r.fetch_add(1, Ordering::SeqCst);
            st.entered.lock().unwrap_or_else(|p| p.into_inner()).push(kind);
            st.cv.notify_all();
            if kind == NotificationKind::SystemExited && !slow_exit.is_zero() {
                std::thread::sleep(slow_exit);
            }
            st.finished.lock().unwrap_or_else(|p| p.into_inner()).push(kind);
            r.fetch_sub(1, Ordering::SeqCst);
        });
        Recorder {
            sub,
            state,
            late,
            running,
            unregistered,
        }
    }
    fn ctx(&self) -> NotifyContext {
        self.sub.context()
    }
    fn wait_entered(&self, kind: NotificationKind, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut g = self.state.entered.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if g.contains(&kind) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .state
                .cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
    fn finished(&self, kind: NotificationKind) -> usize {
        self.state
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|k| **k == kind)
            .count()
    }
    fn mark_unregistered(&self) {
        self.unregistered.store(true, Ordering::SeqCst);
    }
}

/// Create (waiting for a pending completion), register, start (likewise), directly on the driver.
fn raw_started_system(
    h: &dyn Harness,
    d: &dyn Driver,
    rec: &Recorder,
    tag: &str,
) -> (SystemHandle, CallbackHandle) {
    let id = h.unique_id(tag);
    let reply = d
        .create_compute_system(&id, &h.system_config(), rec.ctx())
        .unwrap_or_else(|f| panic!("driver: create failed: {f}"));
    let raw = reply.value;
    let cb = d
        .register_compute_system_callback(raw, rec.ctx())
        .unwrap_or_else(|f| panic!("driver: register failed: {f}"));
    if reply.pending {
        assert!(
            rec.wait_entered(NotificationKind::SystemCreateCompleted, h.wait_limit()),
            "driver: a pending create must deliver SystemCreateCompleted to its context"
        );
    }
    let reply = d
        .start_compute_system(raw, "", rec.ctx())
        .unwrap_or_else(|f| panic!("driver: start failed: {f}"));
    if reply.pending {
        assert!(
            rec.wait_entered(NotificationKind::SystemStartCompleted, h.wait_limit()),
            "driver: a pending start must deliver SystemStartCompleted to its context"
        );
    }
    (raw, cb)
}

/// Reads a pipe to EOF on a helper thread, failing after `limit`.
fn read_all(r: PipeReader, limit: Duration, what: &str) -> String {
    finish_read(spawn_read(r), limit, what)
}

fn spawn_read(mut r: PipeReader) -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let res = r.read_to_end(&mut v).map(|_| v);
        let _ = tx.send(res);
    });
    rx
}

fn finish_read(rx: mpsc::Receiver<std::io::Result<Vec<u8>>>, limit: Duration, what: &str) -> String {
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => String::from_utf8_lossy(&v).into_owned(),
        Ok(Err(e)) => panic!("{what}: read failed: {e}"),
        Err(_) => panic!("{what}: no EOF within {limit:?}"),
    }
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A minimal executor for the `wait_async` futures (the library needs no runtime).
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

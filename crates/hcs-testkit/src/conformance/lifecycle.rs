//! System lifecycle checks: the state machine (create, start, pause, resume, shutdown,
//! terminate), invalid transitions, not-found opens and idempotent stops.

use super::harness::{Harness, STOP_SWALLOW_CODES};
use super::session::{ok, Session};
use hcs::System;

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
                f.code.is_in(STOP_SWALLOW_CODES),
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

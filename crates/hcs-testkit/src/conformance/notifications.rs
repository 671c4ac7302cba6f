//! Notification checks: one exit releases every waiter, close releases waiters with
//! already-closed, unregister drains running callbacks and nothing arrives after it, and late
//! callbacks to a closed object are no-ops.

use super::harness::Harness;
use super::session::{ok, Session};
use crate::fake::{system_exited, ExitKind};
use hcs::notify::Subscription;
use hcs::{CallbackHandle, Driver, NotificationKind, NotifyContext, System, SystemHandle};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

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
    // A crash exit as this driver's generation sends it: V1 with the failing status, V2
    // (`computecore.dll`) with `S_OK` and the unexpected exit in the payload only.
    let (crash_status, crash) = system_exited(s.driver().generation(), ExitKind::Unexpected);

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
            !hcs::dispatch(sys_ctx.raw(), kind, crash_status, Some(&crash)),
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
            crash_status,
            Some(&crash)
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

// ----------------------------------------------------------------------------------- helpers

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

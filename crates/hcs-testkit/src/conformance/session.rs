//! What every check shares: a [`Session`] (one check's view of the harness: the spy driver,
//! system creation, and the leak checks every check ends with) and small helpers for results
//! and pipes.

use super::harness::Harness;
use super::spy::Spy;
use hcs::{Driver, HandleCounts, NotificationKind, PipeReader, System};
use std::io::Read;
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Unwraps `r`, panicking with `what` and the error otherwise.
pub(super) fn ok<T, E: std::fmt::Display + std::fmt::Debug>(what: &str, r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e} ({e:?})"),
    }
}

/// One check's view of the harness: a recording driver and the starting handle counts.
pub(super) struct Session<'a> {
    pub(super) h: &'a dyn Harness,
    pub(super) spy: Arc<Spy>,
    start: Option<HandleCounts>,
}

impl<'a> Session<'a> {
    pub(super) fn new(h: &'a dyn Harness) -> Self {
        let spy = Arc::new(Spy::new(h.driver()));
        Session {
            h,
            spy,
            start: h.open_handles(),
        }
    }

    pub(super) fn driver(&self) -> Arc<dyn Driver> {
        self.spy.clone()
    }

    pub(super) fn create(&self, tag: &str) -> System {
        let id = self.h.unique_id(tag);
        ok(
            "create",
            System::create_with(self.driver(), &id, &self.h.system_config(), self.h.timeouts()),
        )
    }

    pub(super) fn create_started(&self, tag: &str) -> System {
        let sys = self.create(tag);
        ok("start", sys.start());
        sys
    }

    /// Terminates, waits for the exit, closes.
    pub(super) fn stop_and_close(&self, sys: System) {
        ok("terminate", sys.terminate());
        ok("wait for the exit", sys.wait_timeout(self.h.wait_limit()));
        ok("close", sys.close());
    }

    /// The leak checks every check ends with.
    pub(super) fn finish(self) {
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

/// Reads a pipe to EOF on a helper thread, failing after `limit`.
pub(super) fn read_all(r: PipeReader, limit: Duration, what: &str) -> String {
    finish_read(spawn_read(r), limit, what)
}

pub(super) fn spawn_read(mut r: PipeReader) -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let res = r.read_to_end(&mut v).map(|_| v);
        let _ = tx.send(res);
    });
    rx
}

pub(super) fn finish_read(
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    limit: Duration,
    what: &str,
) -> String {
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => String::from_utf8_lossy(&v).into_owned(),
        Ok(Err(e)) => panic!("{what}: read failed: {e}"),
        Err(_) => panic!("{what}: no EOF within {limit:?}"),
    }
}

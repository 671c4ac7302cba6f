//! The per-object handle-use guard (C2, I5, I10).
//!
//! Every driver call that uses a handle holds a [`HandleUse`] for the duration of the call only.
//! Close first stops new uses, then waits for the uses already in progress — never for a
//! notification — and only then hands the handle to the driver's close. A failed close puts the
//! handle back so Close can be retried.

use crate::sync::{lock, Mutex};
use std::sync::Condvar;

struct State<H> {
    handle: Option<H>,
    in_use: usize,
    closing: bool,
}

pub(crate) struct HandleCell<H: Copy> {
    state: Mutex<State<H>>,
    idle: Condvar,
}

/// A use of the handle; the handle stays valid while this exists.
pub(crate) struct HandleUse<'a, H: Copy> {
    cell: &'a HandleCell<H>,
    handle: H,
}

impl<H: Copy> HandleUse<'_, H> {
    pub(crate) fn handle(&self) -> H {
        self.handle
    }
}

impl<H: Copy> Drop for HandleUse<'_, H> {
    fn drop(&mut self) {
        let mut s = lock(&self.cell.state);
        s.in_use -= 1;
        // Only a closer waits for the uses to end, and it set `closing` first (under this
        // lock): without one, waking is a system call for nobody, on every driver call.
        if s.in_use == 0 && s.closing {
            self.cell.idle.notify_all();
        }
    }
}

impl<H: Copy> HandleCell<H> {
    pub(crate) fn new(handle: Option<H>) -> Self {
        HandleCell {
            state: Mutex::new(State {
                handle,
                in_use: 0,
                closing: false,
            }),
            idle: Condvar::new(),
        }
    }

    /// Installs the handle (after create/open).
    pub(crate) fn set(&self, h: H) {
        lock(&self.state).handle = Some(h);
    }

    /// Starts a use; `None` when the handle is closed or being closed.
    pub(crate) fn acquire(&self) -> Option<HandleUse<'_, H>> {
        let mut s = lock(&self.state);
        if s.closing {
            return None;
        }
        let handle = s.handle?;
        s.in_use += 1;
        Some(HandleUse { cell: self, handle })
    }

    /// `true` once the handle is closed (or was never opened).
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.state).handle.is_none()
    }

    /// Begins closing: stops new uses, waits for uses in progress (and for a concurrent closer
    /// to finish), and returns the handle; `None` if already closed.
    pub(crate) fn begin_close(&self) -> Option<H> {
        let mut s = lock(&self.state);
        while s.closing {
            s = match self.idle.wait(s) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        }
        s.handle?;
        s.closing = true;
        while s.in_use > 0 {
            s = match self.idle.wait(s) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        }
        s.handle
    }

    /// Forgets the handle without closing it: the library gave up on releasing it (bounded
    /// retries failed). Later uses see a closed handle.
    pub(crate) fn forget(&self) {
        let mut s = lock(&self.state);
        s.handle = None;
        s.closing = false;
        self.idle.notify_all();
    }

    /// Ends a close begun by [`HandleCell::begin_close`]: on success the handle is gone, on
    /// failure it is usable again.
    pub(crate) fn end_close(&self, closed: bool) {
        let mut s = lock(&self.state);
        if closed {
            s.handle = None;
        }
        s.closing = false;
        self.idle.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn close_waits_for_in_flight_use_and_blocks_new_uses() {
        let cell = Arc::new(HandleCell::new(Some(7u64)));
        let (tx, rx) = std::sync::mpsc::channel();
        let c2 = cell.clone();
        let user = std::thread::spawn(move || {
            let u = c2.acquire().unwrap();
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            u.handle()
        });
        rx.recv().unwrap();
        let t = std::time::Instant::now();
        assert_eq!(cell.begin_close(), Some(7));
        assert!(
            t.elapsed() >= Duration::from_millis(30),
            "close did not wait for the use"
        );
        assert!(cell.acquire().is_none(), "a use started while closing");
        cell.end_close(false);
        assert!(
            cell.acquire().is_some(),
            "failed close must leave the handle usable"
        );
        assert_eq!(cell.begin_close(), Some(7));
        cell.end_close(true);
        assert!(cell.acquire().is_none() && cell.is_closed());
        assert_eq!(cell.begin_close(), None);
        assert_eq!(user.join().unwrap(), 7);
    }

    #[test]
    fn a_forgotten_handle_is_closed_for_every_later_use_and_close() {
        let cell = HandleCell::new(Some(9u64));
        assert_eq!(cell.begin_close(), Some(9));
        cell.end_close(false); // the close failed: usable again
        cell.forget(); // the library gave up on it
        assert!(cell.is_closed());
        assert!(cell.acquire().is_none(), "a forgotten handle is never used again");
        assert_eq!(cell.begin_close(), None, "nor closed again");
    }

    #[test]
    fn forgetting_wakes_a_closer_waiting_for_a_concurrent_close() {
        let cell = Arc::new(HandleCell::new(Some(3u64)));
        assert_eq!(cell.begin_close(), Some(3)); // a close in progress
        let c2 = cell.clone();
        let second = std::thread::spawn(move || c2.begin_close());
        std::thread::sleep(Duration::from_millis(20));
        cell.forget();
        assert_eq!(
            second.join().unwrap(),
            None,
            "the second closer finds nothing to close"
        );
    }
}

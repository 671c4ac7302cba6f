//! [`Gate`]: a barrier that holds a scripted driver call "inside the driver" until the test
//! lets it go, so a test can act while a call is in progress.

use super::sync::{lock, wait, wait_timeout};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A barrier a scripted call blocks on (see [`Answer::blocking`]): the call enters the gate,
/// stays "inside the driver" until [`Gate::open`] is called, and then completes normally.
///
/// Clones share the same gate. Once opened, a gate stays open: later calls pass straight
/// through (but still count as having entered).
///
/// ```
/// use hcs_testkit::Gate;
/// use std::time::Duration;
///
/// let gate = Gate::new();
/// assert!(!gate.wait_entered(Duration::from_millis(1))); // nobody inside yet
/// gate.open();
/// assert!(gate.is_open());
/// ```
///
/// [`Answer::blocking`]: crate::Answer::blocking
#[derive(Clone, Default)]
pub struct Gate {
    inner: Arc<GateInner>,
}

#[derive(Default)]
struct GateInner {
    state: Mutex<GateState>,
    cv: Condvar,
}

#[derive(Default)]
struct GateState {
    open: bool,
    entered: usize,
}

impl Gate {
    /// A new, closed gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens the gate: every call blocked on it proceeds, and later calls pass through.
    pub fn open(&self) {
        let mut st = lock(&self.inner.state);
        st.open = true;
        self.inner.cv.notify_all();
    }

    /// Whether [`Gate::open`] has been called.
    pub fn is_open(&self) -> bool {
        lock(&self.inner.state).open
    }

    /// How many calls have reached this gate so far (blocked or passed).
    pub fn entered(&self) -> usize {
        lock(&self.inner.state).entered
    }

    /// Waits until at least one call has reached the gate; `false` if none did within
    /// `timeout`.
    pub fn wait_entered(&self, timeout: Duration) -> bool {
        self.wait_entered_count(1, timeout)
    }

    /// Waits until at least `count` calls have reached the gate; `false` on timeout.
    pub fn wait_entered_count(&self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.inner.state);
        while st.entered < count {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = wait_timeout(&self.inner.cv, st, deadline - now);
        }
        true
    }

    /// Called by the fake on the calling thread: announce entry, then block until open.
    pub(super) fn pass(&self) {
        let mut st = lock(&self.inner.state);
        st.entered += 1;
        self.inner.cv.notify_all();
        while !st.open {
            st = wait(&self.inner.cv, st);
        }
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = lock(&self.inner.state);
        f.debug_struct("Gate")
            .field("open", &st.open)
            .field("entered", &st.entered)
            .finish()
    }
}

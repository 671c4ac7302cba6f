//! The notification state of one System or Process: the exit and disconnect latches, the
//! published terminal outcome every waiter reads, and the armed expectations of pending
//! operations (`hcs-behavior.md` §3.6; I1, I3, I6, I10).
//!
//! Notifications update this state under one short lock (never held across a driver call or a
//! wait) and wake all waiters through one `event_listener::Event`, which serves blocking waits,
//! timed waits and `Future`s alike. Any number of waiters, early or late, see the same outcome.

use crate::hresult::HResult;
use crate::notify::NotificationKind;
use crate::sync::{lock, Mutex};
use event_listener::{Event, EventListener, Listener};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

/// The raw exit notification that set the exit latch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExitSignal {
    pub status: HResult,
    pub payload: Option<String>,
}

/// What waiters see once the object is done. Set once.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// A System exited.
    SystemExit(ExitSignal),
    /// A Process exited; `code` is -1 when unknown, `error` is the wait error if any.
    ProcessExit { code: i64, error: Option<crate::Error> },
    /// The service disconnected before an exit.
    Disconnected,
    /// The object was closed before an exit.
    Closed,
}

/// How a pending operation's wait ended, in precedence order (§3.6 step 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PendingEnd {
    Completed(HResult, Option<String>),
    Exited,
    Disconnected,
    Closed,
    TimedOut,
    Cancelled,
}

#[derive(Debug)]
struct Armed {
    seq: u64,
    kind: NotificationKind,
    result: Option<(HResult, Option<String>)>,
}

#[derive(Debug, Default)]
struct Inner {
    exit: Option<ExitSignal>,
    disconnected: bool,
    closing: bool,
    outcome: Option<Outcome>,
    stopped_at: Option<SystemTime>,
    armed: Vec<Armed>,
    /// Completions still owed to operations that gave up waiting (timeout, cancellation), per
    /// kind. V1 completions carry no operation id, so the next completions of that kind are
    /// attributed to those operations (HCS completes operations of one kind in order) and
    /// dropped, never handed to a later operation (I3).
    owed: Vec<(NotificationKind, u32)>,
    next_seq: u64,
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct Notifier {
    inner: Mutex<Inner>,
    event: Event,
}

/// What the caller of [`Notifier::on_notification`] must do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Follow {
    Nothing,
    /// The first exit latched; the owner decides how to publish it.
    Exited(ExitSignal),
}

impl Notifier {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn wake(&self) {
        self.event.notify(usize::MAX);
    }

    /// Applies one notification. Never blocks beyond the state lock; never calls a driver.
    /// `track_exit` names the exit kind this object tracks (SystemExited or ProcessExited).
    pub(crate) fn on_notification(
        &self,
        track_exit: NotificationKind,
        kind: NotificationKind,
        status: HResult,
        payload: Option<&str>,
    ) -> Follow {
        let mut follow = Follow::Nothing;
        {
            let mut s = lock(&self.inner);
            if kind == track_exit {
                if s.exit.is_some() {
                    return Follow::Nothing; // duplicates collapse into the latch
                }
                let sig = ExitSignal {
                    status,
                    payload: payload.map(str::to_owned),
                };
                s.exit = Some(sig.clone());
                follow = Follow::Exited(sig);
            } else if kind == NotificationKind::ServiceDisconnect {
                if s.disconnected {
                    return Follow::Nothing;
                }
                s.disconnected = true;
                if s.outcome.is_none() {
                    s.outcome = Some(Outcome::Disconnected);
                    s.stopped_at = Some(SystemTime::now());
                }
            } else if kind.is_completion() {
                if let Some((_, n)) = s.owed.iter_mut().find(|(k, n)| *k == kind && *n > 0) {
                    *n -= 1;
                    tracing::debug!(%kind, %status, "completion of an abandoned operation dropped");
                    return Follow::Nothing;
                }
                match s.armed.iter_mut().find(|a| a.kind == kind && a.result.is_none()) {
                    Some(a) => a.result = Some((status, payload.map(str::to_owned))),
                    None => {
                        tracing::debug!(%kind, %status, "completion with no armed operation dropped");
                        return Follow::Nothing;
                    }
                }
            } else {
                return Follow::Nothing; // untracked kinds are ignored
            }
        }
        self.wake();
        follow
    }

    /// Publishes the terminal outcome unless one is already set; returns whether it was set.
    pub(crate) fn publish(&self, outcome: Outcome) -> bool {
        let set = {
            let mut s = lock(&self.inner);
            if s.outcome.is_some() {
                false
            } else {
                s.outcome = Some(outcome);
                s.stopped_at = Some(SystemTime::now());
                true
            }
        };
        if set {
            self.wake();
        }
        set
    }

    pub(crate) fn outcome(&self) -> Option<Outcome> {
        lock(&self.inner).outcome.clone()
    }
    pub(crate) fn exit_signal(&self) -> Option<ExitSignal> {
        lock(&self.inner).exit.clone()
    }
    pub(crate) fn stopped_at(&self) -> Option<SystemTime> {
        lock(&self.inner).stopped_at
    }

    /// Arms an expectation for `kind`; must happen *before* the driver call.
    pub(crate) fn arm(&self, kind: NotificationKind) -> u64 {
        let mut s = lock(&self.inner);
        s.next_seq += 1;
        let seq = s.next_seq;
        s.armed.push(Armed {
            seq,
            kind,
            result: None,
        });
        seq
    }

    /// Disarms an operation that did not go pending (no completion will come).
    pub(crate) fn disarm(&self, seq: u64) {
        lock(&self.inner).armed.retain(|a| a.seq != seq);
    }

    /// Ends a pending operation's expectation and returns its completion if one arrived (it may
    /// have raced the deadline). When none arrived and `gave_up` (timeout or cancellation: HCS
    /// still owes the completion), the completion is recorded as owed so that it is dropped
    /// when it comes rather than satisfying a later operation of the same kind.
    pub(crate) fn finish(&self, seq: u64, gave_up: bool) -> Option<(HResult, Option<String>)> {
        let mut s = lock(&self.inner);
        let idx = s.armed.iter().position(|a| a.seq == seq)?;
        let armed = s.armed.remove(idx);
        if armed.result.is_none() && gave_up {
            match s.owed.iter_mut().find(|(k, _)| *k == armed.kind) {
                Some((_, n)) => *n += 1,
                None => s.owed.push((armed.kind, 1)),
            }
        }
        armed.result
    }

    /// Marks the object closing (pending waits end with `Closed`), or clears the mark after a
    /// failed close.
    pub(crate) fn set_closing(&self, closing: bool) {
        lock(&self.inner).closing = closing;
        if closing {
            self.wake();
        }
    }

    fn pending_end(s: &Inner, seq: u64, exit_fails: bool) -> Option<PendingEnd> {
        let a = s.armed.iter().find(|a| a.seq == seq)?;
        if let Some((st, p)) = &a.result {
            return Some(PendingEnd::Completed(*st, p.clone()));
        }
        if exit_fails && s.exit.is_some() {
            return Some(PendingEnd::Exited);
        }
        if s.disconnected {
            return Some(PendingEnd::Disconnected);
        }
        if s.closing || matches!(s.outcome, Some(Outcome::Closed)) {
            return Some(PendingEnd::Closed);
        }
        None
    }

    /// Waits for the armed operation `seq` to end: completion, exit (when `exit_fails`),
    /// disconnect, close, deadline or cancellation, checked in that order.
    pub(crate) fn wait_pending(
        &self,
        seq: u64,
        exit_fails: bool,
        deadline: Instant,
        cancelled: &dyn Fn() -> bool,
    ) -> PendingEnd {
        loop {
            if let Some(e) = Self::pending_end(&lock(&self.inner), seq, exit_fails) {
                return e;
            }
            let listener = self.event.listen();
            if let Some(e) = Self::pending_end(&lock(&self.inner), seq, exit_fails) {
                return e;
            }
            if cancelled() {
                return PendingEnd::Cancelled;
            }
            if Instant::now() >= deadline {
                return PendingEnd::TimedOut;
            }
            // A `None` from the timed wait means the deadline passed; the loop re-checks the
            // state once more so a completion that raced the deadline still wins.
            let _ = listener.wait_deadline(deadline);
        }
    }

    /// Waits for the terminal outcome, until `deadline` if given (`None` on timeout).
    pub(crate) fn wait_outcome(&self, deadline: Option<Instant>) -> Option<Outcome> {
        loop {
            if let Some(o) = self.outcome() {
                return Some(o);
            }
            let listener = self.event.listen();
            if let Some(o) = self.outcome() {
                return Some(o);
            }
            match deadline {
                None => listener.wait(),
                Some(d) => {
                    if listener.wait_deadline(d).is_none() {
                        return self.outcome();
                    }
                }
            }
        }
    }

    /// Wakes every waiter (used by cancellation tokens).
    pub(crate) fn wake_all(&self) {
        self.wake();
    }

    /// A future resolving to the terminal outcome.
    pub(crate) fn outcome_future(self: &std::sync::Arc<Self>) -> OutcomeFuture {
        OutcomeFuture {
            notifier: self.clone(),
            listener: None,
        }
    }
}

#[cfg(not(loom))]
impl crate::timeouts::Wake for Notifier {
    fn wake(&self) {
        self.wake_all();
    }
}

/// Runtime-agnostic future over a [`Notifier`]'s outcome.
pub(crate) struct OutcomeFuture {
    notifier: std::sync::Arc<Notifier>,
    listener: Option<EventListener>,
}

impl Future for OutcomeFuture {
    type Output = Outcome;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        loop {
            if let Some(o) = self.notifier.outcome() {
                return Poll::Ready(o);
            }
            match self.listener.as_mut() {
                None => {
                    let l = self.notifier.event.listen();
                    self.listener = Some(l);
                }
                Some(l) => match Pin::new(l).poll(cx) {
                    Poll::Ready(()) => self.listener = None,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

#[cfg(all(test, loom))]
impl Notifier {
    /// The completion recorded for an armed operation, if any (loom models only).
    pub(crate) fn completion_of(&self, seq: u64) -> Option<(HResult, Option<String>)> {
        lock(&self.inner)
            .armed
            .iter()
            .find(|a| a.seq == seq)
            .and_then(|a| a.result.clone())
    }
}

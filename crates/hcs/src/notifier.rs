//! The notification state of one System or Process: the exit and disconnect latches, the
//! published terminal outcome every waiter reads, and the armed expectations of pending
//! operations (design §3.6; I1, I3, I6, I10).
//!
//! Notifications update this state under one short lock (never held across a driver call or a
//! wait) and wake all waiters through one `event_listener::Event`, which serves blocking waits,
//! timed waits and `Future`s alike. Any number of waiters, early or late, see the same outcome.

use crate::hresult::{sets, HResult};
use crate::notify::NotificationKind;
use crate::sync::{lock, Arc, Condvar, Mutex, MutexGuard};
use event_listener::{Event, EventListener};
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
    ProcessExit {
        code: i64,
        error: Option<crate::error::Error>,
    },
    /// The service disconnected before an exit.
    Disconnected,
    /// The object was closed before an exit.
    Closed,
}

impl Outcome {
    /// Whether waiters see this outcome as success (design C5).
    pub(crate) fn waits_ok(&self) -> bool {
        match self {
            Outcome::SystemExit(sig) => sig.status.is_success() || sig.status.is_in(sets::UNEXPECTED_EXIT),
            Outcome::ProcessExit { error, .. } => error.is_none(),
            Outcome::Disconnected | Outcome::Closed => false,
        }
    }
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
    /// The driver callback was unregistered by a close still in progress: whatever arrives now
    /// is a late callback (the contract says none may come from the driver itself) and is
    /// dropped, as it will be once the registry entry is gone (design §3.3).
    muted: bool,
    /// `Some` while a close's unregister is in flight: notifications are held here instead of
    /// applied. The unregister's success drops them (they raced a close that won, or were late
    /// already), its failure replays them in order, so the still-open object loses nothing.
    held: Option<Vec<Held>>,
    outcome: Option<Arc<Outcome>>,
    /// Threads blocked on `Notifier::cv`.
    blocked: usize,
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
    /// Blocking waiters (threads) sleep here; woken only when some are blocked.
    cv: Condvar,
    /// Async waiters (futures) listen here.
    event: Event,
    /// The published outcome, readable without the lock (set once, inside the critical section
    /// that sets `Inner::outcome`).
    #[cfg(not(loom))]
    published: std::sync::OnceLock<(Arc<Outcome>, bool)>,
}

/// A notification held while a close unregisters (kind, status, payload).
pub(crate) type Held = (NotificationKind, HResult, Option<String>);

/// Where a notification passed to [`Notifier::on_notification`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// From the driver (through dispatch), now: held while a close unregisters.
    Live,
    /// Held earlier and replayed after a failed unregister: applied, never held again.
    Replayed,
}

/// What the caller of [`Notifier::on_notification`] must do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Follow {
    Nothing,
    /// The first exit latched but its outcome needs a driver call first (V1 process exit
    /// code); the owner resolves it off the callback thread and publishes.
    ResolveExit(ExitSignal),
}

impl Notifier {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Wakes waiters after a state change made under `s` (which is released here).
    fn wake_after(&self, s: MutexGuard<'_, Inner>) {
        let blocked = s.blocked > 0;
        drop(s);
        if blocked {
            self.cv.notify_all();
        }
        self.event.notify(usize::MAX);
    }

    fn set_outcome(&self, s: &mut Inner, outcome: Outcome) -> bool {
        if s.outcome.is_some() {
            return false;
        }
        let o = Arc::new(outcome);
        #[cfg(not(loom))]
        let _ = self.published.set((o.clone(), o.waits_ok()));
        s.outcome = Some(o);
        s.stopped_at = Some(SystemTime::now());
        true
    }

    /// Applies one notification. Never blocks beyond the state lock; never calls a driver.
    /// `track_exit` names the exit kind this object tracks (SystemExited or ProcessExited);
    /// `exit_outcome` turns the first exit into the outcome to publish atomically with the
    /// latch, or `None` when publishing needs a driver call first ([`Follow::ResolveExit`]).
    pub(crate) fn on_notification(
        &self,
        track_exit: NotificationKind,
        kind: NotificationKind,
        status: HResult,
        payload: Option<&str>,
        arrival: Arrival,
        exit_outcome: &dyn Fn(&ExitSignal) -> Option<Outcome>,
    ) -> Follow {
        let mut follow = Follow::Nothing;
        let mut s = lock(&self.inner);
        if s.muted {
            tracing::debug!(%kind, "notification after the callback was unregistered: dropped");
            return Follow::Nothing;
        }
        if let (Some(held), Arrival::Live) = (s.held.as_mut(), arrival) {
            held.push((kind, status, payload.map(str::to_owned)));
            return Follow::Nothing;
        }
        if kind == track_exit {
            if s.exit.is_some() {
                return Follow::Nothing; // duplicates collapse into the latch
            }
            let sig = ExitSignal {
                status,
                payload: payload.map(str::to_owned),
            };
            match exit_outcome(&sig) {
                Some(o) => {
                    self.set_outcome(&mut s, o);
                }
                None => follow = Follow::ResolveExit(sig.clone()),
            }
            s.exit = Some(sig);
        } else if kind == NotificationKind::ServiceDisconnect {
            if s.disconnected {
                return Follow::Nothing;
            }
            s.disconnected = true;
            self.set_outcome(&mut s, Outcome::Disconnected);
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
        self.wake_after(s);
        follow
    }

    /// Publishes the terminal outcome unless one is already set; returns whether it was set.
    pub(crate) fn publish(&self, outcome: Outcome) -> bool {
        let mut s = lock(&self.inner);
        let set = self.set_outcome(&mut s, outcome);
        if set {
            self.wake_after(s);
        }
        set
    }

    /// The published outcome, if any (lock-free outside loom models).
    pub(crate) fn outcome(&self) -> Option<Arc<Outcome>> {
        #[cfg(not(loom))]
        return self.published.get().map(|(o, _)| o.clone());
        #[cfg(loom)]
        return lock(&self.inner).outcome.clone();
    }
    /// Runs `f` on the published outcome by reference (no clone; lock-free outside loom).
    #[inline]
    pub(crate) fn with_outcome<R>(&self, f: impl FnOnce(Option<&Outcome>) -> R) -> R {
        #[cfg(not(loom))]
        return f(self.published.get().map(|(o, _)| &**o));
        #[cfg(loom)]
        return f(lock(&self.inner).outcome.as_deref());
    }
    #[inline]
    pub(crate) fn is_done(&self) -> bool {
        #[cfg(not(loom))]
        return self.published.get().is_some();
        #[cfg(loom)]
        return lock(&self.inner).outcome.is_some();
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

    /// Starts holding notifications (a close is about to unregister the callback).
    pub(crate) fn hold(&self) {
        lock(&self.inner).held = Some(Vec::new());
    }

    /// The next held notifications to replay, oldest first, after an unregister that failed;
    /// empty once none are left, and then holding has stopped. Notifications arriving while
    /// the caller replays a batch are held behind it, so the order is kept.
    pub(crate) fn next_held(&self) -> Vec<Held> {
        let mut s = lock(&self.inner);
        match s.held.as_mut() {
            Some(h) if !h.is_empty() => std::mem::take(h),
            _ => {
                s.held = None;
                Vec::new()
            }
        }
    }

    /// Drops every notification from now on, and the held ones (the unregister succeeded:
    /// whatever comes now is a late callback); returns how many held ones were dropped.
    pub(crate) fn mute(&self) -> usize {
        let mut s = lock(&self.inner);
        s.muted = true;
        s.held.take().map_or(0, |h| h.len())
    }

    /// Takes notifications again (a close failed after its unregister; the callback is
    /// registered again).
    pub(crate) fn unmute(&self) {
        lock(&self.inner).muted = false;
    }

    /// Marks the object closing (pending waits end with `Closed`), or clears the mark after a
    /// failed close.
    pub(crate) fn set_closing(&self, closing: bool) {
        let mut s = lock(&self.inner);
        s.closing = closing;
        if closing {
            self.wake_after(s);
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
        if s.closing || matches!(s.outcome.as_deref(), Some(Outcome::Closed)) {
            return Some(PendingEnd::Closed);
        }
        None
    }

    /// Blocks on the condition variable until `deadline` (or forever); `false` on timeout.
    fn block<'a>(
        &'a self,
        mut s: MutexGuard<'a, Inner>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, Inner>, bool) {
        s.blocked += 1;
        let mut in_time = true;
        s = match deadline {
            None => match self.cv.wait(s) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            },
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    in_time = false;
                    s
                } else {
                    match self.cv.wait_timeout(s, d - now) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    }
                }
            }
        };
        s.blocked -= 1;
        (s, in_time)
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
        let mut s = lock(&self.inner);
        loop {
            if let Some(e) = Self::pending_end(&s, seq, exit_fails) {
                return e;
            }
            if cancelled() {
                return PendingEnd::Cancelled;
            }
            let (g, in_time) = self.block(s, Some(deadline));
            s = g;
            if !in_time {
                // One last look: a completion that raced the deadline still wins.
                return Self::pending_end(&s, seq, exit_fails).unwrap_or(PendingEnd::TimedOut);
            }
        }
    }

    /// Waits for the terminal outcome, until `deadline` if given (`None` on timeout).
    pub(crate) fn wait_outcome(&self, deadline: Option<Instant>) -> Option<Arc<Outcome>> {
        if let Some(o) = self.outcome() {
            return Some(o);
        }
        let mut s = lock(&self.inner);
        loop {
            if let Some(o) = &s.outcome {
                return Some(o.clone());
            }
            let (g, in_time) = self.block(s, deadline);
            s = g;
            if !in_time {
                return s.outcome.clone();
            }
        }
    }

    /// Wakes every waiter (used by cancellation tokens).
    pub(crate) fn wake_all(&self) {
        self.wake_after(lock(&self.inner));
    }

    /// `true` once an outcome that waits report as success is published (lock-free, no
    /// listener; the first thing a wait future's poll checks). Always `false` in loom models,
    /// which then take [`Notifier::poll_done`]'s locked path.
    #[inline(always)]
    pub(crate) fn done_ok(&self) -> bool {
        #[cfg(not(loom))]
        return matches!(self.published.get(), Some((_, true)));
        #[cfg(loom)]
        return false;
    }

    /// The poll step of the wait futures: ready once an outcome is published, with
    /// [`Notifier::waits_ok`] (so the common success path reads the outcome once); otherwise
    /// registers `cx`'s waker through `listener`.
    #[inline]
    pub(crate) fn poll_done(&self, listener: &mut Option<EventListener>, cx: &mut Context<'_>) -> Poll<bool> {
        loop {
            #[cfg(not(loom))]
            if let Some((_, ok)) = self.published.get() {
                return Poll::Ready(*ok);
            }
            #[cfg(loom)]
            if let Some(o) = lock(&self.inner).outcome.as_deref() {
                return Poll::Ready(o.waits_ok());
            }
            match listener.as_mut() {
                None => *listener = Some(self.event.listen()),
                Some(l) => match Pin::new(l).poll(cx) {
                    Poll::Ready(()) => *listener = None,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

#[cfg(not(loom))]
impl crate::timeouts::Wake for Notifier {
    fn wake(&self) {
        self.wake_all();
    }
}

// Two attributes rather than `all(test, loom)` so that tools that skip test-only code (e.g.
// cargo-mutants) see `cfg(test)`.
#[cfg(test)]
#[cfg(loom)]
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const START: NotificationKind = NotificationKind::SystemStartCompleted;
    const PAUSE: NotificationKind = NotificationKind::SystemPauseCompleted;

    fn complete(n: &Notifier, kind: NotificationKind, status: u32) {
        let f = n.on_notification(
            NotificationKind::SystemExited,
            kind,
            HResult(status),
            None,
            Arrival::Live,
            &|_| None,
        );
        assert_eq!(f, Follow::Nothing);
    }

    #[test]
    fn each_armed_operation_gets_its_own_sequence_number() {
        let n = Notifier::new();
        let (a, b) = (n.arm(START), n.arm(START));
        assert_ne!(a, b);
        n.disarm(a);
        complete(&n, START, 0);
        assert_eq!(
            n.finish(b, false),
            Some((HResult(0), None)),
            "disarming one keeps the other"
        );
    }

    #[test]
    fn finish_returns_a_completion_that_arrived_before_it() {
        let n = Notifier::new();
        let seq = n.arm(START);
        complete(&n, START, 0x8000_4005);
        // The waiter gave up (deadline) just as the completion arrived: the completion wins.
        assert_eq!(n.finish(seq, true), Some((HResult(0x8000_4005), None)));
        assert_eq!(n.finish(seq, false), None, "finished once");
    }

    #[test]
    fn a_completion_that_won_the_race_is_not_owed_and_the_next_operation_gets_its_own() {
        let n = Notifier::new();
        let first = n.arm(START);
        complete(&n, START, 0);
        assert!(n.finish(first, true).is_some());
        let second = n.arm(START);
        complete(&n, START, 0);
        assert_eq!(n.finish(second, false), Some((HResult(0), None)));
    }

    #[test]
    fn owed_completions_are_counted_per_kind() {
        let n = Notifier::new();
        // A start and a pause are abandoned before their completions come.
        let s = n.arm(START);
        assert_eq!(n.finish(s, true), None);
        let p = n.arm(PAUSE);
        assert_eq!(n.finish(p, true), None);
        // The late pause completion is dropped, not given to the next pause.
        let p2 = n.arm(PAUSE);
        complete(&n, PAUSE, 0x8000_0001);
        assert_eq!(n.finish(p2, false), None, "the stale pause completion is dropped");
        // The late start completion is dropped too; the next start gets its own.
        let s2 = n.arm(START);
        complete(&n, START, 0x8000_0002);
        complete(&n, START, 0);
        assert_eq!(n.finish(s2, false), Some((HResult(0), None)));
    }

    #[test]
    fn every_abandoned_operation_owes_one_completion() {
        let n = Notifier::new();
        for _ in 0..2 {
            let s = n.arm(START);
            assert_eq!(n.finish(s, true), None);
        }
        let next = n.arm(START);
        complete(&n, START, 0x8000_0001); // late, for the first abandoned start
        complete(&n, START, 0x8000_0002); // late, for the second
        complete(&n, START, 0); // this one's
        assert_eq!(n.finish(next, false), Some((HResult(0), None)));
    }
}

//! The timer queue of notification deliveries and model events (scripted exits, shutdown
//! escalation, injected crashes and disconnects), run in due-time order (FIFO among equal
//! times) by the service thread (see [`crate::service`]). The queue only holds tasks: whoever
//! pushes one wakes the thread, and the engine runs them.

use crate::sync::lock;
use hcs::{HResult, NotificationKind, NotifyContext};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where a delivery goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// A callback registration (checked live at delivery, counted in-flight for unregister).
    Registration(u64),
    /// The context of a pending call (its completion).
    Context(NotifyContext),
    /// A context whose registration is gone: the "late callback" fault, delivered regardless.
    Late(NotifyContext),
}

/// One notification to deliver through `hcs::dispatch`.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) target: Target,
    pub(crate) kind: NotificationKind,
    pub(crate) status: HResult,
    pub(crate) payload: Option<String>,
    /// Service epoch when it was queued; a disconnect or reboot drops older deliveries.
    pub(crate) epoch: u64,
}

/// A timed task.
#[derive(Debug)]
pub(crate) enum Task {
    /// Deliver one notification.
    Deliver(Delivery),
    /// A scripted process's runtime is over (unless it was paused or signalled since: its
    /// `generation` changed).
    ScriptedExit { sys: u64, proc: u64, generation: u64 },
    /// A graceful stop's grace period is over: `SIGKILL` what is left (unless stop `stop_gen`
    /// finished or was superseded).
    Escalate { sys: u64, stop_gen: u64 },
    /// An injected crash of a system.
    Crash { sys: u64 },
    /// An injected service disconnect.
    Disconnect,
    /// A `notify` rule's extra notification to the registrations of a system (or of process
    /// `proc` of it) live when it is due, unless a disconnect or reboot (`epoch`) came first.
    Inject {
        sys: u64,
        proc: Option<u64>,
        kind: NotificationKind,
        status: HResult,
        payload: Option<String>,
        epoch: u64,
    },
    /// The held head of a process handle's signal queue is released (hold `queue_gen`).
    SignalDue { handle: u64, queue_gen: u64 },
}

struct Entry {
    at: Instant,
    seq: u64,
    task: Task,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: BinaryHeap is a max-heap, we want the earliest (then lowest seq) first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at).then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
struct Inner {
    heap: BinaryHeap<Entry>,
    seq: u64,
}

/// The timer queue.
#[derive(Default)]
pub(crate) struct Scheduler {
    inner: Mutex<Inner>,
}

impl Scheduler {
    /// Queues `task` to run `delay` from now (FIFO among equal times). The caller wakes the
    /// service thread.
    pub(crate) fn push(&self, delay: Duration, task: Task) {
        let now = Instant::now();
        let at = now
            .checked_add(delay)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        let mut inner = lock(&self.inner);
        inner.seq += 1;
        let seq = inner.seq;
        inner.heap.push(Entry { at, seq, task });
    }

    /// Drops every queued task.
    pub(crate) fn clear(&self) {
        lock(&self.inner).heap.clear();
    }

    /// Removes and returns the first task due at `now`, if any.
    pub(crate) fn pop_due(&self, now: Instant) -> Option<Task> {
        let mut inner = lock(&self.inner);
        if inner.heap.peek()?.at <= now {
            inner.heap.pop().map(|e| e.task)
        } else {
            None
        }
    }

    /// When the first queued task is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        lock(&self.inner).heap.peek().map(|e| e.at)
    }
}

//! The record of a simulator: every driver call (method, handle, argument, result) and every
//! notification delivery and signal that took effect, in order, for tests to assert on. Off by
//! default ([`crate::Simulator::start_recording`]); when off it costs one atomic load per event.
//! Bounded: past its capacity the oldest entries are dropped and counted.

use crate::sync::lock;
use hcs::{HResult, Method, NotificationKind};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a recorded call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    /// Synchronous success.
    Done,
    /// Accepted; completes later by notification.
    Pending,
    /// Failed with this HRESULT.
    Failed(HResult),
}

impl CallResult {
    /// The failure code, if it failed.
    pub fn code(self) -> Option<HResult> {
        match self {
            CallResult::Failed(c) => Some(c),
            _ => None,
        }
    }
}

/// One driver call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    /// Time since the simulator was created, when the call returned.
    pub at: Duration,
    /// The call.
    pub method: Method,
    /// The raw handle it used (system, process or callback handle), if any.
    pub handle: Option<u64>,
    /// The system id it names or its handle resolved to (when known at the call).
    pub system: Option<String>,
    /// Its main argument: the id, document, options, query or pid, verbatim.
    pub argument: String,
    /// How it ended.
    pub result: CallResult,
    /// The raw handle it returned (create/open of a system or process, callback registration).
    pub new_handle: Option<u64>,
}

/// One notification handed to `hcs::dispatch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryEvent {
    /// Time since the simulator was created.
    pub at: Duration,
    /// The context it was dispatched to.
    pub context: u64,
    /// Its kind.
    pub kind: NotificationKind,
    /// Its status.
    pub status: HResult,
    /// Its payload, verbatim.
    pub payload: Option<String>,
    /// What `hcs::dispatch` returned (`true`: a live registry entry took it).
    pub accepted: bool,
}

/// One signal (or terminate, as `SIGKILL`) taking effect on a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalEvent {
    /// Time since the simulator was created.
    pub at: Duration,
    /// The process handle it was sent through.
    pub handle: u64,
    /// The process's pid.
    pub pid: u32,
    /// The (Linux-numbered) signal that took effect.
    pub signal: i32,
}

/// One entry of the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A driver call returned.
    Call(CallEvent),
    /// A notification was delivered.
    Delivery(DeliveryEvent),
    /// A signal took effect.
    Signal(SignalEvent),
}

/// The record: entries in order, plus how many older ones were dropped to stay in bounds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// The entries, oldest first.
    pub entries: Vec<Event>,
    /// Entries dropped (the oldest) because the record was full.
    pub dropped: u64,
}

impl Record {
    /// The calls, in order.
    pub fn calls(&self) -> impl Iterator<Item = &CallEvent> {
        self.entries.iter().filter_map(|e| match e {
            Event::Call(c) => Some(c),
            _ => None,
        })
    }
    /// The deliveries, in order.
    pub fn deliveries(&self) -> impl Iterator<Item = &DeliveryEvent> {
        self.entries.iter().filter_map(|e| match e {
            Event::Delivery(d) => Some(d),
            _ => None,
        })
    }
    /// The signals that took effect, in order.
    pub fn signals(&self) -> impl Iterator<Item = &SignalEvent> {
        self.entries.iter().filter_map(|e| match e {
            Event::Signal(s) => Some(s),
            _ => None,
        })
    }
    /// The methods called, in order.
    pub fn methods(&self) -> Vec<Method> {
        self.calls().map(|c| c.method).collect()
    }
}

#[derive(Default)]
struct Buffer {
    entries: VecDeque<Event>,
    capacity: usize,
    dropped: u64,
}

/// The recorder the engine writes to.
pub(crate) struct Recorder {
    on: AtomicBool,
    epoch: Instant,
    buffer: Mutex<Buffer>,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Recorder {
            on: AtomicBool::new(false),
            epoch: Instant::now(),
            buffer: Mutex::new(Buffer::default()),
        }
    }
    /// Whether entries are being kept (callers skip building them otherwise).
    pub(crate) fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }
    /// Time since the simulator was created.
    pub(crate) fn now(&self) -> Duration {
        self.epoch.elapsed()
    }
    pub(crate) fn start(&self, capacity: usize) {
        let mut b = lock(&self.buffer);
        b.capacity = capacity.max(1);
        while b.entries.len() > b.capacity {
            b.entries.pop_front();
            b.dropped += 1;
        }
        self.on.store(true, Ordering::Relaxed);
    }
    pub(crate) fn stop(&self) {
        self.on.store(false, Ordering::Relaxed);
    }
    pub(crate) fn push(&self, event: Event) {
        if !self.on() {
            return;
        }
        let mut b = lock(&self.buffer);
        if b.entries.len() >= b.capacity {
            b.entries.pop_front();
            b.dropped += 1;
        }
        b.entries.push_back(event);
    }
    pub(crate) fn snapshot(&self) -> Record {
        let b = lock(&self.buffer);
        Record {
            entries: b.entries.iter().cloned().collect(),
            dropped: b.dropped,
        }
    }
    pub(crate) fn take(&self) -> Record {
        let mut b = lock(&self.buffer);
        let dropped = std::mem::take(&mut b.dropped);
        Record {
            entries: b.entries.drain(..).collect(),
            dropped,
        }
    }
}

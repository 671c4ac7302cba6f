//! The receiving side of `LiveMigration` notifications: each System's [`EventHub`] (fed on
//! HCS's callback thread, never blocking beyond its short lock) and the lossy
//! [`MigrationEvents`] stream readers take from it. Kept apart from the migration session
//! ([`crate::migration`]) so that the System, which owns a hub, does not depend on the session,
//! which uses the System.

use crate::sync::lock;
use event_listener::{Event, EventListener};
use hcs_schema::migration::{
    decode_migration_event, MigrationEvent, MigrationResult, OperationSystemMigrationNotificationInfo,
};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How many events the hub of a System keeps for readers that fall behind.
pub const EVENT_BUFFER: usize = 64;

/// One migration notification as a reader sees it.
#[derive(Debug, Clone)]
pub struct MigrationNotification {
    /// Position in the System's event sequence (1-based, no gaps at the source: a gap seen by a
    /// reader is an event it missed).
    pub seq: u64,
    /// The decoded payload (the zero value when the payload was empty or malformed).
    pub info: OperationSystemMigrationNotificationInfo,
    /// The result with the missing-means-success rule for progress events applied.
    pub result: Option<MigrationResult>,
    /// The decode error of a malformed payload (the raw text is in the log).
    pub malformed: Option<String>,
    /// When the notification arrived.
    pub at: Instant,
}

impl MigrationNotification {
    /// The event, if the payload named one.
    pub fn event(&self) -> Option<&MigrationEvent> {
        self.info.event.as_ref()
    }
    /// `true` for a terminal event.
    pub fn is_terminal(&self) -> bool {
        self.event().is_some_and(MigrationEvent::is_terminal)
    }
}

#[derive(Default)]
struct HubState {
    ring: VecDeque<Arc<MigrationNotification>>,
    next_seq: u64,
    terminal: Option<Arc<MigrationNotification>>,
    malformed: u64,
    closed: bool,
}

/// The per-System receiver of `LiveMigration` notifications (fed by the System's sink on the
/// callback thread; never blocks beyond its short lock).
#[derive(Default)]
pub(crate) struct EventHub {
    state: Mutex<HubState>,
    cv: Condvar,
    event: Event,
}

impl EventHub {
    /// Records one notification. Never blocks beyond the state lock, never panics.
    pub(crate) fn push(&self, payload: Option<&str>) {
        let (info, malformed) = match decode_migration_event(payload) {
            Ok(info) => (info, None),
            Err(e) => {
                tracing::warn!(error = %e, payload = payload.unwrap_or_default(), "malformed live-migration event payload");
                (
                    OperationSystemMigrationNotificationInfo::default(),
                    Some(e.to_string()),
                )
            }
        };
        let mut s = lock(&self.state);
        s.next_seq += 1;
        let n = Arc::new(MigrationNotification {
            seq: s.next_seq,
            result: info.effective_result(),
            info,
            malformed,
            at: Instant::now(),
        });
        if n.malformed.is_some() {
            s.malformed += 1;
        }
        if n.is_terminal() && s.terminal.is_none() {
            s.terminal = Some(n.clone());
        }
        if s.ring.len() == EVENT_BUFFER {
            s.ring.pop_front();
        }
        s.ring.push_back(n);
        drop(s);
        self.cv.notify_all();
        self.event.notify(usize::MAX);
    }

    /// Ends every stream (the System closed).
    pub(crate) fn close(&self) {
        lock(&self.state).closed = true;
        self.cv.notify_all();
        self.event.notify(usize::MAX);
    }

    /// The first terminal event, latched.
    pub(crate) fn terminal(&self) -> Option<Arc<MigrationNotification>> {
        lock(&self.state).terminal.clone()
    }

    /// Waits up to `timeout` for the first terminal event (`None` at the deadline or once the
    /// System closed).
    pub(crate) fn wait_terminal(&self, timeout: Duration) -> Option<Arc<MigrationNotification>> {
        // A timeout too large for an `Instant` is no limit.
        let deadline = Instant::now().checked_add(timeout);
        let mut s = lock(&self.state);
        loop {
            if let Some(t) = &s.terminal {
                return Some(t.clone());
            }
            if s.closed {
                return None;
            }
            s = match deadline {
                None => self.cv.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    match self.cv.wait_timeout(s, d - now) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    }
                }
            };
        }
    }

    /// A new stream, starting at the latest event.
    pub(crate) fn subscribe(self: &Arc<Self>) -> MigrationEvents {
        let s = lock(&self.state);
        // Late subscribers start at the latest event.
        let next = s.ring.back().map_or(s.next_seq + 1, |n| n.seq);
        MigrationEvents {
            hub: self.clone(),
            next,
            missed: 0,
            listener: None,
        }
    }
}

/// A subscription to a System's migration events: bounded, lossy, starting at the latest event.
/// Blocking ([`MigrationEvents::recv_timeout`]) and async ([`MigrationEvents::recv_async`]).
pub struct MigrationEvents {
    hub: Arc<EventHub>,
    next: u64,
    missed: u64,
    listener: Option<EventListener>,
}

impl std::fmt::Debug for MigrationEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrationEvents")
            .field("next", &self.next)
            .field("missed", &self.missed)
            .finish()
    }
}

/// What a poll of the stream found.
enum Polled {
    Item(Arc<MigrationNotification>),
    End,
    Empty,
}

impl MigrationEvents {
    fn poll_state(&mut self) -> Polled {
        let s = lock(&self.hub.state);
        if let Some(first) = s.ring.front() {
            if self.next < first.seq {
                self.missed += first.seq - self.next;
                self.next = first.seq;
            }
            let idx = (self.next - first.seq) as usize;
            if let Some(n) = s.ring.get(idx) {
                self.next += 1;
                return Polled::Item(n.clone());
            }
        }
        if s.closed {
            Polled::End
        } else {
            Polled::Empty
        }
    }

    /// The next event without waiting; `None` when there is none yet (or the stream ended).
    pub fn try_recv(&mut self) -> Option<Arc<MigrationNotification>> {
        match self.poll_state() {
            Polled::Item(n) => Some(n),
            _ => None,
        }
    }

    /// The next event, waiting up to `timeout`; `None` on timeout or when the System was closed
    /// and every buffered event was read.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Arc<MigrationNotification>> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.poll_state() {
                Polled::Item(n) => return Some(n),
                Polled::End => return None,
                Polled::Empty => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let s = lock(&self.hub.state);
            let fresh = s.next_seq >= self.next || s.closed;
            if !fresh {
                let _ = self.hub.cv.wait_timeout(s, deadline - now);
            }
        }
    }

    /// How many events this reader lost because it fell more than [`EVENT_BUFFER`] behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// The next event as a future (resolves to `None` when the System was closed and every
    /// buffered event was read).
    pub fn recv_async(&mut self) -> NextEvent<'_> {
        NextEvent { events: self }
    }
}

/// Future of [`MigrationEvents::recv_async`].
#[derive(Debug)]
pub struct NextEvent<'a> {
    events: &'a mut MigrationEvents,
}

impl Future for NextEvent<'_> {
    type Output = Option<Arc<MigrationNotification>>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match this.events.poll_state() {
                Polled::Item(n) => {
                    this.events.listener = None;
                    return Poll::Ready(Some(n));
                }
                Polled::End => {
                    this.events.listener = None;
                    return Poll::Ready(None);
                }
                Polled::Empty => {}
            }
            match this.events.listener.as_mut() {
                None => this.events.listener = Some(this.events.hub.event.listen()),
                Some(l) => {
                    if Pin::new(l).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.events.listener = None;
                }
            }
        }
    }
}

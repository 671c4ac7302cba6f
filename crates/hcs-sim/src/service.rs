//! The simulator's one service thread, `hcs-sim-service`, started lazily on first need (the
//! first scheduled task or the first adopted host child), never one per system. Each wake-up it
//! runs every due task of the [`Scheduler`](crate::sched::Scheduler) queue, then reports the
//! exits of host children owned by the [`Reaper`](crate::host::Reaper), looping at once when
//! there were exits so that zero-latency deliveries they queued go out before it sleeps. On
//! Linux it sleeps in one `poll(2)` over a wake eventfd and every child's pidfd, with the time
//! to the next task as timeout; elsewhere, or when a child has no pidfd, on a condition
//! variable, waking at least every `reap_interval` while children exist. No scheduler, reaper
//! or service lock is held while it runs a task or reports an exit.
//!
//! The thread knows its owner only through the narrow [`Work`] interface defined here (due
//! tasks, host exits, shutdown), which the engine implements; it never names the engine's
//! state. A daemon can run the same thread over the same engine.

#[cfg(target_os = "linux")]
use crate::host::{Key, Pidfds};
use crate::host::{Reaper, Sweep};
use crate::sync::lock;
#[cfg(target_os = "linux")]
use std::os::fd::OwnedFd;
#[cfg(target_os = "linux")]
use std::sync::OnceLock;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What the service thread works for: the owner of the timer queue and the host children.
/// Implemented by the engine; the thread holds an `Arc` of it until [`Work::shutting_down`].
pub(crate) trait Work: Send + Sync + 'static {
    /// The start and wake-up state of the owner's service thread.
    fn service(&self) -> &Service;
    /// The host children the thread reaps.
    fn reaper(&self) -> &Reaper;
    /// When the first queued task is due (`None`: no task).
    fn next_due(&self) -> Option<Instant>;
    /// Runs one task due at `now`; `false` when none is due.
    fn run_due(self: &Arc<Self>, now: Instant) -> bool;
    /// Reports that host child `proc` of system `sys` exited with `code`.
    fn host_exited(self: &Arc<Self>, sys: u64, proc: u64, code: u32);
    /// Reports that the supervisor of system `sys` died (after the exits of its processes):
    /// the system's unexpected exit.
    fn system_lost(self: &Arc<Self>, sys: u64);
    /// `true` once the owner shuts down: the thread ends.
    fn shutting_down(&self) -> bool;
    /// How often to sweep host children that cannot be waited for (see `SimConfig`).
    fn reap_interval(&self) -> Duration;
}

/// Where the service thread is, as far as a poke is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Asleep {
    /// Running or about to look at its queues again: a poke only needs to set the flag.
    #[default]
    Awake,
    /// Waiting on the condition variable.
    OnCondvar,
    /// Blocked in `poll(2)`: a poke writes the eventfd.
    #[cfg(target_os = "linux")]
    InPoll,
}

#[derive(Default)]
struct State {
    started: bool,
    /// Something changed (a task queued, a child adopted, shutdown) since the thread last woke.
    poked: bool,
    asleep: Asleep,
}

/// The service thread's start and wake-up: a poke flag under a mutex, plus a condition
/// variable and (Linux) an eventfd to interrupt its sleep.
#[derive(Default)]
pub(crate) struct Service {
    state: Mutex<State>,
    cv: Condvar,
    /// The wake eventfd (Linux), created by the thread the first time it polls; `None` inside
    /// when it could not be created (the thread then waits on the condition variable).
    #[cfg(target_os = "linux")]
    eventfd: OnceLock<Option<OwnedFd>>,
}

impl Service {
    /// Starts the thread unless it runs already, and wakes it to look at its queues again.
    /// A failed spawn is logged; the next poke tries again.
    pub(crate) fn poke<W: Work>(&self, work: &Arc<W>) {
        let mut st = lock(&self.state);
        if !st.started {
            let work = Arc::clone(work);
            match std::thread::Builder::new()
                .name("hcs-sim-service".into())
                .spawn(move || run(work))
            {
                Ok(_) => st.started = true,
                Err(e) => tracing::error!(error = %e, "hcs-sim: cannot start the service thread"),
            }
        }
        self.poke_locked(&mut st);
    }

    /// Wakes the thread if it runs (used at shutdown).
    pub(crate) fn wake(&self) {
        self.poke_locked(&mut lock(&self.state));
    }

    /// Whether the thread has been started.
    pub(crate) fn started(&self) -> bool {
        lock(&self.state).started
    }

    fn poke_locked(&self, st: &mut State) {
        if st.poked {
            return; // the thread has been woken already, or will look before it sleeps
        }
        st.poked = true;
        match st.asleep {
            Asleep::Awake => {}
            Asleep::OnCondvar => self.cv.notify_one(),
            #[cfg(target_os = "linux")]
            Asleep::InPoll => {
                if let Some(Some(fd)) = self.eventfd.get() {
                    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
                }
            }
        }
    }

    /// Waits on the condition variable for a poke, at most `timeout` (`None`: no limit).
    fn wait(&self, timeout: Option<Duration>) {
        let mut st = lock(&self.state);
        if !st.poked {
            st.asleep = Asleep::OnCondvar;
            st = match timeout {
                None => self.cv.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(t) => self.cv.wait_timeout(st, t).unwrap_or_else(|p| p.into_inner()).0,
            };
            st.asleep = Asleep::Awake;
        }
        st.poked = false;
    }

    /// The wake eventfd, created on first use; `None` if that failed.
    #[cfg(target_os = "linux")]
    fn eventfd(&self) -> Option<&OwnedFd> {
        self.eventfd
            .get_or_init(|| {
                use rustix::event::{eventfd, EventfdFlags};
                eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
                    .inspect_err(|e| tracing::warn!(error = %e, "hcs-sim: no eventfd; polling children"))
                    .ok()
            })
            .as_ref()
    }

    /// Sleeps in `poll(2)` over the eventfd and `pidfds` (duplicates, so that a child reaped
    /// meanwhile cannot turn its number into an unrelated descriptor under the `poll`) until a
    /// poke, a child's exit, `next` (the next task) or the safety cap of `interval` × 400.
    /// Returns the children to sweep: those whose pidfd is readable, or all of them after the
    /// cap (or a failed `poll`, which then waits like the condition variable path instead).
    #[cfg(target_os = "linux")]
    fn poll(
        &self,
        eventfd: &OwnedFd,
        pidfds: &[(Key, OwnedFd)],
        next: Option<Duration>,
        interval: Duration,
    ) -> Sweep {
        use rustix::event::{PollFd, PollFlags, Timespec};
        {
            let mut st = lock(&self.state);
            if st.poked {
                st.poked = false;
                return Sweep::None;
            }
            st.asleep = Asleep::InPoll;
        }
        let cap = interval.saturating_mul(400);
        let (timeout, capped) = match next {
            Some(t) if t < cap => (t, false),
            _ => (cap, true),
        };
        let mut polled: Vec<PollFd<'_>> = std::iter::once(eventfd)
            .chain(pidfds.iter().map(|(_, fd)| fd))
            .map(|fd| PollFd::new(fd, PollFlags::IN))
            .collect();
        let timespec = Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let result = rustix::event::poll(&mut polled, Some(&timespec));
        {
            let mut st = lock(&self.state);
            st.asleep = Asleep::Awake;
            st.poked = false;
        }
        // Pokes write only while the thread is in `poll`: after this read the count is zero.
        let _ = rustix::io::read(eventfd, &mut [0u8; 8]);
        match result {
            Ok(0) if capped => Sweep::All,
            Ok(_) => Sweep::Only(
                polled[1..]
                    .iter()
                    .zip(pidfds)
                    .filter(|(p, _)| !p.revents().is_empty())
                    .map(|(_, (key, _))| *key)
                    .collect(),
            ),
            Err(rustix::io::Errno::INTR) => Sweep::None,
            Err(e) => {
                tracing::warn!(error = %e, "hcs-sim: poll failed; sweeping the children on a timer");
                self.wait(Some(next.map_or(interval, |t| t.min(interval))));
                Sweep::All
            }
        }
    }
}

/// What the thread keeps from one sleep to the next.
#[derive(Default)]
struct Memory {
    /// Its duplicates of the children's pidfds (Linux).
    #[cfg(target_os = "linux")]
    pidfds: Pidfds,
}

/// The earlier of two optional timeouts (`None` is no limit).
fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Sleeps until there may be work: a poke, the next task's due time, or a child's exit.
/// Returns the children to sweep with `try_wait` afterwards.
fn sleep<W: Work>(work: &W, memory: &mut Memory) -> Sweep {
    let service = work.service();
    let reaper = work.reaper();
    let now = Instant::now();
    let next = match work.next_due() {
        Some(at) if at <= now => return Sweep::None,
        at => at.map(|at| at - now),
    };
    let interval = work.reap_interval().max(Duration::from_micros(100));
    #[cfg(target_os = "linux")]
    match reaper.pidfds(&mut memory.pidfds) {
        Some([]) => {
            service.wait(next);
            return Sweep::None;
        }
        Some(pidfds) => {
            if let Some(eventfd) = service.eventfd() {
                return service.poll(eventfd, pidfds, next, interval);
            }
        }
        None => {}
    }
    #[cfg(not(target_os = "linux"))]
    let _ = memory;
    // Sweeping on a timer: no pidfds (not Linux, or a child without one, or no eventfd).
    if reaper.running() == 0 {
        service.wait(next);
        Sweep::None
    } else {
        service.wait(earliest(next, Some(interval)));
        Sweep::All
    }
}

/// The thread: due tasks, then exits, then sleep, until shutdown.
fn run<W: Work>(work: Arc<W>) {
    let mut sweep = Sweep::All;
    let mut memory = Memory::default();
    loop {
        loop {
            if work.shutting_down() {
                return;
            }
            if !work.run_due(Instant::now()) {
                break;
            }
        }
        let reaped = work.reaper().reap(&std::mem::replace(&mut sweep, Sweep::None));
        if !reaped.exits.is_empty() || !reaped.lost.is_empty() {
            for (sys, proc, code) in reaped.exits {
                work.host_exited(sys, proc, code);
            }
            for sys in reaped.lost {
                work.system_lost(sys);
            }
            continue; // deliver what the exits queued (zero latency: now) before sleeping
        }
        sweep = sleep(&*work, &mut memory);
    }
}

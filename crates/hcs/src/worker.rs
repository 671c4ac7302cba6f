//! A small shared worker pool for the few jobs that must not run on HCS's callback thread:
//! reading a V1 process's exit code after `ProcessExited` (one driver call), and Signal's
//! one-second force-unblock. Threads are started on demand (at most [`MAX_WORKERS`]) and exit
//! after being idle, so idle Systems and Processes cost no thread.

use crate::sync::lock;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Upper bound on worker threads.
pub(crate) const MAX_WORKERS: usize = 8;
const IDLE_EXIT: Duration = Duration::from_secs(5);

type Job = Box<dyn FnOnce() + Send>;

struct Timed {
    at: Instant,
    seq: u64,
    job: Job,
}
impl PartialEq for Timed {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // min-heap on (at, seq)
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
struct Pool {
    ready: VecDeque<Job>,
    timed: BinaryHeap<Timed>,
    seq: u64,
    threads: usize,
    idle: usize,
}

struct Shared {
    pool: Mutex<Pool>,
    cv: Condvar,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| Shared {
        pool: Mutex::new(Pool::default()),
        cv: Condvar::new(),
    })
}

/// Runs `job` on a worker thread soon.
pub(crate) fn spawn(job: impl FnOnce() + Send + 'static) {
    let s = shared();
    let mut p = lock(&s.pool);
    p.ready.push_back(Box::new(job));
    wake_or_grow(s, &mut p);
}

/// Runs `job` on a worker thread after `delay`.
pub(crate) fn spawn_after(delay: Duration, job: impl FnOnce() + Send + 'static) {
    let s = shared();
    let mut p = lock(&s.pool);
    p.seq += 1;
    let seq = p.seq;
    p.timed.push(Timed {
        at: Instant::now() + delay,
        seq,
        job: Box::new(job),
    });
    wake_or_grow(s, &mut p);
}

fn wake_or_grow(s: &'static Shared, p: &mut Pool) {
    if p.idle == 0 && p.threads < MAX_WORKERS {
        p.threads += 1;
        let spawned = std::thread::Builder::new()
            .name("hcs-worker".into())
            .spawn(move || run(s));
        if spawned.is_err() {
            p.threads -= 1;
            tracing::error!("could not start an hcs worker thread; job stays queued");
        }
    } else {
        s.cv.notify_all();
    }
}

fn run(s: &'static Shared) {
    let mut p = lock(&s.pool);
    loop {
        let now = Instant::now();
        while p.timed.peek().is_some_and(|t| t.at <= now) {
            let t = p.timed.pop().expect("peeked");
            p.ready.push_back(t.job);
        }
        if let Some(job) = p.ready.pop_front() {
            drop(p);
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                tracing::error!("an hcs worker job panicked");
            }
            p = lock(&s.pool);
            continue;
        }
        let wait = p
            .timed
            .peek()
            .map(|t| t.at.saturating_duration_since(now))
            .unwrap_or(IDLE_EXIT);
        p.idle += 1;
        let (g, res) = match s.cv.wait_timeout(p, wait) {
            Ok(r) => r,
            Err(e) => e.into_inner(),
        };
        p = g;
        p.idle -= 1;
        if res.timed_out() && p.ready.is_empty() && p.timed.is_empty() {
            p.threads -= 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn delayed_jobs_run_after_their_delay_and_in_order() {
        let (tx, rx) = mpsc::channel();
        let t0 = Instant::now();
        let tx2 = tx.clone();
        spawn_after(Duration::from_millis(60), move || tx2.send(2).unwrap());
        spawn_after(Duration::from_millis(20), move || tx.send(1).unwrap());
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 2);
        assert!(t0.elapsed() >= Duration::from_millis(60));
    }
}

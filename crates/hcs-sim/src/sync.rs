//! Poison-tolerant locking, and the start of the service threads.

use crate::sim::Shared;
use std::sync::{Arc, Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning (a panicking test callback must not wedge the simulator).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the service thread `hcs-sim-<what>` running `run`, unless `started` says it runs
/// already. Call it under the lock that guards `started`. A failed spawn is logged and leaves
/// `started` false, so the next caller tries again.
pub(crate) fn start_service_thread(
    started: &mut bool,
    what: &str,
    shared: &Arc<Shared>,
    run: fn(Arc<Shared>),
) {
    if *started {
        return;
    }
    let shared = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name(format!("hcs-sim-{what}"))
        .spawn(move || run(shared));
    match spawned {
        Ok(_) => *started = true,
        Err(e) => tracing::error!(error = %e, "hcs-sim: cannot start the {what} thread"),
    }
}

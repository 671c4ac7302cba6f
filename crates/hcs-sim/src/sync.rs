//! Poison-tolerant locking: every mutex of the crate is taken through [`lock`], so a test
//! callback that panics while the simulator holds a lock cannot wedge the simulator.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning (a panicking test callback must not wedge the simulator).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

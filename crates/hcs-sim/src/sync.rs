//! Poison-tolerant locking.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning (a panicking test callback must not wedge the simulator).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

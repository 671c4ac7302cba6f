//! Synchronisation facade: std primitives normally, `loom`'s under `--cfg loom` so the
//! concurrent cores (the notification registry and the per-object notification state) can be
//! model-checked with the same code that ships.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

/// Locks a mutex, recovering from poisoning: the state guarded here is kept consistent by every
/// critical section (no section can panic half-way through an update), so a poisoned lock only
/// means some unrelated code panicked while holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

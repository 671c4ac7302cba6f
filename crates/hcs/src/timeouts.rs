//! Per-operation timeouts for completion waits (design §7) and per-call options.
//!
//! Defaults are 4 minutes each; the `HCSSHIM_TIMEOUT_*` environment variables (integer seconds
//! greater than zero; anything else is ignored) override the defaults. A [`Timeouts`] value is
//! carried by each System, so tests inject millisecond timeouts, and [`CallOptions`] overrides
//! one call (and adds caller cancellation, I7). Exit waits have no timeout of their own.

use crate::sync::{lock, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The default for every completion wait: 4 minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(240);

/// Completion-wait timeouts of the pending-capable operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `CreateComputeSystem` (`HCSSHIM_TIMEOUT_SYSTEMCREATE`).
    pub create: Duration,
    /// `Start` (`HCSSHIM_TIMEOUT_SYSTEMSTART`).
    pub start: Duration,
    /// `Pause` (`HCSSHIM_TIMEOUT_SYSTEMPAUSE`).
    pub pause: Duration,
    /// `Resume` (`HCSSHIM_TIMEOUT_SYSTEMRESUME`).
    pub resume: Duration,
    /// `Save` (`HCSSHIM_TIMEOUT_SYSTEMSAVE`).
    pub save: Duration,
}

impl Default for Timeouts {
    /// 4 minutes each, without looking at the environment.
    fn default() -> Self {
        Timeouts::uniform(DEFAULT_TIMEOUT)
    }
}

impl Timeouts {
    /// The same timeout for every operation (handy in tests).
    pub const fn uniform(d: Duration) -> Self {
        Timeouts {
            create: d,
            start: d,
            pause: d,
            resume: d,
            save: d,
        }
    }

    /// The defaults, overridden by the `HCSSHIM_TIMEOUT_*` environment variables.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`Timeouts::from_env`] over an arbitrary variable lookup (for tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let read = |name: &str| {
            get(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_TIMEOUT)
        };
        Timeouts {
            create: read("HCSSHIM_TIMEOUT_SYSTEMCREATE"),
            start: read("HCSSHIM_TIMEOUT_SYSTEMSTART"),
            pause: read("HCSSHIM_TIMEOUT_SYSTEMPAUSE"),
            resume: read("HCSSHIM_TIMEOUT_SYSTEMRESUME"),
            save: read("HCSSHIM_TIMEOUT_SYSTEMSAVE"),
        }
    }
}

/// Options for one pending-capable call: a timeout narrowing the System's (the shorter of the
/// two applies), and a cancellation token. A timeout or cancellation ends the *wait*, never the HCS call (I5).
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Narrows the operation's timeout for this call: the shorter of this and the System's
    /// timeout applies (nested deadlines, the shortest wins).
    pub timeout: Option<Duration>,
    /// Ends the wait early with a cancellation error when cancelled.
    pub cancel: Option<CancelToken>,
}

impl CallOptions {
    /// Options with only a timeout.
    pub fn timeout(d: Duration) -> Self {
        CallOptions {
            timeout: Some(d),
            cancel: None,
        }
    }
    /// Options with only a cancellation token.
    pub fn cancellable(token: CancelToken) -> Self {
        CallOptions {
            timeout: None,
            cancel: Some(token),
        }
    }
}

/// Something a [`CancelToken`] wakes when cancelled.
pub(crate) trait Wake: Send + Sync {
    fn wake(&self);
}

struct CancelInner {
    cancelled: AtomicBool,
    watchers: Mutex<Vec<Weak<dyn Wake>>>,
}

/// A cloneable cancellation token for completion waits.
#[derive(Clone)]
pub struct CancelToken(Arc<CancelInner>);

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelToken {
    /// A fresh, uncancelled token.
    pub fn new() -> Self {
        CancelToken(Arc::new(CancelInner {
            cancelled: AtomicBool::new(false),
            watchers: Mutex::new(Vec::new()),
        }))
    }
    /// Cancels: every wait using this token ends promptly with a cancellation error.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        let watchers = std::mem::take(&mut *lock(&self.0.watchers));
        for w in watchers.iter().filter_map(Weak::upgrade) {
            w.wake();
        }
    }
    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }
    pub(crate) fn watch(&self, w: Weak<dyn Wake>) {
        let mut g = lock(&self.0.watchers);
        g.retain(|w| w.strong_count() > 0);
        g.push(w);
    }
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_only_positive_integer_seconds() {
        let t = Timeouts::from_lookup(|k| match k {
            "HCSSHIM_TIMEOUT_SYSTEMSTART" => Some("7".into()),
            "HCSSHIM_TIMEOUT_SYSTEMPAUSE" => Some("0".into()),
            "HCSSHIM_TIMEOUT_SYSTEMRESUME" => Some("-3".into()),
            "HCSSHIM_TIMEOUT_SYSTEMSAVE" => Some("soon".into()),
            _ => None,
        });
        assert_eq!(t.start, Duration::from_secs(7));
        assert_eq!(t.pause, DEFAULT_TIMEOUT);
        assert_eq!(t.resume, DEFAULT_TIMEOUT);
        assert_eq!(t.save, DEFAULT_TIMEOUT);
        assert_eq!(t.create, Duration::from_secs(240));
    }
}

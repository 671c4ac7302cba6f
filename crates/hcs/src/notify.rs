//! Notifications: the kinds the lifecycle understands, the process-wide registry of callback
//! contexts, and [`dispatch`], the one entry point every driver's callback trampoline (and every
//! test) calls.
//!
//! The context handed to HCS is a 1-based registry id ([`NotifyContext`]), never a pointer. Ids
//! come from a monotonically increasing `u64`, so an id is never reused. Unknown and stale ids
//! are no-ops. [`dispatch`] never blocks (it takes one shard read-lock to find the target and the
//! target's short state lock; neither is ever held across a driver call), never calls a driver
//! and never panics.

use crate::driver::NotifyContext;
use crate::hresult::HResult;
use crate::sync::{Arc, AtomicU64, Ordering, RwLock};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

pub use crate::driver::NotificationKind;

/// The receiving side of a registration: a System's or Process's notification state.
pub(crate) trait Sink: Send + Sync {
    /// Delivers one notification. Must not block beyond a short state lock, must not call a
    /// driver, must not panic.
    fn notify(&self, kind: NotificationKind, status: HResult, payload: Option<&str>);

    /// Applies a notification that was held while a close unregistered and is now replayed
    /// (the unregister failed): like [`Sink::notify`], but never held again.
    fn replay(&self, kind: NotificationKind, status: HResult, payload: Option<&str>) {
        self.notify(kind, status, payload)
    }
}

const SHARDS: usize = 64;

/// Hasher for registry ids: ids are sequential, so a multiplicative mix spreads them well.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Shard = RwLock<HashMap<u64, Arc<dyn Sink>, BuildHasherDefault<IdHasher>>>;

/// A registry of callback contexts: id → sink. The process uses one global instance (see
/// [`dispatch`]); tests and loom models may build their own.
pub(crate) struct Registry {
    next: AtomicU64,
    shards: Vec<Shard>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Registry {
            next: AtomicU64::new(1),
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::default())).collect(),
        }
    }

    fn shard(&self, id: u64) -> &Shard {
        &self.shards[(id as usize) % SHARDS]
    }

    /// Inserts a sink under a fresh, never-reused, 1-based id.
    pub(crate) fn insert(&self, sink: Arc<dyn Sink>) -> NotifyContext {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let ctx = NotifyContext::new(id).expect("registry ids start at 1");
        let mut shard = match self.shard(id).write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        shard.insert(id, sink);
        ctx
    }

    /// Removes an id; returns whether it was present.
    pub(crate) fn remove(&self, ctx: NotifyContext) -> bool {
        let mut shard = match self.shard(ctx.raw()).write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        shard.remove(&ctx.raw()).is_some()
    }

    /// Looks an id up; `None` for unknown or removed ids.
    pub(crate) fn get(&self, id: u64) -> Option<Arc<dyn Sink>> {
        let shard = match self.shard(id).read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        shard.get(&id).cloned()
    }

    /// Number of live registrations.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| match s.read() {
                Ok(g) => g.len(),
                Err(p) => p.into_inner().len(),
            })
            .sum()
    }

    /// Delivers a notification to the sink registered under `id`, if any.
    pub(crate) fn deliver(
        &self,
        id: u64,
        kind: NotificationKind,
        status: HResult,
        payload: Option<&str>,
    ) -> bool {
        match self.get(id) {
            Some(sink) => {
                sink.notify(kind, status, payload);
                true
            }
            None => false,
        }
    }
}

#[cfg(not(loom))]
pub(crate) fn global() -> &'static Registry {
    static GLOBAL: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    GLOBAL.get_or_init(Registry::new)
}

/// Delivers a notification exactly as HCS does: `context` is the value the driver handed to HCS
/// (a [`NotifyContext`]'s raw id), `status` the HRESULT, `payload` the JSON data (or `None` for a
/// null pointer).
///
/// Unknown or stale contexts (never registered, or already unregistered: a *late callback*) are
/// ignored, as are notification kinds the target does not track. Never blocks, never calls a
/// driver, never panics; safe to call from any thread, including a driver's FFI trampoline.
///
/// Returns `true` when a registered object received the notification.
#[cfg(not(loom))]
pub fn dispatch(
    context: u64,
    kind: NotificationKind,
    status: impl Into<HResult>,
    payload: Option<&str>,
) -> bool {
    let status = status.into();
    let delivered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        global().deliver(context, kind, status, payload)
    }))
    .unwrap_or(false);
    if !delivered {
        tracing::trace!(context, %kind, %status, "notification for unknown context dropped");
    }
    delivered
}

/// Number of live registrations in the process-wide registry (for leak checks).
#[cfg(not(loom))]
pub fn live_registrations() -> usize {
    global().len()
}

/// A callback registered directly in the notification registry, for driver-level tests and
/// tools that want raw notifications without a [`crate::System`] or [`crate::Process`].
///
/// Hand [`Subscription::context`] to a driver's `register_*_callback` (or to a pending call);
/// every notification dispatched to that context runs the closure on the dispatching thread.
/// Dropping the subscription removes the registry entry; later notifications for it are dropped.
///
/// ```
/// use hcs::notify::{dispatch, NotificationKind, Subscription};
/// use std::sync::{Arc, Mutex};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let s2 = seen.clone();
/// let sub = Subscription::new(move |kind, status, _payload| s2.lock().unwrap().push((kind, status)));
/// assert!(dispatch(sub.context().raw(), NotificationKind::SystemExited, 0u32, None));
/// let ctx = sub.context().raw();
/// drop(sub);
/// assert!(!dispatch(ctx, NotificationKind::SystemExited, 0u32, None)); // stale: dropped
/// assert_eq!(seen.lock().unwrap().len(), 1);
/// ```
#[cfg(not(loom))]
pub struct Subscription {
    ctx: NotifyContext,
}

#[cfg(not(loom))]
struct FnSink<F>(F);

#[cfg(not(loom))]
impl<F> Sink for FnSink<F>
where
    F: Fn(NotificationKind, HResult, Option<&str>) + Send + Sync,
{
    fn notify(&self, kind: NotificationKind, status: HResult, payload: Option<&str>) {
        (self.0)(kind, status, payload)
    }
}

#[cfg(not(loom))]
impl Subscription {
    /// Registers `f` under a fresh context id.
    pub fn new(f: impl Fn(NotificationKind, HResult, Option<&str>) + Send + Sync + 'static) -> Self {
        Subscription {
            ctx: global().insert(Arc::new(FnSink(f))),
        }
    }
    /// The context id to hand to a driver.
    pub fn context(&self) -> NotifyContext {
        self.ctx
    }
}

#[cfg(not(loom))]
impl Drop for Subscription {
    fn drop(&mut self) {
        global().remove(self.ctx);
    }
}

#[cfg(not(loom))]
impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").field("ctx", &self.ctx).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(loom))]
    struct Quiet;
    #[cfg(not(loom))]
    impl Sink for Quiet {
        fn notify(&self, _: NotificationKind, _: HResult, _: Option<&str>) {}
    }

    #[cfg(not(loom))]
    #[test]
    fn a_subscription_receives_its_notifications_until_dropped() {
        use std::sync::Mutex;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let sub = Subscription::new(move |kind, status, payload| {
            s2.lock()
                .unwrap()
                .push((kind, status, payload.map(str::to_owned)))
        });
        let other = Subscription::new(|_, _, _| {});
        assert!(
            live_registrations() >= 2,
            "both subscriptions are live registrations"
        );
        let ctx = sub.context();
        assert_eq!(format!("{sub:?}"), format!("Subscription {{ ctx: {ctx:?} }}"));
        assert!(dispatch(
            ctx.raw(),
            NotificationKind::SystemExited,
            5u32,
            Some("{}")
        ));
        assert_eq!(
            *seen.lock().unwrap(),
            [(NotificationKind::SystemExited, HResult(5), Some("{}".to_owned()))]
        );
        drop(sub);
        assert!(
            !dispatch(ctx.raw(), NotificationKind::SystemExited, 0u32, None),
            "stale after drop"
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert!(dispatch(
            other.context().raw(),
            NotificationKind::SystemExited,
            0u32,
            None
        ));
    }

    #[cfg(not(loom))]
    #[test]
    fn a_registry_holds_more_entries_than_shards_and_counts_them() {
        let r = Registry::new();
        let ctxs: Vec<NotifyContext> = (0..5000).map(|_| r.insert(Arc::new(Quiet))).collect();
        assert_eq!(r.len(), 5000);
        let last = *ctxs.last().unwrap();
        assert!(
            r.get(last.raw()).is_some(),
            "an id far above the shard count is found"
        );
        assert!(r.remove(last));
        assert!(r.get(last.raw()).is_none());
        assert_eq!(r.len(), 4999);
    }

    #[cfg(not(loom))]
    #[test]
    fn the_id_hasher_spreads_sequential_ids_and_hashes_bytes() {
        let hash = |f: &dyn Fn(&mut IdHasher)| {
            let mut h = IdHasher::default();
            f(&mut h);
            h.finish()
        };
        let ids: std::collections::HashSet<u64> = (1..=1000u64).map(|i| hash(&|h| h.write_u64(i))).collect();
        assert_eq!(ids.len(), 1000, "sequential ids get distinct hashes");
        assert!(ids.iter().all(|&x| x > 1));
        assert_ne!(hash(&|h| h.write(&[1])), hash(&|h| h.write(&[2])));
        assert_ne!(hash(&|h| h.write(&[1])), 0);
    }

    #[test]
    fn v1_and_v2_numbering_decode_to_the_same_kinds() {
        assert_eq!(
            NotificationKind::from_v1(0x100_0000),
            NotificationKind::ServiceDisconnect
        );
        assert_eq!(
            NotificationKind::from_v2(0x200_0000),
            NotificationKind::ServiceDisconnect
        );
        assert_eq!(
            NotificationKind::from_v1(0x200_0000),
            NotificationKind::Other(0x200_0000)
        );
        assert_eq!(
            NotificationKind::from_v2(0x100_0000),
            NotificationKind::Other(0x8100_0000)
        );
        assert_eq!(NotificationKind::from_v2(1), NotificationKind::SystemExited);
        for raw in [1u32, 2, 3, 4, 5, 8, 0x1_0000, 0x100_0000, 0xE, 0x77] {
            assert_eq!(NotificationKind::from_v1(raw).v1_value(), raw);
        }
    }

    #[test]
    fn from_name_parses_every_displayed_name_and_nothing_else() {
        for k in NotificationKind::TRACKED {
            assert_eq!(NotificationKind::from_name(&k.to_string()), Some(k));
        }
        assert_eq!(
            NotificationKind::from_name("SystemCrashReport"),
            Some(NotificationKind::Other(0x6))
        );
        assert_eq!(NotificationKind::from_name("Invalid"), None);
        assert_eq!(NotificationKind::from_name("Unknown: 77"), None);
        assert_eq!(NotificationKind::from_name("systemexited"), None);
    }

    #[test]
    fn display_names_and_unknown_renders_decimal() {
        assert_eq!(
            NotificationKind::SystemStartCompleted.to_string(),
            "SystemStartCompleted"
        );
        assert_eq!(
            NotificationKind::from_v1(0xE).to_string(),
            "SystemGuestConnectionClosed"
        );
        assert_eq!(NotificationKind::from_v1(0x77).to_string(), "Unknown: 119");
    }

    #[test]
    #[cfg(not(loom))]
    fn dispatch_to_unknown_context_is_a_noop() {
        assert!(!dispatch(u64::MAX, NotificationKind::SystemExited, 0u32, None));
        assert!(!dispatch(0, NotificationKind::SystemExited, 0u32, Some("{")));
    }
}

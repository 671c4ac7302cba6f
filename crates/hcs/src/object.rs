//! What a System and a Process share: the registry entry and driver callback registration of
//! an object, and the one close sequence (C6, I4, I10) both run.

use crate::driver::{CallbackHandle, Failure, NotifyContext};
use crate::error::Error;
use crate::guard::HandleCell;
use crate::hresult::sets;
use crate::notifier::{Notifier, Outcome};
use crate::notify::{self, Sink};
use crate::sync::{lock, Arc, Mutex};

/// An object's registry entry (inserted at construction, before any driver call, so a pending
/// create's completion has somewhere to go) and the driver callback registered for it.
pub(crate) struct Registration {
    ctx: NotifyContext,
    /// The sink behind `ctx`, for replaying notifications held during a failed unregister.
    sink: Arc<dyn Sink>,
    live: Mutex<bool>,
    callback: Mutex<Option<CallbackHandle>>,
}

impl Registration {
    pub(crate) fn new(sink: Arc<dyn Sink>) -> Self {
        Registration {
            ctx: notify::global().insert(sink.clone()),
            sink,
            live: Mutex::new(true),
            callback: Mutex::new(None),
        }
    }

    /// The context handed to the driver.
    pub(crate) fn ctx(&self) -> NotifyContext {
        self.ctx
    }

    /// Registers the driver callback through `register` (one driver call).
    pub(crate) fn register(
        &self,
        register: impl FnOnce(NotifyContext) -> Result<CallbackHandle, Failure>,
    ) -> Result<(), Failure> {
        let cb = register(self.ctx)?;
        *lock(&self.callback) = Some(cb);
        Ok(())
    }

    /// The context while the registry entry exists; `None` once it was removed.
    pub(crate) fn live_context(&self) -> Option<NotifyContext> {
        lock(&self.live).then_some(self.ctx)
    }

    /// Replays, in order, the notifications `notifier` held while an unregister was in flight
    /// (it failed, or the registration was already gone) and stops holding.
    fn replay_held(&self, notifier: &Notifier) {
        loop {
            let batch = notifier.next_held();
            if batch.is_empty() {
                return;
            }
            for (kind, status, payload) in batch {
                self.sink.replay(kind, status, payload.as_deref());
            }
        }
    }

    /// Removes the registry entry (idempotent); later notifications for it are dropped.
    pub(crate) fn remove_entry(&self) {
        let mut live = lock(&self.live);
        if *live {
            notify::global().remove(self.ctx);
            *live = false;
        }
    }
}

/// A driver answer saying the handle or registration no longer exists (invalid handle, in
/// either form): closing it again can never succeed, and nothing is left to release.
fn is_dead(f: &Failure) -> bool {
    f.code.to_win32_form().is_in(sets::INVALID_HANDLE)
}

/// How many times the library tries to close an object nobody else can reach (a dropped
/// object, a half-built System, Kill's temporary handles) before it gives up on it.
pub(crate) const OWNED_CLOSE_ATTEMPTS: u32 = 3;

/// Releases an object the library owns: `close` is tried up to [`OWNED_CLOSE_ATTEMPTS`] times;
/// if it still fails, the handle is forgotten, the registry entry removed and the closed
/// outcome latched, with an error log line naming `what`. Never fails, never leaves a registry
/// entry behind.
pub(crate) fn release<H: Copy>(
    handle: &HandleCell<H>,
    notifier: &Notifier,
    reg: &Registration,
    what: &dyn std::fmt::Display,
    mut close: impl FnMut() -> Result<(), Error>,
) {
    let mut last = None;
    for attempt in 0..OWNED_CLOSE_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(5 << attempt));
        }
        match close() {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        tracing::error!(object = %what, error = %e, attempts = OWNED_CLOSE_ATTEMPTS,
            "could not close an object nobody else can reach; forgetting its handle");
    }
    handle.forget();
    reg.remove_entry();
    notifier.publish(Outcome::Closed);
}

/// The close sequence: mark closing (pending waits end already-closed), wait for driver calls
/// in progress, run `quiesced` with the still-open handle, unregister the callback, close the
/// handle, remove the registry entry, latch the closed outcome. Idempotent; a failing
/// unregister or close leaves the object open (and retryable) and is returned; after a failed
/// handle close the callback is registered again (`reregister`), so the open object still
/// hears its exit.
pub(crate) fn close<H: Copy>(
    handle: &HandleCell<H>,
    notifier: &Notifier,
    reg: &Registration,
    quiesced: impl FnOnce(H),
    unregister: impl FnOnce(CallbackHandle) -> Result<(), Failure>,
    close_handle: impl FnOnce(H) -> Result<(), Failure>,
    reregister: impl FnOnce(H, NotifyContext) -> Result<CallbackHandle, Failure>,
) -> Result<(), Failure> {
    notifier.set_closing(true);
    let Some(h) = handle.begin_close() else {
        notifier.set_closing(false);
        reg.remove_entry();
        return Ok(());
    };
    quiesced(h);
    let fail = |e: Failure| {
        handle.end_close(false);
        notifier.set_closing(false);
        Err(e)
    };
    // From the moment the unregister starts until the registry entry is removed, the id is
    // still found, yet what arrives may be a late callback: HCS (or a driver) calling a
    // registration that no longer exists. It must not publish anything (a stale or fabricated
    // exit would be a lie). So notifications are held while the unregister runs: its success
    // drops them and mutes the notifier (a notification that raced the unregister lost to the
    // close, which publishes `Closed`; and one delivered just after the unregister returned
    // cannot slip in before the mute), its failure replays them, so the object that stays
    // open loses nothing. The notifier is unmuted if the handle close then fails and the
    // callback is registered again.
    let cb = *lock(&reg.callback);
    let mut unregistered = false;
    if let Some(cb) = cb {
        notifier.hold();
        match unregister(cb) {
            Ok(()) => {
                unregistered = true;
                let dropped = notifier.mute();
                if dropped > 0 {
                    tracing::debug!(dropped, "notifications that raced the unregister dropped");
                }
            }
            // The registration is already gone (e.g. the service restarted): nothing is left
            // to unregister, and retrying cannot help.
            Err(e) if is_dead(&e) => {
                reg.replay_held(notifier);
                tracing::warn!(hresult = %e.code, "callback registration already gone at close")
            }
            Err(e) => {
                reg.replay_held(notifier);
                return fail(e);
            }
        }
        *lock(&reg.callback) = None;
    }
    match close_handle(h) {
        Ok(()) => {}
        // The handle is already dead (invalid handle): it is released as far as HCS knows.
        Err(e) if is_dead(&e) => tracing::warn!(hresult = %e.code, "handle already invalid at close"),
        Err(e) => {
            // The object stays open for a retry, so it must keep hearing its notifications: the
            // registry entry was kept, and the callback this close unregistered is registered
            // again (without it, a wait on the still-open object would never end).
            if unregistered {
                notifier.unmute();
                match reregister(h, reg.ctx) {
                    Ok(cb) => *lock(&reg.callback) = Some(cb),
                    Err(r) => tracing::error!(hresult = %r.code,
                        "close failed and the callback could not be registered again; the object no longer hears its notifications"),
                }
            }
            return fail(e);
        }
    }
    reg.remove_entry();
    notifier.publish(Outcome::Closed);
    handle.end_close(true);
    notifier.set_closing(false);
    Ok(())
}

//! What a System and a Process share: the registry entry and driver callback registration of
//! an object, and the one close sequence (C6, I4, I10) both run.

use crate::driver::{CallbackHandle, Failure, NotifyContext};
use crate::guard::HandleCell;
use crate::notifier::{Notifier, Outcome};
use crate::notify::{self, Sink};
use crate::sync::{lock, Arc, Mutex};

/// An object's registry entry (inserted at construction, before any driver call, so a pending
/// create's completion has somewhere to go) and the driver callback registered for it.
pub(crate) struct Registration {
    ctx: NotifyContext,
    live: Mutex<bool>,
    callback: Mutex<Option<CallbackHandle>>,
}

impl Registration {
    pub(crate) fn new(sink: Arc<dyn Sink>) -> Self {
        Registration {
            ctx: notify::global().insert(sink),
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

    /// Removes the registry entry (idempotent); later notifications for it are dropped.
    pub(crate) fn remove_entry(&self) {
        let mut live = lock(&self.live);
        if *live {
            notify::global().remove(self.ctx);
            *live = false;
        }
    }
}

/// The close sequence: mark closing (pending waits end already-closed), wait for driver calls
/// in progress, run `quiesced` with the still-open handle, unregister the callback, remove the
/// registry entry, close the handle, latch the closed outcome. Idempotent; a failing unregister
/// or close leaves the object open (and retryable) and is returned.
pub(crate) fn close<H: Copy>(
    handle: &HandleCell<H>,
    notifier: &Notifier,
    reg: &Registration,
    quiesced: impl FnOnce(H),
    unregister: impl FnOnce(CallbackHandle) -> Result<(), Failure>,
    close_handle: impl FnOnce(H) -> Result<(), Failure>,
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
    let cb = *lock(&reg.callback);
    if let Some(cb) = cb {
        if let Err(e) = unregister(cb) {
            return fail(e);
        }
        *lock(&reg.callback) = None;
    }
    reg.remove_entry();
    if let Err(e) = close_handle(h) {
        return fail(e);
    }
    notifier.publish(Outcome::Closed);
    handle.end_close(true);
    notifier.set_closing(false);
    Ok(())
}

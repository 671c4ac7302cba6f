//! Ownership of the system and process handles HCS hands a driver during a call
//! ([`HandleGuard`]): a handle is closed on every path unless it is given to the caller.

use hcs::{Failure, HResult};
use std::ffi::c_void;

/// The HRESULT reported when a call succeeded but returned a null handle (`E_POINTER`).
pub const NULL_HANDLE: HResult = HResult(0x8000_4003);

/// A system or process handle HCS handed the driver during a call, closed on drop with `close`
/// unless [`HandleGuard::release`]d: a call that fails after HCS produced a handle (or whose
/// result cannot be reported) does not leak it.
pub struct HandleGuard<C: FnMut(*mut c_void)> {
    raw: *mut c_void,
    close: C,
}

impl<C: FnMut(*mut c_void)> HandleGuard<C> {
    /// An empty guard; `close` is called once with the handle if one is held at drop.
    pub fn new(close: C) -> Self {
        HandleGuard {
            raw: std::ptr::null_mut(),
            close,
        }
    }

    /// The handle held (null: none yet).
    pub fn raw(&self) -> *mut c_void {
        self.raw
    }

    /// The out-slot HCS writes the handle to.
    pub fn slot(&mut self) -> *mut *mut c_void {
        &mut self.raw
    }

    /// Gives the handle to the caller as `H` (`wrap` is e.g. `SystemHandle::new`); a null
    /// handle is a failure ([`NULL_HANDLE`]).
    pub fn release<H>(mut self, wrap: impl FnOnce(u64) -> Option<H>) -> Result<H, Failure> {
        let raw = std::mem::replace(&mut self.raw, std::ptr::null_mut());
        wrap(raw as usize as u64).ok_or_else(|| Failure::new(NULL_HANDLE))
    }
}

impl<C: FnMut(*mut c_void)> Drop for HandleGuard<C> {
    fn drop(&mut self) {
        if !self.raw.is_null() {
            (self.close)(self.raw);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn an_unreleased_handle_is_closed_once_and_a_null_one_is_a_failure() {
        let closed = RefCell::new(Vec::new());
        {
            let mut g = HandleGuard::new(|h| closed.borrow_mut().push(h as usize));
            // SAFETY: `slot` is a valid out-slot.
            unsafe { *g.slot() = 0x40 as *mut c_void };
            assert_eq!(g.raw() as usize, 0x40);
        }
        assert_eq!(*closed.borrow(), vec![0x40]);

        let mut g = HandleGuard::new(|h| closed.borrow_mut().push(h as usize));
        // SAFETY: as above.
        unsafe { *g.slot() = 0x50 as *mut c_void };
        assert_eq!(g.release(Some).unwrap(), 0x50);
        let e = HandleGuard::new(|h| closed.borrow_mut().push(h as usize))
            .release(|raw| (raw != 0).then_some(raw))
            .unwrap_err();
        assert_eq!(e.code, NULL_HANDLE);
        assert_eq!(
            *closed.borrow(),
            vec![0x40],
            "released and null handles are not closed"
        );
    }
}

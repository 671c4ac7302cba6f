//! UTF-16 marshalling and returned-string ownership: arguments are encoded (an interior NUL is
//! rejected before any call), notification strings copied, and every string a DLL returns
//! through an out-parameter freed exactly once with the table's free routine ([`OutString`]).

use crate::types::{FreeStringFn, PCWSTR, PWSTR};
use hcs::{Failure, HResult};
use std::fmt;

/// The HRESULT reported when a string argument contains an interior NUL: `E_INVALIDARG`
/// (`0x80070057`, whose Win32 form is `ERROR_INVALID_PARAMETER`, 87). The call is never made.
pub const INTERIOR_NUL: HResult = HResult::E_INVALIDARG;
/// The HRESULT reported when the DLL returns a string that is not valid UTF-16:
/// `HRESULT_FROM_WIN32(ERROR_INVALID_DATA)` (`0x8007000D`).
pub const INVALID_UTF16: HResult = HResult(0x8007_000D);

/// A NUL-terminated UTF-16 copy of a Rust string, passed as `PCWSTR`.
#[derive(Debug, Clone)]
pub struct WideCString(Vec<u16>);

impl WideCString {
    /// Encodes `s`. An interior NUL is rejected with [`INTERIOR_NUL`] before any DLL call.
    pub fn new(s: &str) -> Result<Self, Failure> {
        if s.contains('\0') {
            return Err(Failure::new(INTERIOR_NUL));
        }
        let mut v: Vec<u16> = s.encode_utf16().collect();
        v.push(0);
        Ok(WideCString(v))
    }

    /// The string as a `PCWSTR`, valid while `self` lives.
    pub fn as_ptr(&self) -> PCWSTR {
        self.0.as_ptr()
    }
}

/// `Some(encoded)` for a non-empty string, `None` for `""` (V2 passes "no options" as null).
pub fn wide_opt(s: &str) -> Result<Option<WideCString>, Failure> {
    if s.is_empty() {
        Ok(None)
    } else {
        WideCString::new(s).map(Some)
    }
}

/// The pointer of an optional wide string (null for `None`).
pub fn opt_ptr(s: &Option<WideCString>) -> PCWSTR {
    s.as_ref().map_or(std::ptr::null(), WideCString::as_ptr)
}

/// The UTF-16 units of a NUL-terminated string, without the NUL.
///
/// # Safety
///
/// `p` is non-null and points to a readable NUL-terminated UTF-16 string that stays valid and
/// unmodified for `'a`.
pub unsafe fn wide_units<'a>(p: *const u16) -> &'a [u16] {
    let mut len = 0usize;
    // SAFETY: the caller guarantees a readable NUL-terminated string; we stop at the NUL.
    unsafe {
        while *p.add(len) != 0 {
            len += 1;
        }
        std::slice::from_raw_parts(p, len)
    }
}

/// Copies the data string of a notification (owned by HCS; never freed here). Null → `None`;
/// invalid UTF-16 is replaced lossily, because a callback has nobody to report an error to.
///
/// # Safety
///
/// `p` is null or a readable NUL-terminated UTF-16 string valid for the duration of the call.
pub unsafe fn copy_callback_str(p: *const u16) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null, and the caller guarantees the rest.
    let units = unsafe { wide_units(p) };
    Some(String::from_utf16_lossy(units))
}

/// A string returned by the DLL through a `*mut PWSTR` out-parameter. The slot starts null;
/// whatever the DLL stores is freed exactly once with the table's free routine, when the value is
/// taken or dropped, on every path.
pub struct OutString {
    ptr: PWSTR,
    free: FreeStringFn,
}

impl OutString {
    /// An empty (null) slot freed with `free`.
    pub fn new(free: FreeStringFn) -> Self {
        OutString {
            ptr: std::ptr::null_mut(),
            free,
        }
    }

    /// The out-parameter to pass to the DLL.
    pub fn as_out(&mut self) -> *mut PWSTR {
        &mut self.ptr
    }

    /// Copies the string (null → `None`) and frees it. Invalid UTF-16 → `Err` with a lossy copy
    /// for diagnostics; the string is freed either way.
    pub fn take(self) -> Result<Option<String>, String> {
        if self.ptr.is_null() {
            return Ok(None);
        }
        // SAFETY: a non-null out-string is a NUL-terminated UTF-16 string allocated by the DLL
        // and owned by us until freed in Drop (after this copy).
        let units = unsafe { wide_units(self.ptr) };
        String::from_utf16(units)
            .map(Some)
            .map_err(|_| String::from_utf16_lossy(units))
        // `self` drops here and frees the string.
    }
}

impl Drop for OutString {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            let p = std::mem::replace(&mut self.ptr, std::ptr::null_mut());
            // SAFETY: `p` was stored by the DLL into our out-parameter and has not been freed;
            // `free` is the routine paired with the DLL's allocator. We cleared the slot first,
            // so it is freed exactly once.
            unsafe { (self.free)(p.cast()) }
        }
    }
}

impl fmt::Debug for OutString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutString").field("ptr", &self.ptr).finish()
    }
}

/// The failure reported for a string from `dll` that is not valid UTF-16.
pub fn invalid_utf16(dll: &str, what: &str, lossy: &str) -> Failure {
    tracing::warn!(dll, what, lossy, "DLL returned a string that is not valid UTF-16");
    Failure::new(INVALID_UTF16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static FREED: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "system" fn counting_free(p: *mut std::ffi::c_void) {
        FREED.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the tests below only hand out strings leaked from a `Box<[u16]>` of length 3.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p.cast::<u16>(), 3)) });
    }

    #[test]
    fn wide_strings_are_nul_terminated_and_reject_interior_nuls() {
        let w = WideCString::new("ab").unwrap();
        // SAFETY: `w` is a live NUL-terminated string.
        assert_eq!(unsafe { wide_units(w.as_ptr()) }, &[b'a' as u16, b'b' as u16]);
        let e = WideCString::new("a\0b").unwrap_err();
        assert_eq!(e.code, INTERIOR_NUL);
        assert!(wide_opt("").unwrap().is_none());
        assert!(opt_ptr(&wide_opt("").unwrap()).is_null());
        assert!(!opt_ptr(&wide_opt("x").unwrap()).is_null());
        // SAFETY: null is allowed.
        assert_eq!(unsafe { copy_callback_str(std::ptr::null()) }, None);
    }

    #[test]
    fn out_strings_are_freed_exactly_once_whether_taken_or_dropped() {
        let before = FREED.load(Ordering::SeqCst);
        let alloc = || Box::into_raw(vec![b'o' as u16, b'k' as u16, 0].into_boxed_slice()) as *mut u16;

        let mut taken = OutString::new(counting_free);
        // SAFETY: `as_out` is a valid out-slot; we store what a DLL would.
        unsafe { *taken.as_out() = alloc() };
        assert_eq!(taken.take(), Ok(Some("ok".to_string())));

        let mut dropped = OutString::new(counting_free);
        // SAFETY: as above.
        unsafe { *dropped.as_out() = alloc() };
        drop(dropped);

        assert_eq!(OutString::new(counting_free).take(), Ok(None));
        assert_eq!(FREED.load(Ordering::SeqCst) - before, 2);
    }
}

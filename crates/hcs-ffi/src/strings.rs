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

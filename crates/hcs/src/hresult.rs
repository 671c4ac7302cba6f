//! HRESULT values: a value type with a table of the named codes this layer meets, the
//! failure test, and the FACILITY_WIN32 conversion (design §6.6).

use std::fmt;

/// An HRESULT as returned by HCS (or a Win32 error code after [`HResult::to_win32_form`]).
///
/// A value is a failure iff it is negative as an `i32`. `Display` shows the symbolic name (when
/// known) and the hex value, e.g. `HCS_E_SYSTEM_NOT_FOUND (0x8037010E)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct HResult(pub u32);

macro_rules! codes {
    ($($(#[$m:meta])* $name:ident = $value:expr;)*) => {
        impl HResult {
            $($(#[$m])* pub const $name: HResult = HResult($value);)*
        }
        const NAMES: &[(u32, &str)] = &[$(($value, stringify!($name)),)*];
    };
}

codes! {
    /// Success.
    S_OK = 0x0000_0000;
    /// Success, "false".
    S_FALSE = 0x0000_0001;
    /// Not implemented (also our "capability not provided by this driver").
    E_NOTIMPL = 0x8000_4001;
    /// Unspecified failure.
    E_FAIL = 0x8000_4005;
    /// Invalid argument.
    E_INVALIDARG = 0x8007_0057;
    /// Access denied (HRESULT form of Win32 5).
    E_ACCESSDENIED = 0x8007_0005;
    /// Invalid handle (HRESULT form of Win32 6).
    E_HANDLE = 0x8007_0006;
    /// Out of memory.
    E_OUTOFMEMORY = 0x8007_000E;
    /// Unexpected failure.
    E_UNEXPECTED = 0x8000_FFFF;
    /// Win32 `ERROR_FILE_NOT_FOUND` (2).
    ERROR_FILE_NOT_FOUND = 0x2;
    /// Win32 `ERROR_PATH_NOT_FOUND` (3).
    ERROR_PATH_NOT_FOUND = 0x3;
    /// Win32 `ERROR_ACCESS_DENIED` (5).
    ERROR_ACCESS_DENIED = 0x5;
    /// Win32 `ERROR_INVALID_HANDLE` (6).
    ERROR_INVALID_HANDLE = 0x6;
    /// Win32 `ERROR_INVALID_DATA` (13).
    ERROR_INVALID_DATA = 0xD;
    /// Win32 `ERROR_NOT_SUPPORTED` (50).
    ERROR_NOT_SUPPORTED = 0x32;
    /// Win32 `ERROR_INVALID_PARAMETER` (87).
    ERROR_INVALID_PARAMETER = 0x57;
    /// Win32 `ERROR_PROC_NOT_FOUND` (127): a DLL export is missing. Never "already stopped".
    ERROR_PROC_NOT_FOUND = 0x7F;
    /// Win32 `ERROR_MOD_NOT_FOUND` (126): a DLL is missing.
    ERROR_MOD_NOT_FOUND = 0x7E;
    /// Win32 `ERROR_NOT_FOUND` (1168).
    ERROR_NOT_FOUND = 0x490;
    /// Win32 `RPC_S_SERVER_UNAVAILABLE` (1722).
    RPC_S_SERVER_UNAVAILABLE = 0x6BA;
    /// Win32 `RPC_S_CALL_FAILED_DNE` (1727).
    RPC_S_CALL_FAILED_DNE = 0x6BF;
    /// V1 `ERROR_VMCOMPUTE_TERMINATED_DURING_START`.
    ERROR_VMCOMPUTE_TERMINATED_DURING_START = 0xC037_0100;
    /// V1 `ERROR_VMCOMPUTE_IMAGE_MISMATCH`.
    ERROR_VMCOMPUTE_IMAGE_MISMATCH = 0xC037_0101;
    /// V1 `ERROR_VMCOMPUTE_HYPERV_NOT_INSTALLED`.
    ERROR_VMCOMPUTE_HYPERV_NOT_INSTALLED = 0xC037_0102;
    /// V1 `ERROR_VMCOMPUTE_OPERATION_PENDING`: the V1 asynchronous marker.
    ERROR_VMCOMPUTE_OPERATION_PENDING = 0xC037_0103;
    /// V1 `ERROR_VMCOMPUTE_TOO_MANY_NOTIFICATIONS`.
    ERROR_VMCOMPUTE_TOO_MANY_NOTIFICATIONS = 0xC037_0104;
    /// V1 `ERROR_VMCOMPUTE_INVALID_STATE`.
    ERROR_VMCOMPUTE_INVALID_STATE = 0xC037_0105;
    /// V1 `ERROR_VMCOMPUTE_UNEXPECTED_EXIT`: the status of `SystemExited` after a crash.
    ERROR_VMCOMPUTE_UNEXPECTED_EXIT = 0xC037_0106;
    /// V1 `ERROR_VMCOMPUTE_TERMINATED`.
    ERROR_VMCOMPUTE_TERMINATED = 0xC037_0107;
    /// V1 `ERROR_VMCOMPUTE_CONNECT_FAILED`.
    ERROR_VMCOMPUTE_CONNECT_FAILED = 0xC037_0108;
    /// V1 `ERROR_VMCOMPUTE_TIMEOUT`.
    ERROR_VMCOMPUTE_TIMEOUT = 0xC037_0109;
    /// V1 `ERROR_VMCOMPUTE_CONNECTION_CLOSED`.
    ERROR_VMCOMPUTE_CONNECTION_CLOSED = 0xC037_010A;
    /// V1 `ERROR_VMCOMPUTE_UNKNOWN_MESSAGE`.
    ERROR_VMCOMPUTE_UNKNOWN_MESSAGE = 0xC037_010B;
    /// V1 `ERROR_VMCOMPUTE_UNSUPPORTED_PROTOCOL_VERSION`.
    ERROR_VMCOMPUTE_UNSUPPORTED_PROTOCOL_VERSION = 0xC037_010C;
    /// V1 `ERROR_VMCOMPUTE_INVALID_JSON`.
    ERROR_VMCOMPUTE_INVALID_JSON = 0xC037_010D;
    /// V1 `ERROR_VMCOMPUTE_SYSTEM_NOT_FOUND`.
    ERROR_VMCOMPUTE_SYSTEM_NOT_FOUND = 0xC037_010E;
    /// V1 `ERROR_VMCOMPUTE_SYSTEM_ALREADY_EXISTS`.
    ERROR_VMCOMPUTE_SYSTEM_ALREADY_EXISTS = 0xC037_010F;
    /// V1 `ERROR_VMCOMPUTE_SYSTEM_ALREADY_STOPPED`.
    ERROR_VMCOMPUTE_SYSTEM_ALREADY_STOPPED = 0xC037_0110;
    /// V1 `ERROR_VMCOMPUTE_PROTOCOL_ERROR`.
    ERROR_VMCOMPUTE_PROTOCOL_ERROR = 0xC037_0111;
    /// V1 `ERROR_VMCOMPUTE_INVALID_LAYER`.
    ERROR_VMCOMPUTE_INVALID_LAYER = 0xC037_0112;
    /// V1 `ERROR_VMCOMPUTE_WINDOWS_INSIDER_REQUIRED`.
    ERROR_VMCOMPUTE_WINDOWS_INSIDER_REQUIRED = 0xC037_0113;
    /// V2 `HCS_E_TERMINATED_DURING_START`.
    HCS_E_TERMINATED_DURING_START = 0x8037_0100;
    /// V2 `HCS_E_IMAGE_MISMATCH`.
    HCS_E_IMAGE_MISMATCH = 0x8037_0101;
    /// V2 `HCS_E_HYPERV_NOT_INSTALLED`.
    HCS_E_HYPERV_NOT_INSTALLED = 0x8037_0102;
    /// V2 `HCS_E_INVALID_STATE`.
    HCS_E_INVALID_STATE = 0x8037_0105;
    /// V2 `HCS_E_UNEXPECTED_EXIT`.
    HCS_E_UNEXPECTED_EXIT = 0x8037_0106;
    /// V2 `HCS_E_TERMINATED`.
    HCS_E_TERMINATED = 0x8037_0107;
    /// V2 `HCS_E_CONNECT_FAILED`.
    HCS_E_CONNECT_FAILED = 0x8037_0108;
    /// V2 `HCS_E_CONNECTION_TIMEOUT`.
    HCS_E_CONNECTION_TIMEOUT = 0x8037_0109;
    /// V2 `HCS_E_CONNECTION_CLOSED`.
    HCS_E_CONNECTION_CLOSED = 0x8037_010A;
    /// V2 `HCS_E_UNKNOWN_MESSAGE`.
    HCS_E_UNKNOWN_MESSAGE = 0x8037_010B;
    /// V2 `HCS_E_UNSUPPORTED_PROTOCOL_VERSION`.
    HCS_E_UNSUPPORTED_PROTOCOL_VERSION = 0x8037_010C;
    /// V2 `HCS_E_INVALID_JSON`.
    HCS_E_INVALID_JSON = 0x8037_010D;
    /// V2 `HCS_E_SYSTEM_NOT_FOUND`.
    HCS_E_SYSTEM_NOT_FOUND = 0x8037_010E;
    /// V2 `HCS_E_SYSTEM_ALREADY_EXISTS`.
    HCS_E_SYSTEM_ALREADY_EXISTS = 0x8037_010F;
    /// V2 `HCS_E_SYSTEM_ALREADY_STOPPED`.
    HCS_E_SYSTEM_ALREADY_STOPPED = 0x8037_0110;
    /// V2 `HCS_E_PROTOCOL_ERROR`.
    HCS_E_PROTOCOL_ERROR = 0x8037_0111;
    /// V2 `HCS_E_INVALID_LAYER`.
    HCS_E_INVALID_LAYER = 0x8037_0112;
    /// V2 `HCS_E_WINDOWS_INSIDER_REQUIRED`.
    HCS_E_WINDOWS_INSIDER_REQUIRED = 0x8037_0113;
    /// V2 `HCS_E_SERVICE_NOT_AVAILABLE`.
    HCS_E_SERVICE_NOT_AVAILABLE = 0x8037_0114;
    /// V2 `HCS_E_OPERATION_NOT_STARTED`.
    HCS_E_OPERATION_NOT_STARTED = 0x8037_0115;
    /// V2 `HCS_E_OPERATION_ALREADY_STARTED`.
    HCS_E_OPERATION_ALREADY_STARTED = 0x8037_0116;
    /// V2 `HCS_E_OPERATION_PENDING`: the V2 pending code.
    HCS_E_OPERATION_PENDING = 0x8037_0117;
    /// V2 `HCS_E_OPERATION_TIMEOUT`: an operation *wait* elapsed.
    HCS_E_OPERATION_TIMEOUT = 0x8037_0118;
    /// V2 `HCS_E_OPERATION_SYSTEM_CALLBACK_ALREADY_SET`.
    HCS_E_OPERATION_SYSTEM_CALLBACK_ALREADY_SET = 0x8037_0119;
    /// V2 `HCS_E_OPERATION_RESULT_ALLOCATION_FAILED`.
    HCS_E_OPERATION_RESULT_ALLOCATION_FAILED = 0x8037_011A;
    /// V2 `HCS_E_ACCESS_DENIED`.
    HCS_E_ACCESS_DENIED = 0x8037_011B;
    /// V2 `HCS_E_GUEST_CRITICAL_ERROR`.
    HCS_E_GUEST_CRITICAL_ERROR = 0x8037_011C;
    /// V2 `HCS_E_PROCESS_INFO_NOT_AVAILABLE`.
    HCS_E_PROCESS_INFO_NOT_AVAILABLE = 0x8037_011D;
    /// V2 `HCS_E_SERVICE_DISCONNECT`.
    HCS_E_SERVICE_DISCONNECT = 0x8037_011E;
    /// V2 `HCS_E_PROCESS_ALREADY_STOPPED`.
    HCS_E_PROCESS_ALREADY_STOPPED = 0x8037_011F;
    /// V2 `HCS_E_SYSTEM_NOT_CONFIGURED_FOR_OPERATION`.
    HCS_E_SYSTEM_NOT_CONFIGURED_FOR_OPERATION = 0x8037_0120;
    /// V2 `HCS_E_OPERATION_ALREADY_CANCELLED`.
    HCS_E_OPERATION_ALREADY_CANCELLED = 0x8037_0121;
}

impl HResult {
    /// From the signed representation used by the Windows ABI.
    pub const fn from_i32(v: i32) -> Self {
        HResult(v as u32)
    }
    /// The signed representation used by the Windows ABI.
    pub const fn as_i32(self) -> i32 {
        self.0 as i32
    }
    /// `true` iff the value is negative as an `i32` (C4).
    pub const fn is_failure(self) -> bool {
        (self.0 as i32) < 0
    }
    /// `true` for success values, `S_FALSE` included.
    pub const fn is_success(self) -> bool {
        !self.is_failure()
    }
    /// The Win32 form of a failing HRESULT with FACILITY_WIN32 (`0x80070005` → `5`); every
    /// other value is returned whole (design §6.6, Q14).
    pub const fn to_win32_form(self) -> HResult {
        if self.is_failure() && self.0 & 0x1FFF_0000 == 0x0007_0000 {
            HResult(self.0 & 0xFFFF)
        } else {
            self
        }
    }
    /// The symbolic name, if this value is in the table.
    pub fn name(self) -> Option<&'static str> {
        NAMES.iter().find(|(v, _)| *v == self.0).map(|(_, n)| *n)
    }
    /// `true` for either pending encoding (`0xC0370103`, `0x80370117`).
    pub const fn is_pending_code(self) -> bool {
        CodePair::OPERATION_PENDING.matches(self)
    }
    /// `true` if this value is in one of the named [`sets`].
    pub fn is_in(self, set: &[HResult]) -> bool {
        set.contains(&self)
    }
}

/// One HCS condition in both encodings: V1 `vmcompute.dll` (`0xC037xxxx`) and V2
/// `computecore.dll` (`0x8037xxxx`). A driver of either generation reports its own encoding;
/// the lifecycle's rules accept both (see the named sets in [`sets`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct CodePair {
    /// The V1 (`ERROR_VMCOMPUTE_*`) encoding.
    pub v1: HResult,
    /// The V2 (`HCS_E_*`) encoding.
    pub v2: HResult,
}

impl CodePair {
    /// `true` if `code` is either encoding.
    pub const fn matches(self, code: HResult) -> bool {
        code.0 == self.v1.0 || code.0 == self.v2.0
    }
    /// The encoding of one generation: `v2 == false` is V1.
    pub const fn pick(self, v2: bool) -> HResult {
        if v2 {
            self.v2
        } else {
            self.v1
        }
    }
}

macro_rules! pairs {
    ($($(#[$m:meta])* $name:ident = $v1:ident / $v2:ident;)*) => {
        impl CodePair {
            $($(#[$m])* pub const $name: CodePair = CodePair { v1: HResult::$v1, v2: HResult::$v2 };)*
        }
    };
}

pairs! {
    /// The asynchronous marker: the call was accepted and completes later.
    OPERATION_PENDING = ERROR_VMCOMPUTE_OPERATION_PENDING / HCS_E_OPERATION_PENDING;
    /// The system terminated while it was starting.
    TERMINATED_DURING_START = ERROR_VMCOMPUTE_TERMINATED_DURING_START / HCS_E_TERMINATED_DURING_START;
    /// The call is invalid in the object's current state.
    INVALID_STATE = ERROR_VMCOMPUTE_INVALID_STATE / HCS_E_INVALID_STATE;
    /// The system exited unexpectedly (the crash status of `SystemExited` on V1).
    UNEXPECTED_EXIT = ERROR_VMCOMPUTE_UNEXPECTED_EXIT / HCS_E_UNEXPECTED_EXIT;
    /// The system was terminated.
    TERMINATED = ERROR_VMCOMPUTE_TERMINATED / HCS_E_TERMINATED;
    /// The connection to the guest or service could not be made.
    CONNECT_FAILED = ERROR_VMCOMPUTE_CONNECT_FAILED / HCS_E_CONNECT_FAILED;
    /// HCS's own timeout (V1 `ERROR_VMCOMPUTE_TIMEOUT`; V2 an operation wait elapsed).
    TIMEOUT = ERROR_VMCOMPUTE_TIMEOUT / HCS_E_OPERATION_TIMEOUT;
    /// The connection was closed.
    CONNECTION_CLOSED = ERROR_VMCOMPUTE_CONNECTION_CLOSED / HCS_E_CONNECTION_CLOSED;
    /// An unknown message was received.
    UNKNOWN_MESSAGE = ERROR_VMCOMPUTE_UNKNOWN_MESSAGE / HCS_E_UNKNOWN_MESSAGE;
    /// The document is not valid JSON or not a valid configuration.
    INVALID_JSON = ERROR_VMCOMPUTE_INVALID_JSON / HCS_E_INVALID_JSON;
    /// No compute system with that id.
    SYSTEM_NOT_FOUND = ERROR_VMCOMPUTE_SYSTEM_NOT_FOUND / HCS_E_SYSTEM_NOT_FOUND;
    /// A compute system with that id exists already.
    SYSTEM_ALREADY_EXISTS = ERROR_VMCOMPUTE_SYSTEM_ALREADY_EXISTS / HCS_E_SYSTEM_ALREADY_EXISTS;
    /// The compute system is already stopped.
    SYSTEM_ALREADY_STOPPED = ERROR_VMCOMPUTE_SYSTEM_ALREADY_STOPPED / HCS_E_SYSTEM_ALREADY_STOPPED;
    /// A protocol error between HCS and the guest.
    PROTOCOL_ERROR = ERROR_VMCOMPUTE_PROTOCOL_ERROR / HCS_E_PROTOCOL_ERROR;
}

/// The named sets of codes the lifecycle's rules are written in. Each classifier and each
/// swallow rule reads one of these, so a rule can be audited by reading one line; the sets are
/// compared against the code as HCS returned it, after the FACILITY_WIN32 conversion
/// ([`HResult::to_win32_form`]).
pub mod sets {
    use super::HResult as H;

    /// Both pending encodings (`0xC0370103`, `0x80370117`).
    pub const PENDING: &[H] = &[H::ERROR_VMCOMPUTE_OPERATION_PENDING, H::HCS_E_OPERATION_PENDING];

    /// The stop swallow set (design C7, I11): the results of shutdown/terminate that count as
    /// success: already stopped, not found, or accepted pending (the exit follows).
    pub const STOP_SWALLOW: &[H] = &[
        H::ERROR_VMCOMPUTE_SYSTEM_ALREADY_STOPPED,
        H::HCS_E_SYSTEM_ALREADY_STOPPED,
        H::ERROR_VMCOMPUTE_SYSTEM_NOT_FOUND,
        H::HCS_E_SYSTEM_NOT_FOUND,
        H::ERROR_VMCOMPUTE_OPERATION_PENDING,
        H::HCS_E_OPERATION_PENDING,
    ];

    /// The "process gone" family of signal/kill (design §5.5, I12): the process has already
    /// exited or its system is gone, so the signal counts as delivered. Exact: never `0x7F`,
    /// access denied or invalid handle.
    pub const PROCESS_GONE: &[H] = &[
        H::ERROR_VMCOMPUTE_INVALID_STATE,
        H::HCS_E_INVALID_STATE,
        H::ERROR_VMCOMPUTE_SYSTEM_NOT_FOUND,
        H::HCS_E_SYSTEM_NOT_FOUND,
        H::ERROR_NOT_FOUND,
        H::HCS_E_PROCESS_ALREADY_STOPPED,
    ];

    /// The unexpected-exit codes: the crash status of `SystemExited` in either encoding.
    pub const UNEXPECTED_EXIT: &[H] = &[H::ERROR_VMCOMPUTE_UNEXPECTED_EXIT, H::HCS_E_UNEXPECTED_EXIT];

    /// The service-disconnect family: the service is gone or the connection to it closed,
    /// including the RPC "server unavailable" / "call failed" codes.
    pub const SERVICE_DISCONNECT: &[H] = &[
        H::HCS_E_SERVICE_DISCONNECT,
        H::ERROR_VMCOMPUTE_CONNECTION_CLOSED,
        H::HCS_E_CONNECTION_CLOSED,
        H::RPC_S_SERVER_UNAVAILABLE,
        H::RPC_S_CALL_FAILED_DNE,
    ];

    /// Not found: no such system, no such element, or no such file or path (Win32 forms; what
    /// HCS reports for a program missing from a process's command line).
    pub const NOT_FOUND: &[H] = &[
        H::ERROR_VMCOMPUTE_SYSTEM_NOT_FOUND,
        H::HCS_E_SYSTEM_NOT_FOUND,
        H::ERROR_NOT_FOUND,
        H::ERROR_FILE_NOT_FOUND,
        H::ERROR_PATH_NOT_FOUND,
    ];

    /// Already exists: a system with that id exists.
    pub const ALREADY_EXISTS: &[H] = &[
        H::ERROR_VMCOMPUTE_SYSTEM_ALREADY_EXISTS,
        H::HCS_E_SYSTEM_ALREADY_EXISTS,
    ];

    /// Already stopped: the system or process is already stopped. Never `0x7F`, `5`, `6`.
    pub const ALREADY_STOPPED: &[H] = &[
        H::ERROR_VMCOMPUTE_SYSTEM_ALREADY_STOPPED,
        H::HCS_E_SYSTEM_ALREADY_STOPPED,
        H::HCS_E_PROCESS_ALREADY_STOPPED,
        H::ERROR_NOT_FOUND,
    ];

    /// HCS's own timeout codes (not the lifecycle's completion-wait timer).
    pub const TIMEOUT: &[H] = &[H::ERROR_VMCOMPUTE_TIMEOUT, H::HCS_E_OPERATION_TIMEOUT];

    /// Not supported or an invalid document: invalid JSON, invalid data, not supported,
    /// unknown message (both encodings) and `E_NOTIMPL`.
    pub const NOT_SUPPORTED: &[H] = &[
        H::ERROR_VMCOMPUTE_INVALID_JSON,
        H::ERROR_INVALID_DATA,
        H::ERROR_NOT_SUPPORTED,
        H::ERROR_VMCOMPUTE_UNKNOWN_MESSAGE,
        H::HCS_E_INVALID_JSON,
        H::HCS_E_UNKNOWN_MESSAGE,
        H::E_NOTIMPL,
    ];

    /// Access denied (Win32 form and V2).
    pub const ACCESS_DENIED: &[H] = &[H::ERROR_ACCESS_DENIED, H::HCS_E_ACCESS_DENIED];

    /// Invalid state for the call.
    pub const INVALID_STATE: &[H] = &[H::ERROR_VMCOMPUTE_INVALID_STATE, H::HCS_E_INVALID_STATE];

    /// Invalid handle (Win32 form).
    pub const INVALID_HANDLE: &[H] = &[H::ERROR_INVALID_HANDLE];
}

impl From<u32> for HResult {
    fn from(v: u32) -> Self {
        HResult(v)
    }
}

impl From<i32> for HResult {
    fn from(v: i32) -> Self {
        HResult::from_i32(v)
    }
}

impl fmt::Display for HResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({:#010X})", self.0),
            None => write!(f, "{:#010X}", self.0),
        }
    }
}

impl fmt::Debug for HResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HResult({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_is_negative_as_i32_and_s_false_is_success() {
        assert!(HResult(0xC037_0103).is_failure());
        assert!(HResult(0x8000_0000).is_failure());
        assert!(HResult::S_FALSE.is_success());
        assert!(HResult::S_OK.is_success());
        assert!(HResult(0x7FFF_FFFF).is_success());
    }

    #[test]
    fn facility_win32_converts_to_win32_code_and_others_stay_whole() {
        assert_eq!(HResult(0x8007_0005).to_win32_form(), HResult(5));
        assert_eq!(HResult(0x8007_0490).to_win32_form(), HResult(0x490));
        assert_eq!(HResult(0xC037_0103).to_win32_form(), HResult(0xC037_0103));
        assert_eq!(HResult(0x8037_0110).to_win32_form(), HResult(0x8037_0110));
        // a success value with facility 7 bits is not a failure, so it is kept
        assert_eq!(HResult(0x0007_0005).to_win32_form(), HResult(0x0007_0005));
    }

    #[test]
    fn display_shows_symbolic_name_and_hex() {
        assert_eq!(
            HResult::HCS_E_SYSTEM_NOT_FOUND.to_string(),
            "HCS_E_SYSTEM_NOT_FOUND (0x8037010E)"
        );
        assert_eq!(HResult(0x1234_5678).to_string(), "0x12345678");
        assert_eq!(HResult(0x7F).to_string(), "ERROR_PROC_NOT_FOUND (0x0000007F)");
    }

    #[test]
    fn names_are_unique_per_value() {
        let mut seen = std::collections::HashSet::new();
        for (v, n) in NAMES {
            assert!(seen.insert(*v), "duplicate value for {n}");
        }
    }
}

//! Which HRESULT the simulator answers in each situation, per API generation: a thin table over
//! the named codes of [`hcs::HResult`] and the V1/V2 pairs of [`hcs::hresult::CodePair`], with
//! the source of each choice.
//!
//! Sources:
//! * V1 (`vmcompute.dll`) `ERROR_VMCOMPUTE_*`: hcsshim `internal/hcs/errors.go`
//!   (`ErrVmcomputeOperationInvalidState`, `ErrComputeSystemDoesNotExist`,
//!   `ErrVmcomputeAlreadyStopped`, `ErrVmcomputeUnexpectedExit`, `ErrVmcomputeInvalidJSON`) and
//!   windows-sys `Win32_Foundation` (`ERROR_VMCOMPUTE_SYSTEM_ALREADY_EXISTS`).
//! * V2 (`computecore.dll`) `HCS_E_*`: Microsoft's HCS API reference `reference/HCSHResult.md`.
//! * Both encodings side by side: design FFI §3.6.
//! * Win32 codes in HRESULT form (FACILITY_WIN32, `HRESULT_FROM_WIN32`): `winerror.h`.

use hcs::hresult::CodePair;
use hcs::{ApiGeneration, Failure, HResult};

/// The code of one generation from a V1/V2 pair.
pub(crate) trait ForGeneration {
    /// The encoding `g` uses.
    fn of(self, g: ApiGeneration) -> HResult;
}

impl ForGeneration for CodePair {
    fn of(self, g: ApiGeneration) -> HResult {
        self.pick(g == ApiGeneration::V2)
    }
}

/// A Win32 error code in HRESULT form (`HRESULT_FROM_WIN32`: FACILITY_WIN32, failure bit).
const fn from_win32(code: HResult) -> HResult {
    HResult(0x8007_0000 | (code.0 & 0xFFFF))
}

/// Win32 `ERROR_DIRECTORY` (267), which `hcs::HResult` does not name.
#[cfg_attr(not(unix), allow(dead_code))]
const ERROR_DIRECTORY: HResult = HResult(267);

// ------------------------------------------------------------------ system calls

/// A call not valid in the system's current state: [`CodePair::INVALID_STATE`] (hcsshim
/// `ErrVmcomputeOperationInvalidState`; HCSHResult.md).
pub(crate) const INVALID_STATE: CodePair = CodePair::INVALID_STATE;

/// Shutdown/terminate of a stopped system: [`CodePair::SYSTEM_ALREADY_STOPPED`] (hcsshim
/// `ErrVmcomputeAlreadyStopped`; HCSHResult.md — the HCS docs say a duplicate shutdown returns
/// it).
pub(crate) const ALREADY_STOPPED: CodePair = CodePair::SYSTEM_ALREADY_STOPPED;

/// Open of an unknown id: [`CodePair::SYSTEM_NOT_FOUND`] (hcsshim
/// `ErrComputeSystemDoesNotExist`; HCSHResult.md).
pub(crate) const NOT_FOUND: CodePair = CodePair::SYSTEM_NOT_FOUND;

/// Create with an id that is in use: [`CodePair::SYSTEM_ALREADY_EXISTS`] (windows-sys;
/// design FFI §3.6; HCSHResult.md).
pub(crate) const ALREADY_EXISTS: CodePair = CodePair::SYSTEM_ALREADY_EXISTS;

/// A document that is not valid JSON: [`CodePair::INVALID_JSON`] (hcsshim
/// `ErrVmcomputeInvalidJSON`; HCSHResult.md).
pub(crate) const INVALID_JSON: CodePair = CodePair::INVALID_JSON;

/// A crash: [`CodePair::UNEXPECTED_EXIT`] (hcsshim `ErrVmcomputeUnexpectedExit`;
/// HCSHResult.md). V1 sends it as the status of `SystemExited`; V2 (`computecore.dll` events
/// carry no status) only in the payload's `Status`, the event itself being `S_OK`.
pub(crate) const UNEXPECTED_EXIT: CodePair = CodePair::UNEXPECTED_EXIT;

// ------------------------------------------------------------------ process calls

/// Signal or modify of a process that has exited. V1: `ERROR_VMCOMPUTE_INVALID_STATE` —
/// hcsshim's `processSignalResult` treats it as "process already gone" (design §5.5).
/// V2: `HCS_E_PROCESS_ALREADY_STOPPED` (HCSHResult.md).
pub(crate) const PROCESS_GONE: CodePair = CodePair {
    v1: HResult::ERROR_VMCOMPUTE_INVALID_STATE,
    v2: HResult::HCS_E_PROCESS_ALREADY_STOPPED,
};

/// Terminate of a process that has exited. V1: `E_ACCESSDENIED` (Win32 `ERROR_ACCESS_DENIED`
/// in HRESULT form) — what `TerminateProcess` on an exited process reports through vmcompute
/// (hcsshim #1251, #1252: "Kill on an exited process returns Access is denied"). V2:
/// `HCS_E_PROCESS_ALREADY_STOPPED` (HCSHResult.md).
pub(crate) const TERMINATE_GONE: CodePair = CodePair {
    v1: HResult::E_ACCESSDENIED,
    v2: HResult::HCS_E_PROCESS_ALREADY_STOPPED,
};

/// An unknown pid on open, both generations: Win32 `ERROR_NOT_FOUND` (1168) in HRESULT form
/// (hcsshim `ErrElementNotFound` is its Win32 form).
pub(crate) const PROCESS_NOT_FOUND: HResult = from_win32(HResult::ERROR_NOT_FOUND);

/// A command that does not exist: Win32 `ERROR_FILE_NOT_FOUND` (2) in HRESULT form.
pub(crate) const FILE_NOT_FOUND: HResult = from_win32(HResult::ERROR_FILE_NOT_FOUND);

/// A working directory that does not exist: Win32 `ERROR_DIRECTORY` (267) in HRESULT form,
/// what `CreateProcess` reports for a bad current directory.
#[cfg_attr(not(unix), allow(dead_code))] // host spawns (Unix only) report it
pub(crate) const DIRECTORY_INVALID: HResult = from_win32(ERROR_DIRECTORY);

// ------------------------------------------------------------------ any call

/// The service is gone: Win32 `RPC_S_SERVER_UNAVAILABLE` (1722) in HRESULT form.
pub(crate) const SERVER_UNAVAILABLE: HResult = from_win32(HResult::RPC_S_SERVER_UNAVAILABLE);

/// A well-formed request the simulator (and HCS) does not support, or a bad argument:
/// `E_INVALIDARG`. (HCS rejects a modify request for an unsupported resource with a failure of
/// this kind; `INVALID_JSON` is reserved for text that does not parse.)
pub(crate) const INVALID_ARG: HResult = HResult::E_INVALIDARG;

/// An unknown, closed or wrong-kind handle: `E_HANDLE` (Win32 `ERROR_INVALID_HANDLE` in HRESULT
/// form).
pub(crate) const INVALID_HANDLE: HResult = HResult::E_HANDLE;

/// Builds an HCS result document `{"Error":..,"ErrorMessage":..,"ErrorEvents":[{"Message":..}]}`.
pub(crate) fn result_document(code: HResult, message: &str) -> String {
    let doc = hcs_schema::ResultDocument {
        error: code.as_i32(),
        error_message: message.to_string(),
        error_events: vec![hcs_schema::ErrorEvent {
            message: message.to_string(),
            provider: "hcs-sim".to_string(),
            ..Default::default()
        }],
    };
    serde_json::to_string(&doc).unwrap_or_default()
}

/// A failure with `code` and a result document carrying `message`.
pub(crate) fn failure(code: HResult, message: impl AsRef<str>) -> Failure {
    Failure::with_document(code, result_document(code, message.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn win32_codes_in_hresult_form_are_the_wire_values() {
        // Wire values from winerror.h.
        assert_eq!(PROCESS_NOT_FOUND, HResult(0x8007_0490));
        assert_eq!(FILE_NOT_FOUND, HResult(0x8007_0002));
        assert_eq!(DIRECTORY_INVALID, HResult(0x8007_010B));
        assert_eq!(SERVER_UNAVAILABLE, HResult(0x8007_06BA));
        assert_eq!(from_win32(HResult::ERROR_ACCESS_DENIED), HResult::E_ACCESSDENIED);
    }
}

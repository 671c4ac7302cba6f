//! The HRESULTs the simulator returns, in the encoding of the configured API generation.
//!
//! Sources:
//! * V1 (`vmcompute.dll`) `ERROR_VMCOMPUTE_*` (`0xC037xxxx`): hcsshim `internal/hcs/errors.go`
//!   (`ErrVmcomputeOperationInvalidState`, `ErrComputeSystemDoesNotExist`,
//!   `ErrVmcomputeAlreadyStopped`, `ErrVmcomputeUnexpectedExit`, `ErrVmcomputeInvalidJSON`) and
//!   windows-sys `Win32_Foundation` (`ERROR_VMCOMPUTE_SYSTEM_ALREADY_EXISTS`).
//! * V2 (`computecore.dll`) `HCS_E_*` (`0x8037xxxx`): Microsoft's HCS API reference
//!   `reference/HCSHResult.md`.
//! * Both encodings side by side: `windows-ffi.md` §3.6.
//! * Win32 codes in HRESULT form (`0x8007xxxx`, FACILITY_WIN32): `winerror.h`.

use hcs::{ApiGeneration, HResult};

/// Operation not valid in the system's current state.
/// V1 `ERROR_VMCOMPUTE_INVALID_STATE` 0xC0370105 (hcsshim `ErrVmcomputeOperationInvalidState`);
/// V2 `HCS_E_INVALID_STATE` 0x80370105 (HCSHResult.md).
pub(crate) fn invalid_state(g: ApiGeneration) -> HResult {
    pick(
        g,
        HResult::ERROR_VMCOMPUTE_INVALID_STATE,
        HResult::HCS_E_INVALID_STATE,
    )
}

/// Shutdown/terminate of a stopped system.
/// V1 `ERROR_VMCOMPUTE_SYSTEM_ALREADY_STOPPED` 0xC0370110 (hcsshim `ErrVmcomputeAlreadyStopped`);
/// V2 `HCS_E_SYSTEM_ALREADY_STOPPED` 0x80370110 (HCSHResult.md; the HCS docs say a duplicate
/// shutdown returns it).
pub(crate) fn already_stopped(g: ApiGeneration) -> HResult {
    pick(
        g,
        HResult::ERROR_VMCOMPUTE_SYSTEM_ALREADY_STOPPED,
        HResult::HCS_E_SYSTEM_ALREADY_STOPPED,
    )
}

/// Open of an unknown id.
/// V1 `ERROR_VMCOMPUTE_SYSTEM_NOT_FOUND` 0xC037010E (hcsshim `ErrComputeSystemDoesNotExist`);
/// V2 `HCS_E_SYSTEM_NOT_FOUND` 0x8037010E (HCSHResult.md).
pub(crate) fn not_found(g: ApiGeneration) -> HResult {
    pick(
        g,
        HResult::ERROR_VMCOMPUTE_SYSTEM_NOT_FOUND,
        HResult::HCS_E_SYSTEM_NOT_FOUND,
    )
}

/// Create with an id that is in use.
/// V1 `ERROR_VMCOMPUTE_SYSTEM_ALREADY_EXISTS` 0xC037010F (windows-sys; windows-ffi.md §3.6);
/// V2 `HCS_E_SYSTEM_ALREADY_EXISTS` 0x8037010F (HCSHResult.md).
pub(crate) fn already_exists(g: ApiGeneration) -> HResult {
    pick(
        g,
        HResult::ERROR_VMCOMPUTE_SYSTEM_ALREADY_EXISTS,
        HResult::HCS_E_SYSTEM_ALREADY_EXISTS,
    )
}

/// A document that is not valid JSON.
/// V1 `ERROR_VMCOMPUTE_INVALID_JSON` 0xC037010D (hcsshim `ErrVmcomputeInvalidJSON`);
/// V2 `HCS_E_INVALID_JSON` 0x8037010D (HCSHResult.md).
pub(crate) fn invalid_json(g: ApiGeneration) -> HResult {
    pick(
        g,
        HResult::ERROR_VMCOMPUTE_INVALID_JSON,
        HResult::HCS_E_INVALID_JSON,
    )
}

/// The status of `SystemExited` after a crash.
/// V1 `ERROR_VMCOMPUTE_UNEXPECTED_EXIT` 0xC0370106 (hcsshim `ErrVmcomputeUnexpectedExit`);
/// V2 `HCS_E_UNEXPECTED_EXIT` 0x80370106 (HCSHResult.md).
pub(crate) fn unexpected_exit(g: ApiGeneration) -> HResult {
    pick(
        g,
        HResult::ERROR_VMCOMPUTE_UNEXPECTED_EXIT,
        HResult::HCS_E_UNEXPECTED_EXIT,
    )
}

/// Signal or modify of a process that has exited.
/// V1: `ERROR_VMCOMPUTE_INVALID_STATE` 0xC0370105 — hcsshim's `processSignalResult` treats it as
/// "process already gone" (hcs-behavior.md §5.5).
/// V2: `HCS_E_PROCESS_ALREADY_STOPPED` 0x8037011F (HCSHResult.md).
pub(crate) fn process_gone(g: ApiGeneration) -> HResult {
    pick(
        g,
        HResult::ERROR_VMCOMPUTE_INVALID_STATE,
        HResult::HCS_E_PROCESS_ALREADY_STOPPED,
    )
}

/// Terminate of a process that has exited.
/// V1: `ERROR_ACCESS_DENIED` as HRESULT 0x80070005 — what `TerminateProcess` on an exited
/// process reports through vmcompute (hcsshim #1251, #1252: "Kill on an exited process returns
/// Access is denied").
/// V2: `HCS_E_PROCESS_ALREADY_STOPPED` 0x8037011F (HCSHResult.md).
pub(crate) fn terminate_gone(g: ApiGeneration) -> HResult {
    pick(g, HResult::E_ACCESSDENIED, HResult::HCS_E_PROCESS_ALREADY_STOPPED)
}

/// An unknown pid on open: Win32 `ERROR_NOT_FOUND` (1168) as HRESULT 0x80070490 (hcsshim
/// `ErrElementNotFound` is its Win32 form 0x490).
pub(crate) const PROCESS_NOT_FOUND: HResult = HResult(0x8007_0490);

/// A command that does not exist: Win32 `ERROR_FILE_NOT_FOUND` (2) as HRESULT 0x80070002.
pub(crate) const FILE_NOT_FOUND: HResult = HResult(0x8007_0002);

/// The service is gone: Win32 `RPC_S_SERVER_UNAVAILABLE` (1722) as HRESULT 0x800706BA.
pub(crate) const SERVER_UNAVAILABLE: HResult = HResult(0x8007_06BA);

/// A well-formed request the simulator (and HCS) does not support, or a bad argument:
/// `E_INVALIDARG` 0x80070057. (HCS rejects a modify request for an unsupported resource with a
/// failure of this kind; HCS_E_INVALID_JSON is reserved for text that does not parse.)
pub(crate) const INVALID_ARG: HResult = HResult::E_INVALIDARG;

/// An unknown, closed or wrong-kind handle: `E_HANDLE` (Win32 `ERROR_INVALID_HANDLE` as HRESULT,
/// 0x80070006).
pub(crate) const INVALID_HANDLE: HResult = HResult::E_HANDLE;

fn pick(g: ApiGeneration, v1: HResult, v2: HResult) -> HResult {
    match g {
        ApiGeneration::V1 => v1,
        ApiGeneration::V2 => v2,
    }
}

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

//! Process status and process-list entries.

use serde::{Deserialize, Serialize};

/// `ProcessStatus`: the payload of `ProcessExited` (V2) and the answer of a process properties
/// query (V1). `ExitCode` is valid only when `LastWaitResult` is 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ProcessStatus {
    /// Process id.
    pub process_id: u32,
    /// Whether the process has exited.
    pub exited: bool,
    /// Exit code (an unsigned 32-bit value, e.g. `0xC000013A`).
    pub exit_code: u32,
    /// Result of HCS's wait on the process; non-zero means the exit code is unknown.
    pub last_wait_result: i32,
}

/// One entry of a system's process list (`ProcessDetails`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ProcessDetails {
    /// Process id.
    pub process_id: u32,
    /// Image name (the executable).
    pub image_name: String,
    /// Creation time (RFC 3339), if reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_timestamp: Option<String>,
    /// User CPU time in 100 ns units.
    pub user_time_100ns: u64,
    /// Kernel CPU time in 100 ns units.
    pub kernel_time_100ns: u64,
    /// Private working set in bytes.
    pub memory_working_set_private_bytes: u64,
    /// Shared working set in bytes.
    pub memory_working_set_shared_bytes: u64,
    /// Commit size in bytes.
    pub memory_commit_bytes: u64,
}

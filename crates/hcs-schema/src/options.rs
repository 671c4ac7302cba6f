//! Options documents for signal, shutdown and save.

use serde::{Deserialize, Serialize};

/// `SignalProcessOptions`: `{"Signal": n}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct SignalProcessOptions {
    /// The signal number (e.g. 15 for SIGTERM in a Linux guest, 0 CtrlC / 1 CtrlBreak on Windows).
    pub signal: i32,
}

/// `ShutdownOptions` (V2): mechanism, type, timeout and reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ShutdownOptions {
    /// `GuestConnection` or `IntegrationService`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<String>,
    /// `Shutdown`, `Hibernate` or `Reboot`.
    #[serde(rename = "Type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Timeout in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    /// Free-text reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `SaveOptions`: `{"SaveType": "...", "SaveStateFilePath": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct SaveOptions {
    /// `ToFile` or `AsTemplate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub save_type: Option<String>,
    /// Path of the saved-state file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub save_state_file_path: Option<String>,
}

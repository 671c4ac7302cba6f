//! Modify requests for processes (console size, close handle).

use serde::{Deserialize, Serialize};

/// The operation of a process modify request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessModifyOperation {
    /// Resize the console.
    ConsoleSize,
    /// Close one of the process's standard handles.
    CloseHandle,
}

/// A standard handle of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StdHandle {
    /// Standard input.
    StdIn,
    /// Standard output.
    StdOut,
    /// Standard error.
    StdErr,
}

/// Console size; a zero member is omitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ConsoleSize {
    /// Height in rows.
    #[serde(skip_serializing_if = "is_zero")]
    pub height: u16,
    /// Width in columns.
    #[serde(skip_serializing_if = "is_zero")]
    pub width: u16,
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}

/// `CloseHandle` payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CloseHandle {
    /// Which handle to close.
    pub handle: StdHandle,
}

/// A process modify request, e.g.
/// `{"Operation":"CloseHandle","CloseHandle":{"Handle":"StdIn"}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessModifyRequest {
    /// The operation.
    pub operation: ProcessModifyOperation,
    /// Console size, for `ConsoleSize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_size: Option<ConsoleSize>,
    /// Handle to close, for `CloseHandle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_handle: Option<CloseHandle>,
}

impl ProcessModifyRequest {
    /// A console-resize request (zero members are omitted).
    pub fn console_size(width: u16, height: u16) -> Self {
        Self {
            operation: ProcessModifyOperation::ConsoleSize,
            console_size: Some(ConsoleSize { height, width }),
            close_handle: None,
        }
    }

    /// A close-stdin request.
    pub fn close_stdin() -> Self {
        Self {
            operation: ProcessModifyOperation::CloseHandle,
            console_size: None,
            close_handle: Some(CloseHandle { handle: StdHandle::StdIn }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_serialise_like_hcsshim() {
        assert_eq!(
            serde_json::to_string(&ProcessModifyRequest::close_stdin()).unwrap(),
            r#"{"Operation":"CloseHandle","CloseHandle":{"Handle":"StdIn"}}"#
        );
        assert_eq!(
            serde_json::to_string(&ProcessModifyRequest::console_size(80, 0)).unwrap(),
            r#"{"Operation":"ConsoleSize","ConsoleSize":{"Width":80}}"#
        );
    }
}

//! Exit status of a compute system (`SystemExitStatus`), the payload of `SystemExited`.

use serde::{Deserialize, Serialize};

/// How a compute system exited (`ExitType` in the HCS schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExitType {
    /// No exit type reported.
    None,
    /// The system shut down gracefully (shutdown request or guest power-off).
    GracefulExit,
    /// The system was terminated (terminate request).
    ForcedExit,
    /// The system crashed or HCS hit an internal error.
    UnexpectedExit,
    /// HCS reported the exit type as unknown.
    Unknown,
    /// A value this library does not know; tolerated rather than rejected.
    #[serde(other)]
    Unrecognized,
}

impl ExitType {
    /// The schema name of this exit type (`Unrecognized` renders as `Unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExitType::None => "None",
            ExitType::GracefulExit => "GracefulExit",
            ExitType::ForcedExit => "ForcedExit",
            ExitType::UnexpectedExit => "UnexpectedExit",
            ExitType::Unknown | ExitType::Unrecognized => "Unknown",
        }
    }
}

impl std::fmt::Display for ExitType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `SystemExitStatus`: `{"Status": HRESULT, "ExitType": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct SystemExitStatus {
    /// The exit HRESULT (0 for a normal exit).
    pub status: i32,
    /// How the system exited, when reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_type: Option<ExitType>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_parses_known_and_unknown_exit_types() {
        let s: SystemExitStatus = serde_json::from_str(r#"{"Status":0,"ExitType":"GracefulExit"}"#).unwrap();
        assert_eq!(s.exit_type, Some(ExitType::GracefulExit));
        let s: SystemExitStatus =
            serde_json::from_str(r#"{"Status":-1070137082,"ExitType":"Brand new"}"#).unwrap();
        assert_eq!(s.exit_type, Some(ExitType::Unrecognized));
        assert_eq!(s.status as u32, 0xC0370106);
        let s: SystemExitStatus = serde_json::from_str("{}").unwrap();
        assert_eq!(s, SystemExitStatus::default());
    }
}

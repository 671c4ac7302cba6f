//! Process status and process-list entries, and the documents that create a process: V2
//! [`ProcessParameters`] and V1 [`ProcessConfig`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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

/// V2 process parameters (`ProcessParameters`), the document passed to `HcsCreateProcess`.
///
/// `CommandLine` is the Windows-style command line; Linux guests also accept `CommandArgs`.
/// Members this type does not model are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ProcessParameters {
    /// Executable to run; when absent it is taken from the command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    /// Full command line (for example `cmd /c exit 3`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
    /// Argument vector, an alternative to `CommandLine` (Linux guests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_args: Option<Vec<String>>,
    /// User to run as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    /// Environment variables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<BTreeMap<String, String>>,
    /// Whether the process runs with a restricted (low-privilege) token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restricted_token: Option<bool>,
    /// Whether the process gets a pseudo console (stderr then goes to stdout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emulate_console: Option<bool>,
    /// Whether HCS creates a pipe for stdin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_std_in_pipe: Option<bool>,
    /// Whether HCS creates a pipe for stdout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_std_out_pipe: Option<bool>,
    /// Whether HCS creates a pipe for stderr.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_std_err_pipe: Option<bool>,
    /// Initial console size, `[height, width]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_size: Option<[u16; 2]>,
    /// Whether the process runs in an existing logon session of `User`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_existing_login: Option<bool>,
    /// Whether the legacy console is used instead of conhost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_legacy_console: Option<bool>,
    /// Members this type does not model (for example `CreateInUtilityVM`), kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ProcessParameters {
    /// Parameters running `command_line`, with no pipes and no console.
    pub fn command(command_line: impl Into<String>) -> Self {
        ProcessParameters {
            command_line: Some(command_line.into()),
            ..Default::default()
        }
    }

    /// The same parameters with pipes requested for stdin, stdout and stderr.
    pub fn with_std_pipes(mut self) -> Self {
        self.create_std_in_pipe = Some(true);
        self.create_std_out_pipe = Some(true);
        self.create_std_err_pipe = Some(true);
        self
    }
}

/// V1 process configuration (`schema1.ProcessConfig`), the document passed to the vmcompute
/// create-process call. The core members match [`ProcessParameters`]; members this type does not
/// model are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ProcessConfig {
    /// Executable to run; when absent it is taken from the command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    /// Full command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
    /// Argument vector (Linux containers on Windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_args: Option<Vec<String>>,
    /// User to run as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    /// Environment variables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<BTreeMap<String, String>>,
    /// Whether the process gets a console.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emulate_console: Option<bool>,
    /// Whether HCS creates a pipe for stdin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_std_in_pipe: Option<bool>,
    /// Whether HCS creates a pipe for stdout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_std_out_pipe: Option<bool>,
    /// Whether HCS creates a pipe for stderr.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_std_err_pipe: Option<bool>,
    /// Initial console size, `[height, width]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_size: Option<[u16; 2]>,
    /// Whether the process is created in the utility VM rather than the container (LCOW).
    #[serde(rename = "CreateInUtilityVm", skip_serializing_if = "Option::is_none")]
    pub create_in_utility_vm: Option<bool>,
    /// OCI process specification (LCOW), as raw JSON.
    #[serde(rename = "OCISpecification", skip_serializing_if = "Option::is_none")]
    pub oci_specification: Option<Value>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ProcessConfig {
    /// A configuration running `command_line`, with no pipes and no console.
    pub fn command(command_line: impl Into<String>) -> Self {
        ProcessConfig {
            command_line: Some(command_line.into()),
            ..Default::default()
        }
    }
}

/// Extracts `CommandLine` from a V2 [`ProcessParameters`] or V1 [`ProcessConfig`] document.
///
/// Only `CommandLine` is read: the rest of the document may have members of any type (or be a
/// shape this crate does not model) as long as the text is a JSON object. Returns `None` for text
/// that is not JSON, JSON that is not an object, and a `CommandLine` that is absent, `null` or not a
/// string. Used to suffix the operation name of a failed create-process call
/// (`hcs::System::CreateProcess: cmd /c exit 3`).
pub fn command_line_of(json: &str) -> Option<String> {
    // Parse generically: a derived struct would also accept a JSON array positionally.
    match serde_json::from_str::<Value>(json).ok()? {
        Value::Object(mut members) => match members.remove("CommandLine")? {
            Value::String(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v2_parameters_round_trip_with_unknown_members() {
        let text = r#"{"CommandLine":"cmd /c echo hi","WorkingDirectory":"C:\\","User":"ContainerUser",
            "Environment":{"PATH":"C:\\Windows","A":"1"},"EmulateConsole":true,"CreateStdInPipe":true,
            "CreateStdOutPipe":true,"CreateStdErrPipe":false,"ConsoleSize":[25,80],
            "CreateInUtilityVM":true,"SomethingNew":{"x":1}}"#;
        let p: ProcessParameters = serde_json::from_str(text).unwrap();
        assert_eq!(p.command_line.as_deref(), Some("cmd /c echo hi"));
        assert_eq!(p.console_size, Some([25, 80]));
        assert_eq!(p.environment.as_ref().unwrap()["A"], "1");
        assert_eq!(p.create_std_err_pipe, Some(false));
        assert_eq!(p.extra["CreateInUtilityVM"], json!(true));
        let original: Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_value(&p).unwrap(), original);

        assert_eq!(
            serde_json::to_value(ProcessParameters::command("ping").with_std_pipes()).unwrap(),
            json!({"CommandLine":"ping","CreateStdInPipe":true,"CreateStdOutPipe":true,"CreateStdErrPipe":true})
        );
    }

    #[test]
    fn v1_config_round_trips_with_unknown_members() {
        let text = r#"{"ApplicationName":"","CommandLine":"/bin/sh -c true","CommandArgs":["/bin/sh","-c","true"],
            "CreateInUtilityVm":true,"OCISpecification":{"ociVersion":"1.0.2","process":{"args":["sh"]}},
            "ConsoleSize":[0,0],"Future":[1]}"#;
        let c: ProcessConfig = serde_json::from_str(text).unwrap();
        assert_eq!(c.create_in_utility_vm, Some(true));
        assert_eq!(
            c.oci_specification.as_ref().unwrap()["ociVersion"],
            json!("1.0.2")
        );
        assert_eq!(c.command_args.as_ref().unwrap().len(), 3);
        let original: Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_value(&c).unwrap(), original);
        assert_eq!(
            serde_json::to_string(&ProcessConfig::command("x")).unwrap(),
            r#"{"CommandLine":"x"}"#
        );
    }

    #[test]
    fn command_line_is_found_in_both_shapes_and_not_in_junk() {
        let v2 = serde_json::to_string(&ProcessParameters::command("cmd /c exit 3")).unwrap();
        assert_eq!(command_line_of(&v2).as_deref(), Some("cmd /c exit 3"));
        let v1 = serde_json::to_string(&ProcessConfig::command("ping -t localhost")).unwrap();
        assert_eq!(command_line_of(&v1).as_deref(), Some("ping -t localhost"));
        // The rest of the document need not match either shape.
        assert_eq!(
            command_line_of(r#"{"CommandLine":"a b","ConsoleSize":"huge","Environment":[1,2],"X":{}}"#)
                .as_deref(),
            Some("a b")
        );
        assert_eq!(command_line_of(r#"{"CommandLine":""}"#).as_deref(), Some(""));
        for junk in [
            "",
            "not json",
            "{\"CommandLine\":",
            "[\"CommandLine\"]",
            "\"CommandLine\"",
            "null",
            "{}",
            r#"{"CommandLine":null}"#,
            r#"{"CommandLine":42}"#,
            r#"{"commandline":"lower"}"#,
        ] {
            assert_eq!(command_line_of(junk), None, "{junk}");
        }
    }
}

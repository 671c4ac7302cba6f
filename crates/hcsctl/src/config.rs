//! Input documents: the compute-system configuration (default or from a file, checked before
//! anything is created) and the simulator's fault plan.
//!
//! The configuration check is `hcs_schema::parse_compute_system`: it tells text that is not
//! JSON (with line and column) apart from JSON that is not a valid compute-system document (with
//! the JSON path of the problem, e.g. `VirtualMachine.ComputeTopology.Memory.SizeInMB`). The
//! checked text is passed to HCS verbatim.

use crate::exit::{CliError, DATA_ERR, NO_INPUT};
use hcs_schema::ComputeSystem;
use std::path::Path;

/// The owner recorded in the default document.
pub const DEFAULT_OWNER: &str = "hcsctl";

/// The default configuration: a process-isolated container, schema 2.1, owner `hcsctl`,
/// terminated by HCS when its last handle is closed (so nothing outlives `hcsctl`).
pub fn default_document() -> String {
    serde_json::to_string(&ComputeSystem::process_isolated_container(DEFAULT_OWNER))
        .expect("a ComputeSystem always serialises")
}

/// Reads a file, mapping failure to exit code 66 with a message naming the file.
pub fn read_input(path: &Path, what: &str) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::new(NO_INPUT, format!("cannot read {what} {}: {e}", path.display())))
}

/// Checks a configuration document; the error message names the line and column (not JSON) or
/// the JSON path (not a valid compute-system document).
pub fn check_config(text: &str) -> Result<(), hcs_schema::DocumentError> {
    hcs_schema::parse_compute_system(text).map(|_| ())
}

/// Reads and checks a configuration file (66 when unreadable, 65 when invalid); returns the text
/// to pass to HCS.
pub fn load_config(path: &Path) -> Result<String, CliError> {
    let text = read_input(path, "configuration")?;
    check_config(&text).map_err(|e| {
        let detail = match (e.is_not_json(), e.line, e.column) {
            (true, Some(line), Some(column)) => {
                format!("not JSON at line {line}, column {column}: {}", e.message)
            }
            _ => e.to_string(),
        };
        CliError::new(DATA_ERR, format!("configuration {}: {detail}", path.display()))
    })?;
    Ok(text)
}

/// Reads and parses a fault-plan file: 66 when unreadable, 65 (naming the bad field) when
/// invalid.
pub fn load_fault_plan(path: &Path) -> Result<hcs_sim::FaultPlan, CliError> {
    let text = read_input(path, "fault plan")?;
    hcs_sim::FaultPlan::from_json(&text)
        .map_err(|e| CliError::new(DATA_ERR, format!("invalid fault plan {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_document_is_a_terminate_on_close_container_owned_by_hcsctl() {
        let text = default_document();
        check_config(&text).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["Owner"], "hcsctl");
        assert_eq!(v["SchemaVersion"]["Major"], 2);
        assert_eq!(v["SchemaVersion"]["Minor"], 1);
        assert_eq!(v["ShouldTerminateOnLastHandleClosed"], true);
        assert!(v["Container"].is_object());
    }

    #[test]
    fn text_that_is_not_json_reports_line_and_column() {
        let e = check_config("{\n  \"Container\": {,\n}").unwrap_err();
        assert!(e.is_not_json());
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn invalid_document_names_the_json_path() {
        let e =
            check_config(r#"{"VirtualMachine":{"ComputeTopology":{"Memory":{"SizeInMB":0}}}}"#).unwrap_err();
        assert!(!e.is_not_json());
        assert_eq!(e.path, "VirtualMachine.ComputeTopology.Memory.SizeInMB");
        assert!(
            e.to_string()
                .contains("VirtualMachine.ComputeTopology.Memory.SizeInMB"),
            "{e}"
        );
    }
}

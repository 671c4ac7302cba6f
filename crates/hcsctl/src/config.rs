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

/// The default configuration of `hcsctl create`: as [`default_document`], but the system
/// outlives the handle of the `hcsctl` that created it (`ShouldTerminateOnLastHandleClosed`
/// false), as a system created for later `exec`, `stop` and `rm` must.
pub fn persistent_document() -> String {
    let mut doc = ComputeSystem::process_isolated_container(DEFAULT_OWNER);
    doc.should_terminate_on_last_handle_closed = Some(false);
    serde_json::to_string(&doc).expect("a ComputeSystem always serialises")
}

/// The most read from a configuration or fault-plan file.
pub const MAX_INPUT: u64 = 1024 * 1024;

/// Reads a configuration or fault-plan file (`-`: stdin): at most [`MAX_INPUT`] bytes, and
/// only from a regular file or stdin (a device such as `/dev/zero` never ends). Failure to
/// read is exit code 66; a file too large or not UTF-8 is 65 (a bad document). A leading UTF-8
/// byte-order mark is dropped.
pub fn read_input(path: &Path, what: &str) -> Result<String, CliError> {
    use std::io::Read;
    let name = path.display();
    let cannot = |e: std::io::Error| CliError::new(NO_INPUT, format!("cannot read {what} {name}: {e}"));
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_INPUT + 1)
            .read_to_end(&mut bytes)
            .map_err(cannot)?;
    } else {
        let file = std::fs::File::open(path).map_err(cannot)?;
        let meta = file.metadata().map_err(cannot)?;
        if !meta.is_file() {
            return Err(CliError::new(
                NO_INPUT,
                format!("cannot read {what} {name}: not a regular file (use - for stdin)"),
            ));
        }
        file.take(MAX_INPUT + 1).read_to_end(&mut bytes).map_err(cannot)?;
    }
    if bytes.len() as u64 > MAX_INPUT {
        return Err(CliError::new(
            DATA_ERR,
            format!("{what} {name} is larger than the limit of 1 MiB"),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        CliError::new(
            DATA_ERR,
            format!(
                "{what} {name} is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    })
}

/// The default configuration, indented for people (`hcsctl run --print-default-config`).
pub fn default_document_pretty() -> String {
    serde_json::to_string_pretty(&ComputeSystem::process_isolated_container(DEFAULT_OWNER))
        .expect("a ComputeSystem always serialises")
}

/// Checks a configuration document; the error message names the line and column (not JSON) or
/// the JSON path (not a valid compute-system document). On success, the JSON paths of the
/// members the schema does not model (passed to HCS unchanged, but checked by nobody here).
pub fn check_config(text: &str) -> Result<Vec<String>, hcs_schema::DocumentError> {
    hcs_schema::parse_compute_system(text).map(|doc| doc.unmodelled_members())
}

/// The warning for members the schema does not model (a misspelt `Memroy` lands there), or
/// `None` when every member was recognised.
pub fn unmodelled_warning(source: &str, members: &[String]) -> Option<String> {
    if members.is_empty() {
        return None;
    }
    let list: Vec<String> = members.iter().map(|m| format!("{m:?}")).collect();
    Some(format!(
        "warning: configuration {source}: {} not modelled by hcsctl, passed to HCS unchanged \
         (check the spelling): {}",
        if members.len() == 1 { "member" } else { "members" },
        list.join(", ")
    ))
}

/// Reads and checks a configuration file (66 when unreadable, 65 when invalid); returns the text
/// to pass to HCS and the warning about members hcsctl does not model, if any.
pub fn load_config(path: &Path) -> Result<(String, Option<String>), CliError> {
    let text = read_input(path, "configuration")?;
    let unmodelled = check_config(&text).map_err(|e| {
        let detail = match (e.is_not_json(), e.line, e.column) {
            (true, Some(line), Some(column)) => {
                format!("not JSON at line {line}, column {column}: {}", e.message)
            }
            _ => e.to_string(),
        };
        CliError::new(DATA_ERR, format!("configuration {}: {detail}", path.display()))
    })?;
    let warning = unmodelled_warning(&path.display().to_string(), &unmodelled);
    Ok((text, warning))
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
        assert_eq!(
            check_config(&text).unwrap(),
            Vec::<String>::new(),
            "every member is modelled"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["Owner"], "hcsctl");
        assert_eq!(v["SchemaVersion"]["Major"], 2);
        assert_eq!(v["SchemaVersion"]["Minor"], 1);
        assert_eq!(v["ShouldTerminateOnLastHandleClosed"], true);
        assert!(v["Container"].is_object());
    }

    #[test]
    fn pretty_default_document_is_the_default_document() {
        let a: serde_json::Value = serde_json::from_str(&default_document()).unwrap();
        let b: serde_json::Value = serde_json::from_str(&default_document_pretty()).unwrap();
        assert_eq!(a, b);
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

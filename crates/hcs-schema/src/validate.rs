//! Parsing a compute-system document with errors that say *where* it is wrong.
//!
//! [`parse_compute_system`] reads a [`ComputeSystem`] and reports a problem as a [`DocumentError`]
//! naming the JSON path of the offending member (for example
//! `VirtualMachine.ComputeTopology.Memory.SizeInMB`, or `$` for the document itself). It tells text
//! that is not JSON at all apart from JSON that is not a valid compute-system document, and on top
//! of the type checks it applies the rules HCS would otherwise reject at create time:
//!
//! - the document is a JSON object;
//! - exactly one of `Container`, `VirtualMachine` and `HostedSystem` is present;
//! - `SchemaVersion.Major`, when present, is 2;
//! - memory sizes (`Container.Memory.SizeInMB`,
//!   `VirtualMachine.ComputeTopology.Memory.SizeInMB`), when the member is present, are above 0.

use crate::system::ComputeSystem;

/// What kind of problem a [`DocumentError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocumentErrorKind {
    /// The text is not well-formed JSON (syntax error, truncated text, trailing characters).
    NotJson,
    /// The text is JSON, but not a valid compute-system document (wrong shape, wrong member type,
    /// or a broken rule).
    Invalid,
}

/// A compute-system document that could not be accepted, with the JSON path of the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    /// Which kind of problem this is.
    pub kind: DocumentErrorKind,
    /// JSON path of the problem: members joined by `.`, array indexes as `[i]`
    /// (`Container.Storage.Layers[0].Path`), and `$` for the document itself.
    pub path: String,
    /// What is wrong, in lower case, without the position.
    pub message: String,
    /// 1-based line of the problem in the text, when the parser knows it.
    pub line: Option<usize>,
    /// 1-based column of the problem in the text, when the parser knows it.
    pub column: Option<usize>,
}

impl DocumentError {
    /// A rule violation at `path`; there is no text position for these.
    fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        DocumentError {
            kind: DocumentErrorKind::Invalid,
            path: path.into(),
            message: message.into(),
            line: None,
            column: None,
        }
    }

    /// Converts a serde error that carries a path.
    fn from_serde(kind: DocumentErrorKind, err: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = path_string(err.path());
        let inner = err.into_inner();
        let (line, column) = match inner.line() {
            0 => (None, None),
            l => (Some(l), Some(inner.column())),
        };
        DocumentError {
            kind,
            path,
            message: message_without_position(&inner),
            line,
            column,
        }
    }

    /// Whether the text was not JSON at all.
    pub fn is_not_json(&self) -> bool {
        self.kind == DocumentErrorKind::NotJson
    }
}

impl std::fmt::Display for DocumentError {
    /// `invalid compute-system document at SchemaVersion.Major: ...` or
    /// `not JSON at $: ... (line 1, column 7)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            DocumentErrorKind::NotJson => "not JSON",
            DocumentErrorKind::Invalid => "invalid compute-system document",
        };
        write!(f, "{what} at {}: {}", self.path, self.message)?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

impl std::error::Error for DocumentError {}

/// `serde_path_to_error` writes the empty path as `.`; we write it as `$`. A path that is one
/// member with the empty name (`{"": …}`) would render as nothing; it is written `""`.
fn path_string(path: &serde_path_to_error::Path) -> String {
    if path.iter().next().is_none() {
        return "$".to_owned();
    }
    match path.to_string() {
        s if s.is_empty() => "\"\"".to_owned(),
        s => s,
    }
}

/// serde_json appends ` at line L column C` to its messages; the position is kept separately.
fn message_without_position(err: &serde_json::Error) -> String {
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    match full.strip_suffix(&suffix) {
        Some(m) => m.to_owned(),
        None => full,
    }
}

fn json_type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Parses and checks a compute-system document (see the module documentation for the rules).
pub fn parse_compute_system(text: &str) -> Result<ComputeSystem, DocumentError> {
    // 1. Well-formed JSON? Parsing into a Value with path tracking names the member being read
    //    when the text broke off.
    let mut de = serde_json::Deserializer::from_str(text);
    let value: serde_json::Value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| DocumentError::from_serde(DocumentErrorKind::NotJson, e))?;
    de.end().map_err(|e| {
        let (line, column) = (Some(e.line()), Some(e.column()));
        DocumentError {
            kind: DocumentErrorKind::NotJson,
            path: "$".into(),
            message: message_without_position(&e),
            line,
            column,
        }
    })?;

    // 2. An object?
    if !value.is_object() {
        return Err(DocumentError::invalid(
            "$",
            format!(
                "a compute-system document must be a JSON object, found {}",
                json_type_name(&value)
            ),
        ));
    }

    // 3. Member types. Parse the text (not the Value) so errors keep their line and column.
    let mut de = serde_json::Deserializer::from_str(text);
    let doc: ComputeSystem = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| DocumentError::from_serde(DocumentErrorKind::Invalid, e))?;

    // 4. Rules.
    check_rules(&doc)?;
    Ok(doc)
}

fn check_rules(doc: &ComputeSystem) -> Result<(), DocumentError> {
    let present: Vec<&str> = [
        ("Container", doc.container.is_some()),
        ("VirtualMachine", doc.virtual_machine.is_some()),
        ("HostedSystem", doc.hosted_system.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, here)| here.then_some(name))
    .collect();
    match present.as_slice() {
        [] => {
            return Err(DocumentError::invalid(
                "$",
                "exactly one of Container, VirtualMachine or HostedSystem must be present, found none",
            ))
        }
        [_] => {}
        [first, second, ..] => {
            return Err(DocumentError::invalid(
                *second,
                format!("exactly one of Container, VirtualMachine or HostedSystem must be present, found {first} and {second}"),
            ))
        }
    }

    if let Some(v) = doc.schema_version {
        if v.major != 2 {
            return Err(DocumentError::invalid(
                "SchemaVersion.Major",
                format!("unsupported schema version {v}: the major version must be 2"),
            ));
        }
    }

    if let Some(m) = doc.container.as_ref().and_then(|c| c.memory.as_ref()) {
        if m.size_in_mb == 0 {
            return Err(DocumentError::invalid(
                "Container.Memory.SizeInMB",
                "memory size must be greater than 0",
            ));
        }
    }
    if let Some(m) = doc
        .virtual_machine
        .as_ref()
        .and_then(|vm| vm.compute_topology.as_ref())
        .and_then(|t| t.memory.as_ref())
    {
        if m.size_in_mb == 0 {
            return Err(DocumentError::invalid(
                "VirtualMachine.ComputeTopology.Memory.SizeInMB",
                "memory size must be greater than 0",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::*;
    use serde_json::json;

    /// A utility-VM document shaped like the ones hcsshim builds for LCOW, with members this crate
    /// does not model sprinkled at several levels.
    const UVM: &str = r#"{
        "Owner": "containerd-shim-runhcs-v1.exe",
        "SchemaVersion": {"Major": 2, "Minor": 1},
        "ShouldTerminateOnLastHandleClosed": true,
        "FutureTopLevel": {"x": [1, 2, 3]},
        "VirtualMachine": {
            "StopOnReset": true,
            "Chipset": {
                "LinuxKernelDirect": {
                    "KernelFilePath": "C:\\ContainerPlatform\\LinuxBootFiles\\vmlinux",
                    "InitRdPath": "C:\\ContainerPlatform\\LinuxBootFiles\\initrd.img",
                    "KernelCmdLine": "8250_core.nr_uarts=0 panic=-1 quiet pci=off"
                },
                "Uefi": {"BootThis": {"DevicePath": "\\EFI\\boot.efi", "DeviceType": "VmbFs", "DiskNumber": 0, "OptionalData": "x"}},
                "BaseBoardSerialNumber": "1234"
            },
            "ComputeTopology": {
                "Memory": {"SizeInMB": 1024, "AllowOvercommit": true, "EnableDeferredCommit": false, "EnableColdDiscardHint": true, "BackingPageSize": "Small"},
                "Processor": {"Count": 2, "Limit": 100000, "Weight": 100, "EnablePerfmonPmu": true}
            },
            "Devices": {
                "Scsi": {
                    "0": {"Attachments": {
                        "0": {"Type": "VirtualDisk", "Path": "C:\\uvm\\scratch.vhdx", "ReadOnly": false, "ExtensibleVirtualDiskType": "x"},
                        "1": {"Type": "Iso", "Path": "C:\\uvm\\tools.iso", "ReadOnly": true}
                    }}
                },
                "HvSocket": {"HvSocketConfig": {"DefaultBindSecurityDescriptor": "D:P(A;;FA;;;SY)(A;;FA;;;BA)"}},
                "Plan9": {"Shares": [{"Name": "1", "AccessName": "1", "Path": "C:\\share", "Port": 564, "Flags": 1}]},
                "VirtualSmb": {"Shares": [{"Name": "os", "Path": "C:\\os", "Options": {"ReadOnly": true, "CacheIo": true}}], "DirectFileMappingInMB": 1024},
                "ComPorts": {"0": {"NamedPipe": "\\\\.\\pipe\\vmpipe"}},
                "NetworkAdapters": {"eth0": {"EndpointId": "6c1f8d2a-0000-0000-0000-000000000000", "MacAddress": "00-15-5D-52-C0-00"}},
                "VirtualPMem": {"MaximumCount": 64, "MaximumSizeBytes": 4294967296, "Devices": {"0": {"HostPath": "C:\\rootfs.vhd", "ReadOnly": true, "ImageFormat": "Vhd1"}}},
                "VideoMonitor": {"HorizontalResolution": 1024}
            },
            "GuestState": {"GuestStateFilePath": "C:\\uvm\\vm.vmgs", "GuestStateFileType": "FileMode"},
            "RegistryChanges": {"AddValues": [{"Key": {"Hive": "System", "Name": "x"}, "Name": "y", "DWordValue": 1}]},
            "DebugOptions": {"BugcheckSavedStateFileName": "C:\\crash.vmrs"}
        }
    }"#;

    /// A process-isolated Windows container document.
    const CONTAINER: &str = r#"{
        "Owner": "docker",
        "SchemaVersion": {"Major": 2, "Minor": 1},
        "ShouldTerminateOnLastHandleClosed": true,
        "Container": {
            "GuestOs": {"HostName": "c0ffee"},
            "Storage": {
                "Layers": [
                    {"Id": "8d2b1b6e-0000-0000-0000-000000000001", "Path": "C:\\ProgramData\\docker\\windowsfilter\\a", "PathType": "AbsolutePath"},
                    {"Id": "8d2b1b6e-0000-0000-0000-000000000002", "Path": "C:\\ProgramData\\docker\\windowsfilter\\b"}
                ],
                "Path": "\\\\?\\Volume{5a5c2f36-0000-0000-0000-000000000000}\\"
            },
            "MappedDirectories": [{"HostPath": "C:\\data", "ContainerPath": "C:\\data", "ReadOnly": true}],
            "MappedPipes": [{"ContainerPipeName": "docker_engine", "HostPath": "\\\\.\\pipe\\docker_engine"}],
            "Memory": {"SizeInMB": 2048},
            "Processor": {"Count": 2, "Maximum": 5000, "Weight": 100},
            "Networking": {"AllowUnqualifiedDnsQuery": true, "DnsSearchList": "corp.example", "Namespace": "1d2e3f40-0000-0000-0000-000000000000", "NetworkAdapters": ["a1"]},
            "HvSocket": {"Config": {"DefaultBindSecurityDescriptor": "D:P(A;;FA;;;SY)"}, "EnablePowerShellDirect": false},
            "RegistryChanges": {"AddValues": []},
            "AssignedDevices": [{"Type": "DeviceInstance", "IdType": "vpci-instance-id", "Id": "PCI\\VEN_1234"}],
            "ContainerCredentialGuard": {"Id": "ccg"}
        }
    }"#;

    fn err_of(text: &str) -> DocumentError {
        parse_compute_system(text).expect_err("document should be rejected")
    }

    #[test]
    fn utility_vm_document_round_trips_with_unknown_members() {
        let doc = parse_compute_system(UVM).unwrap();
        let vm = doc.virtual_machine.as_ref().unwrap();
        assert_eq!(doc.schema_version, Some(SchemaVersion::V2_1));
        assert_eq!(doc.extra["FutureTopLevel"], json!({"x": [1, 2, 3]}));
        let topo = vm.compute_topology.as_ref().unwrap();
        assert_eq!(topo.memory.as_ref().unwrap().size_in_mb, 1024);
        assert_eq!(
            topo.memory.as_ref().unwrap().extra["BackingPageSize"],
            json!("Small")
        );
        assert_eq!(topo.processor.as_ref().unwrap().count, Some(2));
        let chipset = vm.chipset.as_ref().unwrap();
        let boot = chipset.uefi.as_ref().unwrap().boot_this.as_ref().unwrap();
        assert_eq!(boot.device_type, Some(UefiBootDevice::VmbFs));
        assert_eq!(boot.disk_number, Some(0));
        assert!(chipset
            .linux_kernel_direct
            .as_ref()
            .unwrap()
            .kernel_cmd_line
            .as_ref()
            .unwrap()
            .contains("panic=-1"));
        let devices = vm.devices.as_ref().unwrap();
        let atts = devices.scsi.as_ref().unwrap()["0"].attachments.as_ref().unwrap();
        assert_eq!(atts["0"].kind, Some(AttachmentType::VirtualDisk));
        assert_eq!(atts["1"].read_only, Some(true));
        assert_eq!(
            devices.plan9.as_ref().unwrap().shares.as_ref().unwrap()[0].port,
            Some(564)
        );
        assert_eq!(
            devices.virtual_pmem.as_ref().unwrap().maximum_size_bytes,
            Some(4294967296)
        );
        assert!(devices.extra.contains_key("VideoMonitor"));
        assert!(vm.extra.contains_key("DebugOptions"));

        // parse → serialize → the same JSON, unknown members included.
        let original: serde_json::Value = serde_json::from_str(UVM).unwrap();
        assert_eq!(serde_json::to_value(&doc).unwrap(), original);
        let again = parse_compute_system(&serde_json::to_string(&doc).unwrap()).unwrap();
        assert_eq!(again, doc);
    }

    #[test]
    fn container_document_round_trips_with_unknown_members() {
        let doc = parse_compute_system(CONTAINER).unwrap();
        let c = doc.container.as_ref().unwrap();
        let layers = c.storage.as_ref().unwrap().layers.as_ref().unwrap();
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[0].path_type, Some(PathType::AbsolutePath));
        assert_eq!(layers[1].path_type, None);
        assert_eq!(c.memory.as_ref().unwrap().size_in_mb, 2048);
        assert_eq!(c.processor.as_ref().unwrap().maximum, Some(5000));
        assert_eq!(
            c.networking.as_ref().unwrap().network_adapters.as_deref(),
            Some(&["a1".to_owned()][..])
        );
        assert_eq!(
            c.hv_socket.as_ref().unwrap().enable_power_shell_direct,
            Some(false)
        );
        assert_eq!(c.assigned_devices.as_ref().unwrap().len(), 1);
        assert!(c.extra.contains_key("ContainerCredentialGuard"));
        let original: serde_json::Value = serde_json::from_str(CONTAINER).unwrap();
        assert_eq!(serde_json::to_value(&doc).unwrap(), original);
    }

    #[test]
    fn hosted_system_document_is_accepted() {
        let doc = parse_compute_system(
            r#"{"Owner":"o","SchemaVersion":{"Major":2,"Minor":1},"HostingSystemId":"uvm",
                "HostedSystem":{"SchemaVersion":{"Major":2,"Minor":1},"Container":{"Storage":{}}}}"#,
        )
        .unwrap();
        assert_eq!(doc.kind(), Some(SystemKind::HostedSystem));
        assert_eq!(doc.hosting_system_id.as_deref(), Some("uvm"));
    }

    #[test]
    fn text_that_is_not_json_is_told_apart() {
        let e = err_of(r#"{"Owner": "x", "Container": {"Storage": ]}}"#);
        assert_eq!(e.kind, DocumentErrorKind::NotJson);
        assert_eq!(e.path, "Container.Storage");
        assert_eq!(e.line, Some(1));
        assert!(e.column.is_some());
        assert!(e.is_not_json());

        let e = err_of("");
        assert_eq!(e.kind, DocumentErrorKind::NotJson);
        assert_eq!(e.path, "$");

        let e = err_of(r#"{"Container": {}} trailing"#);
        assert_eq!(e.kind, DocumentErrorKind::NotJson);
        assert_eq!(e.path, "$");
        assert_eq!(e.message, "trailing characters");
        assert_eq!(
            e.to_string(),
            "not JSON at $: trailing characters (line 1, column 19)"
        );
    }

    #[test]
    fn document_must_be_an_object() {
        for text in ["[1,2]", "\"Container\"", "null", "42"] {
            let e = err_of(text);
            assert_eq!(e.kind, DocumentErrorKind::Invalid, "{text}");
            assert_eq!(e.path, "$");
            assert!(e.message.contains("must be a JSON object"), "{}", e.message);
        }
    }

    #[test]
    fn wrong_member_types_name_their_path() {
        let e = err_of(r#"{"VirtualMachine": {"ComputeTopology": {"Memory": {"SizeInMB": "lots"}}}}"#);
        assert_eq!(e.kind, DocumentErrorKind::Invalid);
        assert_eq!(e.path, "VirtualMachine.ComputeTopology.Memory.SizeInMB");
        assert!(
            e.message.starts_with("invalid type: string \"lots\""),
            "{}",
            e.message
        );
        assert_eq!(e.line, Some(1));

        let e = err_of(r#"{"Container": {"Storage": {"Layers": [{"Id": "a"}, {"Path": 7}]}}}"#);
        assert_eq!(e.path, "Container.Storage.Layers[1].Path");

        let e = err_of(
            r#"{"VirtualMachine": {"Devices": {"Scsi": {"0": {"Attachments": {"3": {"ReadOnly": "yes"}}}}}}}"#,
        );
        assert_eq!(e.path, "VirtualMachine.Devices.Scsi.0.Attachments.3.ReadOnly");

        let e = err_of(r#"{"Container": {}, "SchemaVersion": {"Major": -2}}"#);
        assert_eq!(e.path, "SchemaVersion.Major");
    }

    #[test]
    fn rule_violations_name_their_path() {
        let e = err_of(r#"{"Owner": "o"}"#);
        assert_eq!((e.kind, e.path.as_str()), (DocumentErrorKind::Invalid, "$"));
        assert!(e.message.contains("found none"));
        assert_eq!(e.line, None);

        let e = err_of(r#"{"Container": {}, "VirtualMachine": {}}"#);
        assert_eq!(e.path, "VirtualMachine");
        let e = err_of(r#"{"HostedSystem": {}, "Container": {}}"#);
        assert_eq!(e.path, "HostedSystem");

        let e = err_of(r#"{"Container": {}, "SchemaVersion": {"Major": 1, "Minor": 0}}"#);
        assert_eq!(e.path, "SchemaVersion.Major");
        assert_eq!(
            e.to_string(),
            "invalid compute-system document at SchemaVersion.Major: unsupported schema version 1.0: the major version must be 2"
        );

        let e = err_of(r#"{"VirtualMachine": {"ComputeTopology": {"Memory": {"SizeInMB": 0}}}}"#);
        assert_eq!(e.path, "VirtualMachine.ComputeTopology.Memory.SizeInMB");
        assert_eq!(e.message, "memory size must be greater than 0");
        let e = err_of(r#"{"VirtualMachine": {"ComputeTopology": {"Memory": {"AllowOvercommit": true}}}}"#);
        assert_eq!(e.path, "VirtualMachine.ComputeTopology.Memory.SizeInMB");
        let e = err_of(r#"{"Container": {"Memory": {"SizeInMB": 0}}}"#);
        assert_eq!(e.path, "Container.Memory.SizeInMB");

        // Without a Memory member there is nothing to check.
        assert!(parse_compute_system(r#"{"VirtualMachine": {"ComputeTopology": {}}}"#).is_ok());
    }

    #[test]
    fn display_is_lowercase_and_names_the_path() {
        let e = err_of(r#"{"Container": {"Memory": {"SizeInMB": 0}}}"#);
        let s = e.to_string();
        assert!(s.starts_with("invalid compute-system document at Container.Memory.SizeInMB: memory size"));
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert!(boxed.to_string().contains("Container.Memory.SizeInMB"));
    }

    /// Found by the `compute_system` fuzz target: an error under a member with the empty name
    /// named no path at all (`not JSON at : expected value`).
    #[test]
    fn error_under_the_empty_member_name_names_a_path() {
        let e = err_of(r#"{"":}"#);
        assert_eq!((e.kind, e.path.as_str()), (DocumentErrorKind::NotJson, r#""""#));
        assert!(e.to_string().starts_with(r#"not JSON at "": "#), "{e}");
        // A member named "." is a member, not the document itself.
        assert_eq!(err_of(r#"{".":}"#).path, ".");
        assert_eq!(err_of("[1").path, "$");
    }
}

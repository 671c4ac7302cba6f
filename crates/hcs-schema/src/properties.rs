//! Property queries and the properties HCS returns: the V1 query and `ContainerProperties`, and
//! the V2 [`PropertyQueryV2`] with its [`Properties`] response and [`Statistics`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A property type named in a V1 query (`{"PropertyTypes": [...]}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PropertyType {
    /// Memory information.
    Memory,
    /// Guest connection information.
    GuestConnection,
    /// Statistics (CPU, memory, storage).
    Statistics,
    /// The list of processes.
    ProcessList,
    /// Mapped virtual disks.
    MappedVirtualDisk,
    /// Any other property type, passed through verbatim.
    #[serde(untagged)]
    Other(String),
}

/// A V1 property query: `{"PropertyTypes": [...]}`, or `{}` when no types are requested.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct PropertyQuery {
    /// Requested property types.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub property_types: Vec<PropertyType>,
}

/// Properties of a compute system as returned by a V1 query or an enumeration
/// (`schema1.ContainerProperties`). Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ContainerProperties {
    /// System id.
    #[serde(rename = "Id")]
    pub id: String,
    /// Current state, e.g. `Running`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `Container` or `VirtualMachine`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub system_type: String,
    /// Runtime OS type (`windows` / `linux`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub runtime_os_type: String,
    /// Owner.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Whether the system has stopped.
    pub stopped: bool,
    /// Exit type of a stopped system.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub exit_type: String,
    /// Whether the system is a utility VM.
    #[serde(rename = "IsRuntimeTemplate", skip_serializing_if = "std::ops::Not::not")]
    pub is_runtime_template: bool,
    /// Runtime id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub runtime_id: String,
    /// Process list, when requested.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub process_list: Vec<crate::ProcessDetails>,
    /// Statistics, when requested (kept as raw JSON here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistics: Option<serde_json::Value>,
}

/// A V2 property query: `{"PropertyTypes": [...], "Queries": {...}}`. Empty members are omitted,
/// so the default query is `{}`.
///
/// `Queries` (schema 2.5+) maps a property name to a filter object, passed through as raw JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct PropertyQueryV2 {
    /// Requested property types.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub property_types: Vec<PropertyType>,
    /// Filtered queries keyed by property name, as raw JSON.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub queries: BTreeMap<String, Value>,
}

impl PropertyQueryV2 {
    /// A query for the given property types.
    pub fn of_types(types: impl IntoIterator<Item = PropertyType>) -> Self {
        PropertyQueryV2 {
            property_types: types.into_iter().collect(),
            queries: BTreeMap::new(),
        }
    }
}

/// Properties of a compute system as returned by a V2 query (`Properties` in the schema).
/// Only the members asked for are present. Members this type does not model are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Properties {
    /// System id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `Container` or `VirtualMachine`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_type: Option<String>,
    /// Runtime OS type (`Windows` / `Linux`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_os_type: Option<String>,
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Runtime id (a GUID).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    /// Whether the system is a runtime template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_runtime_template: Option<bool>,
    /// Current state (for example `Running`, `Paused`, `Stopped`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Whether the system has stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<bool>,
    /// How a stopped system exited (unknown values are tolerated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_type: Option<crate::ExitType>,
    /// Hosting system id, for a hosted system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosting_system_id: Option<String>,
    /// Whether the system is terminated when its last handle closes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminate_on_last_handle_closed: Option<bool>,
    /// Memory information of a VM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryInformationForVm>,
    /// CPU group id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_group_id: Option<String>,
    /// Runtime statistics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistics: Option<Statistics>,
    /// Process list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_list: Option<Vec<crate::ProcessDetails>>,
    /// Guest connection information (supported schema versions, GCS protocol version, ...), as
    /// raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_connection_info: Option<Value>,
    /// Responses to `Queries` (schema 2.5+), keyed by property name, as raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property_responses: Option<BTreeMap<String, Value>>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Memory information of a VM (`MemoryInformationForVm`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct MemoryInformationForVm {
    /// Number of virtual NUMA nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_node_count: Option<u32>,
    /// Memory of the VM (pages, backing), as raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_machine_memory: Option<Value>,
    /// Per-node information, as raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_nodes: Option<Value>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Runtime statistics of a system. Counters absent from the response read as 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Statistics {
    /// When the statistics were taken (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// When the system started (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_start_time: Option<String>,
    /// Uptime in 100 ns units.
    pub uptime_100ns: u64,
    /// Processor usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processor: Option<ProcessorStats>,
    /// Memory usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// Storage I/O.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageStats>,
}

/// Processor usage, in 100 ns units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ProcessorStats {
    /// Total run time.
    pub total_runtime_100ns: u64,
    /// Run time in user mode.
    pub runtime_user_100ns: u64,
    /// Run time in kernel mode.
    pub runtime_kernel_100ns: u64,
}

/// Memory usage, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct MemoryStats {
    /// Committed memory.
    pub memory_usage_commit_bytes: u64,
    /// Peak committed memory.
    pub memory_usage_commit_peak_bytes: u64,
    /// Private working set.
    pub memory_usage_private_working_set_bytes: u64,
}

/// Storage I/O.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct StorageStats {
    /// Number of reads, normalized to 64 KiB units.
    pub read_count_normalized: u64,
    /// Bytes read.
    pub read_size_bytes: u64,
    /// Number of writes, normalized to 64 KiB units.
    pub write_count_normalized: u64,
    /// Bytes written.
    pub write_size_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v2_query_omits_empty_members() {
        assert_eq!(serde_json::to_string(&PropertyQueryV2::default()).unwrap(), "{}");
        let q = PropertyQueryV2::of_types([PropertyType::Statistics, PropertyType::Other("Basic".into())]);
        assert_eq!(
            serde_json::to_string(&q).unwrap(),
            r#"{"PropertyTypes":["Statistics","Basic"]}"#
        );
        let mut q = PropertyQueryV2::default();
        q.queries.insert("ProcessList".into(), json!({"ProcessIds":[4]}));
        assert_eq!(
            serde_json::to_string(&q).unwrap(),
            r#"{"Queries":{"ProcessList":{"ProcessIds":[4]}}}"#
        );
        let back: PropertyQueryV2 =
            serde_json::from_str(r#"{"PropertyTypes":["ProcessList","Brand new"]}"#).unwrap();
        assert_eq!(
            back.property_types,
            vec![PropertyType::ProcessList, PropertyType::Other("Brand new".into())]
        );
    }

    #[test]
    fn v2_properties_response_parses_and_round_trips() {
        let text = r#"{
            "Id": "uvm1", "SystemType": "VirtualMachine", "RuntimeOsType": "Linux", "Name": "uvm1",
            "Owner": "shim", "RuntimeId": "5f0d6a51-0000-0000-0000-000000000000", "State": "Running",
            "Stopped": false, "ExitType": "SomethingNew",
            "Statistics": {
                "Timestamp": "2024-05-01T10:00:00.1234567Z", "ContainerStartTime": "2024-05-01T09:00:00Z",
                "Uptime100ns": 36000000000,
                "Processor": {"TotalRuntime100ns": 300, "RuntimeUser100ns": 200, "RuntimeKernel100ns": 100},
                "Memory": {"MemoryUsageCommitBytes": 1048576, "MemoryUsageCommitPeakBytes": 2097152, "MemoryUsagePrivateWorkingSetBytes": 524288},
                "Storage": {"ReadCountNormalized": 1, "ReadSizeBytes": 4096, "WriteCountNormalized": 2, "WriteSizeBytes": 8192}
            },
            "ProcessList": [{"ProcessId": 4, "ImageName": "System", "UserTime100ns": 1}],
            "Memory": {"VirtualNodeCount": 1, "VirtualMachineMemory": {"AvailableMemory": 1024}},
            "GuestConnectionInfo": {"SupportedSchemaVersions": [{"Major": 2, "Minor": 1}], "ProtocolVersion": 4},
            "SharedMemoryRegionInfo": [{"SectionName": "s"}]
        }"#;
        let p: Properties = serde_json::from_str(text).unwrap();
        assert_eq!(p.exit_type, Some(crate::ExitType::Unrecognized));
        let stats = p.statistics.as_ref().unwrap();
        assert_eq!(stats.uptime_100ns, 36_000_000_000);
        assert_eq!(stats.processor.unwrap().runtime_kernel_100ns, 100);
        assert_eq!(stats.memory.unwrap().memory_usage_commit_peak_bytes, 2_097_152);
        assert_eq!(stats.storage.unwrap().write_size_bytes, 8192);
        assert_eq!(p.process_list.as_ref().unwrap()[0].image_name, "System");
        assert_eq!(p.memory.as_ref().unwrap().virtual_node_count, Some(1));
        assert_eq!(
            p.guest_connection_info.as_ref().unwrap()["ProtocolVersion"],
            json!(4)
        );
        assert!(p.extra.contains_key("SharedMemoryRegionInfo"));

        let again: Properties = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(again.statistics, p.statistics);
        assert_eq!(again.extra, p.extra);
        let empty: Properties = serde_json::from_str("{}").unwrap();
        assert_eq!(serde_json::to_string(&empty).unwrap(), "{}");
    }

    #[test]
    fn statistics_tolerate_missing_counters() {
        let s: Statistics =
            serde_json::from_str(r#"{"Processor":{"TotalRuntime100ns":5},"Extra":1}"#).unwrap();
        assert_eq!(
            s.processor,
            Some(ProcessorStats {
                total_runtime_100ns: 5,
                ..Default::default()
            })
        );
        assert_eq!(s.uptime_100ns, 0);
    }
}

//! Property queries (V1 `PropertyTypes` style) and the properties HCS returns.

use serde::{Deserialize, Serialize};

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

//! The schema-v2 compute-system document (`ComputeSystem`) passed to `HcsCreateComputeSystem`,
//! with its two main shapes: a process-isolated [`Container`] and a [`VirtualMachine`] (for example
//! a utility VM).
//!
//! The types model the members that real documents use. Everything else is tolerated: each main
//! struct keeps members it does not know in its `extra` map, and writes them back out unchanged, so
//! a parse → serialize round trip does not lose configuration. Enumerations that HCS may extend
//! (disk attachment types, boot devices, layer path types) keep unknown values as `Other(..)`.
//!
//! To parse *and check* a document, use [`crate::validate::parse_compute_system`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A schema version, `{"Major": 2, "Minor": 1}`. Used for `ComputeSystem.SchemaVersion` and in the
/// service's list of supported versions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct SchemaVersion {
    /// Major version; 2 for every document in this module.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl SchemaVersion {
    /// Schema 2.1, the version HCS has accepted since Windows Server 2019 (RS5), and the one the
    /// constructors in this module use.
    pub const V2_1: SchemaVersion = SchemaVersion { major: 2, minor: 1 };

    /// A version `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        SchemaVersion { major, minor }
    }
}

impl std::fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The compute-system document (schema v2): the configuration of a container or a virtual machine,
/// or a system hosted inside another one.
///
/// A valid document has exactly one of `Container`, `VirtualMachine` and `HostedSystem`; see
/// [`crate::validate::parse_compute_system`] for the checks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ComputeSystem {
    /// The management platform that owns the system (for example `containerd-shim-runhcs-v1.exe`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Version of the schema the document is written against (`2.x`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<SchemaVersion>,
    /// Id of the system (for example a utility VM) that hosts this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosting_system_id: Option<String>,
    /// Configuration of a system hosted in `HostingSystemId`, passed through as raw JSON (for a
    /// Windows container in a utility VM this is itself `{"SchemaVersion":..,"Container":..}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosted_system: Option<Value>,
    /// Configuration of a container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// Configuration of a virtual machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_machine: Option<VirtualMachine>,
    /// Whether HCS terminates the system once the last handle to it is closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub should_terminate_on_last_handle_closed: Option<bool>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ComputeSystem {
    /// A process-isolated (Windows Server) container owned by `owner`: schema 2.1, terminated when
    /// its last handle closes, with an empty `Container` section for the caller to fill in
    /// (storage layers, mapped directories, networking, ...).
    pub fn process_isolated_container(owner: impl Into<String>) -> Self {
        ComputeSystem {
            owner: Some(owner.into()),
            schema_version: Some(SchemaVersion::V2_1),
            container: Some(Container::default()),
            should_terminate_on_last_handle_closed: Some(true),
            ..Default::default()
        }
    }

    /// A utility VM owned by `owner` with `memory_mb` MiB of (overcommittable) memory and `cpus`
    /// virtual processors: schema 2.1, terminated when its last handle closes, stopping rather than
    /// rebooting on a guest reset. Boot configuration (`Chipset`) and devices are left for the
    /// caller.
    pub fn utility_vm(owner: impl Into<String>, memory_mb: u64, cpus: u32) -> Self {
        ComputeSystem {
            owner: Some(owner.into()),
            schema_version: Some(SchemaVersion::V2_1),
            virtual_machine: Some(VirtualMachine {
                stop_on_reset: Some(true),
                compute_topology: Some(Topology {
                    memory: Some(VmMemory {
                        size_in_mb: memory_mb,
                        allow_overcommit: Some(true),
                        ..Default::default()
                    }),
                    processor: Some(VmProcessor {
                        count: Some(cpus),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                devices: Some(Devices::default()),
                ..Default::default()
            }),
            should_terminate_on_last_handle_closed: Some(true),
            ..Default::default()
        }
    }

    /// Which kind of system the document describes, judged by the sections present (`None` when
    /// there is no section, or more than one).
    pub fn kind(&self) -> Option<SystemKind> {
        match (
            self.container.is_some(),
            self.virtual_machine.is_some(),
            self.hosted_system.is_some(),
        ) {
            (true, false, false) => Some(SystemKind::Container),
            (false, true, false) => Some(SystemKind::VirtualMachine),
            (false, false, true) => Some(SystemKind::HostedSystem),
            _ => None,
        }
    }
}

/// The section a [`ComputeSystem`] document is built around.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SystemKind {
    /// A `Container` section.
    Container,
    /// A `VirtualMachine` section.
    VirtualMachine,
    /// A `HostedSystem` section (a system inside `HostingSystemId`).
    HostedSystem,
}

// ---------------------------------------------------------------------------------------------
// Container
// ---------------------------------------------------------------------------------------------

/// Configuration of a container (`ComputeSystem.Container`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Container {
    /// Guest OS settings (host name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_os: Option<GuestOs>,
    /// Storage: image layers and the scratch volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
    /// Host directories mapped into the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapped_directories: Option<Vec<MappedDirectory>>,
    /// Host named pipes mapped into the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapped_pipes: Option<Vec<MappedPipe>>,
    /// Memory limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<ContainerMemory>,
    /// Processor limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processor: Option<ContainerProcessor>,
    /// Networking: DNS settings, network namespace and adapters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub networking: Option<Networking>,
    /// Hyper-V socket settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hv_socket: Option<HvSocket>,
    /// Registry changes applied in the container, as raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_changes: Option<Value>,
    /// Devices assigned to the container, as raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_devices: Option<Vec<Value>>,
    /// Members this type does not model (for example `ContainerCredentialGuard`), kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Guest OS settings of a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct GuestOs {
    /// Host name inside the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Storage of a container: its read-only image layers and its scratch (sandbox) volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Storage {
    /// Image layers, topmost first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<Layer>>,
    /// Path of the scratch volume (for example `\\?\Volume{GUID}\`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One image layer of a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Layer {
    /// Layer id (a GUID).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Layer location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How `Path` is to be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_type: Option<PathType>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// How a host path in a container document is interpreted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathType {
    /// An absolute path on the host.
    AbsolutePath,
    /// The name of a share on the hosting VM's virtual SMB server.
    VirtualSmbShareName,
    /// Any other value, kept verbatim.
    #[serde(untagged)]
    Other(String),
}

/// A host directory mapped into a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct MappedDirectory {
    /// Directory on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// How `HostPath` is to be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_path_type: Option<PathType>,
    /// Where the directory appears in the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_path: Option<String>,
    /// Whether the mapping is read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Whether cloud-files placeholders are supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub support_cloud_files: Option<bool>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A host named pipe mapped into a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct MappedPipe {
    /// Pipe name inside the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_pipe_name: Option<String>,
    /// Pipe path on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// How `HostPath` is to be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_path_type: Option<PathType>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Memory limit of a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ContainerMemory {
    /// Limit in MiB; must be greater than 0.
    #[serde(rename = "SizeInMB")]
    pub size_in_mb: u64,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Processor limits of a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ContainerProcessor {
    /// Number of processors the container may use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Share of processor cycles the container may use, as a percentage times 100 (1..=10000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum: Option<u64>,
    /// Relative weight against other containers (1..=10000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u64>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Networking of a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Networking {
    /// Whether unqualified DNS names are resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_unqualified_dns_query: Option<bool>,
    /// Comma-separated DNS suffixes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_search_list: Option<String>,
    /// Name of a container whose network stack this one shares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_shared_container_name: Option<String>,
    /// Network namespace (a GUID on Windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Network adapters (endpoint ids).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_adapters: Option<Vec<String>>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Hyper-V socket settings of a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct HvSocket {
    /// Security descriptors and service table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<HvSocketSystemConfig>,
    /// Whether PowerShell Direct is enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_power_shell_direct: Option<bool>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Hyper-V socket security settings, shared by containers and virtual machines.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct HvSocketSystemConfig {
    /// Default SDDL for binding a service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_bind_security_descriptor: Option<String>,
    /// Default SDDL for connecting to a service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_connect_security_descriptor: Option<String>,
    /// Per-service settings keyed by service GUID, as raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_table: Option<BTreeMap<String, Value>>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

// ---------------------------------------------------------------------------------------------
// Virtual machine
// ---------------------------------------------------------------------------------------------

/// Configuration of a virtual machine (`ComputeSystem.VirtualMachine`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct VirtualMachine {
    /// Whether a guest reset stops the VM (releasing its resources) instead of rebooting it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_on_reset: Option<bool>,
    /// Firmware and boot configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chipset: Option<Chipset>,
    /// Memory and processors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compute_topology: Option<Topology>,
    /// Virtual devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Devices>,
    /// Guest-state (VMGS) files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_state: Option<GuestState>,
    /// State to restore the VM from (a saved-state file or a template).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_state: Option<RestoreState>,
    /// Registry changes applied in the guest, as raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_changes: Option<Value>,
    /// Guest connection (GCS) settings, as raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_connection: Option<Value>,
    /// Live-migration options: on a migration destination,
    /// `{"Origin":"Destination","CompatibilityData":{..}}` (the source's compatibility data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration_options: Option<crate::migration::MigrationInitializeOptions>,
    /// Members this type does not model (`StorageQoS`, `DebugOptions`, `SecuritySettings`, ...),
    /// kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Firmware and boot configuration of a VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Chipset {
    /// UEFI firmware settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uefi: Option<Uefi>,
    /// Direct boot of a Linux kernel (no firmware boot loader).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linux_kernel_direct: Option<LinuxKernelDirect>,
    /// Whether the real-time clock is in UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_utc: Option<bool>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// UEFI firmware settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Uefi {
    /// Whether the UEFI debugger is enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_debugger: Option<bool>,
    /// Secure boot template GUID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure_boot_template_id: Option<String>,
    /// The boot entry to boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_this: Option<UefiBootEntry>,
    /// Firmware console mode (for example `Default`, `ComPort1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console: Option<String>,
    /// Whether a boot failure stops the VM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_on_boot_failure: Option<bool>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A UEFI boot entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct UefiBootEntry {
    /// Path of the boot file on the device (for example `\EFI\Microsoft\Boot\bootmgfw.efi`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    /// Kind of boot device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_type: Option<UefiBootDevice>,
    /// Disk number, for `ScsiDrive`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_number: Option<u16>,
    /// Data passed to the boot loader (for example kernel arguments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optional_data: Option<String>,
    /// Root path of the VMBus file system, for `VmbFs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmb_fs_root_path: Option<String>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Kind of UEFI boot device.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UefiBootDevice {
    /// A SCSI disk.
    ScsiDrive,
    /// The VMBus file system (boot files served from the host).
    VmbFs,
    /// Network boot.
    Network,
    /// A file.
    File,
    /// Any other value, kept verbatim.
    #[serde(untagged)]
    Other(String),
}

/// Direct boot of a Linux kernel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct LinuxKernelDirect {
    /// Kernel image on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_file_path: Option<String>,
    /// Initial RAM disk on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_rd_path: Option<String>,
    /// Kernel command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_cmd_line: Option<String>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Memory and processors of a VM (`ComputeTopology`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Topology {
    /// Memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<VmMemory>,
    /// Virtual processors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processor: Option<VmProcessor>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Memory of a VM (`Memory2` in the schema).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct VmMemory {
    /// Memory size in MiB; must be greater than 0.
    #[serde(rename = "SizeInMB")]
    pub size_in_mb: u64,
    /// Whether memory is backed by pageable host memory (so it can be overcommitted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_overcommit: Option<bool>,
    /// Whether the hot-hint feature is exposed to the guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_hot_hint: Option<bool>,
    /// Whether the cold-hint feature is exposed to the guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_cold_hint: Option<bool>,
    /// Whether enlightened page faults are enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_epf: Option<bool>,
    /// Whether memory is committed lazily, on first use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_deferred_commit: Option<bool>,
    /// Whether the cold-discard hint is exposed to the guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_cold_discard_hint: Option<bool>,
    /// Whether backing chunks smaller than the backing page size are avoided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forbid_small_backing_pages: Option<bool>,
    /// Size of the MMIO gap below 4 GiB, in MiB.
    #[serde(rename = "LowMmioGapInMB", skip_serializing_if = "Option::is_none")]
    pub low_mmio_gap_in_mb: Option<u64>,
    /// Base of the MMIO region above 4 GiB, in MiB.
    #[serde(rename = "HighMmioBaseInMB", skip_serializing_if = "Option::is_none")]
    pub high_mmio_base_in_mb: Option<u64>,
    /// Size of the MMIO region above 4 GiB, in MiB.
    #[serde(rename = "HighMmioGapInMB", skip_serializing_if = "Option::is_none")]
    pub high_mmio_gap_in_mb: Option<u64>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Virtual processors of a VM (`Processor2` in the schema).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct VmProcessor {
    /// Number of virtual processors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Share of host processor time the VM may use, as a percentage times 1000 (0..=100000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Relative weight against other VMs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u64>,
    /// Whether virtualization extensions are exposed (nested virtualization).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expose_virtualization_extensions: Option<bool>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Virtual devices of a VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Devices {
    /// SCSI controllers keyed by name (a name that is a GUID is used as the channel id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scsi: Option<BTreeMap<String, Scsi>>,
    /// The virtual SMB server (file shares for Windows guests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_smb: Option<VirtualSmb>,
    /// The Plan 9 server (file shares for Linux guests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan9: Option<Plan9>,
    /// COM ports keyed by port number (`"0"`, `"1"`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub com_ports: Option<BTreeMap<String, ComPort>>,
    /// Hyper-V socket settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hv_socket: Option<VirtualMachineHvSocket>,
    /// Network adapters keyed by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_adapters: Option<BTreeMap<String, NetworkAdapter>>,
    /// The virtual persistent-memory controller.
    #[serde(rename = "VirtualPMem", skip_serializing_if = "Option::is_none")]
    pub virtual_pmem: Option<VirtualPMemController>,
    /// Assigned PCI devices keyed by name, as raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_pci: Option<BTreeMap<String, Value>>,
    /// Members this type does not model (`VideoMonitor`, `Keyboard`, `EnhancedModeVideo`,
    /// `GuestCrashReporting`, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A SCSI controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Scsi {
    /// Attached disks keyed by LUN (`"0"`, `"1"`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachments: Option<BTreeMap<String, Attachment>>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A disk attached to a SCSI controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Attachment {
    /// What is attached.
    #[serde(rename = "Type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<AttachmentType>,
    /// Path of the disk image or device on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Whether the disk is read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Host caching mode (for example `ReadOnlyCached`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caching_mode: Option<String>,
    /// Whether guest flushes are ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_flushes: Option<bool>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Kind of a SCSI attachment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AttachmentType {
    /// A virtual hard disk (VHD/VHDX).
    VirtualDisk,
    /// An ISO image.
    Iso,
    /// A host disk passed through.
    PassThru,
    /// Any other value, kept verbatim.
    #[serde(untagged)]
    Other(String),
}

/// The virtual SMB server of a VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct VirtualSmb {
    /// Shares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shares: Option<Vec<VirtualSmbShare>>,
    /// Size of the direct file-mapping window, in MiB.
    #[serde(rename = "DirectFileMappingInMB", skip_serializing_if = "Option::is_none")]
    pub direct_file_mapping_in_mb: Option<i64>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One share of the virtual SMB server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct VirtualSmbShare {
    /// Share name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Shared directory on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Files the guest may open (when the share is restricted to some files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_files: Option<Vec<String>>,
    /// Share options (read-only, caching, ...), as raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The Plan 9 server of a VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Plan9 {
    /// Shares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shares: Option<Vec<Plan9Share>>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One share of the Plan 9 server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Plan9Share {
    /// Share name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Name the guest uses to mount the share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_name: Option<String>,
    /// Shared directory on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Hyper-V socket port of the share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Share flags (read-only, single-file, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<i32>,
    /// Whether the share is read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Whether guest access uses the share root's identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_share_root_identity: Option<bool>,
    /// Files the guest may open (when the share is restricted to some files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_files: Option<Vec<String>>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A COM port of a VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ComPort {
    /// Host named pipe the port is connected to (for example `\\.\pipe\uvm-com1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub named_pipe: Option<String>,
    /// Whether the port is optimized for a kernel debugger.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimize_for_debugger: Option<bool>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Hyper-V socket settings of a VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct VirtualMachineHvSocket {
    /// Security descriptors and service table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hv_socket_config: Option<HvSocketSystemConfig>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A network adapter of a VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct NetworkAdapter {
    /// HNS endpoint id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<String>,
    /// MAC address (for example `00-15-5D-52-C0-00`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The virtual persistent-memory controller of a VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct VirtualPMemController {
    /// Devices keyed by slot (`"0"`, `"1"`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<BTreeMap<String, VirtualPMemDevice>>,
    /// Maximum number of devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_count: Option<u32>,
    /// Maximum size of one device, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_size_bytes: Option<u64>,
    /// Backing of the devices (`Virtual` or `Physical`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing: Option<String>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One virtual persistent-memory device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct VirtualPMemDevice {
    /// Image on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// Whether the device is read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Image format (`Vhd1`, `Vhdx`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_format: Option<String>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Guest-state files of a VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct GuestState {
    /// The guest-state (VMGS) file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_state_file_path: Option<String>,
    /// Kind of the guest-state file (for example `FileMode`, `BlockStorage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_state_file_type: Option<String>,
    /// The runtime-state file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_state_file_path: Option<String>,
    /// Whether the guest state is kept only in memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_transient_state: Option<bool>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// State a VM is restored from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct RestoreState {
    /// A saved-state file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub save_state_file_path: Option<String>,
    /// Id of a template system to clone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_system_id: Option<String>,
    /// Members this type does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn constructors_fill_sensible_defaults() {
        let c = ComputeSystem::process_isolated_container("me");
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"Owner":"me","SchemaVersion":{"Major":2,"Minor":1},"Container":{},
                   "ShouldTerminateOnLastHandleClosed":true})
        );
        assert_eq!(c.kind(), Some(SystemKind::Container));

        let v = ComputeSystem::utility_vm("me", 1024, 2);
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            json!({"Owner":"me","SchemaVersion":{"Major":2,"Minor":1},
                   "VirtualMachine":{"StopOnReset":true,
                     "ComputeTopology":{"Memory":{"SizeInMB":1024,"AllowOvercommit":true},
                                        "Processor":{"Count":2}},
                     "Devices":{}},
                   "ShouldTerminateOnLastHandleClosed":true})
        );
        assert_eq!(v.kind(), Some(SystemKind::VirtualMachine));
        assert_eq!(ComputeSystem::default().kind(), None);
        assert_eq!(SchemaVersion::V2_1.to_string(), "2.1");
    }

    #[test]
    fn unusual_member_names_are_spelled_like_the_schema() {
        let m = VmMemory {
            size_in_mb: 1,
            low_mmio_gap_in_mb: Some(2),
            high_mmio_base_in_mb: Some(3),
            high_mmio_gap_in_mb: Some(4),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"SizeInMB":1,"LowMmioGapInMB":2,"HighMmioBaseInMB":3,"HighMmioGapInMB":4})
        );
        let d = Devices {
            virtual_pmem: Some(VirtualPMemController::default()),
            virtual_smb: Some(VirtualSmb {
                direct_file_mapping_in_mb: Some(1024),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({"VirtualSmb":{"DirectFileMappingInMB":1024},"VirtualPMem":{}})
        );
        let a = Attachment {
            kind: Some(AttachmentType::VirtualDisk),
            ..Default::default()
        };
        assert_eq!(serde_json::to_value(&a).unwrap(), json!({"Type":"VirtualDisk"}));
    }

    #[test]
    fn unknown_enum_values_are_kept() {
        let a: Attachment = serde_json::from_value(json!({"Type":"NewDiskKind","Path":"x"})).unwrap();
        assert_eq!(a.kind, Some(AttachmentType::Other("NewDiskKind".into())));
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"Type":"NewDiskKind","Path":"x"})
        );

        let e: UefiBootEntry = serde_json::from_value(json!({"DeviceType":"Quantum"})).unwrap();
        assert_eq!(e.device_type, Some(UefiBootDevice::Other("Quantum".into())));
        let e: UefiBootEntry = serde_json::from_value(json!({"DeviceType":"VmbFs"})).unwrap();
        assert_eq!(e.device_type, Some(UefiBootDevice::VmbFs));

        let l: Layer = serde_json::from_value(json!({"PathType":"Somewhere"})).unwrap();
        assert_eq!(l.path_type, Some(PathType::Other("Somewhere".into())));
    }
}

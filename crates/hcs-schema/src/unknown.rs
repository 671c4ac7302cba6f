//! Finding the members of a compute-system document that this crate does not model.
//!
//! The document types keep members they do not know in their `extra` maps and write them back
//! unchanged, so a configuration is never cut down on its way to HCS. That tolerance also hides
//! a misspelt member (`Memroy`): [`ComputeSystem::unmodelled_members`] lists the JSON path of
//! every member that landed in an `extra` map, so a tool can warn about them. A listed member is
//! not necessarily wrong (HCS knows many members this crate does not model, such as
//! `VirtualMachine.Devices.Keyboard`); it is one nobody on this side checked.

use crate::system::*;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A document type whose unmodelled members can be listed.
trait Members {
    /// Appends the path of each unmodelled member at or below `path` to `out`.
    fn collect(&self, path: &str, out: &mut Vec<String>);
}

fn child(path: &str, name: &str) -> String {
    let name = if name.is_empty() { "\"\"" } else { name };
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn extras(extra: &Map<String, Value>, path: &str, out: &mut Vec<String>) {
    out.extend(extra.keys().map(|k| child(path, k)));
}

impl<T: Members> Members for Option<T> {
    fn collect(&self, path: &str, out: &mut Vec<String>) {
        if let Some(v) = self {
            v.collect(path, out);
        }
    }
}

impl<T: Members> Members for Vec<T> {
    fn collect(&self, path: &str, out: &mut Vec<String>) {
        for (i, v) in self.iter().enumerate() {
            v.collect(&format!("{path}[{i}]"), out);
        }
    }
}

impl<T: Members> Members for BTreeMap<String, T> {
    fn collect(&self, path: &str, out: &mut Vec<String>) {
        for (k, v) in self {
            v.collect(&child(path, k), out);
        }
    }
}

/// `Type { field: "JsonName", … }`: the type's own `extra` map, then each listed field that is
/// itself a document type (members that are plain values or raw JSON need no walk).
macro_rules! members {
    ($($ty:ident { $($field:ident: $name:literal),* $(,)? })*) => {$(
        impl Members for $ty {
            fn collect(&self, path: &str, out: &mut Vec<String>) {
                extras(&self.extra, path, out);
                $( self.$field.collect(&child(path, $name), out); )*
            }
        }
    )*};
}

members! {
    ComputeSystem { container: "Container", virtual_machine: "VirtualMachine" }
    Container {
        guest_os: "GuestOs",
        storage: "Storage",
        mapped_directories: "MappedDirectories",
        mapped_pipes: "MappedPipes",
        memory: "Memory",
        processor: "Processor",
        networking: "Networking",
        hv_socket: "HvSocket",
    }
    GuestOs {}
    Storage { layers: "Layers" }
    Layer {}
    MappedDirectory {}
    MappedPipe {}
    ContainerMemory {}
    ContainerProcessor {}
    Networking {}
    HvSocket { config: "Config" }
    HvSocketSystemConfig {}
    VirtualMachine {
        chipset: "Chipset",
        compute_topology: "ComputeTopology",
        devices: "Devices",
        guest_state: "GuestState",
        restore_state: "RestoreState",
    }
    Chipset { uefi: "Uefi", linux_kernel_direct: "LinuxKernelDirect" }
    Uefi { boot_this: "BootThis" }
    UefiBootEntry {}
    LinuxKernelDirect {}
    Topology { memory: "Memory", processor: "Processor" }
    VmMemory {}
    VmProcessor {}
    Devices {
        scsi: "Scsi",
        virtual_smb: "VirtualSmb",
        plan9: "Plan9",
        com_ports: "ComPorts",
        hv_socket: "HvSocket",
        network_adapters: "NetworkAdapters",
        virtual_pmem: "VirtualPMem",
    }
    Scsi { attachments: "Attachments" }
    Attachment {}
    VirtualSmb { shares: "Shares" }
    VirtualSmbShare {}
    Plan9 { shares: "Shares" }
    Plan9Share {}
    ComPort {}
    VirtualMachineHvSocket { hv_socket_config: "HvSocketConfig" }
    NetworkAdapter {}
    VirtualPMemController { devices: "Devices" }
    VirtualPMemDevice {}
    GuestState {}
    RestoreState {}
}

impl ComputeSystem {
    /// The JSON paths (`Container.Memroy`, `VirtualMachine.Devices.Scsi.primary.Foo`, array
    /// items as `Layers[0]`) of every member this crate does not model and keeps verbatim, in
    /// document order by type. An empty list means every member was recognised.
    pub fn unmodelled_members(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect("", &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::parse_compute_system;

    #[test]
    fn a_misspelt_member_at_any_depth_is_listed_by_its_path() {
        let doc = parse_compute_system(
            r#"{"SchemaVersion":{"Major":2,"Minor":1},"Owner":"o","Bogus":1,
                "VirtualMachine":{"ComputeTopology":{"Memory":{"SizeInMB":512,"SizeInMb":1}},
                  "Devices":{"Scsi":{"primary":{"Attachments":{"0":{"Type":"VirtualDisk","Pth":"x"}}}},
                             "Keyboard":{}}}}"#,
        )
        .unwrap();
        assert_eq!(
            doc.unmodelled_members(),
            [
                "Bogus",
                "VirtualMachine.ComputeTopology.Memory.SizeInMb",
                "VirtualMachine.Devices.Keyboard",
                "VirtualMachine.Devices.Scsi.primary.Attachments.0.Pth",
            ]
        );
    }

    #[test]
    fn container_members_in_arrays_are_listed_with_their_index() {
        let doc = parse_compute_system(
            r#"{"Owner":"o","Container":{"Storage":{"Layers":[{"Id":"a","Path":"p"},{"Path":"q","Flavour":1}]},
                "MappedDirectories":[{"HostPath":"h","ContainerPath":"c","ReadOnly":true,"Mode":"x"}],
                "Memroy":{"SizeInMB":5}}}"#,
        )
        .unwrap();
        assert_eq!(
            doc.unmodelled_members(),
            [
                "Container.Memroy",
                "Container.Storage.Layers[1].Flavour",
                "Container.MappedDirectories[0].Mode",
            ]
        );
    }

    #[test]
    fn a_document_of_known_members_lists_nothing() {
        let doc = parse_compute_system(
            r#"{"SchemaVersion":{"Major":2,"Minor":1},"Owner":"o","ShouldTerminateOnLastHandleClosed":true,
                "Container":{"Memory":{"SizeInMB":64},"Processor":{"Count":1}}}"#,
        )
        .unwrap();
        assert_eq!(doc.unmodelled_members(), Vec::<String>::new());
    }
}

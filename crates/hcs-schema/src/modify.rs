//! Modify requests: for processes (console size, close handle) and for compute systems
//! ([`ModifySettingRequest`], the document passed to `HcsModifyComputeSystem`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
            close_handle: Some(CloseHandle {
                handle: StdHandle::StdIn,
            }),
        }
    }
}

/// The kind of change a [`ModifySettingRequest`] makes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ModifyRequestType {
    /// Add a resource.
    Add,
    /// Remove a resource.
    Remove,
    /// Update a resource in place.
    Update,
    /// Any other value, kept verbatim.
    #[serde(untagged)]
    Other(String),
}

/// A compute-system modify request, e.g.
/// `{"ResourcePath":"VirtualMachine/Devices/Scsi/0/Attachments/1","RequestType":"Add","Settings":{...}}`.
///
/// `Settings` (what the host changes) and `GuestRequest` (what the guest is asked to do, for
/// example mount the new disk) are passed through as raw JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ModifySettingRequest {
    /// Path of the resource in the compute-system document (for example
    /// `VirtualMachine/ComputeTopology/Memory/SizeInMB`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_path: Option<String>,
    /// Add, remove or update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_type: Option<ModifyRequestType>,
    /// The new settings of the resource, as raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<Value>,
    /// A request forwarded to the guest, as raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_request: Option<Value>,
}

impl ModifySettingRequest {
    /// A request adding the resource at `path` with `settings`.
    pub fn add(path: impl Into<String>, settings: Value) -> Self {
        ModifySettingRequest {
            resource_path: Some(path.into()),
            request_type: Some(ModifyRequestType::Add),
            settings: Some(settings),
            guest_request: None,
        }
    }

    /// A request removing the resource at `path`.
    pub fn remove(path: impl Into<String>) -> Self {
        ModifySettingRequest {
            resource_path: Some(path.into()),
            request_type: Some(ModifyRequestType::Remove),
            settings: None,
            guest_request: None,
        }
    }

    /// A request updating the resource at `path` to `settings`.
    pub fn update(path: impl Into<String>, settings: Value) -> Self {
        ModifySettingRequest {
            resource_path: Some(path.into()),
            request_type: Some(ModifyRequestType::Update),
            settings: Some(settings),
            guest_request: None,
        }
    }

    /// The same request with `guest_request` forwarded to the guest.
    pub fn with_guest_request(mut self, guest_request: Value) -> Self {
        self.guest_request = Some(guest_request);
        self
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

    #[test]
    fn modify_setting_requests_serialise_and_tolerate_unknown_types() {
        let add = ModifySettingRequest::add(
            "VirtualMachine/Devices/Scsi/0/Attachments/1",
            serde_json::json!({"Type":"VirtualDisk","Path":"C:\\d.vhdx"}),
        );
        assert_eq!(
            serde_json::to_string(&add).unwrap(),
            r#"{"ResourcePath":"VirtualMachine/Devices/Scsi/0/Attachments/1","RequestType":"Add","Settings":{"Path":"C:\\d.vhdx","Type":"VirtualDisk"}}"#
        );
        assert_eq!(
            serde_json::to_string(&ModifySettingRequest::remove(
                "VirtualMachine/Devices/Plan9/Shares"
            ))
            .unwrap(),
            r#"{"ResourcePath":"VirtualMachine/Devices/Plan9/Shares","RequestType":"Remove"}"#
        );
        let upd = ModifySettingRequest::update(
            "VirtualMachine/ComputeTopology/Memory/SizeInMB",
            serde_json::json!(2048),
        )
        .with_guest_request(serde_json::json!({"ResourceType":"Memory"}));
        let back: ModifySettingRequest = serde_json::from_str(&serde_json::to_string(&upd).unwrap()).unwrap();
        assert_eq!(back, upd);
        let odd: ModifySettingRequest =
            serde_json::from_str(r#"{"RequestType":"Replace","Unknown":1}"#).unwrap();
        assert_eq!(odd.request_type, Some(ModifyRequestType::Other("Replace".into())));
        assert_eq!(
            serde_json::to_string(&odd).unwrap(),
            r#"{"RequestType":"Replace"}"#
        );
    }
}

//! Serde types for the JSON documents that the `hcs` library exchanges with the Windows Host
//! Compute Service: compute-system configuration (schema v2, [`system`], checked by
//! [`validate`]), process parameters (V1 and V2), property queries and responses (V1 and V2),
//! exit statuses, modify requests, operation options, service properties, live-migration
//! documents, HCS's result/error document and the enumerate query.
//!
//! Everything here is pure data with no I/O. Field names follow HCS's PascalCase JSON. Documents
//! *from* HCS tolerate unknown fields (they are ignored, or kept where the type has an `extra`
//! map). Documents *from users* are never round-tripped through these structs by the library: a
//! caller's configuration is passed to HCS verbatim, and these types exist to build and inspect
//! documents.

pub mod cmdline;
pub mod exit;
pub mod migration;
pub mod modify;
pub mod options;
pub mod process;
pub mod properties;
pub mod query;
pub mod result;
pub mod service;
pub mod system;
pub mod unknown;
pub mod validate;

pub use exit::{ExitType, SystemExitStatus};
pub use migration::{
    decode_compatibility_info, decode_migration_event, session_id_from, BlackoutExitedDetails,
    CompatibilityInfo, MigrationCancelOptions, MigrationEvent, MigrationFinalOperation,
    MigrationFinalizedOptions, MigrationInitializeOptions, MigrationOrigin, MigrationResult,
    MigrationStartOptions, MigrationTransferOptions, OperationSystemMigrationNotificationInfo, StartOptions,
    COMPATIBILITY_INFO_QUERY,
};
pub use modify::{
    CloseHandle, ConsoleSize, ModifyRequestType, ModifySettingRequest, ProcessModifyOperation,
    ProcessModifyRequest, StdHandle,
};
pub use options::{SaveOptions, ShutdownOptions, SignalProcessOptions};
pub use process::{command_line_of, ProcessConfig, ProcessDetails, ProcessParameters, ProcessStatus};
pub use properties::{
    ContainerProperties, Properties, PropertyQuery, PropertyQueryV2, PropertyType, Statistics,
};
pub use query::ComputeSystemQuery;
pub use result::{ErrorEvent, ResultDocument};
pub use service::{BasicInformation, ServiceProperties, ServicePropertyQuery, ServicePropertyType};
pub use system::{ComputeSystem, Container, SchemaVersion, SystemKind, VirtualMachine};
pub use validate::{parse_compute_system, DocumentError, DocumentErrorKind};

//! Serde types for the JSON documents that the `hcs` library exchanges with the Windows Host
//! Compute Service: compute-system configuration (schema v2), process parameters, property
//! queries and responses, exit statuses, modify requests, operation options, HCS's result/error
//! document and the enumerate query.
//!
//! Everything here is pure data with no I/O. Field names follow HCS's PascalCase JSON. Documents
//! *from* HCS tolerate unknown fields (they are ignored, or kept where the type has an `extra`
//! map). Documents *from users* are never round-tripped through these structs by the library: a
//! caller's configuration is passed to HCS verbatim, and these types exist to build and inspect
//! documents.

pub mod exit;
pub mod modify;
pub mod options;
pub mod process;
pub mod properties;
pub mod query;
pub mod result;

pub use exit::{ExitType, SystemExitStatus};
pub use modify::{CloseHandle, ConsoleSize, ProcessModifyOperation, ProcessModifyRequest, StdHandle};
pub use options::{SaveOptions, ShutdownOptions, SignalProcessOptions};
pub use process::{ProcessDetails, ProcessStatus};
pub use properties::{ContainerProperties, PropertyQuery, PropertyType};
pub use query::ComputeSystemQuery;
pub use result::{ErrorEvent, ResultDocument};

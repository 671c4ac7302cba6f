//! Live-migration documents (schema v2 only): the options passed to each migration step and the
//! payload of the migration notifications HCS sends while a migration runs.
//!
//! | Step | Options document |
//! |---|---|
//! | start on the destination | [`StartOptions`] `{"DestinationMigrationOptions":{"NetworkSettings":{"SessionId":N}}}` |
//! | initialize on the source | [`MigrationInitializeOptions`] |
//! | start on the source | [`MigrationStartOptions`] `{"NetworkSettings":{"SessionId":N}}` |
//! | transfer | [`MigrationTransferOptions`] `{"Origin":"Source"}` |
//! | finalize | [`MigrationFinalizedOptions`] `{"Origin":..,"FinalizedOperation":"Resume"}` |
//! | cancel | [`MigrationCancelOptions`] `{"Origin":..}` |
//!
//! Enumerations keep values they do not know as `Other(..)`, so a newer HCS cannot make a
//! notification undecodable.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Which side of a migration a document or notification concerns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MigrationOrigin {
    /// The source host (the VM migrates away from it).
    Source,
    /// The destination host (the VM migrates to it).
    Destination,
    /// Any other value, kept verbatim.
    #[serde(untagged)]
    Other(String),
}

/// A live-migration event reported by HCS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MigrationEvent {
    /// Unspecified event.
    Unknown,
    /// The migration completed.
    MigrationDone,
    /// The VM entered the blackout phase (paused for the final transfer).
    BlackoutStarted,
    /// Taking the VM offline completed.
    OfflineDone,
    /// The VM runs again after the blackout phase; details in [`BlackoutExitedDetails`].
    BlackoutExited,
    /// Migration setup completed.
    SetupDone,
    /// Memory and state are still being transferred.
    TransferInProgress,
    /// Migration recovery was performed.
    MigrationRecoveryDone,
    /// The migration failed.
    MigrationFailed,
    /// Any other value, kept verbatim.
    #[serde(untagged)]
    Other(String),
}

/// The outcome accompanying a migration event (usually a terminal one).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MigrationResult {
    /// Invalid or unspecified result.
    Invalid,
    /// The operation succeeded.
    Success,
    /// The migration was cancelled.
    MigrationCancelled,
    /// The guest cancelled the migration.
    GuestInitiatedCancellation,
    /// The migration failed on the source.
    SourceMigrationFailed,
    /// The migration failed on the destination.
    DestinationMigrationFailed,
    /// Migration recovery failed.
    MigrationRecoveryFailed,
    /// Any other value, kept verbatim.
    #[serde(untagged)]
    Other(String),
}

/// The payload of a migration notification (`OperationSystemMigrationNotificationInfo`).
///
/// `AdditionalDetails` depends on the event and is kept as the exact JSON text HCS sent; decode it
/// with [`details`](Self::details) or [`blackout_exited_details`](Self::blackout_exited_details).
/// Because the details are raw JSON text, this type must be parsed from text (as
/// [`decode_migration_event`] does), not from a `serde_json::Value`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct OperationSystemMigrationNotificationInfo {
    /// Which side the notification concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<MigrationOrigin>,
    /// The event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<MigrationEvent>,
    /// The outcome, typically present for terminal events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<MigrationResult>,
    /// Event-specific details, verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_details: Option<Box<RawValue>>,
}

impl PartialEq for OperationSystemMigrationNotificationInfo {
    /// Compares the details by their JSON text.
    fn eq(&self, other: &Self) -> bool {
        self.origin == other.origin
            && self.event == other.event
            && self.result == other.result
            && self.additional_details.as_ref().map(|r| r.get())
                == other.additional_details.as_ref().map(|r| r.get())
    }
}

impl OperationSystemMigrationNotificationInfo {
    /// Decodes `AdditionalDetails` as `T`; `None` when there are no details.
    pub fn details<T: DeserializeOwned>(&self) -> Option<Result<T, serde_json::Error>> {
        self.additional_details
            .as_ref()
            .map(|raw| serde_json::from_str(raw.get()))
    }

    /// The details of a `BlackoutExited` event; `None` for any other event or when there are no
    /// details.
    pub fn blackout_exited_details(&self) -> Option<Result<BlackoutExitedDetails, serde_json::Error>> {
        match self.event {
            Some(MigrationEvent::BlackoutExited) => self.details(),
            _ => None,
        }
    }
}

/// Details of a `BlackoutExited` event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct BlackoutExitedDetails {
    /// How long the blackout lasted, in milliseconds.
    pub blackout_duration_milliseconds: u64,
    /// When the blackout ended (RFC 3339).
    pub blackout_stop_timestamp: String,
}

/// Decodes the event data of a migration notification.
///
/// HCS occasionally delivers a migration notification with no event data: `None`, an empty (or
/// all-whitespace) string and the JSON literal `null` all decode to the zero value
/// ([`Default`]). Text that is not a valid notification is an error.
pub fn decode_migration_event(
    data: Option<&str>,
) -> Result<OperationSystemMigrationNotificationInfo, serde_json::Error> {
    match data.map(str::trim) {
        None | Some("") | Some("null") => Ok(OperationSystemMigrationNotificationInfo::default()),
        Some(text) => serde_json::from_str(text),
    }
}

/// Transport used for the memory transfer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MigrationMemoryTransport {
    /// Memory is copied over a TCP/IP connection (the socket attached to the operation).
    #[serde(rename = "TCP")]
    Tcp,
    /// Any other value, kept verbatim.
    #[serde(untagged)]
    Other(String),
}

/// Options of the initialize step (`MigrationInitializeOptions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct MigrationInitializeOptions {
    /// Side the step runs on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<MigrationOrigin>,
    /// Transport of the memory transfer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_transport: Option<MigrationMemoryTransport>,
    /// Throttling of the memory transfer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_transfer_throttle_params: Option<MemoryMigrationTransferThrottleParams>,
    /// Compression settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_settings: Option<MigrationCompressionSettings>,
    /// Whether memory checksums are verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum_verification: Option<bool>,
    /// Whether performance tracing is enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perf_tracing_enabled: Option<bool>,
    /// Whether the migration is cancelled when the blackout threshold is exceeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_if_blackout_threshold_exceeds: Option<bool>,
    /// Whether the memory transfer is prepared with extended timeouts (cross-version migration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepare_memory_transfer_mode: Option<bool>,
    /// Compatibility data the destination VM needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compatibility_data: Option<CompatibilityInfo>,
}

impl MigrationInitializeOptions {
    /// Options for `origin` with the memory transferred over TCP.
    pub fn new(origin: MigrationOrigin) -> Self {
        MigrationInitializeOptions {
            origin: Some(origin),
            memory_transport: Some(MigrationMemoryTransport::Tcp),
            ..Default::default()
        }
    }
}

/// Throttling of the migration memory transfer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct MemoryMigrationTransferThrottleParams {
    /// Whether throttling is skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_throttling: Option<bool>,
    /// Scale of the throttling, as a percentage (1-100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttling_scale: Option<f64>,
    /// Lowest percentage the transfer can be throttled to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_throttle_percentage: Option<u8>,
    /// Number of brownout passes targeted before the blackout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_number_of_brownout_transfer_passes: Option<u32>,
    /// Brownout pass from which throttling starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starting_brownout_pass_number_for_throttling: Option<u32>,
    /// Most brownout passes before the blackout is forced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_number_of_brownout_transfer_passes: Option<u32>,
    /// Expected blackout transfer time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_blackout_transfer_time: Option<u32>,
    /// Blackout duration beyond which the migration is cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blackout_time_threshold_for_cancelling_migration: Option<u32>,
}

/// Compression settings of a migration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct MigrationCompressionSettings {
    /// Number of (de)compression threads; non-zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle_worker_count: Option<u32>,
}

/// Opaque VM compatibility data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct CompatibilityInfo {
    /// The data, base64-encoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// Network settings of a migration: the session of the socket attached to the operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct MigrationNetworkSettings {
    /// Session id of the connection between source and destination (omitted when 0).
    #[serde(skip_serializing_if = "is_zero")]
    pub session_id: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Options of the start step on the source (`MigrationStartOptions`), also nested in
/// [`StartOptions`] on the destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct MigrationStartOptions {
    /// Network settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_settings: Option<MigrationNetworkSettings>,
}

impl MigrationStartOptions {
    /// Options for the connection with session id `session_id`.
    pub fn session(session_id: u32) -> Self {
        MigrationStartOptions {
            network_settings: Some(MigrationNetworkSettings { session_id }),
        }
    }
}

/// Options of `HcsStartComputeSystem` (`StartOptions`); used on a migration destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct StartOptions {
    /// Settings for starting as a migration destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_migration_options: Option<MigrationStartOptions>,
}

impl StartOptions {
    /// Start as the destination of the migration connection with session id `session_id`.
    pub fn migration_destination(session_id: u32) -> Self {
        StartOptions {
            destination_migration_options: Some(MigrationStartOptions::session(session_id)),
        }
    }
}

/// Options of the transfer step (`MigrationTransferOptions`): `{"Origin": ..}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct MigrationTransferOptions {
    /// Side the step runs on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<MigrationOrigin>,
}

impl MigrationTransferOptions {
    /// Options for `origin`.
    pub fn new(origin: MigrationOrigin) -> Self {
        MigrationTransferOptions { origin: Some(origin) }
    }
}

/// Options of the cancel step: `{"Origin": ..}`, the same shape as the transfer options.
pub type MigrationCancelOptions = MigrationTransferOptions;

/// The final state transition of a migrated VM.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MigrationFinalOperation {
    /// Keep (or start) the VM running.
    Resume,
    /// Stop the VM.
    Stop,
    /// Any other value, kept verbatim.
    #[serde(untagged)]
    Other(String),
}

/// Options of the finalize step (`MigrationFinalizedOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct MigrationFinalizedOptions {
    /// Side the step runs on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<MigrationOrigin>,
    /// What happens to the VM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finalized_operation: Option<MigrationFinalOperation>,
}

impl MigrationFinalizedOptions {
    /// Options finalizing on `origin` with `operation`.
    pub fn new(origin: MigrationOrigin, operation: MigrationFinalOperation) -> Self {
        MigrationFinalizedOptions {
            origin: Some(origin),
            finalized_operation: Some(operation),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_or_missing_event_data_is_the_zero_value() {
        for data in [None, Some(""), Some("  "), Some("null")] {
            assert_eq!(
                decode_migration_event(data).unwrap(),
                OperationSystemMigrationNotificationInfo::default()
            );
        }
        assert!(decode_migration_event(Some("{not json")).is_err());
        assert!(decode_migration_event(Some(r#"{"Event": 7}"#)).is_err());
    }

    #[test]
    fn blackout_exited_keeps_its_details_verbatim() {
        let text = r#"{"Origin":"Source","Event":"BlackoutExited","Result":"Success",
            "AdditionalDetails": {"BlackoutDurationMilliseconds": 412, "BlackoutStopTimestamp": "2024-05-01T10:00:00.5Z",  "Extra": [1,2]}}"#;
        let info = decode_migration_event(Some(text)).unwrap();
        assert_eq!(info.origin, Some(MigrationOrigin::Source));
        assert_eq!(info.event, Some(MigrationEvent::BlackoutExited));
        assert_eq!(info.result, Some(MigrationResult::Success));
        assert_eq!(
            info.additional_details.as_ref().unwrap().get(),
            r#"{"BlackoutDurationMilliseconds": 412, "BlackoutStopTimestamp": "2024-05-01T10:00:00.5Z",  "Extra": [1,2]}"#
        );
        let d = info.blackout_exited_details().unwrap().unwrap();
        assert_eq!(d.blackout_duration_milliseconds, 412);
        assert_eq!(d.blackout_stop_timestamp, "2024-05-01T10:00:00.5Z");
        let out = serde_json::to_string(&info).unwrap();
        assert!(
            out.contains(r#""AdditionalDetails":{"BlackoutDurationMilliseconds": 412,"#),
            "{out}"
        );
        assert_eq!(decode_migration_event(Some(&out)).unwrap(), info);
    }

    #[test]
    fn unknown_events_and_results_are_tolerated() {
        let info = decode_migration_event(Some(
            r#"{"Origin":"Sideways","Event":"WarpDone","Result":"Partial"}"#,
        ))
        .unwrap();
        assert_eq!(info.origin, Some(MigrationOrigin::Other("Sideways".into())));
        assert_eq!(info.event, Some(MigrationEvent::Other("WarpDone".into())));
        assert_eq!(info.result, Some(MigrationResult::Other("Partial".into())));
        assert!(info.blackout_exited_details().is_none());
        let info = decode_migration_event(Some(
            r#"{"Event":"MigrationFailed","Result":"DestinationMigrationFailed"}"#,
        ))
        .unwrap();
        assert_eq!(info.event, Some(MigrationEvent::MigrationFailed));
        assert_eq!(info.result, Some(MigrationResult::DestinationMigrationFailed));
        assert_eq!(info.details::<serde_json::Value>().map(|r| r.is_ok()), None);
    }

    #[test]
    fn option_documents_match_the_documented_shapes() {
        assert_eq!(
            serde_json::to_string(&StartOptions::migration_destination(7)).unwrap(),
            r#"{"DestinationMigrationOptions":{"NetworkSettings":{"SessionId":7}}}"#
        );
        assert_eq!(
            serde_json::to_string(&MigrationStartOptions::session(9)).unwrap(),
            r#"{"NetworkSettings":{"SessionId":9}}"#
        );
        assert_eq!(
            serde_json::to_string(&MigrationTransferOptions::new(MigrationOrigin::Destination)).unwrap(),
            r#"{"Origin":"Destination"}"#
        );
        assert_eq!(
            serde_json::to_string(&MigrationCancelOptions::default()).unwrap(),
            "{}"
        );
        assert_eq!(
            serde_json::to_string(&MigrationFinalizedOptions::new(
                MigrationOrigin::Source,
                MigrationFinalOperation::Resume
            ))
            .unwrap(),
            r#"{"Origin":"Source","FinalizedOperation":"Resume"}"#
        );
        let init = MigrationInitializeOptions {
            checksum_verification: Some(true),
            memory_transfer_throttle_params: Some(MemoryMigrationTransferThrottleParams {
                throttling_scale: Some(50.0),
                ..Default::default()
            }),
            compression_settings: Some(MigrationCompressionSettings {
                throttle_worker_count: Some(4),
            }),
            ..MigrationInitializeOptions::new(MigrationOrigin::Source)
        };
        assert_eq!(
            serde_json::to_value(&init).unwrap(),
            serde_json::json!({"Origin":"Source","MemoryTransport":"TCP",
                "MemoryTransferThrottleParams":{"ThrottlingScale":50.0},
                "CompressionSettings":{"ThrottleWorkerCount":4},"ChecksumVerification":true})
        );
        let back: MigrationInitializeOptions =
            serde_json::from_value(serde_json::to_value(&init).unwrap()).unwrap();
        assert_eq!(back, init);
    }
}

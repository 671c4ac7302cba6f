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

impl MigrationEvent {
    /// `true` for the events that end a migration on the side that reports them:
    /// `MigrationDone`, `MigrationFailed` and `MigrationRecoveryDone`.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            MigrationEvent::MigrationDone
                | MigrationEvent::MigrationFailed
                | MigrationEvent::MigrationRecoveryDone
        )
    }
    /// `true` for the progress events (`SetupDone`, `TransferInProgress`, `BlackoutStarted`,
    /// `OfflineDone`, `BlackoutExited`), for which a missing `Result` means success.
    pub fn is_progress(&self) -> bool {
        matches!(
            self,
            MigrationEvent::SetupDone
                | MigrationEvent::TransferInProgress
                | MigrationEvent::BlackoutStarted
                | MigrationEvent::OfflineDone
                | MigrationEvent::BlackoutExited
        )
    }
}

impl MigrationResult {
    /// `true` for `Success`.
    pub fn is_success(&self) -> bool {
        *self == MigrationResult::Success
    }
}

impl OperationSystemMigrationNotificationInfo {
    /// The result with hcsshim's rule applied (`pkg/migration/parse.go`): a progress event with
    /// no `Result` succeeded; a terminal event with no `Result` stays `None` (unspecified).
    pub fn effective_result(&self) -> Option<MigrationResult> {
        match (&self.result, &self.event) {
            (Some(r), _) => Some(r.clone()),
            (None, Some(e)) if e.is_progress() => Some(MigrationResult::Success),
            _ => None,
        }
    }
}

/// The properties query (PropertiesV3) that returns a VM's migration compatibility data:
/// `{"Queries":{"CompatibilityInfo":null}}`.
pub const COMPATIBILITY_INFO_QUERY: &str = r#"{"Queries":{"CompatibilityInfo":null}}"#;

/// Decodes the answer to [`COMPATIBILITY_INFO_QUERY`]. The exact envelope is undocumented:
/// `{"CompatibilityInfo":{"Data":..}}` (the PropertiesV3 shape, what the simulator answers) and a
/// bare `{"Data":..}` are both accepted.
pub fn decode_compatibility_info(text: &str) -> Result<CompatibilityInfo, serde_json::Error> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    match v.get("CompatibilityInfo") {
        Some(inner) => serde_json::from_value(inner.clone()),
        None => serde_json::from_value(v),
    }
}

/// The `SessionId` both hosts use for the migration session named `session`, as hcsshim derives
/// it (`sessionIDToUint32`): a GUID is normalised first (lower case, no braces), then the first
/// four bytes of the SHA-256 of the text, big endian. Both hosts therefore agree without
/// negotiating.
pub fn session_id_from(session: &str) -> u32 {
    let trimmed = session.trim();
    let unbraced = trimmed
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(trimmed);
    let normalised = if is_guid(unbraced) {
        unbraced.to_ascii_lowercase()
    } else {
        session.to_owned()
    };
    let digest = sha256(normalised.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// SHA-256 (FIPS 180-4), for [`session_id_from`] only.
fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for chunk in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in chunk.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
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
    fn sha256_matches_the_fips_vectors_and_session_ids_are_stable() {
        let hex = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(sha256(&[b'a'; 1000])),
            "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
        );
        assert_eq!(session_id_from("abc"), 0xba78_16bf);
        assert_eq!(
            session_id_from("{0F8FAD5B-D9CB-469F-A165-70867728950E}"),
            session_id_from("0f8fad5b-d9cb-469f-a165-70867728950e")
        );
        assert_ne!(session_id_from("a"), session_id_from("b"));
    }

    #[test]
    fn missing_result_means_success_for_progress_events_only() {
        let e = |t: &str| decode_migration_event(Some(t)).unwrap();
        assert_eq!(
            e(r#"{"Event":"SetupDone"}"#).effective_result(),
            Some(MigrationResult::Success)
        );
        assert_eq!(e(r#"{"Event":"MigrationDone"}"#).effective_result(), None);
        assert_eq!(
            e(r#"{"Event":"MigrationDone","Result":"MigrationCancelled"}"#).effective_result(),
            Some(MigrationResult::MigrationCancelled)
        );
        assert!(MigrationEvent::MigrationFailed.is_terminal() && !MigrationEvent::OfflineDone.is_terminal());
    }

    #[test]
    fn compatibility_info_decodes_from_either_envelope() {
        let a = decode_compatibility_info(r#"{"CompatibilityInfo":{"Data":"AAEC"}}"#).unwrap();
        let b = decode_compatibility_info(r#"{"Data":"AAEC"}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.data.as_deref(), Some("AAEC"));
        assert!(decode_compatibility_info("[").is_err());
    }

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

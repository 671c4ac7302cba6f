//! Fuzz-target bodies for every parser in the workspace that takes outside input (issue 12).
//!
//! Each target is a plain function taking the fuzzer's bytes. Where the API under test takes a
//! `&str`, input that is not UTF-8 is skipped (except the lifecycle target, which converts its
//! payloads lossily). A target asserts that nothing panics and, where a parse succeeds, checks
//! a cheap invariant (re-serialising and re-parsing gives an equal value; an error names a
//! JSON path; …); a failed check panics, which the fuzzer reports as a crash.
//!
//! | Target | What it feeds |
//! |---|---|
//! | [`compute_system`] | `hcs_schema::parse_compute_system` (what `hcsctl --config` checks) |
//! | [`process_documents`] | `ProcessParameters`, `ProcessConfig`, `ProcessStatus`, `command_line_of` |
//! | [`result_document`] | `ResultDocument::parse`, `hcs::Error::from_failure` + `Display` + `events()` |
//! | [`notification_payloads`] | `SystemExitStatus`, `ProcessStatus`, `decode_migration_event` |
//! | [`lifecycle`] | arbitrary notifications through `hcs::dispatch` into a live `System`/`Process` on the fake driver (V1 and V2) |
//! | [`fault_plan`] | `hcs_sim::FaultPlan::from_json` |
//! | [`names`] | `NotificationKind::from_name`, `Method::from_name` |
//! | [`simd_frames`] | the `hcs-simd` wire: `hcs_simd::protocol::Decoder` in any split, client and server frames (Unix only) |
//!
//! [`TARGETS`] lists them by name; the name is also the name of the cargo-fuzz target and of
//! its corpus directory.
//!
//! # Running
//!
//! The coverage-guided fuzzers live in the cargo-fuzz project `fuzz/` at the repository root
//! (not a workspace member; it needs a nightly toolchain and `cargo install cargo-fuzz`). Each
//! `fuzz/fuzz_targets/<target>.rs` only calls the function of the same name here:
//!
//! ```sh
//! cargo +nightly fuzz list
//! cargo +nightly fuzz run lifecycle -- -max_total_time=180 -jobs=1
//! cargo +nightly fuzz cmin lifecycle          # minimise the corpus before committing it
//! ```
//!
//! The committed seed corpus is `fuzz/corpus/<target>/`; inputs that once crashed a target are
//! kept in `fuzz/regressions/<target>/`. `tests/corpus.rs` runs every target over both on stable,
//! without libFuzzer, as part of `cargo test --workspace`:
//!
//! ```sh
//! cargo test -p hcs-fuzz
//! ```

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use hcs::{ApiGeneration, Cause, Driver, Failure, HResult, Method, NotificationKind, Process, System};
use hcs_schema::{
    decode_migration_event, parse_compute_system, ProcessConfig, ProcessParameters, ProcessStatus,
    ResultDocument, SystemExitStatus,
};
use hcs_testkit::{Answer, FakeDriver};
use serde_json::Value;

/// The body of a fuzz target: takes the fuzzer's bytes, panics on a finding.
pub type Target = fn(&[u8]);

/// Every target: its name (the cargo-fuzz target and corpus directory) and its body.
pub const TARGETS: &[(&str, Target)] = &[
    ("compute_system", compute_system),
    ("process_documents", process_documents),
    ("result_document", result_document),
    ("notification_payloads", notification_payloads),
    ("lifecycle", lifecycle),
    ("fault_plan", fault_plan),
    ("names", names),
    #[cfg(unix)]
    ("simd_frames", simd_frames),
];

/// Parses `text` as `T`; when that succeeds, checks that serialising the value and parsing the
/// result gives an equal value, and returns it.
fn round_trip<T>(what: &str, text: &str) -> Option<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + Debug,
{
    let value: T = serde_json::from_str(text).ok()?;
    let again = serde_json::to_string(&value)
        .unwrap_or_else(|e| panic!("{what}: a parsed value does not serialise: {e}: {value:?}"));
    let back: T = serde_json::from_str(&again)
        .unwrap_or_else(|e| panic!("{what}: its own serialisation does not parse: {e}: {again}"));
    assert_eq!(back, value, "{what}: round trip through {again}");
    Some(value)
}

/// Compute-system documents: [`hcs_schema::parse_compute_system`], the check `hcsctl --config`
/// runs.
///
/// A document that parses must re-serialise to a document that parses to an equal value. A
/// rejected one must name a JSON path (`$` for the document itself), show it in its message, and
/// be classified "not JSON" exactly when `serde_json` cannot read the text as JSON.
pub fn compute_system(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_compute_system(text) {
        Ok(doc) => {
            let again = serde_json::to_string(&doc).expect("a parsed compute-system document serialises");
            match parse_compute_system(&again) {
                Ok(back) => assert_eq!(back, doc, "round trip through {again}"),
                Err(e) => panic!("the serialisation of a valid document is rejected: {e}: {again}"),
            }
        }
        Err(e) => {
            assert!(!e.path.is_empty(), "an error without a path: {e:?}");
            let shown = e.to_string();
            assert!(
                shown.contains(&format!(" at {}: ", e.path)),
                "the message does not name the path: {shown}"
            );
            let is_json = serde_json::from_str::<Value>(text).is_ok();
            assert_eq!(e.is_not_json(), !is_json, "misclassified: {e:?}");
        }
    }
}

/// Process documents: V2 [`ProcessParameters`], V1 [`ProcessConfig`] and [`ProcessStatus`]
/// through `serde_json::from_str`, each checked to round-trip, and
/// [`hcs_schema::command_line_of`], which must agree with the typed documents.
pub fn process_documents(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let v2 = round_trip::<ProcessParameters>("ProcessParameters", text);
    let v1 = round_trip::<ProcessConfig>("ProcessConfig", text);
    round_trip::<ProcessStatus>("ProcessStatus", text);
    let command_line = hcs_schema::command_line_of(text);
    // Both typed documents read maps only (they have flattened members), so a parse means the
    // text is a JSON object, and its `CommandLine` is what `command_line_of` finds.
    if let Some(p) = v2 {
        assert_eq!(
            command_line, p.command_line,
            "command_line_of vs ProcessParameters"
        );
    }
    if let Some(c) = v1 {
        assert_eq!(command_line, c.command_line, "command_line_of vs ProcessConfig");
    }
}

/// HRESULTs a failure is built with in [`result_document`]: success, a Win32 code, an
/// HCS code, an HCS code in its Win32 form, and `E_FAIL`.
const FAILURE_CODES: [u32; 5] = [0, 0x490, 0x8037_010E, 0xC037_0106, 0x8000_4005];

/// Result/error documents: [`ResultDocument::parse`] (a parsed document round-trips; `None` only
/// for blank text), and [`hcs::Error::from_failure`] of a failure carrying the text: its code is
/// kept (Win32 form), its events are exactly the document's (none when it does not parse), and
/// its `Display` shows every event.
pub fn result_document(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = ResultDocument::parse(text);
    match &parsed {
        Ok(None) => assert!(text.trim().is_empty(), "a non-blank document parsed to None"),
        Ok(Some(doc)) => {
            let again = serde_json::to_string(doc).expect("a parsed result document serialises");
            match ResultDocument::parse(&again) {
                Ok(Some(back)) => assert_eq!(&back, doc, "round trip through {again}"),
                other => panic!("re-parse of {again} gave {other:?}"),
            }
        }
        Err(_) => {}
    }
    let expected: &[hcs_schema::ErrorEvent] = match &parsed {
        Ok(Some(doc)) => &doc.error_events,
        _ => &[],
    };
    for code in FAILURE_CODES {
        let e = hcs::Error::from_failure(&Failure::with_document(code, text));
        assert_eq!(e.hresult(), Some(HResult(code).to_win32_form()));
        assert_eq!(e.events(), expected);
        let shown = e.to_string();
        for event in e.events() {
            assert!(shown.contains(&event.to_string()), "{shown} lacks {event}");
        }
        let _ = format!("{e:?}");
    }
}

/// Notification payloads of both API generations: `SystemExited`'s [`SystemExitStatus`],
/// `ProcessExited`'s [`ProcessStatus`] (both round-trip when they parse) and the live-migration
/// event through [`decode_migration_event`] (a decoded event re-serialises to text that decodes
/// to an equal event; its details decode or fail without panicking).
pub fn notification_payloads(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    round_trip::<SystemExitStatus>("SystemExitStatus", text);
    round_trip::<ProcessStatus>("ProcessStatus", text);
    if let Ok(info) = decode_migration_event(Some(text)) {
        let again = serde_json::to_string(&info).expect("a decoded migration event serialises");
        match decode_migration_event(Some(&again)) {
            Ok(back) => assert_eq!(back, info, "round trip through {again}"),
            Err(e) => panic!("re-decode of {again} failed: {e}"),
        }
        let _ = info.details::<Value>();
        let _ = info.blackout_exited_details();
    }
}

/// The notification kinds the [`lifecycle`] target picks from by its kind byte (a larger byte
/// `b` is `Other(b)`).
const KINDS: [NotificationKind; 14] = [
    NotificationKind::SystemExited,
    NotificationKind::SystemCreateCompleted,
    NotificationKind::SystemStartCompleted,
    NotificationKind::SystemPauseCompleted,
    NotificationKind::SystemResumeCompleted,
    NotificationKind::SystemSaveCompleted,
    NotificationKind::ProcessExited,
    NotificationKind::ServiceDisconnect,
    NotificationKind::LiveMigration,
    NotificationKind::Other(0),
    NotificationKind::Other(0x6),
    NotificationKind::Other(0xE),
    NotificationKind::Other(0x8000_0002),
    NotificationKind::Other(u32::MAX),
];

/// The statuses the [`lifecycle`] target picks from by its status byte; a larger byte is
/// spread over the HCS, HCS-Win32 and Win32 ranges by [`status_of`].
const STATUSES: [u32; 20] = [
    0x0,         // S_OK
    0x1,         // S_FALSE
    0x8037_0106, // HCS_E_UNEXPECTED_EXIT
    0xC037_0106, // ERROR_VMCOMPUTE_UNEXPECTED_EXIT
    0x8037_0107, // HCS_E_TERMINATED
    0xC037_0107, // ERROR_VMCOMPUTE_TERMINATED
    0x8037_0110, // HCS_E_SYSTEM_ALREADY_STOPPED
    0x8037_011E, // HCS_E_SERVICE_DISCONNECT
    0x8037_011F, // HCS_E_PROCESS_ALREADY_STOPPED
    0x8037_0117, // HCS_E_OPERATION_PENDING
    0xC037_0103, // ERROR_VMCOMPUTE_OPERATION_PENDING
    0x8037_0109, // HCS_E_CONNECTION_TIMEOUT
    0x8037_010A, // HCS_E_CONNECTION_CLOSED
    0x8037_010E, // HCS_E_SYSTEM_NOT_FOUND
    0x8007_0006, // E_HANDLE
    0x8007_0490, // ERROR_NOT_FOUND as an HRESULT
    0x8007_06BA, // RPC_S_SERVER_UNAVAILABLE as an HRESULT
    0x8000_4005, // E_FAIL
    0x8000_FFFF, // E_UNEXPECTED
    0xFFFF_FFFF,
];

fn kind_of(b: u8) -> NotificationKind {
    KINDS
        .get(usize::from(b))
        .copied()
        .unwrap_or(NotificationKind::Other(u32::from(b)))
}

fn status_of(b: u8) -> HResult {
    match STATUSES.get(usize::from(b)) {
        Some(&s) => HResult(s),
        None => {
            let low = u32::from(b);
            HResult(match b % 4 {
                0 => 0x8037_0100 | (low >> 2),
                1 => 0xC037_0100 | (low >> 2),
                2 => 0x8007_0000 | low,
                _ => low,
            })
        }
    }
}

/// Setup byte (first byte of a [`lifecycle`] input): the driver speaks V2.
pub const SETUP_V2: u8 = 0x01;
/// Setup byte: the system is not started.
pub const SETUP_NO_START: u8 = 0x02;
/// Setup byte: no process is created (events for the process go to the system).
pub const SETUP_NO_PROCESS: u8 = 0x04;

/// Event flag: the event goes to the process (else to the system).
pub const EVENT_TO_PROCESS: u8 = 0x01;
/// Event flag: no payload (a null pointer), whatever the event's bytes.
pub const EVENT_NO_PAYLOAD: u8 = 0x02;
/// Event flag: the payload also becomes the answer of the process properties query, through
/// which the lifecycle reads a V1 process's exit code.
pub const EVENT_PROCESS_PROPERTIES: u8 = 0x04;
/// Event flag: the payload also becomes the answer of a system properties query, which is run.
pub const EVENT_SYSTEM_PROPERTIES: u8 = 0x08;
/// Event flag: the target is closed before the event is delivered (a late callback).
pub const EVENT_CLOSE_FIRST: u8 = 0x10;
/// Event flag: after the event, query both objects (exit status, exit error, wait, exit code).
pub const EVENT_QUERY: u8 = 0x20;
/// Event flag: the event is delivered twice.
pub const EVENT_TWICE: u8 = 0x40;

/// Most events one [`lifecycle`] input delivers.
pub const MAX_EVENTS: usize = 32;

/// How long the [`lifecycle`] target lets a V1 process's exit resolve (a worker thread queries
/// the process properties) before calling a missing exit a bug.
const EXIT_RESOLVES_WITHIN: Duration = Duration::from_secs(5);

/// The lifecycle's handling of arbitrary notifications, payloads included.
///
/// Creates a `System` (and a `Process` in it) on a [`FakeDriver`] of either API generation, then
/// delivers a sequence of notifications through [`hcs::dispatch`], querying `exit_status()`,
/// `exit_error()`, `exit()`, `exit_code()` and `wait_timeout(0)` along the way and at the end.
///
/// Input layout: one setup byte (`SETUP_*` bits), then events separated by `0xFF` (a byte that
/// never occurs in UTF-8 text). An event is a flags byte (`EVENT_*` bits), a kind byte (an index
/// into the tracked kinds and a few `Other` values; larger bytes are `Other(b)`), a status byte
/// (an index into interesting HRESULTs; larger bytes are spread over the HCS and Win32 ranges),
/// and the payload (the rest of the event, converted lossily to UTF-8). Missing bytes are zero.
///
/// Checked: nothing panics; a live object's context accepts every notification ([`hcs::dispatch`]
/// swallows a panicking sink and reports it as not delivered); a closed object's context accepts
/// none; the queries agree with each other (`exit_code()` and `exit()`, `exit_error()` and
/// `wait_timeout(0)`); a process that was sent `ProcessExited` while open has stopped within
/// seconds; and once both objects are closed the driver has no open handle or registration.
pub fn lifecycle(data: &[u8]) {
    let (&setup, rest) = data.split_first().unwrap_or((&0, &[]));
    let generation = if setup & SETUP_V2 != 0 {
        ApiGeneration::V2
    } else {
        ApiGeneration::V1
    };
    let fake = FakeDriver::with_generation(generation);
    let driver: Arc<dyn Driver> = fake.clone();
    let system = System::create(
        driver,
        "fuzz",
        r#"{"SchemaVersion":{"Major":2,"Minor":1},"Container":{}}"#,
    )
    .expect("create succeeds on the fake");
    if setup & SETUP_NO_START == 0 {
        system.start().expect("start succeeds on the fake");
    }
    let process = if setup & SETUP_NO_PROCESS == 0 {
        Some(
            system
                .create_process(r#"{"CommandLine":"cmd /c exit 3"}"#)
                .expect("create_process succeeds on the fake"),
        )
    } else {
        None
    };
    let system_ctx = system
        .notify_context()
        .expect("an open system has a context")
        .raw();
    let process_ctx = process
        .as_ref()
        .map(|p| p.notify_context().expect("an open process has a context").raw());

    let mut process_exit_sent = false;
    for event in rest.split(|&b| b == 0xFF).take(MAX_EVENTS) {
        let byte = |i: usize| event.get(i).copied().unwrap_or(0);
        let (flags, kind, status) = (byte(0), kind_of(byte(1)), status_of(byte(2)));
        let payload = String::from_utf8_lossy(event.get(3..).unwrap_or_default());
        let payload = (flags & EVENT_NO_PAYLOAD == 0).then_some(payload.as_ref());

        if let Some(text) = payload {
            if flags & EVENT_PROCESS_PROPERTIES != 0 {
                fake.set_default(Method::GetProcessProperties, Answer::ok_with(text));
            }
            if flags & EVENT_SYSTEM_PROPERTIES != 0 {
                fake.set_default(Method::GetComputeSystemProperties, Answer::ok_with(text));
                if let Err(e) = system.properties(&[]) {
                    let _ = e.to_string();
                }
                if let Err(e) = system.properties_v2(&[]) {
                    let _ = e.to_string();
                }
            }
        }

        let to_process = flags & EVENT_TO_PROCESS != 0 && process.is_some();
        let (ctx, closed) = match (&process, process_ctx) {
            (Some(p), Some(ctx)) if to_process => {
                if flags & EVENT_CLOSE_FIRST != 0 {
                    let _ = p.close();
                }
                (ctx, p.notify_context().is_none())
            }
            _ => {
                if flags & EVENT_CLOSE_FIRST != 0 {
                    let _ = system.close();
                }
                (system_ctx, system.notify_context().is_none())
            }
        };
        for _ in 0..if flags & EVENT_TWICE != 0 { 2 } else { 1 } {
            let delivered = hcs::dispatch(ctx, kind, status, payload);
            assert_eq!(
                delivered,
                !closed,
                "dispatch of {kind} {status} to a {} object",
                if closed { "closed" } else { "live" }
            );
        }
        if to_process && kind == NotificationKind::ProcessExited && !closed {
            process_exit_sent = true;
        }
        if flags & EVENT_QUERY != 0 {
            query(&system, process.as_ref());
        }
    }

    if let Some(p) = &process {
        if process_exit_sent {
            if let Err(e) = p.wait_timeout(EXIT_RESOLVES_WITHIN) {
                assert!(
                    !matches!(e.cause(), Cause::Timeout),
                    "a process sent ProcessExited has not stopped: {e}"
                );
            }
        }
    }
    query(&system, process.as_ref());
    if let Some(p) = &process {
        p.close().expect("close succeeds on the fake");
    }
    system.close().expect("close succeeds on the fake");
    query(&system, process.as_ref());
    fake.assert_no_leaks();
    // Late callbacks after the close are dropped.
    for ctx in std::iter::once(system_ctx).chain(process_ctx) {
        assert!(!hcs::dispatch(
            ctx,
            NotificationKind::SystemExited,
            0u32,
            Some("{}")
        ));
        assert!(!hcs::dispatch(ctx, NotificationKind::ProcessExited, 0u32, None));
    }
}

/// Runs every query the [`lifecycle`] target checks, on both objects, and checks that they
/// agree.
fn query(system: &System, process: Option<&Process>) {
    let status = system.exit_status();
    let error = system.exit_error();
    let waited = system.wait_timeout(Duration::ZERO);
    let not_exited = error
        .as_ref()
        .is_some_and(|e| matches!(e.cause(), Cause::NotExited));
    if let Some(e) = &error {
        let _ = e.to_string();
    }
    if let Err(e) = &waited {
        let _ = e.to_string();
    }
    let _ = system.stopped_at();
    assert_eq!(
        // A wait *failure* may carry HCS's own timeout code (`is_timeout()` holds for it
        // too); only `Cause::Timeout` means that the wait itself timed out.
        waited
            .as_ref()
            .is_err_and(|e| matches!(e.cause(), Cause::Timeout)),
        not_exited,
        "System::wait_timeout(0) = {waited:?} vs exit_error() = {error:?}"
    );
    if status.is_some() {
        assert!(
            !not_exited,
            "an exit status {status:?} but exit_error says not exited"
        );
    }

    if let Some(p) = process {
        // exit_code first: the outcome is a latch, so a later exit() sees at least as much.
        let code = p.exit_code();
        let exit = p.exit();
        let waited = p.wait_timeout(Duration::ZERO);
        if let Err(e) = &code {
            let _ = e.to_string();
        }
        if let Err(e) = &waited {
            let _ = e.to_string();
        }
        if let Ok(v) = code {
            match exit {
                Some(x) => assert_eq!(x.as_i64(), v, "exit() {x:?} vs exit_code() {v}"),
                None => panic!("exit_code() = {v} but exit() = None"),
            }
        }
    }
}

/// Fault plans: [`hcs_sim::FaultPlan::from_json`]. A plan that parses validates and round-trips
/// through [`hcs_sim::FaultPlan::to_json`]; a rejected one names the path of the problem (`$`
/// for the document itself, else the offending member) at the start of its message.
pub fn fault_plan(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match hcs_sim::FaultPlan::from_json(text) {
        Ok(plan) => {
            if let Err(e) = plan.validate() {
                panic!("a parsed plan does not validate: {e}");
            }
            let again = plan.to_json().to_string();
            match hcs_sim::FaultPlan::from_json(&again) {
                Ok(back) => assert_eq!(back, plan, "round trip through {again}"),
                Err(e) => panic!("the plan's own JSON is rejected: {e}: {again}"),
            }
        }
        Err(e) => {
            let shown = e.to_string();
            match &e {
                hcs_sim::PlanError::Invalid { path, .. } => {
                    assert!(!path.is_empty(), "an error without a path: {shown}");
                    assert!(shown.starts_with(&format!("{path}: ")), "{shown}");
                }
                hcs_sim::PlanError::Io { .. } => panic!("from_json reported an I/O error: {shown}"),
            }
        }
    }
}

/// Names: [`NotificationKind::from_name`] and [`Method::from_name`]. A name that parses is the
/// value's own rendering (for a method, with the optional `Hcs` prefix removed).
pub fn names(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(kind) = NotificationKind::from_name(text) {
        assert_eq!(kind.to_string(), text);
    }
    if let Some(method) = Method::from_name(text) {
        assert_eq!(method.name(), text.strip_prefix("Hcs").unwrap_or(text));
    }
}

/// The `hcs-simd` frame decoder (what the service reads from every client, and the client
/// driver from the service): the first byte picks a chunk size, the rest is fed to a
/// [`hcs_simd::protocol::Decoder`] in chunks of that size. Every frame must split cleanly or
/// fail with an error (never a panic); each body that decodes as a client or server frame must
/// re-encode to a frame that decodes to an equal value.
#[cfg(unix)]
pub fn simd_frames(data: &[u8]) {
    use hcs_simd::protocol::{decode, encode, ClientFrame, Decoder, ServerFrame};
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut d = Decoder::new();
    for chunk in rest.chunks(step) {
        d.push(chunk);
        loop {
            match d.next_body() {
                Ok(Some(body)) => {
                    if let Ok(f) = decode::<ClientFrame>(&body) {
                        let again = encode(&f).expect("a decoded frame re-encodes");
                        assert_eq!(decode::<ClientFrame>(&again[4..]).expect("re-decodes"), f);
                    }
                    if let Ok(f) = decode::<ServerFrame>(&body) {
                        let again = encode(&f).expect("a decoded frame re-encodes");
                        assert_eq!(decode::<ServerFrame>(&again[4..]).expect("re-decodes"), f);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = d.finish();
}

//! The driver contract: the one seam between the lifecycle layer and HCS.
//!
//! A [`Driver`] makes exactly one HCS call per method and reports exactly what HCS said:
//! success with an optional document, failure with an HRESULT and an optional result document,
//! or *pending*. Drivers never wait for notifications, never retry and never swallow errors; all
//! of that lives in the lifecycle layer ([`crate::System`], [`crate::Process`]), once, for every
//! driver. Notifications flow back through [`crate::dispatch`] with the [`NotifyContext`] the
//! lifecycle handed to the driver.
//!
//! # Rules every driver follows
//!
//! * Handles are opaque, non-zero `u64` values chosen by the driver ([`SystemHandle`],
//!   [`ProcessHandle`], [`CallbackHandle`]). The lifecycle never interprets them.
//! * The pending-capable calls (create, start, pause, resume, save) receive the
//!   [`NotifyContext`] of the object. A driver that reports [`Reply::pending`] later delivers the
//!   matching `*Completed` notification to that context (V1 does so through its registered
//!   callback, V2 turns its operation completion into the same notification).
//! * `unregister_*_callback` returns only after callbacks already running for that registration
//!   have returned; after it returns no further callback arrives for it from the driver itself.
//!   (HCS may still call the process-wide trampoline with a stale context: [`crate::dispatch`]
//!   makes that a no-op.)
//! * New capabilities (V2-only calls, live migration) arrive as provided methods that return
//!   [`Failure::unsupported`], so adding one never breaks an existing driver.
//!
//! # Pending has one spelling (design §2.3)
//!
//! A driver reports "accepted, completes later" as `Ok(Reply::pending(value))`, and only so:
//! a V1 driver turns `ERROR_VMCOMPUTE_OPERATION_PENDING` into `Reply::pending(handle)`, a V2
//! driver reports an operation still running the same way. An `Err(Failure)` is always a
//! failure whatever its code, for every method: the lifecycle never waits for a completion
//! after an `Err`, and the caller gets an error for which `is_pending()` holds (a driver that
//! maps HRESULTs mechanically is caught on its first call, create included, where an `Err`
//! could not carry the new handle anyway). The one place a pending code in a failure is read
//! as success is the stop swallow set of shutdown/terminate ([`crate::hresult::sets::STOP_SWALLOW`]):
//! a stop that HCS accepted is followed by `SystemExited`, whatever wait is attached to it.
//!
//! # What a driver passes to [`crate::dispatch`], per notification kind
//!
//! | Kind | V1 (`vmcompute.dll`) status | V1 payload | V2 (`computecore.dll`) status | V2 payload |
//! |---|---|---|---|---|
//! | `SystemExited` | `S_OK`, or the failing exit status (`ERROR_VMCOMPUTE_UNEXPECTED_EXIT` for a crash) | as HCS gave it (may be empty) | always `S_OK` (V2 events carry no status) | `{"Status":<HRESULT as i32>,"ExitType":"GracefulExit"\|"ForcedExit"\|"UnexpectedExit"\|…}` |
//! | `System*Completed` | the operation's HRESULT | the result document, if any | the operation's HRESULT (from its completion) | the result document, if any |
//! | `ProcessExited` | `S_OK` or a failing status | ignored: the exit code comes from a properties query | `S_OK` | the `ProcessStatus` document (`ExitCode`, `Exited`, `LastWaitResult`) |
//! | `ServiceDisconnect` | the status HCS gave | none | the status HCS gave | none |
//! | `LiveMigration` | never sent | — | `S_OK` | the migration event document |
//! | `Other(_)` | as HCS gave it; untracked | — | as HCS gave it; untracked | — |
//!
//! The lifecycle classifies a V2 exit from the payload's `ExitType`, and a V1 exit from the
//! status; [`crate::System::exit_error`] wraps the payload's `Status` when it is a failure,
//! else the generation's unexpected-exit code.

use crate::hresult::HResult;
use crate::stdio::{PipeReader, PipeWriter};
use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;

macro_rules! handle_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub NonZeroU64);

        impl $name {
            /// Wraps a raw driver value; `None` for 0 (0 means "no handle").
            pub fn new(raw: u64) -> Option<Self> {
                NonZeroU64::new(raw).map(Self)
            }
            /// The raw driver value.
            pub fn raw(self) -> u64 {
                self.0.get()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }
    };
}

handle_type!(
    /// An open compute-system handle, as issued by a driver.
    SystemHandle
);
handle_type!(
    /// An open process handle, as issued by a driver.
    ProcessHandle
);
handle_type!(
    /// A callback registration handle, as issued by a driver.
    CallbackHandle
);
handle_type!(
    /// The callback context handed to HCS: a 1-based id into the notification registry, never a
    /// pointer. Drivers pass it back verbatim to [`crate::dispatch`].
    NotifyContext
);

/// A notification kind, in the lifecycle's own numbering (V1's, which each driver translates to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationKind {
    /// The compute system exited (V1 `0x1`, V2 `0x1`).
    SystemExited,
    /// A pending create completed (V1 `0x2`).
    SystemCreateCompleted,
    /// A pending start completed (V1 `0x3`).
    SystemStartCompleted,
    /// A pending pause completed (V1 `0x4`).
    SystemPauseCompleted,
    /// A pending resume completed (V1 `0x5`).
    SystemResumeCompleted,
    /// A pending save completed (V1 `0x8`).
    SystemSaveCompleted,
    /// A process exited (`0x10000` in both generations).
    ProcessExited,
    /// The connection to the compute service was lost (V1 `0x1000000`, V2 `0x2000000`).
    ServiceDisconnect,
    /// A live-migration event (V2 `0x80000003`); the payload is the event document.
    LiveMigration,
    /// Any other notification, by its raw V1 value; untracked and ignored.
    Other(u32),
}

impl NotificationKind {
    /// Decodes a V1 (`vmcompute.dll`) notification type.
    pub fn from_v1(raw: u32) -> Self {
        match raw {
            0x1 => Self::SystemExited,
            0x2 => Self::SystemCreateCompleted,
            0x3 => Self::SystemStartCompleted,
            0x4 => Self::SystemPauseCompleted,
            0x5 => Self::SystemResumeCompleted,
            0x8 => Self::SystemSaveCompleted,
            0x1_0000 => Self::ProcessExited,
            0x100_0000 => Self::ServiceDisconnect,
            other => Self::Other(other),
        }
    }

    /// Decodes a V2 (`computecore.dll`) event type. Events without a V1 counterpart map to
    /// `Other` with a value outside the V1 range (`0x8000_0000 | raw`) so they stay untracked.
    pub fn from_v2(raw: u32) -> Self {
        match raw {
            0x1 => Self::SystemExited,
            0x1_0000 => Self::ProcessExited,
            0x200_0000 => Self::ServiceDisconnect,
            0x8000_0003 => Self::LiveMigration,
            other => Self::Other(0x8000_0000 | other),
        }
    }

    /// The V1 numeric value (what a V1 driver passes to [`crate::dispatch`] through [`Self::from_v1`]).
    pub fn v1_value(self) -> u32 {
        match self {
            Self::SystemExited => 0x1,
            Self::SystemCreateCompleted => 0x2,
            Self::SystemStartCompleted => 0x3,
            Self::SystemPauseCompleted => 0x4,
            Self::SystemResumeCompleted => 0x5,
            Self::SystemSaveCompleted => 0x8,
            Self::ProcessExited => 0x1_0000,
            Self::ServiceDisconnect => 0x100_0000,
            Self::LiveMigration => 0x8000_0003,
            Self::Other(v) => v,
        }
    }

    /// Every kind the lifecycle tracks (all but [`NotificationKind::Other`]).
    pub const TRACKED: [NotificationKind; 9] = [
        Self::SystemExited,
        Self::SystemCreateCompleted,
        Self::SystemStartCompleted,
        Self::SystemPauseCompleted,
        Self::SystemResumeCompleted,
        Self::SystemSaveCompleted,
        Self::ProcessExited,
        Self::ServiceDisconnect,
        Self::LiveMigration,
    ];

    /// Parses a kind by its name, as [`fmt::Display`] renders it (`"SystemExited"`,
    /// `"SystemCrashReport"`, …). Unknown names are `None`.
    pub fn from_name(name: &str) -> Option<Self> {
        const NAMED_OTHERS: [u32; 8] = [0x6, 0x7, 0x9, 0xA, 0xB, 0xC, 0xD, 0xE];
        Self::TRACKED
            .into_iter()
            .chain(NAMED_OTHERS.into_iter().map(Self::Other))
            .find(|k| k.to_string() == name)
    }

    /// `true` for the `*Completed` kinds that finish a pending operation.
    pub fn is_completion(self) -> bool {
        matches!(
            self,
            Self::SystemCreateCompleted
                | Self::SystemStartCompleted
                | Self::SystemPauseCompleted
                | Self::SystemResumeCompleted
                | Self::SystemSaveCompleted
        )
    }
}

impl fmt::Display for NotificationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::SystemExited => "SystemExited",
            Self::SystemCreateCompleted => "SystemCreateCompleted",
            Self::SystemStartCompleted => "SystemStartCompleted",
            Self::SystemPauseCompleted => "SystemPauseCompleted",
            Self::SystemResumeCompleted => "SystemResumeCompleted",
            Self::SystemSaveCompleted => "SystemSaveCompleted",
            Self::ProcessExited => "ProcessExited",
            Self::ServiceDisconnect => "ServiceDisconnect",
            Self::LiveMigration => "LiveMigration",
            Self::Other(0x0) => "Invalid",
            Self::Other(0x6) => "SystemCrashReport",
            Self::Other(0x7) => "SystemSiloJobCreated",
            Self::Other(0x9) => "SystemRdpEnhancedModeStateChanged",
            Self::Other(0xA) => "SystemShutdownFailed",
            Self::Other(0xB) => "SystemGetPropertiesCompleted",
            Self::Other(0xC) => "SystemModifyCompleted",
            Self::Other(0xD) => "SystemCrashInitiated",
            Self::Other(0xE) => "SystemGuestConnectionClosed",
            Self::Other(v) => return write!(f, "Unknown: {v}"),
        };
        f.write_str(name)
    }
}

/// Which HCS API generation a driver speaks. It decides where exit information comes from:
/// V1 ignores notification payloads and reads a process's exit code through a properties query;
/// V2 takes exit code and exit type from the notification payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiGeneration {
    /// `vmcompute.dll` semantics.
    V1,
    /// `computecore.dll` semantics.
    V2,
}

/// A successful (or pending) driver call: the value, HCS's optional document, and whether HCS
/// accepted the call asynchronously (V1 `ERROR_VMCOMPUTE_OPERATION_PENDING`, or a V2 operation
/// still running). [`Reply::pending`] is the only way to say "pending" (module docs).
#[derive(Debug)]
pub struct Reply<T> {
    /// The call's output (a handle, a JSON document, process information, or `()`).
    pub value: T,
    /// The result document HCS returned alongside, if any.
    pub document: Option<String>,
    /// `true` when the call was accepted and completes later through a notification.
    pub pending: bool,
}

impl<T> Reply<T> {
    /// A synchronous success.
    pub fn done(value: T) -> Self {
        Reply {
            value,
            document: None,
            pending: false,
        }
    }
    /// An accepted call whose completion arrives later as a notification.
    pub fn pending(value: T) -> Self {
        Reply {
            value,
            document: None,
            pending: true,
        }
    }
    /// Attaches a result document.
    pub fn with_document(mut self, document: impl Into<String>) -> Self {
        self.document = Some(document.into());
        self
    }
}

/// The underlying error a driver attaches to a [`Failure`] (an `io::Error` from a transport,
/// say); [`crate::Error`] returns it from `source()`.
pub type FailureSource = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A failed driver call: the HRESULT, HCS's optional result document and, for drivers that
/// are not a DLL (a remote transport, say), the underlying error that caused it.
///
/// Equality compares the code and the document only.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The failing HRESULT exactly as HCS returned it (not yet Win32-converted).
    pub code: HResult,
    /// The result document returned with the failure, if any.
    pub document: Option<String>,
    /// The underlying error, if the driver has one ([`Failure::with_source`]).
    pub source: Option<FailureSource>,
}

impl PartialEq for Failure {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code && self.document == other.document
    }
}

impl Eq for Failure {}

impl Failure {
    /// A failure with no document.
    pub fn new(code: impl Into<HResult>) -> Self {
        Failure {
            code: code.into(),
            document: None,
            source: None,
        }
    }
    /// A failure with a result document.
    pub fn with_document(code: impl Into<HResult>, document: impl Into<String>) -> Self {
        Failure {
            code: code.into(),
            document: Some(document.into()),
            source: None,
        }
    }
    /// Attaches the underlying error (kept by the lifecycle's [`crate::Error`] as its
    /// `source()`), e.g. the `io::Error` of a lost connection mapped to
    /// `HCS_E_SERVICE_DISCONNECT`.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }
    /// The capability is not provided by this driver (`E_NOTIMPL`).
    pub fn unsupported() -> Self {
        Failure::new(HResult::E_NOTIMPL)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)
    }
}

/// What every driver call returns.
pub type DriverResult<T> = Result<Reply<T>, Failure>;

/// Information about a created or queried process: its pid and the standard streams HCS
/// handed back (absent streams are `None`). The driver has already turned raw handles into
/// [`PipeReader`]/[`PipeWriter`], so the lifecycle never touches OS handles.
#[derive(Debug, Default)]
pub struct ProcessInfo {
    /// Process id inside the compute system.
    pub pid: u32,
    /// Writer for the process's standard input.
    pub stdin: Option<PipeWriter>,
    /// Reader for the process's standard output.
    pub stdout: Option<PipeReader>,
    /// Reader for the process's standard error.
    pub stderr: Option<PipeReader>,
}

/// Open handles and live callback registrations of a driver, as a driver that can count them
/// (the simulator, the scripted fake, the fake DLLs) reports them, for leak checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HandleCounts {
    /// Compute-system handles created or opened and not successfully closed.
    pub systems: usize,
    /// Process handles created or opened and not successfully closed.
    pub processes: usize,
    /// Callback registrations (system and process) not successfully unregistered.
    pub callbacks: usize,
}

/// The transport of a live migration: a connected TCP stream between the two hosts, handed to
/// the source-start and destination-start calls (design §10).
///
/// Opaque to the lifecycle. On Windows the driver attaches the underlying `SOCKET`
/// (`MigrationTransport::raw_socket`, Windows only) to the HCS operation with
/// `HcsAddResourceToOperation(op, 4 /*Socket*/, "hcs:/VirtualMachine/LiveMigrationSocket", s)`;
/// on Unix (the simulator) the driver duplicates the stream ([`MigrationTransport::try_clone`]).
/// The caller keeps ownership: it closes its stream when the session ends, whatever the driver
/// did with its duplicate.
#[derive(Debug)]
pub struct MigrationTransport {
    stream: std::net::TcpStream,
}

impl MigrationTransport {
    /// Wraps a TCP stream; fails with `NotConnected` when the stream has no peer (an unconnected
    /// socket, which HCS rejects as well).
    pub fn new(stream: std::net::TcpStream) -> std::io::Result<Self> {
        stream.peer_addr()?;
        Ok(MigrationTransport { stream })
    }
    /// The stream.
    pub fn stream(&self) -> &std::net::TcpStream {
        &self.stream
    }
    /// A duplicate of the stream (a second handle to the same connection).
    pub fn try_clone(&self) -> std::io::Result<std::net::TcpStream> {
        self.stream.try_clone()
    }
    /// Shuts the connection down in both directions, interrupting any I/O on every duplicate.
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
    /// The peer's address.
    pub fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.stream.peer_addr()
    }
    /// The `SOCKET` to attach to an HCS operation.
    #[cfg(windows)]
    pub fn raw_socket(&self) -> std::os::windows::io::RawSocket {
        std::os::windows::io::AsRawSocket::as_raw_socket(&self.stream)
    }
    /// Unwraps the stream.
    pub fn into_stream(self) -> std::net::TcpStream {
        self.stream
    }
}

macro_rules! methods {
    ($($(#[$m:meta])* $name:ident,)*) => {
        /// Names one method of the [`Driver`] contract: for fault rules (`hcs-sim`), scripted
        /// answers and call logs (`hcs-testkit`), and logs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Method {
            $($(#[$m])* $name,)*
        }

        impl Method {
            /// Every method, in trait order.
            pub const ALL: [Method; 33] = [$(Method::$name,)*];

            /// The method's name, e.g. `"StartComputeSystem"` (the DLL export without `Hcs`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Method::$name => stringify!($name),)*
                }
            }
        }
    };
}

methods! {
    /// [`Driver::enumerate_compute_systems`].
    EnumerateComputeSystems,
    /// [`Driver::create_compute_system`] (pending-capable).
    CreateComputeSystem,
    /// [`Driver::open_compute_system`].
    OpenComputeSystem,
    /// [`Driver::close_compute_system`].
    CloseComputeSystem,
    /// [`Driver::start_compute_system`] (pending-capable).
    StartComputeSystem,
    /// [`Driver::shutdown_compute_system`].
    ShutdownComputeSystem,
    /// [`Driver::terminate_compute_system`].
    TerminateComputeSystem,
    /// [`Driver::pause_compute_system`] (pending-capable).
    PauseComputeSystem,
    /// [`Driver::resume_compute_system`] (pending-capable).
    ResumeComputeSystem,
    /// [`Driver::save_compute_system`] (pending-capable).
    SaveComputeSystem,
    /// [`Driver::get_compute_system_properties`].
    GetComputeSystemProperties,
    /// [`Driver::modify_compute_system`].
    ModifyComputeSystem,
    /// [`Driver::register_compute_system_callback`].
    RegisterComputeSystemCallback,
    /// [`Driver::unregister_compute_system_callback`].
    UnregisterComputeSystemCallback,
    /// [`Driver::create_process`].
    CreateProcess,
    /// [`Driver::open_process`].
    OpenProcess,
    /// [`Driver::close_process`].
    CloseProcess,
    /// [`Driver::terminate_process`].
    TerminateProcess,
    /// [`Driver::signal_process`].
    SignalProcess,
    /// [`Driver::get_process_info`].
    GetProcessInfo,
    /// [`Driver::get_process_properties`].
    GetProcessProperties,
    /// [`Driver::modify_process`].
    ModifyProcess,
    /// [`Driver::register_process_callback`].
    RegisterProcessCallback,
    /// [`Driver::unregister_process_callback`].
    UnregisterProcessCallback,
    /// [`Driver::get_service_properties`].
    GetServiceProperties,
    /// [`Driver::modify_service_settings`].
    ModifyServiceSettings,
    /// [`Driver::initialize_live_migration_on_source`].
    InitializeLiveMigrationOnSource,
    /// [`Driver::start_live_migration_on_source`].
    StartLiveMigrationOnSource,
    /// [`Driver::start_live_migration_transfer`].
    StartLiveMigrationTransfer,
    /// [`Driver::finalize_live_migration`].
    FinalizeLiveMigration,
    /// [`Driver::cancel_live_migration`].
    CancelLiveMigration,
    /// [`Driver::start_compute_system_as_migration_destination`] (`HcsStartComputeSystem` with
    /// destination options and the transport).
    StartComputeSystemAsMigrationDestination,
    /// [`Driver::enable_live_migration_events`].
    EnableLiveMigrationEvents,
}

impl Method {
    /// Parses a method name; the `Hcs` prefix is optional (`"HcsStartComputeSystem"`).
    pub fn from_name(name: &str) -> Option<Method> {
        let name = name.strip_prefix("Hcs").unwrap_or(name);
        Method::ALL.into_iter().find(|m| m.name() == name)
    }

    /// `true` for the methods that receive the object's [`NotifyContext`] and may go pending
    /// with a `*Completed` notification: create, start, pause, resume, save.
    pub fn is_pending_capable(self) -> bool {
        self.completion().is_some()
    }

    /// `true` for every call HCS may answer "pending": the [`Method::is_pending_capable`] ones,
    /// plus shutdown and terminate (whose completion is the later `SystemExited`).
    pub fn can_pend(self) -> bool {
        self.is_pending_capable()
            || matches!(
                self,
                Method::ShutdownComputeSystem | Method::TerminateComputeSystem
            )
    }

    /// The completion notification of a pending call, if the call has one.
    pub fn completion(self) -> Option<NotificationKind> {
        use NotificationKind as K;
        match self {
            Method::CreateComputeSystem => Some(K::SystemCreateCompleted),
            Method::StartComputeSystem => Some(K::SystemStartCompleted),
            Method::PauseComputeSystem => Some(K::SystemPauseCompleted),
            Method::ResumeComputeSystem => Some(K::SystemResumeCompleted),
            Method::SaveComputeSystem => Some(K::SystemSaveCompleted),
            _ => None,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The driver contract. Object safe; shared as `Arc<dyn Driver>` by a System, its Processes and
/// the temporary objects `Kill` opens.
///
/// Each method makes one HCS call and reports what HCS said (see the module documentation).
/// Strings are JSON documents passed through verbatim; `""` means "no options".
pub trait Driver: Send + Sync + 'static {
    /// A short name for logs and errors (`"sim"`, `"vmcompute"`, `"computecore"`, `"fake"`).
    fn name(&self) -> &str;

    /// The API generation this driver speaks. Defaults to [`ApiGeneration::V1`].
    fn generation(&self) -> ApiGeneration {
        ApiGeneration::V1
    }

    /// `HcsEnumerateComputeSystems(query)`: the JSON array of matching systems.
    fn enumerate_compute_systems(&self, query: &str) -> DriverResult<String>;
    /// `HcsCreateComputeSystem(id, configuration)`. May be pending; the completion is
    /// `SystemCreateCompleted` delivered to `ctx`. A pending reply carries the new handle.
    fn create_compute_system(
        &self,
        id: &str,
        configuration: &str,
        ctx: NotifyContext,
    ) -> DriverResult<SystemHandle>;
    /// `HcsOpenComputeSystem(id)`.
    fn open_compute_system(&self, id: &str) -> DriverResult<SystemHandle>;
    /// `HcsCloseComputeSystem(handle)`. A failure leaves the handle open (retryable).
    fn close_compute_system(&self, system: SystemHandle) -> Result<(), Failure>;
    /// `HcsStartComputeSystem`. May be pending (`SystemStartCompleted` to `ctx`).
    fn start_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()>;
    /// `HcsShutdownComputeSystem`. May be pending; the exit arrives later as `SystemExited`.
    fn shutdown_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()>;
    /// `HcsTerminateComputeSystem`. May be pending; the exit arrives later as `SystemExited`.
    fn terminate_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()>;
    /// `HcsPauseComputeSystem`. May be pending (`SystemPauseCompleted` to `ctx`).
    fn pause_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()>;
    /// `HcsResumeComputeSystem`. May be pending (`SystemResumeCompleted` to `ctx`).
    fn resume_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()>;
    /// `HcsSaveComputeSystem`. May be pending (`SystemSaveCompleted` to `ctx`).
    fn save_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()>;
    /// `HcsGetComputeSystemProperties(query)`: the properties JSON.
    fn get_compute_system_properties(&self, system: SystemHandle, query: &str) -> DriverResult<String>;
    /// `HcsModifyComputeSystem(configuration)`.
    fn modify_compute_system(&self, system: SystemHandle, configuration: &str) -> DriverResult<()>;
    /// `HcsRegisterComputeSystemCallback`: notifications for `system` go to `ctx`.
    fn register_compute_system_callback(
        &self,
        system: SystemHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure>;
    /// `HcsUnregisterComputeSystemCallback`; returns after running callbacks have finished.
    fn unregister_compute_system_callback(&self, callback: CallbackHandle) -> Result<(), Failure>;

    /// `HcsCreateProcess(parameters)`: the process handle and its information (pid, stdio).
    fn create_process(
        &self,
        system: SystemHandle,
        parameters: &str,
    ) -> DriverResult<(ProcessHandle, ProcessInfo)>;
    /// `HcsOpenProcess(pid)`.
    fn open_process(&self, system: SystemHandle, pid: u32) -> DriverResult<ProcessHandle>;
    /// `HcsCloseProcess`. A failure leaves the handle open (retryable).
    fn close_process(&self, process: ProcessHandle) -> Result<(), Failure>;
    /// `HcsTerminateProcess`.
    fn terminate_process(&self, process: ProcessHandle) -> DriverResult<()>;
    /// `HcsSignalProcess(options)`.
    fn signal_process(&self, process: ProcessHandle, options: &str) -> DriverResult<()>;
    /// `HcsGetProcessInfo`: fresh stdio handles for the process.
    fn get_process_info(&self, process: ProcessHandle) -> DriverResult<ProcessInfo>;
    /// `HcsGetProcessProperties`: a `ProcessStatus` JSON document.
    fn get_process_properties(&self, process: ProcessHandle) -> DriverResult<String>;
    /// `HcsModifyProcess(settings)`.
    fn modify_process(&self, process: ProcessHandle, settings: &str) -> DriverResult<()>;
    /// `HcsRegisterProcessCallback`: notifications for `process` go to `ctx`.
    fn register_process_callback(
        &self,
        process: ProcessHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure>;
    /// `HcsUnregisterProcessCallback`; returns after running callbacks have finished.
    fn unregister_process_callback(&self, callback: CallbackHandle) -> Result<(), Failure>;

    /// `HcsGetServiceProperties(query)`. Optional; defaults to unsupported.
    fn get_service_properties(&self, _query: &str) -> DriverResult<String> {
        Err(Failure::unsupported())
    }
    /// `HcsModifyServiceSettings(settings)`. Optional; defaults to unsupported.
    fn modify_service_settings(&self, _settings: &str) -> DriverResult<()> {
        Err(Failure::unsupported())
    }
    /// Asks HCS to cancel the pending operation of `ctx` whose completion `kind` the lifecycle
    /// has stopped waiting for (timeout or caller cancellation). The call is not abandoned: a
    /// driver keeps whatever HCS may still use until the completion arrives. Drivers that
    /// cannot cancel (V1, where HCS offers no cancel) keep this default, which does nothing.
    fn cancel_pending(&self, _ctx: NotifyContext, _kind: NotificationKind) -> Result<(), Failure> {
        Ok(())
    }

    // ---- live migration (V2 only; design §10) -------------------------------------------------
    //
    // Every method is optional (`Failure::unsupported()` by default, and per export on a V2
    // host whose `computecore.dll` lacks it), synchronous (the driver waits for its HCS
    // operation; none replies pending) and takes the options document verbatim.

    /// `HcsInitializeLiveMigrationOnSource(options)`: prepares a running VM to migrate away
    /// (`MigrationInitializeOptions`). Optional; defaults to unsupported.
    fn initialize_live_migration_on_source(&self, _system: SystemHandle, _options: &str) -> DriverResult<()> {
        Err(Failure::unsupported())
    }
    /// `HcsStartLiveMigrationOnSource(options)` with `transport` attached to the operation
    /// (`MigrationStartOptions`). Optional; defaults to unsupported.
    fn start_live_migration_on_source(
        &self,
        _system: SystemHandle,
        _options: &str,
        _transport: &MigrationTransport,
    ) -> DriverResult<()> {
        Err(Failure::unsupported())
    }
    /// `HcsStartLiveMigrationTransfer(options)` (`MigrationTransferOptions`), on either side.
    /// Returns when the memory has been copied (or the transfer failed or was cancelled).
    /// Optional; defaults to unsupported.
    fn start_live_migration_transfer(&self, _system: SystemHandle, _options: &str) -> DriverResult<()> {
        Err(Failure::unsupported())
    }
    /// `HcsFinalizeLiveMigration(options)` (`MigrationFinalizedOptions`), on either side.
    /// Optional; defaults to unsupported.
    fn finalize_live_migration(&self, _system: SystemHandle, _options: &str) -> DriverResult<()> {
        Err(Failure::unsupported())
    }
    /// `HcsCancelLiveMigration(options)` (`MigrationCancelOptions`), on either side, possibly
    /// while a transfer on the same system is running on another thread. Optional (the newest
    /// export; absent from most hosts); defaults to unsupported.
    fn cancel_live_migration(&self, _system: SystemHandle, _options: &str) -> DriverResult<()> {
        Err(Failure::unsupported())
    }
    /// `HcsStartComputeSystem(options)` with `transport` attached to the operation: starts a VM
    /// created with `VirtualMachine.MigrationOptions` as the destination of a migration
    /// (`StartOptions{DestinationMigrationOptions}`). Synchronous, no completion notification.
    /// Optional; defaults to unsupported.
    fn start_compute_system_as_migration_destination(
        &self,
        _system: SystemHandle,
        _options: &str,
        _transport: &MigrationTransport,
    ) -> DriverResult<()> {
        Err(Failure::unsupported())
    }
    /// Makes sure `LiveMigration` notifications for `system` reach its registered callback (V2:
    /// event option 4, `HcsEventOptionEnableLiveMigrationEvents`). Optional; defaults to
    /// unsupported.
    fn enable_live_migration_events(&self, _system: SystemHandle) -> Result<(), Failure> {
        Err(Failure::unsupported())
    }
}

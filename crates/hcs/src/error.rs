//! The error type of the lifecycle layer, and the classifiers.
//!
//! One [`Error`] carries the operation name (`hcs::System::Start`, ...), the system id and pid
//! when known, the [`Cause`] (an HRESULT or a library condition) and the `ErrorEvents` parsed
//! from HCS's result document. Constructors never double-wrap: wrapping an error that already
//! names a system or process returns it unchanged, so the innermost operation wins
//! (design §6.3). Classifiers accept both the V1 (`0xC037…`) and V2 (`0x8037…`)
//! encodings where both exist and look through `source()` chains of foreign errors too.

use crate::driver::Failure;
use crate::hresult::{sets, HResult};
use hcs_schema::{ErrorEvent, ResultDocument};
use std::borrow::Cow;
use std::fmt;

/// What went wrong, independent of where.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// HCS returned a failing HRESULT (already in Win32 form when it had FACILITY_WIN32).
    Hcs(HResult),
    /// The object was closed (`ErrAlreadyClosed`).
    AlreadyClosed,
    /// The registration generating notifications was removed while waiting (`ErrHandleClose`).
    HandleClose,
    /// A completion wait timed out (`ErrTimeout`).
    Timeout,
    /// The system exited while another operation waited (`ErrUnexpectedContainerExit`).
    UnexpectedContainerExit,
    /// The connection to the compute service was lost (`ErrUnexpectedProcessAbort`).
    ServiceDisconnected,
    /// HCS returned an empty document where one was required (`ErrUnexpectedValue`).
    UnexpectedValue,
    /// The process is in an invalid state for the call (`ErrInvalidProcessState`).
    InvalidProcessState,
    /// Waited for a notification type the object does not track (`ErrInvalidNotificationType`).
    InvalidNotificationType,
    /// `exit_error()` before the system stopped ("container not exited"); matches no classifier.
    NotExited,
    /// The caller cancelled the wait.
    Cancelled,
    /// A document could not be serialised or parsed.
    Json(String),
    /// The caller passed something invalid (message says what).
    InvalidInput(String),
    /// The driver does not provide this capability.
    Unsupported(String),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Hcs(code) => write!(f, "{code}"),
            Cause::AlreadyClosed => f.write_str("hcsshim: the handle has already been closed"),
            Cause::HandleClose => {
                f.write_str("hcsshim: the handle generating this notification has been closed")
            }
            Cause::Timeout => f.write_str("hcsshim: timeout waiting for notification"),
            Cause::UnexpectedContainerExit => f.write_str("unexpected container exit"),
            Cause::ServiceDisconnected => f.write_str("lost communication with compute service"),
            Cause::UnexpectedValue => f.write_str("unexpected value returned from hcs"),
            Cause::InvalidProcessState => {
                f.write_str("the process is in an invalid state for the attempted operation")
            }
            Cause::InvalidNotificationType => f.write_str("hcsshim: invalid notification type"),
            Cause::NotExited => f.write_str("container not exited"),
            Cause::Cancelled => f.write_str("operation cancelled by the caller"),
            Cause::Json(m) => write!(f, "invalid json: {m}"),
            Cause::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Cause::Unsupported(m) => write!(f, "not supported by this driver: {m}"),
        }
    }
}

/// Which object an error concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// No object (a bare sentinel, or a service-level call).
    None,
    /// A compute system.
    System {
        /// The system id.
        id: String,
    },
    /// A process inside a compute system.
    Process {
        /// The owning system id.
        system_id: String,
        /// The process id.
        pid: u32,
    },
}

#[derive(Debug, Clone)]
struct Inner {
    op: Cow<'static, str>,
    scope: Scope,
    cause: Cause,
    events: Vec<ErrorEvent>,
    /// The driver's underlying error, if it attached one.
    source: Option<crate::driver::FailureSource>,
    /// What the cause alone does not say (e.g. which limit a timeout hit), shown in
    /// parentheses after it.
    detail: Option<String>,
}

/// An error from the HCS layer. See the module documentation.
#[derive(Clone)]
pub struct Error(Box<Inner>);

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A bare error: no operation, no object (hcsshim's unwrapped sentinels).
    pub fn bare(cause: Cause) -> Self {
        Error(Box::new(Inner {
            op: Cow::Borrowed(""),
            scope: Scope::None,
            cause,
            events: Vec::new(),
            source: None,
            detail: None,
        }))
    }

    /// An error of a service-level operation (`HcsError{Op, Err, Events}`).
    pub fn op(op: impl Into<Cow<'static, str>>, cause: Cause) -> Self {
        Error(Box::new(Inner {
            op: op.into(),
            scope: Scope::None,
            cause,
            events: Vec::new(),
            source: None,
            detail: None,
        }))
    }

    /// Wraps `cause` as an error of system `id`'s operation `op`, unless it already names a
    /// system or process (no double wrapping: returned unchanged).
    pub fn system(op: impl Into<Cow<'static, str>>, id: &str, cause: impl Into<Error>) -> Self {
        let e = cause.into();
        if e.0.scope != Scope::None {
            return e;
        }
        let mut inner = *e.0;
        inner.op = op.into();
        inner.scope = Scope::System { id: id.to_owned() };
        Error(Box::new(inner))
    }

    /// Wraps `cause` as an error of process `pid` in system `system_id`, unless it already names
    /// a process (returned unchanged). An error naming only the system is re-scoped to the
    /// process, keeping its operation.
    pub fn process(
        op: impl Into<Cow<'static, str>>,
        system_id: &str,
        pid: u32,
        cause: impl Into<Error>,
    ) -> Self {
        let e = cause.into();
        if matches!(e.0.scope, Scope::Process { .. }) {
            return e;
        }
        let mut inner = *e.0;
        if inner.op.is_empty() || inner.scope == Scope::None {
            inner.op = op.into();
        }
        inner.scope = Scope::Process {
            system_id: system_id.to_owned(),
            pid,
        };
        Error(Box::new(inner))
    }

    /// Builds the error for a failed driver call: the code (Win32-converted per C4) and the
    /// events of its result document. A malformed document never hides the code: the parse
    /// problem is logged and the error carries no events.
    pub fn from_failure(failure: &Failure) -> Self {
        let mut e = Error::bare(Cause::Hcs(failure.code.to_win32_form()));
        e.0.events = events_from_document(failure.document.as_deref());
        e.0.source = failure.source.clone();
        e
    }

    /// Adds a detail shown after the cause, e.g. `(timed out after 200ms waiting for
    /// SystemStartCompleted)`.
    pub(crate) fn with_detail(mut self, detail: String) -> Self {
        self.0.detail = Some(detail);
        self
    }

    /// Adds `detail` in front of any detail already there (`detail; earlier detail`).
    pub(crate) fn with_detail_prefix(mut self, detail: String) -> Self {
        self.0.detail = Some(match self.0.detail.take() {
            Some(old) => format!("{detail}; {old}"),
            None => detail,
        });
        self
    }

    /// The detail shown in parentheses after the cause (for a failed process creation, the
    /// quoted command line), if any.
    pub fn detail(&self) -> Option<&str> {
        self.0.detail.as_deref()
    }

    /// Attaches events (replacing any).
    pub fn with_events(mut self, events: Vec<ErrorEvent>) -> Self {
        self.0.events = events;
        self
    }

    /// The operation name (`""` for bare errors).
    pub fn operation(&self) -> &str {
        &self.0.op
    }
    /// The object the error concerns.
    pub fn scope(&self) -> &Scope {
        &self.0.scope
    }
    /// The cause.
    pub fn cause(&self) -> &Cause {
        &self.0.cause
    }
    /// The HRESULT, when the cause is one.
    pub fn hresult(&self) -> Option<HResult> {
        match self.0.cause {
            Cause::Hcs(c) => Some(c),
            _ => None,
        }
    }
    /// The `ErrorEvents` from HCS's result document.
    pub fn events(&self) -> &[ErrorEvent] {
        &self.0.events
    }
    /// The system id, if the error names one.
    pub fn system_id(&self) -> Option<&str> {
        match &self.0.scope {
            Scope::System { id } => Some(id),
            Scope::Process { system_id, .. } => Some(system_id),
            Scope::None => None,
        }
    }
    /// The pid, if the error names a process.
    pub fn pid(&self) -> Option<u32> {
        match &self.0.scope {
            Scope::Process { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    fn code_in(&self, set: &[HResult]) -> bool {
        matches!(self.0.cause, Cause::Hcs(c) if c.is_in(set))
    }

    /// System or element not found ([`sets::NOT_FOUND`]).
    pub fn is_not_found(&self) -> bool {
        self.code_in(sets::NOT_FOUND)
    }
    /// A compute system with that id already exists ([`sets::ALREADY_EXISTS`]).
    pub fn is_already_exists(&self) -> bool {
        self.code_in(sets::ALREADY_EXISTS)
    }
    /// Already stopped ([`sets::ALREADY_STOPPED`]). Never `0x7F`, `5`, `6`.
    pub fn is_already_stopped(&self) -> bool {
        self.code_in(sets::ALREADY_STOPPED)
    }
    /// The object was closed (not the same as [`Cause::HandleClose`]).
    pub fn is_already_closed(&self) -> bool {
        self.0.cause == Cause::AlreadyClosed
    }
    /// A pending code surfaced as an error ([`sets::PENDING`]).
    pub fn is_pending(&self) -> bool {
        self.code_in(sets::PENDING)
    }
    /// A timeout: the completion-wait timer, or HCS's own timeout codes ([`sets::TIMEOUT`]).
    pub fn is_timeout(&self) -> bool {
        self.0.cause == Cause::Timeout || self.code_in(sets::TIMEOUT)
    }
    /// Not supported / invalid document ([`sets::NOT_SUPPORTED`]), or a capability the driver
    /// lacks.
    pub fn is_not_supported(&self) -> bool {
        matches!(self.0.cause, Cause::Unsupported(_)) || self.code_in(sets::NOT_SUPPORTED)
    }
    /// Access denied ([`sets::ACCESS_DENIED`]).
    pub fn is_access_denied(&self) -> bool {
        self.code_in(sets::ACCESS_DENIED)
    }
    /// Invalid state for the call ([`sets::INVALID_STATE`]).
    pub fn is_invalid_state(&self) -> bool {
        self.code_in(sets::INVALID_STATE)
    }
    /// The service connection was lost: a `ServiceDisconnect` notification, or a code of
    /// [`sets::SERVICE_DISCONNECT`].
    pub fn is_service_disconnected(&self) -> bool {
        self.0.cause == Cause::ServiceDisconnected || self.code_in(sets::SERVICE_DISCONNECT)
    }
    /// The system exited unexpectedly: during another operation, or with a crash status
    /// ([`sets::UNEXPECTED_EXIT`]).
    pub fn is_unexpected_exit(&self) -> bool {
        self.0.cause == Cause::UnexpectedContainerExit || self.code_in(sets::UNEXPECTED_EXIT)
    }
    /// Invalid handle ([`sets::INVALID_HANDLE`]).
    pub fn is_invalid_handle(&self) -> bool {
        self.code_in(sets::INVALID_HANDLE)
    }
}

/// Parses a result document into its events; malformed documents are logged, not fatal.
pub(crate) fn events_from_document(doc: Option<&str>) -> Vec<ErrorEvent> {
    match doc.map(ResultDocument::parse) {
        None | Some(Ok(None)) => Vec::new(),
        Some(Ok(Some(d))) => d.error_events,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "could not parse the HCS result document; keeping the error code");
            Vec::new()
        }
    }
}

impl From<Cause> for Error {
    fn from(c: Cause) -> Self {
        Error::bare(c)
    }
}

impl From<&Failure> for Error {
    fn from(f: &Failure) -> Self {
        Error::from_failure(f)
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        Error::from_failure(&f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.0;
        match (&i.scope, i.op.is_empty()) {
            (_, true) => write!(f, "{}", i.cause)?,
            (Scope::None, false) => write!(f, "{}: {}", i.op, i.cause)?,
            (Scope::System { id }, false) => write!(f, "{} {}: {}", i.op, id, i.cause)?,
            (Scope::Process { system_id, pid }, false) => {
                write!(f, "{} {}:{}: {}", i.op, system_id, pid, i.cause)?
            }
        }
        if let Some(d) = &i.detail {
            write!(f, " ({d})")?;
        }
        for e in &i.events {
            write!(f, "\n{e}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("op", &self.0.op)
            .field("scope", &self.0.scope)
            .field("cause", &self.0.cause)
            .field("events", &self.0.events.len())
            .finish()
    }
}

impl std::error::Error for Error {
    /// The driver's underlying error (an `io::Error` of a transport, say), when the driver
    /// attached one with [`Failure::with_source`].
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> impl Iterator<Item = &'a Error> {
    let mut cur = Some(err);
    std::iter::from_fn(move || {
        while let Some(e) = cur {
            cur = e.source();
            if let Some(h) = e.downcast_ref::<Error>() {
                return Some(h);
            }
        }
        None
    })
}

macro_rules! chain_classifiers {
    ($($(#[$m:meta])* $name:ident;)*) => {$(
        $(#[$m])*
        pub fn $name(err: &(dyn std::error::Error + 'static)) -> bool {
            find(err).any(|e| e.$name())
        }
    )*};
}

/// Classifiers over any error chain: true when some [`Error`] in `err`'s `source()` chain
/// satisfies the method of the same name.
pub mod classify {
    use super::find;
    chain_classifiers! {
        /// See [`super::Error::is_not_found`].
        is_not_found;
        /// See [`super::Error::is_already_stopped`].
        is_already_stopped;
        /// See [`super::Error::is_already_closed`].
        is_already_closed;
        /// See [`super::Error::is_pending`].
        is_pending;
        /// See [`super::Error::is_timeout`].
        is_timeout;
        /// See [`super::Error::is_not_supported`].
        is_not_supported;
        /// See [`super::Error::is_access_denied`].
        is_access_denied;
        /// See [`super::Error::is_invalid_state`].
        is_invalid_state;
        /// See [`super::Error::is_service_disconnected`].
        is_service_disconnected;
        /// See [`super::Error::is_unexpected_exit`].
        is_unexpected_exit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_error_message_has_op_id_cause_and_events() {
        let f = Failure::with_document(
            0xC037_010E_u32,
            r#"{"Error":-1,"ErrorEvents":[{"Message":"boom","EventId":7},{"Message":"two"}]}"#,
        );
        let e = Error::system("hcs::System::Start", "c1", Error::from_failure(&f));
        assert_eq!(
            e.to_string(),
            "hcs::System::Start c1: ERROR_VMCOMPUTE_SYSTEM_NOT_FOUND (0xC037010E)\n[Event Detail: boom EventID: 7]\n[Event Detail: two]"
        );
        assert!(e.is_not_found());
        assert_eq!(e.events().len(), 2);
    }

    #[test]
    fn process_error_message_has_system_and_pid() {
        let e = Error::process("hcs::Process::Signal", "c1", 42, Cause::AlreadyClosed);
        assert_eq!(
            e.to_string(),
            "hcs::Process::Signal c1:42: hcsshim: the handle has already been closed"
        );
        assert!(e.is_already_closed());
    }

    #[test]
    fn wrapping_never_doubles_and_inner_op_wins() {
        let inner = Error::system("hcs::System::Properties", "c1", Cause::UnexpectedValue);
        let outer = Error::system("hcs::CreateComputeSystem", "c1", inner.clone());
        assert_eq!(outer.to_string(), inner.to_string());
        let p = Error::process(
            "hcs::Process::Kill",
            "c1",
            3,
            Error::process("hcs::Process::Signal", "c1", 3, Cause::Timeout),
        );
        assert_eq!(p.operation(), "hcs::Process::Signal");
    }

    #[test]
    fn facility_win32_codes_are_converted_when_wrapped() {
        let e = Error::from_failure(&Failure::new(0x8007_0005_u32));
        assert_eq!(e.hresult(), Some(HResult(5)));
        assert!(e.is_access_denied());
        let e = Error::from_failure(&Failure::new(0x8007_0490_u32));
        assert!(e.is_not_found() && e.is_already_stopped());
    }

    #[test]
    fn malformed_result_document_keeps_the_code() {
        let e = Error::from_failure(&Failure::with_document(0x8037_0105_u32, "{not json"));
        assert!(e.is_invalid_state());
        assert!(e.events().is_empty());
    }

    #[test]
    fn classifiers_accept_both_encodings_and_exclude_proc_not_found() {
        let c = |v: u32| Error::from_failure(&Failure::new(v));
        assert!(c(0xC037_0110).is_already_stopped() && c(0x8037_0110).is_already_stopped());
        assert!(c(0x8037_011F).is_already_stopped());
        for not in [0x7F_u32, 0x5, 0x6] {
            assert!(!c(not).is_already_stopped(), "{not:#x}");
        }
        assert!(c(0xC037_0105).is_invalid_state() && c(0x8037_0105).is_invalid_state());
        assert!(c(0xC037_0103).is_pending() && c(0x8037_0117).is_pending());
        assert!(c(0x8037_010E).is_not_found());
        assert!(c(0x8037_011E).is_service_disconnected());
        assert!(c(0xC037_0106).is_unexpected_exit() && c(0x8037_0106).is_unexpected_exit());
        assert!(
            c(0xC037_010D).is_not_supported()
                && c(0x32).is_not_supported()
                && c(0x8007_000D).is_not_supported()
        );
        assert!(c(0x8037_0118).is_timeout());
    }

    #[test]
    fn not_exited_matches_no_classifier() {
        let e = Error::bare(Cause::NotExited);
        assert_eq!(e.to_string(), "container not exited");
        assert!(!(e.is_already_closed() || e.is_timeout() || e.is_not_found() || e.is_already_stopped()));
    }

    #[test]
    fn chain_classifiers_look_through_foreign_wrappers() {
        #[derive(Debug)]
        struct Outer(Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("outer")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let o = Outer(Error::bare(Cause::Timeout));
        assert!(classify::is_timeout(&o));
        assert!(!classify::is_already_closed(&o));
    }
}

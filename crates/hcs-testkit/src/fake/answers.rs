//! Scripting the fake: the [`Answer`] a driver call gives (success, pending, failure, a later
//! notification, blocking on a [`Gate`]) and the `SystemExited` notifications a driver of
//! either generation sends ([`system_exited`], [`ExitKind`]).

use super::gate::Gate;
use hcs::hresult::CodePair;
use hcs::{ApiGeneration, HResult, NotificationKind};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Ok,
    Pending,
    Fail(HResult),
}

#[derive(Debug, Clone)]
pub(super) struct Completion {
    pub(super) kind: NotificationKind,
    pub(super) status: HResult,
    pub(super) payload: Option<String>,
    pub(super) after: Duration,
}

#[derive(Debug)]
pub(super) struct ScriptedStdio {
    pub(super) stdin: bool,
    pub(super) stdout: Option<Vec<u8>>,
    pub(super) stderr: Option<Vec<u8>>,
}

/// One scripted answer for a driver call: what the call reports, plus optional side effects
/// (a later notification, blocking on a [`Gate`]).
///
/// Build one with [`Answer::ok`], [`Answer::ok_with`], [`Answer::ok_with_stdio`],
/// [`Answer::pending`], [`Answer::fail`] or [`Answer::fail_with_document`], refine it with the
/// `with_*`/`then_*` builders, and hand it to [`FakeDriver::script`] or
/// [`FakeDriver::set_default`].
///
/// What an answer means per method:
///
/// * **Success** returns the method's natural value: a fresh handle for create/open calls, a
///   fresh pid (or [`Answer::with_pid`]) for `create_process`, and for the methods that return
///   a document (enumerate, both properties calls, service properties) the value given to
///   [`Answer::ok_with`] or a realistic default (see [`FakeDriver`]). The value is ignored by
///   other methods.
/// * **Pending** is [`Reply::pending`] with the same value (a pending create still returns its
///   new handle). Methods whose return type cannot say "pending" (close, register,
///   unregister) report it as a failure with the generation's pending HRESULT.
/// * **Failure** returns [`Failure`] with the code and the optional result document, and has
///   no other effect: no handle is issued, a close leaves the handle open, an unregister leaves
///   the registration active.
///
/// [`FakeDriver::script`]: crate::FakeDriver::script
/// [`FakeDriver::set_default`]: crate::FakeDriver::set_default
/// [`FakeDriver`]: crate::FakeDriver
/// [`Reply::pending`]: hcs::Reply::pending
/// [`Failure`]: hcs::Failure
#[derive(Debug, Clone)]
pub struct Answer {
    pub(super) outcome: Outcome,
    pub(super) value: Option<String>,
    pub(super) document: Option<String>,
    pub(super) pid: Option<u32>,
    pub(super) stdio: Option<Arc<ScriptedStdio>>,
    pub(super) completions: Vec<Completion>,
    pub(super) gate: Option<Gate>,
}

impl Answer {
    fn new(outcome: Outcome) -> Self {
        Answer {
            outcome,
            value: None,
            document: None,
            pid: None,
            stdio: None,
            completions: Vec::new(),
            gate: None,
        }
    }

    /// A synchronous success with the method's default value.
    pub fn ok() -> Self {
        Self::new(Outcome::Ok)
    }

    /// A synchronous success returning `value`: the JSON document of enumerate, the properties
    /// calls and the service-properties call. Ignored by methods that return no document.
    pub fn ok_with(value: impl Into<String>) -> Self {
        Self::ok().with_value(value)
    }

    /// A synchronous success whose process information carries in-memory standard streams
    /// (for `create_process` and `get_process_info`): stdout and stderr read the given bytes,
    /// stdin records what is written, readable through [`FakeDriver::stdin_written`].
    ///
    /// [`FakeDriver::stdin_written`]: crate::FakeDriver::stdin_written
    pub fn ok_with_stdio(stdout: impl Into<Vec<u8>>, stderr: impl Into<Vec<u8>>) -> Self {
        Self::ok().with_stdio(stdout, stderr)
    }

    /// An accepted call that completes later: [`Reply::pending`]. Combine with
    /// [`Answer::then_complete`] to deliver the completion, or fire it by hand with
    /// [`FakeDriver::fire`] and [`FakeDriver::pending_context`].
    ///
    /// [`Reply::pending`]: hcs::Reply::pending
    /// [`FakeDriver::fire`]: crate::FakeDriver::fire
    /// [`FakeDriver::pending_context`]: crate::FakeDriver::pending_context
    pub fn pending() -> Self {
        Self::new(Outcome::Pending)
    }

    /// A failure with `code` and no result document.
    pub fn fail(code: impl Into<HResult>) -> Self {
        Self::new(Outcome::Fail(code.into()))
    }

    /// A failure with `code` and a result document (typically `{"ErrorEvents":[...]}`).
    pub fn fail_with_document(code: impl Into<HResult>, document: impl Into<String>) -> Self {
        Self::fail(code).with_document(document)
    }

    /// Sets the result document returned alongside the outcome (success, pending or failure).
    pub fn with_document(mut self, document: impl Into<String>) -> Self {
        self.document = Some(document.into());
        self
    }

    /// Sets the document/value a success or pending reply returns (see [`Answer::ok_with`]).
    pub fn with_value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Sets the pid `create_process` or `open_process` reports (instead of the next fresh pid
    /// or the requested pid).
    pub fn with_pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    /// Gives the process information in-memory streams; see [`Answer::ok_with_stdio`].
    pub fn with_stdio(mut self, stdout: impl Into<Vec<u8>>, stderr: impl Into<Vec<u8>>) -> Self {
        self.stdio = Some(Arc::new(ScriptedStdio {
            stdin: true,
            stdout: Some(stdout.into()),
            stderr: Some(stderr.into()),
        }));
        self
    }

    /// Gives the process information only the streams named: a stdin writer when `stdin`, and
    /// readers over `stdout` / `stderr` when given (as HCS hands out only the pipes the process
    /// parameters asked for). `with_streams(false, None, None)` on `GetProcessInfo` answers with
    /// no streams at all, as a driver that cannot hand a process's pipes out again.
    pub fn with_streams(mut self, stdin: bool, stdout: Option<Vec<u8>>, stderr: Option<Vec<u8>>) -> Self {
        self.stdio = Some(Arc::new(ScriptedStdio {
            stdin,
            stdout,
            stderr,
        }));
        self
    }

    /// After the call returns, delivers the notification `kind` with `status` and `payload`
    /// from another thread once `after` has elapsed, through [`hcs::dispatch`] exactly like
    /// HCS would.
    ///
    /// The target context is the call's `ctx` parameter for the pending-capable calls (create,
    /// start, pause, resume, save); for every other call it is the context registered for the
    /// call's handle when the delay elapses (for `open_compute_system`, `create_process` and
    /// `open_process`, the handle the call returned). If no such context is known, or its
    /// registrations have all been unregistered by then, the notification is dropped: the
    /// fake honours the driver contract that nothing arrives after unregister returns. Use
    /// [`FakeDriver::fire`] for deliberate late callbacks.
    ///
    /// May be called several times to schedule several notifications.
    ///
    /// [`FakeDriver::fire`]: crate::FakeDriver::fire
    pub fn then_complete(
        mut self,
        kind: NotificationKind,
        status: impl Into<HResult>,
        payload: Option<String>,
        after: Duration,
    ) -> Self {
        self.completions.push(Completion {
            kind,
            status: status.into(),
            payload,
            after,
        });
        self
    }

    /// Makes the call block inside the driver until `gate` is opened. The call is already in
    /// the call log while it blocks; [`Gate::wait_entered`] tells a test that it got there.
    /// The outcome is computed after the gate opens (a blocked close releases the handle only
    /// then).
    pub fn blocking(mut self, gate: Gate) -> Self {
        self.gate = Some(gate);
        self
    }
}

/// How a compute system ended, for [`system_exited`] and
/// [`FakeDriver::fire_exit`].
///
/// [`FakeDriver::fire_exit`]: crate::FakeDriver::fire_exit
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitKind {
    /// A shutdown (or a guest power-off): `ExitType: GracefulExit`, status success.
    Graceful,
    /// A terminate: `ExitType: ForcedExit`, status success.
    Forced,
    /// A crash: `ExitType: UnexpectedExit` with the generation's unexpected-exit code
    /// ([`CodePair::UNEXPECTED_EXIT`]).
    Unexpected,
}

impl ExitKind {
    /// The `ExitType` string of the exit payload.
    pub const fn exit_type(self) -> &'static str {
        match self {
            ExitKind::Graceful => "GracefulExit",
            ExitKind::Forced => "ForcedExit",
            ExitKind::Unexpected => "UnexpectedExit",
        }
    }
}

/// The status and payload of a `SystemExited` notification exactly as a driver of
/// `generation` sends them.
///
/// The payload is always `{"Status":<HRESULT as i32>,"ExitType":"..."}`, its `Status` the exit's
/// HRESULT: success for a graceful or forced exit, the generation's encoding of
/// [`CodePair::UNEXPECTED_EXIT`] for a crash. The notification's own status differs by
/// generation:
///
/// * **V1** (`vmcompute.dll`) reports a crash in the status too: `ERROR_VMCOMPUTE_UNEXPECTED_EXIT`.
/// * **V2** (`computecore.dll`) events carry no status: it is always [`HResult::S_OK`], and the
///   payload alone says that the exit was unexpected (`HCS_E_UNEXPECTED_EXIT`).
///
/// ```
/// use hcs::{ApiGeneration, HResult};
/// use hcs_testkit::{system_exited, ExitKind};
///
/// let (status, payload) = system_exited(ApiGeneration::V2, ExitKind::Unexpected);
/// assert_eq!(status, HResult::S_OK);
/// let json: serde_json::Value = serde_json::from_str(&payload).unwrap();
/// assert_eq!(json["Status"], HResult::HCS_E_UNEXPECTED_EXIT.as_i32());
/// assert_eq!(json["ExitType"], "UnexpectedExit");
///
/// let (status, _) = system_exited(ApiGeneration::V1, ExitKind::Unexpected);
/// assert_eq!(status, HResult::ERROR_VMCOMPUTE_UNEXPECTED_EXIT);
/// ```
pub fn system_exited(generation: ApiGeneration, exit: ExitKind) -> (HResult, String) {
    let code = match exit {
        ExitKind::Graceful | ExitKind::Forced => HResult::S_OK,
        ExitKind::Unexpected => CodePair::UNEXPECTED_EXIT.pick(generation == ApiGeneration::V2),
    };
    let status = match generation {
        ApiGeneration::V1 => code,
        ApiGeneration::V2 => HResult::S_OK,
    };
    let payload = format!(
        r#"{{"Status":{},"ExitType":"{}"}}"#,
        code.as_i32(),
        exit.exit_type()
    );
    (status, payload)
}

//! Fault plans: rules that make calls fail (with or without doing their work), pend, block,
//! crash the system, disconnect the service, hold signals or send extra notifications, and that
//! delay, duplicate, drop or rewrite notifications — declared in code with builders or as JSON.
//!
//! # JSON form
//!
//! ```json
//! {"rules": [
//!   {"op": "StartComputeSystem", "system": "c1", "nth": 2, "action": "fail",
//!    "code": "0x80070005", "document": {"Error": -2147024891, "ErrorMessage": "boom"}},
//!   {"op": "PauseComputeSystem", "action": "pending", "complete_after_ms": 500},
//!   {"op": "ResumeComputeSystem", "action": "pending", "never": true},
//!   {"op": "StartComputeSystem", "action": "crash", "after_ms": 5},
//!   {"op": "CreateProcess", "action": "disconnect"},
//!   {"op": "*", "action": "delay", "ms": 20},
//!   {"op": "TerminateComputeSystem", "action": "block", "gate": "g1"},
//!   {"op": "UnregisterComputeSystemCallback", "action": "late_callback",
//!    "kind": "SystemExited", "after_ms": 5},
//!   {"notification": "SystemExited", "action": "delay", "ms": 100},
//!   {"notification": "ProcessExited", "action": "duplicate", "copies": 1},
//!   {"notification": "SystemStartCompleted", "action": "drop"},
//!
//!   {"op": "StartComputeSystem", "action": "fail", "code": "0xC0370109", "performed": true},
//!   {"op": "GetComputeSystemProperties", "handle": "0x108", "action": "fail", "code": 5},
//!   {"op": "StartComputeSystem", "action": "notify", "kind": "SystemCrashReport",
//!    "after_ms": 5, "status": "0x0", "payload": {"CrashReport": "…"}},
//!   {"op": "CreateProcess", "action": "notify", "kind": 119, "to": "system"},
//!   {"op": "SignalProcess", "nth": 1, "action": "hold", "ms": 500},
//!   {"op": "TerminateProcess", "action": "hold", "gate": "g2"},
//!   {"notification": "ProcessExited", "action": "rewrite", "merge": {"LastWaitResult": 5}},
//!   {"notification": "ProcessExited", "action": "rewrite", "payload": "not json"},
//!   {"notification": "SystemExited", "action": "rewrite", "status": "0x0",
//!    "payload": {"Status": -2143878906, "ExitType": "UnexpectedExit"}},
//!   {"notification": "SystemStartCompleted", "action": "rewrite", "no_payload": true,
//!    "status": "0x80370109"}
//! ]}
//! ```
//!
//! * A rule has exactly one trigger: `op` (a [`Method`] name, or `"*"` for every call) or
//!   `notification` (a [`NotificationKind`] name — tracked kinds, `SystemCrashReport`,
//!   `SystemGuestConnectionClosed`, … — or a raw type number for unknown types).
//! * `system` limits it to one system id; `handle` (call rules) to calls through one system,
//!   process or callback handle (raw value, e.g. from [`crate::Simulator::record`]); `nth`
//!   (1-based) makes it fire only on the n-th matching event, otherwise it fires on every one.
//! * `fail` with `performed: true` does the call's work, then reports the failure ("HCS did it
//!   but reported failure"); `notify` sends an extra notification of any kind; `hold` queues
//!   signals per process handle; `rewrite` changes a notification's status and payload
//!   (`payload` verbatim, `no_payload`, or `merge` fields into its JSON object). See [`Action`].
//! * Codes are 0x-prefixed hex strings or 32-bit integers (negative values are taken as `i32`).
//! * Durations are milliseconds (`*_ms` / `ms`), at most 24 h; `copies` at most
//!   [`MAX_COPIES`]; payloads and documents at most [`MAX_TEXT`] bytes.
//!
//! Invalid plans are rejected with a [`PlanError`] whose path names the bad field, e.g.
//! `rules[2].code: expected HRESULT (0x-prefixed hex string or 32-bit integer), found "boom"`.

use hcs::{HResult, Method, NotificationKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A set of fault rules, evaluated in order for every call and notification.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    /// The rules, in evaluation order.
    pub rules: Vec<Rule>,
}

/// What a rule reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// One kind of call.
    Call(Method),
    /// Every call.
    AnyCall,
    /// One kind of notification (for notification actions).
    Notification(NotificationKind),
}

/// What a rule does when it fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The call fails with `code` and optional result document. It has no effect on the model
    /// unless `performed`: then the call's work is done first ("HCS did it but reported
    /// failure": the system is started or terminated, the process created, the handle closed,
    /// ...), no `*Completed` is sent for it, and only then is the failure returned. A handle
    /// or registration the call would have returned is released again, as the DLL does when it
    /// reports a failure.
    Fail {
        /// The HRESULT returned.
        code: HResult,
        /// The result document returned with it.
        document: Option<String>,
        /// The call's work is done anyway.
        performed: bool,
    },
    /// The call takes effect and answers "pending" (pending-capable calls and modify only); its
    /// completion arrives after `complete_after` (`None`: never), with `status` and as
    /// notification `kind` (defaults to the call's own `*Completed`).
    Pending {
        /// Delay of the completion; `None` never completes.
        complete_after: Option<Duration>,
        /// Status of the completion notification.
        status: HResult,
        /// A different completion kind (to send the wrong type).
        kind: Option<NotificationKind>,
    },
    /// The call is accepted (pending-capable calls answer pending and never complete), then the
    /// system crashes after `after`: processes are killed and `SystemExited` carries
    /// unexpected-exit status and `UnexpectedExit`.
    Crash {
        /// Delay before the crash.
        after: Duration,
    },
    /// The service disconnects after `after`: every registration gets `ServiceDisconnect` and
    /// every later call fails with `RPC_S_SERVER_UNAVAILABLE` until
    /// [`crate::Simulator::restart_service`]. Pending-capable calls answer pending (and never
    /// complete); other calls fail with `RPC_S_SERVER_UNAVAILABLE`.
    Disconnect {
        /// Delay before the disconnect.
        after: Duration,
    },
    /// The call blocks inside the driver for this long, then proceeds.
    Delay(Duration),
    /// The call blocks inside the driver until [`crate::Simulator::release`] of this gate (or
    /// reboot/drop of the simulator), then proceeds.
    Block {
        /// Gate name.
        gate: String,
    },
    /// After the unregister call returns, notification `kind` is delivered to the unregistered
    /// context anyway, after `after` (unregister calls only). A late `ProcessExited` carries the
    /// process's real status (`Exited: false` while it still runs: HCS never reports an exit
    /// that did not happen); a late `SystemExited` a graceful exit.
    LateCallback {
        /// Kind delivered.
        kind: NotificationKind,
        /// Delay after the unregister returned.
        after: Duration,
    },
    /// An extra notification `kind` (any kind, [`NotificationKind::Other`] included) is sent to
    /// the registrations of the call's object after `after`: the process's for a call on a
    /// process handle, the system's otherwise (or as `to` says). Registrations are looked up when
    /// it is due, so one made right after the call (e.g. after `CreateProcess`) gets it. Calls
    /// on a system or process handle only (not close or unregister).
    Notify {
        /// Kind sent.
        kind: NotificationKind,
        /// Its status.
        status: HResult,
        /// Its payload (`None`: no payload), verbatim (it need not be JSON).
        payload: Option<String>,
        /// Delay after the call.
        after: Duration,
        /// Whose registrations get it.
        to: NotifyTarget,
    },
    /// A signal (`SignalProcess`) or terminate (`TerminateProcess`) is accepted at once but
    /// takes effect only when `release` says; until then every later signal or terminate sent
    /// through the *same process handle* queues behind it and takes effect in order after it
    /// (HCS serialises signals per handle, `hcs-failure-modes.md` F12). Other handles to the same
    /// process are not held up.
    HoldSignal {
        /// When the held signal takes effect.
        release: Release,
    },
    /// The notification is delivered this much later (notification rules only).
    DelayNotification(Duration),
    /// The notification's status and/or payload are replaced (notification rules only): a
    /// process status with `LastWaitResult ≠ 0` or `Exited: false`, no payload, event data that
    /// is not JSON, a V2-style `{"Status":…,"ExitType":…}` payload, a failing completion, ...
    Rewrite {
        /// The new status (`None`: kept).
        status: Option<HResult>,
        /// What happens to the payload.
        payload: PayloadEdit,
    },
    /// The notification is delivered `copies` extra times (notification rules only).
    DuplicateNotification {
        /// Extra deliveries.
        copies: u32,
    },
    /// The notification is not delivered (notification rules only).
    DropNotification,
}

/// Whose registrations an injected notification ([`Action::Notify`]) goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotifyTarget {
    /// The process for a call on a process handle, else the system (JSON: `to` absent).
    #[default]
    Auto,
    /// The system's registrations (JSON `"to": "system"`).
    System,
    /// The process's registrations (JSON `"to": "process"`; process calls only).
    Process,
}

/// When a held signal ([`Action::HoldSignal`]) takes effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// After this delay (JSON `ms`).
    After(Duration),
    /// When [`crate::Simulator::release`] of this gate is called (JSON `gate`).
    Gate(String),
}

/// What a [`Action::Rewrite`] does to a notification's payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum PayloadEdit {
    /// Kept as it is.
    #[default]
    Keep,
    /// Removed: the notification carries no payload (JSON `"no_payload": true`).
    Remove,
    /// Replaced by this text, verbatim (it need not be JSON; JSON `payload`).
    Replace(String),
    /// These fields are set in the payload's JSON object (a payload that is absent or not an
    /// object becomes this object; JSON `merge`).
    Merge(serde_json::Map<String, Value>),
}

impl PayloadEdit {
    /// The edited payload.
    pub(crate) fn apply(&self, payload: Option<String>) -> Option<String> {
        match self {
            PayloadEdit::Keep => payload,
            PayloadEdit::Remove => None,
            PayloadEdit::Replace(text) => Some(text.clone()),
            PayloadEdit::Merge(fields) => {
                let mut doc = match payload.as_deref().map(serde_json::from_str::<Value>) {
                    Some(Ok(Value::Object(map))) => map,
                    _ => serde_json::Map::new(),
                };
                for (k, v) in fields {
                    doc.insert(k.clone(), v.clone());
                }
                Some(Value::Object(doc).to_string())
            }
        }
    }
}

/// Longest duration a plan may give (24 h), so that deadlines never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Most extra copies a `duplicate` rule may ask for.
pub const MAX_COPIES: u32 = 1000;
/// Longest payload or result document a plan may give, in bytes.
pub const MAX_TEXT: usize = 64 * 1024;

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Fail { .. } => "fail",
            Action::Pending { .. } => "pending",
            Action::Crash { .. } => "crash",
            Action::Disconnect { .. } => "disconnect",
            Action::Delay(_) | Action::DelayNotification(_) => "delay",
            Action::Block { .. } => "block",
            Action::LateCallback { .. } => "late_callback",
            Action::DuplicateNotification { .. } => "duplicate",
            Action::DropNotification => "drop",
            Action::Notify { .. } => "notify",
            Action::HoldSignal { .. } => "hold",
            Action::Rewrite { .. } => "rewrite",
        }
    }
    fn is_notification_action(&self) -> bool {
        matches!(
            self,
            Action::DelayNotification(_)
                | Action::DuplicateNotification { .. }
                | Action::DropNotification
                | Action::Rewrite { .. }
        )
    }
}

/// One fault rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// What it reacts to.
    pub trigger: Trigger,
    /// Only events of this system id.
    pub system: Option<String>,
    /// Only calls that use this handle (a system, process or callback handle's raw value, as
    /// [`crate::Simulator::record`] shows them); call rules only.
    pub handle: Option<u64>,
    /// Fire only on the n-th (1-based) matching event; `None` fires on every one.
    pub nth: Option<u32>,
    /// What it does.
    pub action: Action,
}

impl Rule {
    /// A rule for calls of `op`.
    pub fn call(op: Method) -> CallRule {
        CallRule {
            trigger: Trigger::Call(op),
            system: None,
            handle: None,
            nth: None,
        }
    }
    /// A rule for every call.
    pub fn any_call() -> CallRule {
        CallRule {
            trigger: Trigger::AnyCall,
            system: None,
            handle: None,
            nth: None,
        }
    }
    /// A rule for notifications of `kind`.
    pub fn notification(kind: NotificationKind) -> NotificationRule {
        NotificationRule {
            kind,
            system: None,
            nth: None,
        }
    }
}

/// Builder of a call rule; finish it with an action method.
#[derive(Debug, Clone)]
pub struct CallRule {
    trigger: Trigger,
    system: Option<String>,
    handle: Option<u64>,
    nth: Option<u32>,
}

impl CallRule {
    /// Only calls on this system id.
    pub fn system(mut self, id: impl Into<String>) -> Self {
        self.system = Some(id.into());
        self
    }
    /// Only calls through this handle (raw value of a system, process or callback handle).
    pub fn handle(mut self, raw: u64) -> Self {
        self.handle = Some(raw);
        self
    }
    /// Only the n-th (1-based) matching call.
    pub fn nth(mut self, n: u32) -> Self {
        self.nth = Some(n);
        self
    }
    fn with(self, action: Action) -> Rule {
        Rule {
            trigger: self.trigger,
            system: self.system,
            handle: self.handle,
            nth: self.nth,
            action,
        }
    }
    /// Fail with `code`.
    pub fn fail(self, code: impl Into<HResult>) -> Rule {
        self.with(Action::Fail {
            code: code.into(),
            document: None,
            performed: false,
        })
    }
    /// Fail with `code` and a result document.
    pub fn fail_with_document(self, code: impl Into<HResult>, document: impl Into<String>) -> Rule {
        self.with(Action::Fail {
            code: code.into(),
            document: Some(document.into()),
            performed: false,
        })
    }
    /// Do the call's work, then fail with `code` anyway ("HCS did it but reported failure").
    pub fn fail_performed(self, code: impl Into<HResult>) -> Rule {
        self.with(Action::Fail {
            code: code.into(),
            document: None,
            performed: true,
        })
    }
    /// Send an extra notification `kind` (status `S_OK`, no payload) to the call's object
    /// after `after`.
    pub fn notify(self, kind: NotificationKind, after: Duration) -> Rule {
        self.notify_with(kind, after, HResult::S_OK, None, NotifyTarget::Auto)
    }
    /// Send an extra notification with a chosen status, payload and target after `after`.
    pub fn notify_with(
        self,
        kind: NotificationKind,
        after: Duration,
        status: impl Into<HResult>,
        payload: Option<String>,
        to: NotifyTarget,
    ) -> Rule {
        self.with(Action::Notify {
            kind,
            status: status.into(),
            payload,
            after,
            to,
        })
    }
    /// Accept the signal or terminate, but let it take effect only after `delay`; later
    /// signals through the same process handle queue behind it.
    pub fn hold_signal(self, delay: Duration) -> Rule {
        self.with(Action::HoldSignal {
            release: Release::After(delay),
        })
    }
    /// Accept the signal or terminate, but let it take effect only when `gate` is released;
    /// later signals through the same process handle queue behind it.
    pub fn hold_signal_until(self, gate: impl Into<String>) -> Rule {
        self.with(Action::HoldSignal {
            release: Release::Gate(gate.into()),
        })
    }
    /// Answer pending and complete after `delay`.
    pub fn complete_late(self, delay: Duration) -> Rule {
        self.with(Action::Pending {
            complete_after: Some(delay),
            status: HResult::S_OK,
            kind: None,
        })
    }
    /// Answer pending and never complete.
    pub fn never_complete(self) -> Rule {
        self.with(Action::Pending {
            complete_after: None,
            status: HResult::S_OK,
            kind: None,
        })
    }
    /// Answer pending; complete after `delay` with `status` as notification `kind`.
    pub fn complete_with(
        self,
        delay: Duration,
        status: impl Into<HResult>,
        kind: Option<NotificationKind>,
    ) -> Rule {
        self.with(Action::Pending {
            complete_after: Some(delay),
            status: status.into(),
            kind,
        })
    }
    /// Accept the call, then crash the system after `after`.
    pub fn crash(self, after: Duration) -> Rule {
        self.with(Action::Crash { after })
    }
    /// Disconnect the service (immediately).
    pub fn disconnect(self) -> Rule {
        self.with(Action::Disconnect {
            after: Duration::ZERO,
        })
    }
    /// Disconnect the service after `after`.
    pub fn disconnect_after(self, after: Duration) -> Rule {
        self.with(Action::Disconnect { after })
    }
    /// Block the call for `duration`.
    pub fn delay(self, duration: Duration) -> Rule {
        self.with(Action::Delay(duration))
    }
    /// Block the call until the gate is released.
    pub fn block(self, gate: impl Into<String>) -> Rule {
        self.with(Action::Block { gate: gate.into() })
    }
    /// After the unregister returns, deliver `kind` to its context after `after`.
    pub fn late_callback(self, kind: NotificationKind, after: Duration) -> Rule {
        self.with(Action::LateCallback { kind, after })
    }
}

/// Builder of a notification rule; finish it with an action method.
#[derive(Debug, Clone)]
pub struct NotificationRule {
    kind: NotificationKind,
    system: Option<String>,
    nth: Option<u32>,
}

impl NotificationRule {
    /// Only notifications of this system id.
    pub fn system(mut self, id: impl Into<String>) -> Self {
        self.system = Some(id.into());
        self
    }
    /// Only the n-th (1-based) matching notification.
    pub fn nth(mut self, n: u32) -> Self {
        self.nth = Some(n);
        self
    }
    fn with(self, action: Action) -> Rule {
        Rule {
            trigger: Trigger::Notification(self.kind),
            system: self.system,
            handle: None,
            nth: self.nth,
            action,
        }
    }
    /// Replace its status and/or payload.
    pub fn rewrite(self, status: Option<HResult>, payload: PayloadEdit) -> Rule {
        self.with(Action::Rewrite { status, payload })
    }
    /// Replace its status.
    pub fn status(self, status: impl Into<HResult>) -> Rule {
        self.rewrite(Some(status.into()), PayloadEdit::Keep)
    }
    /// Replace its payload by `text`, verbatim (need not be JSON).
    pub fn payload(self, text: impl Into<String>) -> Rule {
        self.rewrite(None, PayloadEdit::Replace(text.into()))
    }
    /// Deliver it without a payload.
    pub fn no_payload(self) -> Rule {
        self.rewrite(None, PayloadEdit::Remove)
    }
    /// Set these fields of its JSON payload (`fields` must be an object; anything else sets
    /// nothing), e.g. `{"LastWaitResult": 5}`.
    pub fn merge_payload(self, fields: Value) -> Rule {
        let map = match fields {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        self.rewrite(None, PayloadEdit::Merge(map))
    }
    /// Deliver it `by` later.
    pub fn delay(self, by: Duration) -> Rule {
        self.with(Action::DelayNotification(by))
    }
    /// Deliver it `copies` extra times.
    pub fn duplicate(self, copies: u32) -> Rule {
        self.with(Action::DuplicateNotification { copies })
    }
    /// Do not deliver it.
    pub fn drop_it(self) -> Rule {
        self.with(Action::DropNotification)
    }
}

/// An invalid fault plan: the path of the bad field and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A field is missing, unknown or has a bad value.
    #[error("{path}: {message}")]
    Invalid {
        /// Path of the field, e.g. `rules[2].code`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The plan file could not be read.
    #[error("cannot read fault plan {path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl PlanError {
    fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        PlanError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl FaultPlan {
    /// An empty plan.
    pub fn new() -> Self {
        FaultPlan::default()
    }

    /// Appends a rule.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Checks rules built in code (the JSON parser applies the same checks): `nth` ≥ 1, and
    /// every action fits its trigger.
    pub fn validate(&self) -> Result<(), PlanError> {
        for (i, rule) in self.rules.iter().enumerate() {
            validate_rule(i, rule)?;
        }
        Ok(())
    }

    /// Parses a plan from JSON (see the module documentation for the format).
    pub fn from_json(text: &str) -> Result<FaultPlan, PlanError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            PlanError::at(
                "$",
                format!("invalid JSON at line {} column {}: {e}", e.line(), e.column()),
            )
        })?;
        Self::from_value(&value)
    }

    /// Reads and parses a plan file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<FaultPlan, PlanError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| PlanError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// Parses a plan from a JSON value. The document is read with serde (derived readers of the
    /// plan and rule shapes) through `serde_path_to_error`, so a bad field is named by its path,
    /// e.g. `rules[2].code`; the checks serde cannot express (one trigger, the fields of each
    /// action, `nth` ≥ 1, an action that fits its trigger) name their field the same way.
    pub fn from_value(value: &Value) -> Result<FaultPlan, PlanError> {
        if !value.is_object() {
            return Err(PlanError::at(
                "$",
                format!("expected an object with `rules`, found {}", kind_of(value)),
            ));
        }
        let doc: PlanDoc = serde_path_to_error::deserialize(value).map_err(|e| {
            // The root is `$`; a lone member with the empty name (`{"": …}`) would render as
            // nothing and is written `""`.
            let path = match e.path().to_string() {
                _ if e.path().iter().next().is_none() => "$".to_string(),
                path if path.is_empty() => r#""""#.to_string(),
                path => path,
            };
            PlanError::at(path, e.into_inner().to_string())
        })?;
        let rules = doc.rules.ok_or_else(|| PlanError::at("rules", "missing field"))?;
        let mut plan = FaultPlan::new();
        for (i, raw) in rules.into_iter().enumerate() {
            let rule = raw.into_rule(i)?;
            validate_rule(i, &rule)?;
            plan.rules.push(rule);
        }
        Ok(plan)
    }

    /// The plan as JSON (the format [`FaultPlan::from_json`] reads).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(PlanDoc::from(self)).unwrap_or(Value::Null)
    }
}

impl serde::Serialize for FaultPlan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PlanDoc::from(self).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for FaultPlan {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        FaultPlan::from_value(&value).map_err(serde::de::Error::custom)
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The JSON document of a plan: `{"rules": [...]}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object with `rules`")]
struct PlanDoc {
    /// The rules; `None` when the field is missing (reported as `rules: missing field`).
    #[serde(default)]
    rules: Option<Vec<RuleDoc>>,
}

impl From<&FaultPlan> for PlanDoc {
    fn from(plan: &FaultPlan) -> Self {
        PlanDoc {
            rules: Some(plan.rules.iter().map(RuleDoc::from).collect()),
        }
    }
}

/// The `op` of a rule: one call, or `"*"` for every call.
#[derive(Debug, Clone, Copy)]
enum OpName {
    Any,
    Call(Method),
}

/// The JSON form of one rule: every field any action takes, each optional (`null` is the same
/// as absent). Which fields an action takes, and that there is exactly one trigger, is checked
/// by [`RuleDoc::into_rule`]. Each field is read by a `field::*` function whose error message
/// says what was expected and what was found.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
struct RuleDoc {
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::op")]
    op: Option<OpName>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "field::notification"
    )]
    notification: Option<NotificationKind>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::string")]
    system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::handle")]
    handle: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::count")]
    nth: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::string")]
    action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::code")]
    code: Option<HResult>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::document")]
    document: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::millis")]
    complete_after_ms: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::flag")]
    never: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::code")]
    status: Option<HResult>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "field::notification"
    )]
    kind: Option<NotificationKind>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::millis")]
    after_ms: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::millis")]
    ms: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::string")]
    gate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::count")]
    copies: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::flag")]
    performed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::payload")]
    payload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::flag")]
    no_payload: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::merge")]
    merge: Option<serde_json::Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "field::to")]
    to: Option<NotifyTarget>,
}

impl RuleDoc {
    /// The action fields that are set, by name, in the order they are reported.
    fn action_fields(&self) -> [(&'static str, bool); 15] {
        [
            ("code", self.code.is_some()),
            ("document", self.document.is_some()),
            ("complete_after_ms", self.complete_after_ms.is_some()),
            ("never", self.never.is_some()),
            ("status", self.status.is_some()),
            ("kind", self.kind.is_some()),
            ("after_ms", self.after_ms.is_some()),
            ("ms", self.ms.is_some()),
            ("gate", self.gate.is_some()),
            ("copies", self.copies.is_some()),
            ("performed", self.performed.is_some()),
            ("payload", self.payload.is_some()),
            ("no_payload", self.no_payload.is_some()),
            ("merge", self.merge.is_some()),
            ("to", self.to.is_some()),
        ]
    }

    /// The rule this document describes (rule `i` of the plan), or the first problem found.
    fn into_rule(self, i: usize) -> Result<Rule, PlanError> {
        let base = format!("rules[{i}]");
        let at = |field: &str, message: String| PlanError::at(format!("{base}.{field}"), message);
        let missing =
            |field: &str, action: &str| at(field, format!("missing field (required by `{action}`)"));
        let trigger = match (self.op, self.notification) {
            (Some(_), Some(_)) => {
                return Err(PlanError::at(
                    base,
                    "has both `op` and `notification`; give exactly one",
                ))
            }
            (None, None) => {
                return Err(PlanError::at(
                    base,
                    "missing trigger: give `op` or `notification`",
                ))
            }
            (Some(OpName::Any), None) => Trigger::AnyCall,
            (Some(OpName::Call(op)), None) => Trigger::Call(op),
            (None, Some(kind)) => Trigger::Notification(kind),
        };
        if self.nth == Some(0) {
            return Err(at("nth", "must be at least 1 (it is 1-based)".into()));
        }
        let Some(action_name) = self.action.clone() else {
            return Err(at("action", "missing field".into()));
        };
        let is_notification = matches!(trigger, Trigger::Notification(_));
        let (action, takes): (Action, &[&str]) = match (action_name.as_str(), is_notification) {
            ("fail", false) => (
                Action::Fail {
                    code: self.code.ok_or_else(|| missing("code", "fail"))?,
                    document: self.document.clone(),
                    performed: self.performed.unwrap_or(false),
                },
                &["code", "document", "performed"],
            ),
            ("notify", false) => (
                Action::Notify {
                    kind: self.kind.ok_or_else(|| missing("kind", "notify"))?,
                    status: self.status.unwrap_or(HResult::S_OK),
                    payload: self.payload.clone(),
                    after: self.after_ms.unwrap_or(Duration::ZERO),
                    to: self.to.unwrap_or_default(),
                },
                &["kind", "status", "payload", "after_ms", "to"],
            ),
            ("hold", false) => {
                let release = match (self.ms, self.gate.clone()) {
                    (Some(_), Some(_)) => return Err(at("gate", "conflicts with `ms`; give one".into())),
                    (Some(ms), None) => Release::After(ms),
                    (None, Some(gate)) => Release::Gate(gate),
                    (None, None) => return Err(at("ms", "missing field (`hold` needs `ms` or `gate`)".into())),
                };
                (Action::HoldSignal { release }, &["ms", "gate"])
            }
            ("rewrite", true) => {
                let payload = match (self.payload.clone(), self.no_payload, self.merge.clone()) {
                    (Some(_), Some(true), _) => {
                        return Err(at("no_payload", "conflicts with `payload`".into()))
                    }
                    (Some(_), _, Some(_)) => return Err(at("merge", "conflicts with `payload`".into())),
                    (None, Some(true), Some(_)) => {
                        return Err(at("merge", "conflicts with `no_payload`".into()))
                    }
                    (Some(text), _, None) => PayloadEdit::Replace(text),
                    (None, Some(true), None) => PayloadEdit::Remove,
                    (None, _, Some(map)) => PayloadEdit::Merge(map),
                    (None, _, None) => PayloadEdit::Keep,
                };
                if self.status.is_none() && payload == PayloadEdit::Keep {
                    return Err(at(
                        "action",
                        "`rewrite` needs `status`, `payload`, `no_payload: true` or `merge`".into(),
                    ));
                }
                (
                    Action::Rewrite {
                        status: self.status,
                        payload,
                    },
                    &["status", "payload", "no_payload", "merge"],
                )
            }
            ("pending", false) => {
                let never = self.never.unwrap_or(false);
                if never && self.complete_after_ms.is_some() {
                    return Err(at("never", "conflicts with `complete_after_ms`".into()));
                }
                (
                    Action::Pending {
                        complete_after: if never {
                            None
                        } else {
                            Some(self.complete_after_ms.unwrap_or(Duration::ZERO))
                        },
                        status: self.status.unwrap_or(HResult::S_OK),
                        kind: self.kind,
                    },
                    &["never", "complete_after_ms", "status", "kind"],
                )
            }
            ("crash", false) => (
                Action::Crash {
                    after: self.after_ms.unwrap_or(Duration::ZERO),
                },
                &["after_ms"],
            ),
            ("disconnect", false) => (
                Action::Disconnect {
                    after: self.after_ms.unwrap_or(Duration::ZERO),
                },
                &["after_ms"],
            ),
            ("delay", false) => (
                Action::Delay(self.ms.ok_or_else(|| missing("ms", "delay"))?),
                &["ms"],
            ),
            ("block", false) => (
                Action::Block {
                    gate: self.gate.clone().ok_or_else(|| missing("gate", "block"))?,
                },
                &["gate"],
            ),
            ("late_callback", false) => (
                Action::LateCallback {
                    kind: self.kind.unwrap_or(NotificationKind::SystemExited),
                    after: self.after_ms.unwrap_or(Duration::ZERO),
                },
                &["kind", "after_ms"],
            ),
            ("delay", true) => (
                Action::DelayNotification(self.ms.ok_or_else(|| missing("ms", "delay"))?),
                &["ms"],
            ),
            ("duplicate", true) => (
                Action::DuplicateNotification {
                    copies: self.copies.unwrap_or(1),
                },
                &["copies"],
            ),
            ("drop", true) => (Action::DropNotification, &[]),
            (other, true) => {
                return Err(at(
                    "action",
                    format!("`{other}` is not a notification action; expected `delay`, `duplicate`, `drop` or `rewrite`"),
                ))
            }
            (other, false) => {
                return Err(at(
                    "action",
                    format!(
                        "`{other}` is not a call action; expected `fail`, `pending`, `crash`, `disconnect`, `delay`, `block`, `late_callback`, `notify` or `hold`"
                    ),
                ))
            }
        };
        if let Some((field, _)) = self
            .action_fields()
            .into_iter()
            .find(|(field, set)| *set && !takes.contains(field))
        {
            return Err(at(field, format!("unknown field for action `{action_name}`")));
        }
        Ok(Rule {
            trigger,
            system: self.system,
            handle: self.handle,
            nth: self.nth,
            action,
        })
    }
}

impl From<&Rule> for RuleDoc {
    fn from(rule: &Rule) -> Self {
        let mut doc = RuleDoc {
            system: rule.system.clone(),
            handle: rule.handle,
            nth: rule.nth,
            action: Some(rule.action.name().to_string()),
            ..RuleDoc::default()
        };
        match rule.trigger {
            Trigger::Call(op) => doc.op = Some(OpName::Call(op)),
            Trigger::AnyCall => doc.op = Some(OpName::Any),
            Trigger::Notification(k) => doc.notification = Some(k),
        }
        match &rule.action {
            Action::Fail {
                code,
                document,
                performed,
            } => {
                doc.code = Some(*code);
                doc.document = document.clone();
                doc.performed = performed.then_some(true);
            }
            Action::Notify {
                kind,
                status,
                payload,
                after,
                to,
            } => {
                doc.kind = Some(*kind);
                doc.status = Some(*status);
                doc.payload = payload.clone();
                doc.after_ms = Some(*after);
                doc.to = (*to != NotifyTarget::Auto).then_some(*to);
            }
            Action::HoldSignal { release } => match release {
                Release::After(d) => doc.ms = Some(*d),
                Release::Gate(g) => doc.gate = Some(g.clone()),
            },
            Action::Rewrite { status, payload } => {
                doc.status = *status;
                match payload {
                    PayloadEdit::Keep => {}
                    PayloadEdit::Remove => doc.no_payload = Some(true),
                    PayloadEdit::Replace(text) => doc.payload = Some(text.clone()),
                    PayloadEdit::Merge(map) => doc.merge = Some(map.clone()),
                }
            }
            Action::Pending {
                complete_after,
                status,
                kind,
            } => {
                match complete_after {
                    Some(d) => doc.complete_after_ms = Some(*d),
                    None => doc.never = Some(true),
                }
                doc.status = Some(*status);
                doc.kind = *kind;
            }
            Action::Crash { after } | Action::Disconnect { after } => doc.after_ms = Some(*after),
            Action::Delay(d) | Action::DelayNotification(d) => doc.ms = Some(*d),
            Action::Block { gate } => doc.gate = Some(gate.clone()),
            Action::LateCallback { kind, after } => {
                doc.kind = Some(*kind);
                doc.after_ms = Some(*after);
            }
            Action::DuplicateNotification { copies } => doc.copies = Some(*copies),
            Action::DropNotification => {}
        }
        doc
    }
}

/// The (de)serialisers of the rule fields (`#[serde(with = ...)]`): each reads any JSON value,
/// takes `null` as absent, and rejects a bad value with a message saying what it expected and
/// what it found (`serde_path_to_error` prefixes the field's path).
mod field {
    use super::{kind_of, NotifyTarget, OpName, MAX_COPIES, MAX_DURATION, MAX_TEXT};
    use hcs::{HResult, Method, NotificationKind};
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;
    use std::time::Duration;

    /// Reads an optional field with `parse`, which gets a non-null value.
    fn read<'de, D: Deserializer<'de>, T>(
        d: D,
        parse: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Result<Option<T>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            v => parse(&v).map(Some).map_err(D::Error::custom),
        }
    }

    pub(super) mod string {
        use super::*;
        pub(crate) fn serialize<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
            v.serialize(s)
        }
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
            read(d, |v| match v {
                Value::String(s) => Ok(s.clone()),
                v => Err(format!("expected a string, found {}", kind_of(v))),
            })
        }
    }

    pub(super) mod count {
        use super::*;
        pub(crate) fn serialize<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
            v.serialize(s)
        }
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
            read(d, |v| {
                let n = v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| format!("expected a non-negative 32-bit integer, found {v}"))?;
                if n > MAX_COPIES {
                    return Err(format!("{n} is too large (at most {MAX_COPIES})"));
                }
                Ok(n)
            })
        }
    }

    pub(super) mod flag {
        use super::*;
        pub(crate) fn serialize<S: Serializer>(v: &Option<bool>, s: S) -> Result<S::Ok, S::Error> {
            v.serialize(s)
        }
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
            read(d, |v| {
                v.as_bool()
                    .ok_or_else(|| format!("expected a boolean, found {}", kind_of(v)))
            })
        }
    }

    /// Durations as whole milliseconds.
    pub(super) mod millis {
        use super::*;
        pub(crate) fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            v.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .serialize(s)
        }
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            read(d, |v| {
                let d = v
                    .as_u64()
                    .map(Duration::from_millis)
                    .ok_or_else(|| format!("expected milliseconds as a non-negative integer, found {v}"))?;
                if d > MAX_DURATION {
                    return Err(format!(
                        "{v} ms is too long (at most {} ms, 24 h)",
                        MAX_DURATION.as_millis()
                    ));
                }
                Ok(d)
            })
        }
    }

    /// HRESULTs: written as `0x`-prefixed hex strings; read from those or from 32-bit integers
    /// (negative values are taken as `i32`).
    pub(super) mod code {
        use super::*;
        pub(crate) fn serialize<S: Serializer>(v: &Option<HResult>, s: S) -> Result<S::Ok, S::Error> {
            v.map(|c| format!("0x{:08X}", c.0)).serialize(s)
        }
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HResult>, D::Error> {
            read(d, |v| {
                parse(v).ok_or_else(|| {
                    format!("expected HRESULT (0x-prefixed hex string or 32-bit integer), found {v}")
                })
            })
        }
        fn parse(v: &Value) -> Option<HResult> {
            match v {
                Value::Number(n) => match n.as_u64() {
                    Some(u) => u32::try_from(u).ok().map(HResult),
                    None => n
                        .as_i64()
                        .and_then(|i| i32::try_from(i).ok())
                        .map(HResult::from_i32),
                },
                Value::String(s) => {
                    let s = s.trim();
                    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
                    u32::from_str_radix(hex, 16).ok().map(HResult)
                }
                _ => None,
            }
        }
    }

    /// A result document: read from a string or an object (kept as its JSON text), written as
    /// a string.
    pub(super) mod document {
        use super::*;
        pub(crate) fn serialize<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
            v.serialize(s)
        }
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
            read(d, |v| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    v @ Value::Object(_) => v.to_string(),
                    v => return Err(format!("expected a string or an object, found {}", kind_of(v))),
                };
                bounded(text)
            })
        }
    }

    fn bounded(text: String) -> Result<String, String> {
        if text.len() > MAX_TEXT {
            return Err(format!("{} bytes is too long (at most {MAX_TEXT})", text.len()));
        }
        Ok(text)
    }

    /// A notification payload: a string is taken verbatim (so `"not json"` is malformed event
    /// data), any other JSON value as its JSON text; written back the same way.
    pub(super) mod payload {
        use super::*;
        pub(crate) fn serialize<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
            match v.as_deref().map(serde_json::from_str::<Value>) {
                Some(Ok(value @ (Value::Object(_) | Value::Array(_)))) => value.serialize(s),
                _ => v.serialize(s),
            }
        }
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
            read(d, |v| {
                bounded(match v {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                })
            })
        }
    }

    /// Fields merged into a JSON payload: an object.
    pub(super) mod merge {
        use super::*;
        use serde_json::Map;
        pub(crate) fn serialize<S: Serializer>(
            v: &Option<Map<String, Value>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            v.serialize(s)
        }
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Map<String, Value>>, D::Error> {
            read(d, |v| match v {
                Value::Object(map) => {
                    bounded(v.to_string())?;
                    Ok(map.clone())
                }
                v => Err(format!("expected an object, found {}", kind_of(v))),
            })
        }
    }

    /// A handle's raw value: a positive integer or a `0x`-prefixed hex string.
    pub(super) mod handle {
        use super::*;
        pub(crate) fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
            v.map(|h| format!("{h:#x}")).serialize(s)
        }
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
            read(d, |v| {
                let raw = match v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => {
                        let s = s.trim();
                        s.strip_prefix("0x")
                            .or_else(|| s.strip_prefix("0X"))
                            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                    }
                    _ => None,
                };
                match raw {
                    Some(0) => Err("a handle is never 0".to_string()),
                    Some(h) => Ok(h),
                    None => Err(format!(
                        "expected a handle (positive integer or 0x-prefixed hex string), found {v}"
                    )),
                }
            })
        }
    }

    /// The target of an injected notification: `"system"` or `"process"`.
    pub(super) mod to {
        use super::*;
        pub(crate) fn serialize<S: Serializer>(v: &Option<NotifyTarget>, s: S) -> Result<S::Ok, S::Error> {
            v.map(|t| match t {
                NotifyTarget::Auto => "auto",
                NotifyTarget::System => "system",
                NotifyTarget::Process => "process",
            })
            .serialize(s)
        }
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NotifyTarget>, D::Error> {
            read(d, |v| match v.as_str() {
                Some("system") => Ok(NotifyTarget::System),
                Some("process") => Ok(NotifyTarget::Process),
                Some("auto") => Ok(NotifyTarget::Auto),
                _ => Err(format!("expected \"system\" or \"process\", found {v}")),
            })
        }
    }

    /// A notification kind: a [`NotificationKind::from_name`] name (`"SystemExited"`,
    /// `"SystemCrashReport"`, `"SystemGuestConnectionClosed"`, ...), or its raw V1 value as an
    /// integer or `0x`-prefixed hex string (any value: unknown types become
    /// [`NotificationKind::Other`]). Written as the name where there is one, else the number.
    pub(super) mod notification {
        use super::*;
        pub(crate) fn serialize<S: Serializer>(
            v: &Option<NotificationKind>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match v {
                None => s.serialize_none(),
                Some(k) => match NotificationKind::from_name(&k.to_string()) {
                    Some(_) => s.serialize_str(&k.to_string()),
                    None => s.serialize_u32(k.v1_value()),
                },
            }
        }
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<NotificationKind>, D::Error> {
            read(d, |v| {
                let raw = match v {
                    Value::Number(n) => Some(n.as_u64().and_then(|n| u32::try_from(n).ok())),
                    Value::String(s) if s.starts_with("0x") || s.starts_with("0X") => {
                        Some(u32::from_str_radix(&s[2..], 16).ok())
                    }
                    Value::String(_) => None,
                    v => return Err(format!("expected a string or a number, found {}", kind_of(v))),
                };
                match (raw, v) {
                    (Some(Some(raw)), _) => Ok(NotificationKind::from_v1(raw)),
                    (Some(None), v) => Err(format!("expected a 32-bit notification type, found {v}")),
                    (None, Value::String(name)) => NotificationKind::from_name(name).ok_or_else(|| {
                        let names: Vec<String> =
                            NotificationKind::TRACKED.iter().map(|k| k.to_string()).collect();
                        format!(
                            "unknown notification `{name}`, expected one of {}, SystemCrashReport, SystemGuestConnectionClosed, ... or a raw type number",
                            names.join(", ")
                        )
                    }),
                    (None, v) => Err(format!("expected a string or a number, found {}", kind_of(v))),
                }
            })
        }
    }

    /// A call by its [`Method::from_name`] name (`Hcs` prefix optional), or `"*"`.
    pub(super) mod op {
        use super::*;
        pub(crate) fn serialize<S: Serializer>(v: &Option<OpName>, s: S) -> Result<S::Ok, S::Error> {
            v.map(|op| match op {
                OpName::Any => "*",
                OpName::Call(m) => m.name(),
            })
            .serialize(s)
        }
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OpName>, D::Error> {
            read(d, |v| {
                match v {
                Value::String(s) if s == "*" => Ok(OpName::Any),
                Value::String(s) => Method::from_name(s).map(OpName::Call).ok_or_else(|| {
                    format!(
                        "unknown operation `{s}`, expected an HCS call name such as `StartComputeSystem` or `*`"
                    )
                }),
                v => Err(format!("expected a string, found {}", kind_of(v))),
            }
            })
        }
    }
}

fn validate_rule(i: usize, rule: &Rule) -> Result<(), PlanError> {
    let base = format!("rules[{i}]");
    if rule.nth == Some(0) {
        return Err(PlanError::at(
            format!("{base}.nth"),
            "must be at least 1 (it is 1-based)",
        ));
    }
    let is_notification = matches!(rule.trigger, Trigger::Notification(_));
    if rule.handle == Some(0) {
        return Err(PlanError::at(format!("{base}.handle"), "a handle is never 0"));
    }
    if is_notification && rule.handle.is_some() {
        return Err(PlanError::at(
            format!("{base}.handle"),
            "applies to call rules only",
        ));
    }
    check_bounds(&base, &rule.action)?;
    if let Action::Fail { code, .. } = &rule.action {
        if *code == HResult::S_OK {
            return Err(PlanError::at(
                format!("{base}.code"),
                "`fail` needs an error code, not S_OK (0)",
            ));
        }
    }
    if is_notification != rule.action.is_notification_action() {
        return Err(PlanError::at(
            format!("{base}.action"),
            format!(
                "`{}` does not apply to a {} trigger",
                rule.action.name(),
                if is_notification { "notification" } else { "call" }
            ),
        ));
    }
    match (&rule.action, rule.trigger) {
        (Action::Pending { .. }, Trigger::Call(op)) if !(op.can_pend() || op == Method::ModifyComputeSystem) => {
            Err(PlanError::at(
                format!("{base}.action"),
                format!("`pending` applies to create, start, shutdown, terminate, pause, resume, save and modify, not {op}"),
            ))
        }
        (Action::Pending { .. }, Trigger::AnyCall) => Err(PlanError::at(
            format!("{base}.action"),
            "`pending` needs a specific pending-capable `op`, not `*`",
        )),
        (Action::LateCallback { .. }, Trigger::Call(op))
            if !matches!(op, Method::UnregisterComputeSystemCallback | Method::UnregisterProcessCallback) =>
        {
            Err(PlanError::at(
                format!("{base}.action"),
                format!("`late_callback` applies to UnregisterComputeSystemCallback and UnregisterProcessCallback, not {op}"),
            ))
        }
        (Action::LateCallback { .. }, Trigger::AnyCall) => Err(PlanError::at(
            format!("{base}.action"),
            "`late_callback` needs `op` UnregisterComputeSystemCallback or UnregisterProcessCallback",
        )),
        (Action::Crash { .. }, Trigger::Call(Method::EnumerateComputeSystems | Method::GetServiceProperties | Method::ModifyServiceSettings)) => {
            Err(PlanError::at(format!("{base}.action"), "`crash` needs a call on a system"))
        }
        (Action::Notify { .. }, Trigger::AnyCall) => Err(PlanError::at(
            format!("{base}.action"),
            "`notify` needs a specific `op` on a system or process handle, not `*`",
        )),
        (Action::Notify { to, .. }, Trigger::Call(op)) => {
            if !notify_capable(op) {
                return Err(PlanError::at(
                    format!("{base}.action"),
                    format!("`notify` applies to calls on a system or process handle (not close, unregister or service calls), not {op}"),
                ));
            }
            if *to == NotifyTarget::Process && !is_process_call(op) {
                return Err(PlanError::at(
                    format!("{base}.to"),
                    format!("`process` needs a call on a process (CreateProcess, SignalProcess, ...), not {op}"),
                ));
            }
            Ok(())
        }
        (Action::HoldSignal { .. }, Trigger::Call(Method::SignalProcess | Method::TerminateProcess)) => Ok(()),
        (Action::HoldSignal { .. }, Trigger::Call(op)) => Err(PlanError::at(
            format!("{base}.action"),
            format!("`hold` applies to SignalProcess and TerminateProcess, not {op}"),
        )),
        (Action::HoldSignal { .. }, Trigger::AnyCall) => Err(PlanError::at(
            format!("{base}.action"),
            "`hold` needs `op` SignalProcess or TerminateProcess",
        )),
        _ => Ok(()),
    }
}

/// The bounds of values built in code (the JSON readers apply the same ones).
fn check_bounds(base: &str, action: &Action) -> Result<(), PlanError> {
    let too_long = |field: &str, d: Duration| {
        (d > MAX_DURATION).then(|| {
            PlanError::at(
                format!("{base}.{field}"),
                format!(
                    "{} ms is too long (at most {} ms, 24 h)",
                    d.as_millis(),
                    MAX_DURATION.as_millis()
                ),
            )
        })
    };
    let too_big = |field: &str, text: Option<&str>| {
        text.filter(|t| t.len() > MAX_TEXT).map(|t| {
            PlanError::at(
                format!("{base}.{field}"),
                format!("{} bytes is too long (at most {MAX_TEXT})", t.len()),
            )
        })
    };
    let problem = match action {
        Action::Fail { document, .. } => too_big("document", document.as_deref()),
        Action::Pending { complete_after, .. } => {
            complete_after.and_then(|d| too_long("complete_after_ms", d))
        }
        Action::Crash { after } | Action::Disconnect { after } | Action::LateCallback { after, .. } => {
            too_long("after_ms", *after)
        }
        Action::Delay(d) | Action::DelayNotification(d) => too_long("ms", *d),
        Action::HoldSignal {
            release: Release::After(d),
        } => too_long("ms", *d),
        Action::Notify { payload, after, .. } => {
            too_long("after_ms", *after).or_else(|| too_big("payload", payload.as_deref()))
        }
        Action::Rewrite {
            payload: PayloadEdit::Replace(text),
            ..
        } => too_big("payload", Some(text)),
        Action::DuplicateNotification { copies } if *copies > MAX_COPIES => Some(PlanError::at(
            format!("{base}.copies"),
            format!("{copies} is too large (at most {MAX_COPIES})"),
        )),
        _ => None,
    };
    problem.map_or(Ok(()), Err)
}

/// Calls on a process handle (or creating one).
fn is_process_call(op: Method) -> bool {
    matches!(
        op,
        Method::CreateProcess
            | Method::TerminateProcess
            | Method::SignalProcess
            | Method::GetProcessInfo
            | Method::GetProcessProperties
            | Method::ModifyProcess
            | Method::RegisterProcessCallback
    )
}

/// Calls after which a `notify` rule can name the object they were on.
fn notify_capable(op: Method) -> bool {
    !matches!(
        op,
        Method::EnumerateComputeSystems
            | Method::GetServiceProperties
            | Method::ModifyServiceSettings
            | Method::CloseComputeSystem
            | Method::CloseProcess
            | Method::UnregisterComputeSystemCallback
            | Method::UnregisterProcessCallback
    )
}

/// Run-time state of a plan: the rules and how many matching events each has seen.
#[derive(Debug, Default)]
pub(crate) struct ActivePlan {
    rules: Vec<(Rule, u64)>,
}

impl ActivePlan {
    pub(crate) fn new(plan: FaultPlan) -> Self {
        ActivePlan {
            rules: plan.rules.into_iter().map(|r| (r, 0)).collect(),
        }
    }

    /// Counts a call against every matching rule; returns the actions of the rules that fire.
    pub(crate) fn on_call(&mut self, op: Method, system: Option<&str>, handle: Option<u64>) -> Vec<Action> {
        self.fire(
            |t| match t {
                Trigger::Call(o) => o == op,
                Trigger::AnyCall => true,
                Trigger::Notification(_) => false,
            },
            system,
            handle,
        )
    }

    /// Counts a notification against every matching rule; returns the actions that fire.
    pub(crate) fn on_notification(&mut self, kind: NotificationKind, system: Option<&str>) -> Vec<Action> {
        self.fire(|t| t == Trigger::Notification(kind), system, None)
    }

    fn fire(
        &mut self,
        matches: impl Fn(Trigger) -> bool,
        system: Option<&str>,
        handle: Option<u64>,
    ) -> Vec<Action> {
        let mut fired = Vec::new();
        for (rule, count) in &mut self.rules {
            if !matches(rule.trigger) {
                continue;
            }
            if let Some(want) = &rule.system {
                if system != Some(want.as_str()) {
                    continue;
                }
            }
            if rule.handle.is_some() && rule.handle != handle {
                continue;
            }
            *count += 1;
            if rule.nth.is_none_or(|n| u64::from(n) == *count) {
                fired.push(rule.action.clone());
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_and_json_forms_round_trip() {
        let plan = FaultPlan::new()
            .rule(
                Rule::call(Method::StartComputeSystem)
                    .system("a")
                    .nth(2)
                    .fail(HResult::HCS_E_INVALID_STATE),
            )
            .rule(Rule::call(Method::PauseComputeSystem).never_complete())
            .rule(Rule::any_call().delay(Duration::from_millis(3)))
            .rule(Rule::notification(NotificationKind::SystemExited).duplicate(2));
        plan.validate().unwrap();
        let text = plan.to_json().to_string();
        assert_eq!(FaultPlan::from_json(&text).unwrap(), plan);
    }

    #[test]
    fn nth_fires_once_and_every_fires_always() {
        let mut active = ActivePlan::new(
            FaultPlan::new()
                .rule(Rule::call(Method::StartComputeSystem).nth(2).fail(1u32))
                .rule(Rule::call(Method::StartComputeSystem).system("x").fail(2u32)),
        );
        assert!(active
            .on_call(Method::StartComputeSystem, Some("y"), None)
            .is_empty());
        assert_eq!(
            active.on_call(Method::StartComputeSystem, Some("y"), None).len(),
            1
        );
        assert!(active
            .on_call(Method::StartComputeSystem, Some("y"), None)
            .is_empty());
        assert_eq!(
            active.on_call(Method::StartComputeSystem, Some("x"), None).len(),
            1
        );
        assert!(active
            .on_call(Method::PauseComputeSystem, Some("x"), None)
            .is_empty());
    }

    /// Found by the `fault_plan` fuzz target: a member with the empty name was reported at an
    /// empty path (`: unknown field ``, expected `rules``).
    #[test]
    fn error_under_the_empty_member_name_names_a_path() {
        let err = FaultPlan::from_json(r#"{"":1}"#).unwrap_err().to_string();
        assert!(err.starts_with(r#""": unknown field"#), "{err}");
        let err = FaultPlan::from_json(r#"{".":1}"#).unwrap_err().to_string();
        assert!(err.starts_with(".: unknown field"), "{err}");
        let err = FaultPlan::from_json("[]").unwrap_err().to_string();
        assert!(err.starts_with("$: "), "{err}");
    }
}

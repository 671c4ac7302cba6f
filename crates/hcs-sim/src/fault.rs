//! Fault plans: rules that make calls fail, pend, block or crash the system, disconnect the
//! service, and delay, duplicate or drop notifications — declared in code with builders or as
//! JSON.
//!
//! # JSON form
//!
//! ```json
//! {"rules": [
//!   {"op": "StartComputeSystem", "system": "c1", "nth": 2, "action": "fail",
//!    "code": "0x80370105", "document": {"Error": -2143878907, "ErrorMessage": "boom"}},
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
//!   {"notification": "SystemStartCompleted", "action": "drop"}
//! ]}
//! ```
//!
//! * A rule has exactly one trigger: `op` (an [`Op`] name, or `"*"` for every call) or
//!   `notification` (a [`SimNotification`] name).
//! * `system` limits it to one system id; `nth` (1-based) makes it fire only on the n-th
//!   matching event, otherwise it fires on every one.
//! * Codes are 0x-prefixed hex strings or 32-bit integers (negative values are taken as `i32`).
//! * Durations are milliseconds (`*_ms` / `ms`).
//!
//! Invalid plans are rejected with a [`PlanError`] whose path names the bad field, e.g.
//! `rules[2].code: expected HRESULT (0x-prefixed hex string or 32-bit integer), found "boom"`.

use crate::config::{Op, SimNotification};
use hcs::HResult;
use serde_json::{Map, Value};
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
    Call(Op),
    /// Every call.
    AnyCall,
    /// One kind of notification (for notification actions).
    Notification(SimNotification),
}

/// What a rule does when it fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The call fails with `code` and optional result document; it has no effect on the model.
    Fail {
        /// The HRESULT returned.
        code: HResult,
        /// The result document returned with it.
        document: Option<String>,
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
        kind: Option<SimNotification>,
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
    /// context anyway, after `after` (unregister calls only).
    LateCallback {
        /// Kind delivered.
        kind: SimNotification,
        /// Delay after the unregister returned.
        after: Duration,
    },
    /// The notification is delivered this much later (notification rules only).
    DelayNotification(Duration),
    /// The notification is delivered `copies` extra times (notification rules only).
    DuplicateNotification {
        /// Extra deliveries.
        copies: u32,
    },
    /// The notification is not delivered (notification rules only).
    DropNotification,
}

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
        }
    }
    fn is_notification_action(&self) -> bool {
        matches!(
            self,
            Action::DelayNotification(_) | Action::DuplicateNotification { .. } | Action::DropNotification
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
    /// Fire only on the n-th (1-based) matching event; `None` fires on every one.
    pub nth: Option<u32>,
    /// What it does.
    pub action: Action,
}

impl Rule {
    /// A rule for calls of `op`.
    pub fn call(op: Op) -> CallRule {
        CallRule {
            trigger: Trigger::Call(op),
            system: None,
            nth: None,
        }
    }
    /// A rule for every call.
    pub fn any_call() -> CallRule {
        CallRule {
            trigger: Trigger::AnyCall,
            system: None,
            nth: None,
        }
    }
    /// A rule for notifications of `kind`.
    pub fn notification(kind: SimNotification) -> NotificationRule {
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
    nth: Option<u32>,
}

impl CallRule {
    /// Only calls on this system id.
    pub fn system(mut self, id: impl Into<String>) -> Self {
        self.system = Some(id.into());
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
            nth: self.nth,
            action,
        }
    }
    /// Fail with `code`.
    pub fn fail(self, code: impl Into<HResult>) -> Rule {
        self.with(Action::Fail {
            code: code.into(),
            document: None,
        })
    }
    /// Fail with `code` and a result document.
    pub fn fail_with_document(self, code: impl Into<HResult>, document: impl Into<String>) -> Rule {
        self.with(Action::Fail {
            code: code.into(),
            document: Some(document.into()),
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
        kind: Option<SimNotification>,
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
    pub fn late_callback(self, kind: SimNotification, after: Duration) -> Rule {
        self.with(Action::LateCallback { kind, after })
    }
}

/// Builder of a notification rule; finish it with an action method.
#[derive(Debug, Clone)]
pub struct NotificationRule {
    kind: SimNotification,
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
            nth: self.nth,
            action,
        }
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

    /// Parses a plan from a JSON value.
    pub fn from_value(value: &Value) -> Result<FaultPlan, PlanError> {
        let obj = value.as_object().ok_or_else(|| {
            PlanError::at(
                "$",
                format!("expected an object with `rules`, found {}", kind_of(value)),
            )
        })?;
        for key in obj.keys() {
            if key != "rules" {
                return Err(PlanError::at(key.clone(), "unknown field, expected `rules`"));
            }
        }
        let rules = obj
            .get("rules")
            .ok_or_else(|| PlanError::at("rules", "missing field"))?
            .as_array()
            .ok_or_else(|| PlanError::at("rules", "expected an array"))?;
        let mut plan = FaultPlan::new();
        for (i, raw) in rules.iter().enumerate() {
            let rule = parse_rule(i, raw)?;
            validate_rule(i, &rule)?;
            plan.rules.push(rule);
        }
        Ok(plan)
    }

    /// The plan as JSON (the format [`FaultPlan::from_json`] reads).
    pub fn to_json(&self) -> Value {
        let rules: Vec<Value> = self.rules.iter().map(rule_to_json).collect();
        serde_json::json!({ "rules": rules })
    }
}

impl serde::Serialize for FaultPlan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
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

struct Fields<'a> {
    base: String,
    obj: &'a Map<String, Value>,
    used: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.base)
    }
    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.used.push(key);
        self.obj.get(key).filter(|v| !v.is_null())
    }
    fn string(&mut self, key: &'static str) -> Result<Option<String>, PlanError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(PlanError::at(
                self.path(key),
                format!("expected a string, found {}", kind_of(v)),
            )),
        }
    }
    fn u32(&mut self, key: &'static str) -> Result<Option<u32>, PlanError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    PlanError::at(
                        self.path(key),
                        format!("expected a non-negative 32-bit integer, found {v}"),
                    )
                }),
        }
    }
    fn millis(&mut self, key: &'static str) -> Result<Option<Duration>, PlanError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(Duration::from_millis(n))).ok_or_else(|| {
                PlanError::at(
                    self.path(key),
                    format!("expected milliseconds as a non-negative integer, found {v}"),
                )
            }),
        }
    }
    fn bool(&mut self, key: &'static str) -> Result<Option<bool>, PlanError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(PlanError::at(
                self.path(key),
                format!("expected a boolean, found {}", kind_of(v)),
            )),
        }
    }
    fn code(&mut self, key: &'static str) -> Result<Option<HResult>, PlanError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse_code(v).map(Some).ok_or_else(|| {
                PlanError::at(
                    self.path(key),
                    format!("expected HRESULT (0x-prefixed hex string or 32-bit integer), found {v}"),
                )
            }),
        }
    }
    fn notification(&mut self, key: &'static str) -> Result<Option<SimNotification>, PlanError> {
        match self.string(key)? {
            None => Ok(None),
            Some(name) => SimNotification::from_name(&name).map(Some).ok_or_else(|| {
                let names: Vec<&str> = SimNotification::ALL.iter().map(|k| k.name()).collect();
                PlanError::at(
                    self.path(key),
                    format!(
                        "unknown notification `{name}`, expected one of {}",
                        names.join(", ")
                    ),
                )
            }),
        }
    }
    fn finish(&self, action: &str) -> Result<(), PlanError> {
        for key in self.obj.keys() {
            if !self.used.iter().any(|u| u == key) {
                return Err(PlanError::at(
                    self.path(key),
                    format!("unknown field for action `{action}`"),
                ));
            }
        }
        Ok(())
    }
}

fn parse_code(v: &Value) -> Option<HResult> {
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                u32::try_from(u).ok().map(HResult)
            } else {
                n.as_i64()
                    .and_then(|i| i32::try_from(i).ok())
                    .map(HResult::from_i32)
            }
        }
        Value::String(s) => {
            let s = s.trim();
            let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
            u32::from_str_radix(hex, 16).ok().map(HResult)
        }
        _ => None,
    }
}

fn parse_rule(i: usize, raw: &Value) -> Result<Rule, PlanError> {
    let base = format!("rules[{i}]");
    let obj = raw.as_object().ok_or_else(|| {
        PlanError::at(
            base.clone(),
            format!("expected an object, found {}", kind_of(raw)),
        )
    })?;
    let mut f = Fields {
        base: base.clone(),
        obj,
        used: Vec::new(),
    };
    let op = f.string("op")?;
    let notification = f.notification("notification")?;
    let trigger = match (op, notification) {
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
        (Some(op), None) if op == "*" => Trigger::AnyCall,
        (Some(op), None) => Trigger::Call(Op::from_name(&op).ok_or_else(|| {
            PlanError::at(
                format!("{base}.op"),
                format!(
                    "unknown operation `{op}`, expected an HCS call name such as `StartComputeSystem` or `*`"
                ),
            )
        })?),
        (None, Some(kind)) => Trigger::Notification(kind),
    };
    let system = f.string("system")?;
    let nth = f.u32("nth")?;
    if nth == Some(0) {
        return Err(PlanError::at(
            format!("{base}.nth"),
            "must be at least 1 (it is 1-based)",
        ));
    }
    let action_name = f
        .string("action")?
        .ok_or_else(|| PlanError::at(format!("{base}.action"), "missing field"))?;
    let is_notification = matches!(trigger, Trigger::Notification(_));
    let action = match (action_name.as_str(), is_notification) {
        ("fail", false) => Action::Fail {
            code: f.code("code")?.ok_or_else(|| PlanError::at(format!("{base}.code"), "missing field (required by `fail`)"))?,
            document: match f.get("document") {
                None => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(v @ Value::Object(_)) => Some(v.to_string()),
                Some(v) => {
                    return Err(PlanError::at(
                        format!("{base}.document"),
                        format!("expected a string or an object, found {}", kind_of(v)),
                    ))
                }
            },
        },
        ("pending", false) => {
            let never = f.bool("never")?.unwrap_or(false);
            let after = f.millis("complete_after_ms")?;
            if never && after.is_some() {
                return Err(PlanError::at(format!("{base}.never"), "conflicts with `complete_after_ms`"));
            }
            Action::Pending {
                complete_after: if never { None } else { Some(after.unwrap_or(Duration::ZERO)) },
                status: f.code("status")?.unwrap_or(HResult::S_OK),
                kind: f.notification("kind")?,
            }
        }
        ("crash", false) => Action::Crash {
            after: f.millis("after_ms")?.unwrap_or(Duration::ZERO),
        },
        ("disconnect", false) => Action::Disconnect {
            after: f.millis("after_ms")?.unwrap_or(Duration::ZERO),
        },
        ("delay", false) => Action::Delay(
            f.millis("ms")?
                .ok_or_else(|| PlanError::at(format!("{base}.ms"), "missing field (required by `delay`)"))?,
        ),
        ("block", false) => Action::Block {
            gate: f
                .string("gate")?
                .ok_or_else(|| PlanError::at(format!("{base}.gate"), "missing field (required by `block`)"))?,
        },
        ("late_callback", false) => Action::LateCallback {
            kind: f.notification("kind")?.unwrap_or(SimNotification::SystemExited),
            after: f.millis("after_ms")?.unwrap_or(Duration::ZERO),
        },
        ("delay", true) => Action::DelayNotification(
            f.millis("ms")?
                .ok_or_else(|| PlanError::at(format!("{base}.ms"), "missing field (required by `delay`)"))?,
        ),
        ("duplicate", true) => Action::DuplicateNotification {
            copies: f.u32("copies")?.unwrap_or(1),
        },
        ("drop", true) => Action::DropNotification,
        (other, true) => {
            return Err(PlanError::at(
                format!("{base}.action"),
                format!("`{other}` is not a notification action; expected `delay`, `duplicate` or `drop`"),
            ))
        }
        (other, false) => {
            return Err(PlanError::at(
                format!("{base}.action"),
                format!(
                    "`{other}` is not a call action; expected `fail`, `pending`, `crash`, `disconnect`, `delay`, `block` or `late_callback`"
                ),
            ))
        }
    };
    f.finish(&action_name)?;
    Ok(Rule {
        trigger,
        system,
        nth,
        action,
    })
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
        (Action::Pending { .. }, Trigger::Call(op)) if !(op.can_pend() || op == Op::ModifyComputeSystem) => {
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
            if !matches!(op, Op::UnregisterComputeSystemCallback | Op::UnregisterProcessCallback) =>
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
        (Action::Crash { .. }, Trigger::Call(Op::EnumerateComputeSystems | Op::GetServiceProperties | Op::ModifyServiceSettings)) => {
            Err(PlanError::at(format!("{base}.action"), "`crash` needs a call on a system"))
        }
        _ => Ok(()),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn rule_to_json(rule: &Rule) -> Value {
    let mut m = Map::new();
    match rule.trigger {
        Trigger::Call(op) => {
            m.insert("op".into(), op.name().into());
        }
        Trigger::AnyCall => {
            m.insert("op".into(), "*".into());
        }
        Trigger::Notification(k) => {
            m.insert("notification".into(), k.name().into());
        }
    }
    if let Some(s) = &rule.system {
        m.insert("system".into(), s.clone().into());
    }
    if let Some(n) = rule.nth {
        m.insert("nth".into(), n.into());
    }
    m.insert("action".into(), rule.action.name().into());
    let hex = |c: HResult| Value::from(format!("{:#010X}", c.0).replace("0X", "0x"));
    match &rule.action {
        Action::Fail { code, document } => {
            m.insert("code".into(), hex(*code));
            if let Some(d) = document {
                m.insert("document".into(), d.clone().into());
            }
        }
        Action::Pending {
            complete_after,
            status,
            kind,
        } => {
            match complete_after {
                Some(d) => m.insert("complete_after_ms".into(), ms(*d).into()),
                None => m.insert("never".into(), true.into()),
            };
            m.insert("status".into(), hex(*status));
            if let Some(k) = kind {
                m.insert("kind".into(), k.name().into());
            }
        }
        Action::Crash { after } | Action::Disconnect { after } => {
            m.insert("after_ms".into(), ms(*after).into());
        }
        Action::Delay(d) | Action::DelayNotification(d) => {
            m.insert("ms".into(), ms(*d).into());
        }
        Action::Block { gate } => {
            m.insert("gate".into(), gate.clone().into());
        }
        Action::LateCallback { kind, after } => {
            m.insert("kind".into(), kind.name().into());
            m.insert("after_ms".into(), ms(*after).into());
        }
        Action::DuplicateNotification { copies } => {
            m.insert("copies".into(), (*copies).into());
        }
        Action::DropNotification => {}
    }
    Value::Object(m)
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
    pub(crate) fn on_call(&mut self, op: Op, system: Option<&str>) -> Vec<Action> {
        self.fire(
            |t| match t {
                Trigger::Call(o) => o == op,
                Trigger::AnyCall => true,
                Trigger::Notification(_) => false,
            },
            system,
        )
    }

    /// Counts a notification against every matching rule; returns the actions that fire.
    pub(crate) fn on_notification(&mut self, kind: SimNotification, system: Option<&str>) -> Vec<Action> {
        self.fire(|t| t == Trigger::Notification(kind), system)
    }

    fn fire(&mut self, matches: impl Fn(Trigger) -> bool, system: Option<&str>) -> Vec<Action> {
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
                Rule::call(Op::StartComputeSystem)
                    .system("a")
                    .nth(2)
                    .fail(HResult::HCS_E_INVALID_STATE),
            )
            .rule(Rule::call(Op::PauseComputeSystem).never_complete())
            .rule(Rule::any_call().delay(Duration::from_millis(3)))
            .rule(Rule::notification(SimNotification::SystemExited).duplicate(2));
        plan.validate().unwrap();
        let text = plan.to_json().to_string();
        assert_eq!(FaultPlan::from_json(&text).unwrap(), plan);
    }

    #[test]
    fn nth_fires_once_and_every_fires_always() {
        let mut active = ActivePlan::new(
            FaultPlan::new()
                .rule(Rule::call(Op::StartComputeSystem).nth(2).fail(1u32))
                .rule(Rule::call(Op::StartComputeSystem).system("x").fail(2u32)),
        );
        assert!(active.on_call(Op::StartComputeSystem, Some("y")).is_empty());
        assert_eq!(active.on_call(Op::StartComputeSystem, Some("y")).len(), 1);
        assert!(active.on_call(Op::StartComputeSystem, Some("y")).is_empty());
        assert_eq!(active.on_call(Op::StartComputeSystem, Some("x")).len(), 1);
        assert!(active.on_call(Op::PauseComputeSystem, Some("x")).is_empty());
    }
}

//! The fake's bookkeeping: the call log ([`Call`]), the handle tables for systems, processes
//! and callback registrations, the notification contexts each handle is tied to, the
//! accounting behind [`HandleCounts`] and the leak report, the built-in default documents, and
//! the delivery of notifications through [`hcs::dispatch`].

use super::answers::{Answer, Completion, ScriptedStdio};
use super::sync::lock;
use hcs::{
    ApiGeneration, CallbackHandle, Failure, HResult, HandleCounts, Method, NotificationKind, NotifyContext,
    PipeReader, PipeWriter, ProcessHandle, ProcessInfo, SystemHandle,
};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Cursor, Write};
use std::num::NonZeroU64;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

/// One driver call, as recorded in the call log
/// ([`FakeDriver::calls`]). Calls are logged when they enter the
/// driver, including calls that then fail or block.
///
/// [`FakeDriver::calls`]: crate::FakeDriver::calls
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The method called.
    pub method: Method,
    /// The raw handle passed in (system, process or callback handle), if the method takes one.
    pub handle: Option<u64>,
    /// The compute-system id: the id passed to create/open, or the id the system behind the
    /// handle was created or opened with.
    pub id: Option<String>,
    /// The string argument: configuration, options, query, settings or parameters JSON; the
    /// pid for `open_process`; the context id for the register calls; `""` otherwise.
    pub arg: String,
    /// The notification context passed in (pending-capable and register calls).
    pub ctx: Option<NotifyContext>,
}

/// First raw value handed out for system handles.
const FIRST_SYSTEM: u64 = 0x1000;
/// First raw value handed out for process handles.
const FIRST_PROCESS: u64 = 0x2000;
/// First raw value handed out for callback handles.
const FIRST_CALLBACK: u64 = 0x3000;
/// First pid handed out by `create_process`.
const FIRST_PID: u32 = 100;

fn nz(raw: u64) -> NonZeroU64 {
    NonZeroU64::new(raw).unwrap_or(NonZeroU64::MAX)
}

pub(super) fn invalid_handle() -> Failure {
    Failure::new(HResult::ERROR_INVALID_HANDLE)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallbackKind {
    System,
    Process,
}

pub(super) struct SystemEntry {
    pub(super) id: String,
    pub(super) open: bool,
}

pub(super) struct ProcessEntry {
    pub(super) pid: u32,
    pub(super) system: u64,
    pub(super) open: bool,
}

pub(super) struct CallbackEntry {
    pub(super) kind: CallbackKind,
    pub(super) target: u64,
    pub(super) ctx: NotifyContext,
    pub(super) active: bool,
}

/// What a driver call names, for validation and the call log.
#[derive(Clone, Copy)]
pub(super) enum Subject {
    None,
    System(u64),
    Process(u64),
    Callback(CallbackKind, u64),
}

/// Where a scripted completion goes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Target {
    Ctx(NotifyContext),
    System(u64),
    Process(u64),
    Nowhere,
}

pub(super) struct State {
    pub(super) calls: Vec<Call>,
    pub(super) scripts: HashMap<Method, VecDeque<Answer>>,
    pub(super) defaults: HashMap<Method, Answer>,
    pub(super) next_system: u64,
    pub(super) next_process: u64,
    pub(super) next_callback: u64,
    pub(super) next_pid: u32,
    pub(super) systems: HashMap<u64, SystemEntry>,
    pub(super) processes: HashMap<u64, ProcessEntry>,
    pub(super) callbacks: HashMap<u64, CallbackEntry>,
    pub(super) system_ctx: HashMap<u64, NotifyContext>,
    pub(super) process_ctx: HashMap<u64, NotifyContext>,
    pub(super) last_system_ctx: Option<NotifyContext>,
    pub(super) last_process_ctx: Option<NotifyContext>,
    pub(super) pending_ctx: HashMap<Method, NotifyContext>,
    pub(super) known_ids: Vec<String>,
    /// Active registrations per context id; an entry at 0 means "registered, then fully
    /// unregistered" (the fake delivers nothing more to it on its own).
    pub(super) ctx_active: HashMap<u64, usize>,
    /// Deliveries currently inside `hcs::dispatch`, per context id.
    pub(super) inflight: HashMap<u64, usize>,
    /// Scripted completions not yet finished (sleeping or delivering).
    pub(super) scheduled: usize,
    pub(super) stdin: HashMap<u32, Arc<Mutex<Vec<u8>>>>,
    /// The scripted streams each process (by pid) was created with: `GetProcessInfo` hands
    /// them out again, as HCS hands out the process's pipe handles again.
    pub(super) created_stdio: HashMap<u32, Arc<ScriptedStdio>>,
}

impl State {
    pub(super) fn new() -> Self {
        State {
            calls: Vec::new(),
            scripts: HashMap::new(),
            defaults: HashMap::new(),
            next_system: FIRST_SYSTEM,
            next_process: FIRST_PROCESS,
            next_callback: FIRST_CALLBACK,
            next_pid: FIRST_PID,
            systems: HashMap::new(),
            processes: HashMap::new(),
            callbacks: HashMap::new(),
            system_ctx: HashMap::new(),
            process_ctx: HashMap::new(),
            last_system_ctx: None,
            last_process_ctx: None,
            pending_ctx: HashMap::new(),
            known_ids: Vec::new(),
            ctx_active: HashMap::new(),
            inflight: HashMap::new(),
            scheduled: 0,
            stdin: HashMap::new(),
            created_stdio: HashMap::new(),
        }
    }

    pub(super) fn next_answer(&mut self, method: Method) -> Answer {
        self.scripts
            .get_mut(&method)
            .and_then(VecDeque::pop_front)
            .or_else(|| self.defaults.get(&method).cloned())
            .unwrap_or_else(Answer::ok)
    }

    pub(super) fn valid(&self, subject: Subject) -> bool {
        match subject {
            Subject::None => true,
            Subject::System(h) => self.systems.get(&h).is_some_and(|e| e.open),
            Subject::Process(h) => self.processes.get(&h).is_some_and(|e| e.open),
            Subject::Callback(kind, h) => self.callbacks.get(&h).is_some_and(|e| e.active && e.kind == kind),
        }
    }

    pub(super) fn check(&self, subject: Subject) -> Result<(), Failure> {
        if self.valid(subject) {
            Ok(())
        } else {
            Err(invalid_handle())
        }
    }

    pub(super) fn system_id_of(&self, subject: Subject) -> Option<String> {
        let system = match subject {
            Subject::None => return None,
            Subject::System(h) => h,
            Subject::Process(h) => self.processes.get(&h)?.system,
            Subject::Callback(_, h) => {
                let cb = self.callbacks.get(&h)?;
                match cb.kind {
                    CallbackKind::System => cb.target,
                    CallbackKind::Process => self.processes.get(&cb.target)?.system,
                }
            }
        };
        self.systems.get(&system).map(|e| e.id.clone())
    }

    pub(super) fn new_system(&mut self, id: &str) -> SystemHandle {
        let raw = self.next_system;
        self.next_system += 1;
        self.systems.insert(
            raw,
            SystemEntry {
                id: id.to_owned(),
                open: true,
            },
        );
        if !self.known_ids.iter().any(|k| k == id) {
            self.known_ids.push(id.to_owned());
        }
        SystemHandle(nz(raw))
    }

    pub(super) fn new_process(&mut self, pid: u32, system: u64) -> ProcessHandle {
        let raw = self.next_process;
        self.next_process += 1;
        self.processes.insert(
            raw,
            ProcessEntry {
                pid,
                system,
                open: true,
            },
        );
        ProcessHandle(nz(raw))
    }

    pub(super) fn new_callback(
        &mut self,
        kind: CallbackKind,
        target: u64,
        ctx: NotifyContext,
    ) -> CallbackHandle {
        let raw = self.next_callback;
        self.next_callback += 1;
        self.callbacks.insert(
            raw,
            CallbackEntry {
                kind,
                target,
                ctx,
                active: true,
            },
        );
        *self.ctx_active.entry(ctx.raw()).or_default() += 1;
        match kind {
            CallbackKind::System => {
                self.system_ctx.insert(target, ctx);
                self.last_system_ctx = Some(ctx);
            }
            CallbackKind::Process => {
                self.process_ctx.insert(target, ctx);
                self.last_process_ctx = Some(ctx);
            }
        }
        CallbackHandle(nz(raw))
    }

    /// Whether the fake must not deliver to `ctx` on its own any more: it was registered and
    /// every registration with it has been unregistered.
    pub(super) fn retired(&self, ctx: NotifyContext) -> bool {
        self.ctx_active.get(&ctx.raw()) == Some(&0)
    }

    pub(super) fn process_info(&mut self, pid: u32, stdio: Option<&Arc<ScriptedStdio>>) -> ProcessInfo {
        let Some(stdio) = stdio else {
            return ProcessInfo {
                pid,
                ..ProcessInfo::default()
            };
        };
        let stdin = stdio.stdin.then(|| {
            let buffer = self.stdin.entry(pid).or_default().clone();
            PipeWriter::new(Recorder(buffer))
        });
        let reader = |bytes: &Option<Vec<u8>>| bytes.clone().map(|b| PipeReader::new(Cursor::new(b)));
        ProcessInfo {
            pid,
            stdin,
            stdout: reader(&stdio.stdout),
            stderr: reader(&stdio.stderr),
        }
    }

    pub(super) fn counts(&self) -> HandleCounts {
        HandleCounts {
            systems: self.systems.values().filter(|e| e.open).count(),
            processes: self.processes.values().filter(|e| e.open).count(),
            callbacks: self.callbacks.values().filter(|e| e.active).count(),
        }
    }

    /// A report listing every open handle and active registration, or `None` when nothing
    /// leaked.
    pub(super) fn leak_report(&self) -> Option<String> {
        let mut lines = Vec::new();
        let mut systems: Vec<_> = self.systems.iter().filter(|(_, e)| e.open).collect();
        systems.sort_by_key(|(h, _)| **h);
        for (h, e) in systems {
            lines.push(format!("  system handle {h:#x} (id {:?})", e.id));
        }
        let mut processes: Vec<_> = self.processes.iter().filter(|(_, e)| e.open).collect();
        processes.sort_by_key(|(h, _)| **h);
        for (h, e) in processes {
            let id = self.systems.get(&e.system).map_or("?", |s| s.id.as_str());
            lines.push(format!("  process handle {h:#x} (pid {}, system {id:?})", e.pid));
        }
        let mut callbacks: Vec<_> = self.callbacks.iter().filter(|(_, e)| e.active).collect();
        callbacks.sort_by_key(|(h, _)| **h);
        for (h, e) in callbacks {
            let kind = match e.kind {
                CallbackKind::System => "system",
                CallbackKind::Process => "process",
            };
            lines.push(format!(
                "  {kind} callback {h:#x} (for handle {:#x}, context {})",
                e.target,
                e.ctx.raw()
            ));
        }
        if lines.is_empty() {
            None
        } else {
            let c = self.counts();
            Some(format!(
                "fake driver leaked {} system handle(s), {} process handle(s), {} callback registration(s):\n{}",
                c.systems,
                c.processes,
                c.callbacks,
                lines.join("\n")
            ))
        }
    }
}

/// The stdin end of a scripted process: records everything written.
struct Recorder(Arc<Mutex<Vec<u8>>>);

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(super) fn system_properties(id: &str) -> String {
    format!(
        r#"{{"Id":{},"SystemType":"Container","RuntimeOsType":"windows","Owner":"fake"}}"#,
        serde_json::Value::String(id.to_owned())
    )
}

pub(super) fn process_properties(pid: u32) -> String {
    format!(r#"{{"ProcessId":{pid},"Exited":true,"ExitCode":0,"LastWaitResult":0}}"#)
}

pub(super) const SERVICE_PROPERTIES: &str =
    r#"{"Properties":[{"SupportedSchemaVersions":[{"Major":1,"Minor":0},{"Major":2,"Minor":1}]}]}"#;

pub(super) struct Inner {
    pub(super) state: Mutex<State>,
    /// Signalled whenever an in-flight delivery or a scheduled completion finishes.
    pub(super) changed: Condvar,
    pub(super) generation: ApiGeneration,
}

impl Inner {
    /// Runs one delivery through `hcs::dispatch`, counted as in flight for `ctx` so that
    /// unregistering waits for it.
    pub(super) fn deliver(
        &self,
        ctx: NotifyContext,
        kind: NotificationKind,
        status: HResult,
        payload: Option<&str>,
    ) -> bool {
        let delivered = hcs::dispatch(ctx.raw(), kind, status, payload);
        let mut st = lock(&self.state);
        if let Some(n) = st.inflight.get_mut(&ctx.raw()) {
            *n -= 1;
            if *n == 0 {
                st.inflight.remove(&ctx.raw());
            }
        }
        self.changed.notify_all();
        delivered
    }

    pub(super) fn run_completion(&self, target: Target, completion: &Completion) {
        thread::sleep(completion.after);
        let ctx = {
            let mut st = lock(&self.state);
            let ctx = match target {
                Target::Ctx(c) => Some(c),
                Target::System(h) => st.system_ctx.get(&h).copied(),
                Target::Process(h) => st.process_ctx.get(&h).copied(),
                Target::Nowhere => None,
            };
            match ctx {
                Some(c) if !st.retired(c) => {
                    *st.inflight.entry(c.raw()).or_default() += 1;
                    Some(c)
                }
                _ => None,
            }
        };
        match ctx {
            Some(c) => {
                let delivered = self.deliver(
                    c,
                    completion.kind,
                    completion.status,
                    completion.payload.as_deref(),
                );
                tracing::debug!(driver = "fake", ctx = c.raw(), kind = %completion.kind, delivered, "scripted notification");
            }
            None => {
                tracing::debug!(driver = "fake", ?target, kind = %completion.kind, "scripted notification dropped: no live registration");
            }
        }
        let mut st = lock(&self.state);
        st.scheduled -= 1;
        self.changed.notify_all();
    }
}

//! The task state machine: containerd's task API v2 on `hcs::System` / `hcs::Process`.
//!
//! One shim serves one task (the container) with its init process (`exec_id` empty) and any
//! number of execs. States of each process: *created* → *running* (⇄ *paused*, task-wide) →
//! *stopped*, then deleted. Every HCS call made by a handler runs under [`bounded`], so a
//! handler answers within [`CALL_BOUND`] even when HCS never does; a process whose exit never
//! arrives after a kill is forced to *stopped* with a reason after [`EXIT_BOUND`].

use crate::spec::{self, BundleSpec, Launch, ProcessSpec};
use crate::stdio::{self, Relays, StdioPaths};
use containerd_shim::api;
use containerd_shim::protos::events::task as ev;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::{self, Code};
use hcs::{Driver, ExitCode, Process, System};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, SystemTime};

/// The longest any single HCS call may take inside a handler.
pub const CALL_BOUND: Duration = Duration::from_secs(20);
/// How long a system gets to stop after a shutdown, and again after a terminate.
pub const STOP_BOUND: Duration = Duration::from_secs(5);
/// How long an exit may take to arrive after a kill before the process is forced to stopped.
pub const EXIT_BOUND: Duration = Duration::from_secs(10);
/// How long the output relays get to drain after an exit.
pub const DRAIN_BOUND: Duration = Duration::from_secs(2);

/// The time bounds the service keeps (defaults: the constants above; tests shorten them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Any single HCS call inside a handler ([`CALL_BOUND`]).
    pub call: Duration,
    /// Each step of a system's teardown ([`STOP_BOUND`]).
    pub stop: Duration,
    /// An exit after SIGKILL ([`EXIT_BOUND`]).
    pub exit: Duration,
    /// The output relays after an exit ([`DRAIN_BOUND`]).
    pub drain: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            call: CALL_BOUND,
            stop: STOP_BOUND,
            exit: EXIT_BOUND,
            drain: DRAIN_BOUND,
        }
    }
}

/// The exit status reported when the real one is unknown (HCS failed, the exit never arrived).
pub const UNKNOWN_EXIT: u32 = 255;

/// Where events go (containerd's `Events.Forward` in production, a recorder in tests).
pub trait Publisher: Send + Sync {
    /// Publishes `event` under `topic`; must not block for long.
    fn publish(&self, topic: &'static str, event: Box<dyn MessageDyn>);
}

/// An error with the gRPC code containerd's errdefs maps to its error kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimError {
    /// The code.
    pub code: Code,
    /// The message.
    pub message: String,
}

impl ShimError {
    fn new(code: Code, message: impl Into<String>) -> Self {
        ShimError {
            code,
            message: message.into(),
        }
    }
    fn not_found(what: impl Into<String>) -> Self {
        Self::new(Code::NOT_FOUND, what)
    }
    fn precondition(what: impl Into<String>) -> Self {
        Self::new(Code::FAILED_PRECONDITION, what)
    }
    fn hcs(op: &str, e: &hcs::Error) -> Self {
        let code = if e.is_timeout() {
            Code::DEADLINE_EXCEEDED
        } else if e.is_not_found() {
            Code::NOT_FOUND
        } else if e.is_already_exists() {
            Code::ALREADY_EXISTS
        } else if e.is_not_supported() {
            Code::UNIMPLEMENTED
        } else {
            Code::INTERNAL
        };
        Self::new(code, format!("{op}: {e}"))
    }
}

impl std::fmt::Display for ShimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code, e.message))
    }
}

/// Runs `f` on its own thread and waits at most `bound` for it; a call still running then is
/// abandoned (its thread ends whenever HCS answers) and reported as `DeadlineExceeded`.
pub fn bounded<T: Send + 'static>(
    op: &str,
    bound: Duration,
    f: impl FnOnce() -> hcs::Result<T> + Send + 'static,
) -> Result<T, ShimError> {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::Builder::new()
        .name("shim-hcs-call".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| ShimError::new(Code::INTERNAL, format!("{op}: cannot start a thread: {e}")))?;
    match rx.recv_timeout(bound) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ShimError::hcs(op, &e)),
        Err(_) => Err(ShimError::new(
            Code::DEADLINE_EXCEEDED,
            format!("{op}: HCS did not answer within {bound:?}"),
        )),
    }
}

/// The state of one process of the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    /// Created (init: the compute system exists; exec: the spec is recorded), not started.
    Created,
    /// Started and not yet exited.
    Running,
    /// Exited (or failed, or forced): final.
    Stopped,
}

struct Exec {
    spec: ProcessSpec,
    paths: StdioPaths,
    state: ProcState,
    pid: u32,
    exit_status: u32,
    exited_at: Option<SystemTime>,
    /// Why the process ended other than by exiting (HCS failure, forced), if it did.
    reason: Option<String>,
    process: Option<Arc<Process>>,
    relays: Option<Arc<Relays>>,
}

impl Exec {
    fn new(spec: ProcessSpec, paths: StdioPaths) -> Exec {
        Exec {
            spec,
            paths,
            state: ProcState::Created,
            pid: 0,
            exit_status: 0,
            exited_at: None,
            reason: None,
            process: None,
            relays: None,
        }
    }
}

struct Task {
    id: String,
    bundle: String,
    system: Arc<System>,
    launch: Launch,
    paused: bool,
    execs: HashMap<String, Exec>,
    /// Where the rootfs mounts from containerd were mounted (unmounted at delete).
    mounted: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct State {
    task: Option<Task>,
}

/// How the service creates compute systems and launches processes.
#[derive(Clone)]
pub struct Platform {
    /// The driver.
    pub driver: Arc<dyn Driver>,
    /// How a bundle's root filesystem becomes the launch of its processes.
    pub launch: Arc<dyn Fn(&BundleSpec) -> Launch + Send + Sync>,
    /// The time bounds.
    pub bounds: Bounds,
}

/// The task service: the state of the task and every handler (see the module docs).
pub struct Service {
    platform: Platform,
    publisher: Arc<dyn Publisher>,
    state: Mutex<State>,
    changed: Condvar,
    /// Serialises the handlers that change the task (create, start, delete, exec, pause,
    /// resume), so that each sees the state the previous one left.
    op: Mutex<()>,
}

fn ts(t: Option<SystemTime>) -> Timestamp {
    let mut out = Timestamp::new();
    if let Some(d) = t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()) {
        out.seconds = d.as_secs() as i64;
        out.nanos = d.subsec_nanos() as i32;
    }
    out
}

fn exec_name(exec_id: &str) -> String {
    if exec_id.is_empty() {
        "the init process".to_owned()
    } else {
        format!("exec {exec_id:?}")
    }
}

impl Service {
    /// A service with no task yet.
    pub fn new(platform: Platform, publisher: Arc<dyn Publisher>) -> Arc<Service> {
        Arc::new(Service {
            platform,
            publisher,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            op: Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn op_lock(&self) -> MutexGuard<'_, ()> {
        self.op.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn task<'a>(st: &'a mut State, id: &str) -> Result<&'a mut Task, ShimError> {
        match st.task.as_mut() {
            Some(t) if t.id == id => Ok(t),
            _ => Err(ShimError::not_found(format!("task {id:?} not found"))),
        }
    }

    fn exec<'a>(st: &'a mut State, id: &str, exec_id: &str) -> Result<&'a mut Exec, ShimError> {
        let t = Self::task(st, id)?;
        t.execs
            .get_mut(exec_id)
            .ok_or_else(|| ShimError::not_found(format!("{} of task {id:?} not found", exec_name(exec_id))))
    }

    /// Whether a task exists (created and not yet deleted).
    pub fn has_task(&self) -> bool {
        self.lock().task.is_some()
    }

    /// Create: reads `bundle/config.json`, creates the compute system (`HcsCreateComputeSystem`);
    /// the init process is *created*. AlreadyExists when the shim has a task; InvalidArgument for
    /// a bad spec.
    pub fn create(&self, req: &api::CreateTaskRequest) -> Result<api::CreateTaskResponse, ShimError> {
        let _op = self.op_lock();
        if req.id.is_empty() {
            return Err(ShimError::new(Code::INVALID_ARGUMENT, "the task id is empty"));
        }
        if let Some(t) = &self.lock().task {
            return Err(ShimError::new(
                Code::ALREADY_EXISTS,
                format!("task {:?} already exists in this shim", t.id),
            ));
        }
        let bundle = spec::load_bundle(std::path::Path::new(&req.bundle))
            .map_err(|e| ShimError::new(Code::INVALID_ARGUMENT, format!("bundle {:?}: {e}", req.bundle)))?;
        if req.terminal && !req.stderr.is_empty() {
            return Err(ShimError::new(
                Code::INVALID_ARGUMENT,
                "a terminal process has no separate stderr",
            ));
        }
        let mounted = if req.rootfs.is_empty() {
            None
        } else {
            let target = bundle
                .root
                .clone()
                .unwrap_or_else(|| std::path::Path::new(&req.bundle).join("rootfs"));
            crate::rootfs::mount_all(&req.rootfs, &target).map_err(|e| ShimError::new(Code::INTERNAL, e))?;
            Some(target)
        };
        let launch = (self.platform.launch)(&bundle);
        let document = spec::system_document(&bundle);
        let driver = self.platform.driver.clone();
        let id = req.id.clone();
        let system = match bounded("create compute system", self.platform.bounds.call, move || {
            System::create(driver, &id, &document)
        }) {
            Ok(s) => s,
            Err(e) => {
                if let Some(target) = &mounted {
                    crate::rootfs::unmount_all(target);
                }
                return Err(e);
            }
        };
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal || bundle.process.terminal,
        };
        let mut execs = HashMap::new();
        execs.insert(String::new(), Exec::new(bundle.process.clone(), paths));
        self.lock().task = Some(Task {
            id: req.id.clone(),
            bundle: req.bundle.clone(),
            system: Arc::new(system),
            launch,
            paused: false,
            execs,
            mounted,
        });
        self.publisher.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(ev::TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: Some(ev::TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                })
                .into(),
                checkpoint: req.checkpoint.clone(),
                pid: 0,
                ..Default::default()
            }),
        );
        Ok(api::CreateTaskResponse {
            pid: 0,
            ..Default::default()
        })
    }

    /// Start: init → `HcsStartComputeSystem` then `HcsCreateProcess`; exec → `HcsCreateProcess`.
    /// NotFound for an unknown task/exec; FailedPrecondition unless *created* (and, for an exec,
    /// unless the init is running). A failed start ends the process *stopped* (status 255, the
    /// system terminated for the init) and returns the HCS error.
    pub fn start(self: &Arc<Self>, req: &api::StartRequest) -> Result<api::StartResponse, ShimError> {
        let _op = self.op_lock();
        let init = req.exec_id.is_empty();
        let (system, spec, paths, launch) = {
            let mut st = self.lock();
            let t = Self::task(&mut st, &req.id)?;
            if !init {
                let init_state = t.execs.get("").map(|e| e.state);
                if init_state != Some(ProcState::Running) {
                    return Err(ShimError::precondition(format!(
                        "cannot start exec {:?}: the init process of task {:?} is not running",
                        req.exec_id, req.id
                    )));
                }
            }
            let system = t.system.clone();
            let launch = t.launch.clone();
            let e = Self::exec(&mut st, &req.id, &req.exec_id)?;
            if e.state != ProcState::Created {
                return Err(ShimError::precondition(format!(
                    "{} of task {:?} is {:?}, not created",
                    exec_name(&req.exec_id),
                    req.id,
                    e.state
                )));
            }
            (system, e.spec.clone(), e.paths.clone(), launch)
        };
        // Checked before anything starts: an argument vector a Windows command line cannot
        // express (a `"` in the program name) is the caller's error.
        let params = spec::process_parameters(&spec, &launch, !paths.stdin.is_empty(), true, !paths.terminal)
            .map_err(|e| {
                ShimError::new(
                    Code::INVALID_ARGUMENT,
                    format!("{} of task {:?}: {e}", exec_name(&req.exec_id), req.id),
                )
            })?;
        if init {
            let s = system.clone();
            if let Err(e) = bounded("start compute system", self.platform.bounds.call, move || {
                s.start()
            }) {
                self.fail_start(&req.id, &req.exec_id, &system, &e);
                return Err(e);
            }
        }
        let s = system.clone();
        let process = match bounded("create process", self.platform.bounds.call, move || {
            s.create_process_from(&params)
        }) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                self.fail_start(&req.id, &req.exec_id, &system, &e);
                return Err(e);
            }
        };
        let relays = match process.stdio() {
            Ok(streams) => Some(Arc::new(stdio::attach(&paths, streams))),
            Err(e) => {
                log::warn!("cannot get the standard streams of the process: {e}");
                None
            }
        };
        let pid = process.pid();
        {
            let mut st = self.lock();
            if let Ok(e) = Self::exec(&mut st, &req.id, &req.exec_id) {
                e.state = ProcState::Running;
                e.pid = pid;
                e.process = Some(process.clone());
                e.relays = relays.clone();
            }
        }
        self.changed.notify_all();
        if init {
            self.publisher.publish(
                topics::TASK_START_EVENT_TOPIC,
                Box::new(ev::TaskStart {
                    container_id: req.id.clone(),
                    pid,
                    ..Default::default()
                }),
            );
        } else {
            self.publisher.publish(
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                Box::new(ev::TaskExecStarted {
                    container_id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    pid,
                    ..Default::default()
                }),
            );
        }
        self.watch(req.id.clone(), req.exec_id.clone(), system, process, relays);
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn fail_start(&self, id: &str, exec_id: &str, system: &Arc<System>, e: &ShimError) {
        let reason = format!("start failed: {}", e.message);
        log::warn!("task {id:?} {}: {reason}", exec_name(exec_id));
        if exec_id.is_empty() {
            self.teardown(system);
        }
        self.finish(id, exec_id, UNKNOWN_EXIT, Some(reason));
    }

    /// Stops and closes a compute system, each step bounded: shutdown, wait, terminate, wait,
    /// close (`HcsShutDownComputeSystem`, `HcsTerminateComputeSystem`, `HcsCloseComputeSystem`).
    fn teardown(&self, system: &Arc<System>) {
        if system.is_closed() {
            return;
        }
        if system.exit_status().is_none() {
            let s = system.clone();
            let _ = bounded("shut down compute system", self.platform.bounds.stop, move || {
                s.shutdown()
            });
            if system.wait_timeout(self.platform.bounds.stop).is_err() && system.exit_status().is_none() {
                let s = system.clone();
                let _ = bounded("terminate compute system", self.platform.bounds.stop, move || {
                    s.terminate()
                });
                let _ = system.wait_timeout(self.platform.bounds.stop);
            }
        }
        let s = system.clone();
        if let Err(e) = bounded("close compute system", self.platform.bounds.stop, move || {
            s.close()
        }) {
            log::warn!("{e}");
        }
    }

    /// Records the end of a process (the first report wins), wakes waiters and publishes
    /// `/tasks/exit`.
    fn finish(&self, id: &str, exec_id: &str, status: u32, reason: Option<String>) -> bool {
        let pid;
        let exited_at = SystemTime::now();
        {
            let mut st = self.lock();
            let Ok(e) = Self::exec(&mut st, id, exec_id) else {
                return false;
            };
            if e.state == ProcState::Stopped {
                return false;
            }
            e.state = ProcState::Stopped;
            e.exit_status = status;
            e.exited_at = Some(exited_at);
            e.reason = reason;
            pid = e.pid;
            if exec_id.is_empty() {
                if let Some(t) = st.task.as_mut() {
                    t.paused = false;
                }
            }
        }

        self.publisher.publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            Box::new(ev::TaskExit {
                container_id: id.to_owned(),
                id: if exec_id.is_empty() {
                    id.to_owned()
                } else {
                    exec_id.to_owned()
                },
                pid,
                exit_status: status,
                exited_at: Some(ts(Some(exited_at))).into(),
                ..Default::default()
            }),
        );
        self.changed.notify_all();
        true
    }

    /// The exit watcher of a started process: waits for its exit (or for the system's end, or a
    /// service disconnect), drains the output, tears the system down after the init's exit,
    /// then records the exit.
    fn watch(
        self: &Arc<Self>,
        id: String,
        exec_id: String,
        system: Arc<System>,
        process: Arc<Process>,
        relays: Option<Arc<Relays>>,
    ) {
        let this = self.clone();
        let (id2, exec_id2) = (id.clone(), exec_id.clone());
        let spawned = thread::Builder::new()
            .name("shim-exit-watch".into())
            .spawn(move || {
                let mut reason = None;
                let mut system_gone_at: Option<std::time::Instant> = None;
                loop {
                    match process.wait_timeout(Duration::from_millis(500)) {
                        Ok(()) => break,
                        Err(e) if e.is_timeout() => {
                            if system.exit_status().is_some() || system.is_closed() {
                                let since = *system_gone_at.get_or_insert_with(std::time::Instant::now);
                                if since.elapsed() >= this.platform.bounds.stop {
                                    reason = Some(
                                        "the compute system stopped and the process exit never arrived"
                                            .to_owned(),
                                    );
                                    break;
                                }
                            }
                            if this.exec_state(&id, &exec_id) == Some(ProcState::Stopped) {
                                // Forced to stopped (the exit never arrived after a kill).
                                break;
                            }
                        }
                        Err(e) => {
                            reason = Some(format!("waiting for the process failed: {e}"));
                            break;
                        }
                    }
                }
                let status = match process.exit() {
                    Some(ExitCode::Code(c)) => c,
                    _ => UNKNOWN_EXIT,
                };
                if let Some(r) = &relays {
                    if !r.drain(this.platform.bounds.drain) {
                        log::warn!(
                            "output of {} still open after its exit; not waiting",
                            exec_name(&exec_id)
                        );
                    }
                    r.release_stdin();
                }
                if exec_id.is_empty() {
                    this.teardown(&system);
                }
                let p = process.clone();
                let _ = bounded("close process", this.platform.bounds.stop, move || p.close());
                if let Some(r) = &reason {
                    log::warn!("task {id:?} {}: {r}", exec_name(&exec_id));
                }
                this.finish(&id, &exec_id, status, reason);
            });
        if let Err(e) = spawned {
            log::warn!("cannot start the exit watcher: {e}");
            self.finish(
                &id2,
                &exec_id2,
                UNKNOWN_EXIT,
                Some(format!("cannot watch the process: {e}")),
            );
        }
    }

    fn exec_state(&self, id: &str, exec_id: &str) -> Option<ProcState> {
        let mut st = self.lock();
        Self::exec(&mut st, id, exec_id).ok().map(|e| e.state)
    }

    /// The reason a process ended other than by exiting, if any (for tests and logs).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn reason(&self, id: &str, exec_id: &str) -> Option<String> {
        let mut st = self.lock();
        Self::exec(&mut st, id, exec_id)
            .ok()
            .and_then(|e| e.reason.clone())
    }

    /// Delete: an exec in *created* or *stopped* is dropped (no HCS call); the init in
    /// *created* or *stopped* tears the system down (if still open) and drops the task, then
    /// `/tasks/delete`. NotFound for an unknown task/exec; FailedPrecondition while running or
    /// paused.
    pub fn delete(&self, req: &api::DeleteRequest) -> Result<api::DeleteResponse, ShimError> {
        let _op = self.op_lock();
        let (pid, status, at, system, relays) = {
            let mut st = self.lock();
            let e = Self::exec(&mut st, &req.id, &req.exec_id)?;
            if e.state == ProcState::Running {
                return Err(ShimError::precondition(format!(
                    "cannot delete {} of task {:?}: it is running",
                    exec_name(&req.exec_id),
                    req.id
                )));
            }
            let r = (e.pid, e.exit_status, e.exited_at, e.relays.clone());
            let t = Self::task(&mut st, &req.id)?;
            if req.exec_id.is_empty() {
                let system = t.system.clone();
                (r.0, r.1, r.2, Some(system), r.3)
            } else {
                t.execs.remove(&req.exec_id);
                (r.0, r.1, r.2, None, r.3)
            }
        };
        if let Some(r) = relays {
            r.release_stdin();
        }
        if let Some(system) = system {
            self.teardown(&system);
            let (execs, mounted): (Vec<Arc<Relays>>, _) = {
                let mut st = self.lock();
                match st.task.take() {
                    Some(t) => (
                        t.execs.into_values().filter_map(|e| e.relays).collect(),
                        t.mounted,
                    ),
                    None => (Vec::new(), None),
                }
            };
            if let Some(target) = mounted {
                crate::rootfs::unmount_all(&target);
            }
            for r in execs {
                r.release_stdin();
            }
            self.changed.notify_all();
            self.publisher.publish(
                topics::TASK_DELETE_EVENT_TOPIC,
                Box::new(ev::TaskDelete {
                    container_id: req.id.clone(),
                    id: req.id.clone(),
                    pid,
                    exit_status: status,
                    exited_at: Some(ts(at)).into(),
                    ..Default::default()
                }),
            );
        }
        Ok(api::DeleteResponse {
            pid,
            exit_status: status,
            exited_at: Some(ts(at)).into(),
            ..Default::default()
        })
    }

    /// Exec: records the spec (no HCS call) and publishes `/tasks/exec-added`. NotFound for an
    /// unknown task; AlreadyExists for a used exec id; FailedPrecondition once the init stopped;
    /// InvalidArgument for a bad spec.
    pub fn exec_process(&self, req: &api::ExecProcessRequest) -> Result<(), ShimError> {
        let _op = self.op_lock();
        if req.exec_id.is_empty() {
            return Err(ShimError::new(Code::INVALID_ARGUMENT, "the exec id is empty"));
        }
        let spec = req
            .spec
            .as_ref()
            .ok_or_else(|| ShimError::new(Code::INVALID_ARGUMENT, "the exec request has no spec"))?;
        let process =
            spec::parse_process(&spec.value).map_err(|e| ShimError::new(Code::INVALID_ARGUMENT, e.0))?;
        if req.terminal && !req.stderr.is_empty() {
            return Err(ShimError::new(
                Code::INVALID_ARGUMENT,
                "a terminal process has no separate stderr",
            ));
        }
        {
            let mut st = self.lock();
            let t = Self::task(&mut st, &req.id)?;
            if t.execs.contains_key(&req.exec_id) {
                return Err(ShimError::new(
                    Code::ALREADY_EXISTS,
                    format!("exec {:?} already exists in task {:?}", req.exec_id, req.id),
                ));
            }
            if t.execs.get("").map(|e| e.state) == Some(ProcState::Stopped) {
                return Err(ShimError::precondition(format!(
                    "cannot exec in task {:?}: its init process has stopped",
                    req.id
                )));
            }
            let terminal = req.terminal || process.terminal;
            t.execs.insert(
                req.exec_id.clone(),
                Exec::new(
                    process,
                    StdioPaths {
                        stdin: req.stdin.clone(),
                        stdout: req.stdout.clone(),
                        stderr: req.stderr.clone(),
                        terminal,
                    },
                ),
            );
        }
        self.publisher.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(ev::TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }),
        );
        Ok(())
    }

    /// State: from the cache (no HCS call). NotFound for an unknown task/exec. A process that
    /// has not stopped reports exit status 255 and no exit time (runhcs's convention).
    pub fn state(&self, req: &api::StateRequest) -> Result<api::StateResponse, ShimError> {
        let mut st = self.lock();
        let t = Self::task(&mut st, &req.id)?;
        let (bundle, paused) = (t.bundle.clone(), t.paused);
        let e = Self::exec(&mut st, &req.id, &req.exec_id)?;
        let status = match e.state {
            ProcState::Created => api::Status::CREATED,
            ProcState::Running if paused => api::Status::PAUSED,
            ProcState::Running => api::Status::RUNNING,
            ProcState::Stopped => api::Status::STOPPED,
        };
        let stopped = e.state == ProcState::Stopped;
        Ok(api::StateResponse {
            id: if req.exec_id.is_empty() {
                req.id.clone()
            } else {
                req.exec_id.clone()
            },
            bundle,
            pid: e.pid,
            status: status.into(),
            stdin: e.paths.stdin.clone(),
            stdout: e.paths.stdout.clone(),
            stderr: e.paths.stderr.clone(),
            terminal: e.paths.terminal,
            exit_status: if stopped { e.exit_status } else { UNKNOWN_EXIT },
            exited_at: Some(ts(if stopped { e.exited_at } else { None })).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    /// Pids: `HcsGetComputeSystemProperties` (`ProcessList`) while the system runs; the pids
    /// the shim started when that query fails; none before start. NotFound for an unknown task.
    pub fn pids(&self, req: &api::PidsRequest) -> Result<api::PidsResponse, ShimError> {
        let (system, known, started) = {
            let mut st = self.lock();
            let t = Self::task(&mut st, &req.id)?;
            let known: Vec<u32> = t
                .execs
                .values()
                .filter(|e| e.state == ProcState::Running)
                .map(|e| e.pid)
                .collect();
            let started = t.execs.get("").is_some_and(|e| e.state == ProcState::Running);
            (t.system.clone(), known, started)
        };
        let mut pids = Vec::new();
        if started {
            match bounded("query process list", self.platform.bounds.call, move || {
                system.properties_v2(&[hcs_schema::PropertyType::ProcessList])
            }) {
                Ok(props) => pids = props.process_list.iter().map(|p| p.process_id).collect(),
                Err(e) => {
                    log::warn!("{e}; reporting the processes the shim started");
                    pids = known;
                }
            }
        }
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| containerd_shim::protos::api::ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    /// Kill: *created* → stopped with status 1, no HCS call (the init's system is torn down);
    /// *running* → `HcsSignalProcess` (`HcsTerminateProcess` for SIGKILL or when signals are
    /// not supported), "already stopped" counting as success; `all` signals every running
    /// process. NotFound for an unknown task/exec or a stopped process. After a SIGKILL, an exit
    /// that does not arrive within [`EXIT_BOUND`] is forced (the system terminated, status 137).
    pub fn kill(self: &Arc<Self>, req: &api::KillRequest) -> Result<(), ShimError> {
        type Target = (String, ProcState, Option<Arc<Process>>, Arc<System>);
        let targets: Vec<Target> = {
            let mut st = self.lock();
            let t = Self::task(&mut st, &req.id)?;
            let system = t.system.clone();
            if req.all {
                t.execs
                    .iter()
                    .filter(|(_, e)| e.state != ProcState::Stopped)
                    .map(|(k, e)| (k.clone(), e.state, e.process.clone(), system.clone()))
                    .collect()
            } else {
                let e = Self::exec(&mut st, &req.id, &req.exec_id)?;
                if e.state == ProcState::Stopped {
                    return Err(ShimError::not_found(format!(
                        "{} of task {:?} has already stopped",
                        exec_name(&req.exec_id),
                        req.id
                    )));
                }
                vec![(req.exec_id.clone(), e.state, e.process.clone(), system)]
            }
        };
        let mut first_error = None;
        for (exec_id, state, process, system) in targets {
            match (state, process) {
                (ProcState::Created, _) | (_, None) => {
                    if exec_id.is_empty() {
                        self.teardown(&system);
                    }
                    self.finish(&req.id, &exec_id, 1, Some("killed before it started".into()));
                }
                (_, Some(p)) => {
                    if let Err(e) = self.signal(&req.id, &exec_id, &p, &system, req.signal) {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn signal(
        self: &Arc<Self>,
        id: &str,
        exec_id: &str,
        p: &Arc<Process>,
        system: &Arc<System>,
        signal: u32,
    ) -> Result<(), ShimError> {
        const SIGKILL: u32 = 9;
        let p2 = p.clone();
        let result = if signal == SIGKILL {
            bounded("kill process", self.platform.bounds.call, move || p2.kill()).map(|_| true)
        } else {
            let options = serde_json::json!({ "Signal": signal }).to_string();
            match bounded("signal process", self.platform.bounds.call, move || {
                p2.signal(&options)
            }) {
                Ok(true) => Ok(true),
                Ok(false)
                | Err(ShimError {
                    code: Code::UNIMPLEMENTED,
                    ..
                }) => {
                    let p3 = p.clone();
                    bounded("terminate process", self.platform.bounds.call, move || p3.kill()).map(|_| true)
                }
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(_) => {}
            Err(e) if e.code == Code::NOT_FOUND => {} // already stopped: success
            Err(e) => {
                if p.exit().is_none() {
                    return Err(e);
                }
            }
        }
        if signal == SIGKILL {
            self.arm_exit_bound(id.to_owned(), exec_id.to_owned(), system.clone(), p.clone());
        }
        Ok(())
    }

    /// After a kill: if the exit has not arrived within [`EXIT_BOUND`], terminate the system
    /// (init) and force the process to stopped with a reason.
    fn arm_exit_bound(
        self: &Arc<Self>,
        id: String,
        exec_id: String,
        system: Arc<System>,
        process: Arc<Process>,
    ) {
        let this = self.clone();
        let _ = thread::Builder::new()
            .name("shim-exit-bound".into())
            .spawn(move || {
                let deadline = std::time::Instant::now() + this.platform.bounds.exit;
                let mut st = this.lock();
                loop {
                    match Self::exec(&mut st, &id, &exec_id) {
                        Ok(e) if e.state != ProcState::Stopped => {}
                        _ => return,
                    }
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    st = this
                        .changed
                        .wait_timeout(st, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                drop(st);
                if process.exit().is_some() {
                    // The exit arrived; the watcher is finishing (teardown, bounded on its own).
                    return;
                }
                if exec_id.is_empty() {
                    let s = system.clone();
                    let _ = bounded("terminate compute system", this.platform.bounds.stop, move || {
                        s.terminate()
                    });
                }
                this.finish(
                    &id,
                    &exec_id,
                    128 + 9,
                    Some(format!(
                        "the exit did not arrive within {:?} after SIGKILL",
                        this.platform.bounds.exit
                    )),
                );
            });
    }

    /// CloseIO: closes the process's stdin (idempotent; no HCS call beyond closing the pipe).
    /// NotFound for an unknown task/exec.
    pub fn close_io(&self, req: &api::CloseIORequest) -> Result<(), ShimError> {
        let (relays, process) = {
            let mut st = self.lock();
            let e = Self::exec(&mut st, &req.id, &req.exec_id)?;
            (e.relays.clone(), e.process.clone())
        };
        if req.stdin {
            if let Some(r) = relays {
                r.release_stdin();
            }
            if let Some(p) = process {
                let _ = bounded("close stdin", self.platform.bounds.stop, move || p.close_stdin());
            }
        }
        Ok(())
    }

    /// Wait: blocks until the process is *stopped* (for the init: after the system's teardown),
    /// then returns its status; the same status on every later call. NotFound for an unknown
    /// task/exec (also when it is deleted while waiting).
    pub fn wait(&self, req: &api::WaitRequest) -> Result<api::WaitResponse, ShimError> {
        let mut st = self.lock();
        loop {
            let e = Self::exec(&mut st, &req.id, &req.exec_id)?;
            if e.state == ProcState::Stopped {
                return Ok(api::WaitResponse {
                    exit_status: e.exit_status,
                    exited_at: Some(ts(e.exited_at)).into(),
                    ..Default::default()
                });
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Stats: `HcsGetComputeSystemProperties` (`Statistics`), returned as hcsshim's Windows
    /// statistics message. NotFound for an unknown task; FailedPrecondition unless running.
    pub fn stats(&self, req: &api::StatsRequest) -> Result<api::StatsResponse, ShimError> {
        let system = {
            let mut st = self.lock();
            let t = Self::task(&mut st, &req.id)?;
            if t.execs.get("").map(|e| e.state) != Some(ProcState::Running) {
                return Err(ShimError::precondition(format!(
                    "task {:?} is not running",
                    req.id
                )));
            }
            t.system.clone()
        };
        let props = bounded("query statistics", self.platform.bounds.call, move || {
            system.properties_v2(&[hcs_schema::PropertyType::Statistics])
        })?;
        let stats = crate::stats::to_proto(props.statistics.as_ref())
            .map_err(|e| ShimError::new(Code::INTERNAL, format!("encode statistics: {e}")))?;
        Ok(api::StatsResponse {
            stats: Some(stats).into(),
            ..Default::default()
        })
    }

    fn set_paused(&self, req_id: &str, pause: bool) -> Result<(), ShimError> {
        let _op = self.op_lock();
        let system = {
            let mut st = self.lock();
            let t = Self::task(&mut st, req_id)?;
            let running = t.execs.get("").map(|e| e.state) == Some(ProcState::Running);
            if !running || t.paused == pause {
                return Err(ShimError::precondition(format!(
                    "cannot {} task {req_id:?}: it is {}",
                    if pause { "pause" } else { "resume" },
                    if !running {
                        "not running"
                    } else if pause {
                        "already paused"
                    } else {
                        "not paused"
                    }
                )));
            }
            t.system.clone()
        };
        if pause {
            bounded("pause compute system", self.platform.bounds.call, move || {
                system.pause()
            })?;
        } else {
            bounded("resume compute system", self.platform.bounds.call, move || {
                system.resume()
            })?;
        }
        if let Some(t) = self.lock().task.as_mut() {
            t.paused = pause;
        }
        if pause {
            self.publisher.publish(
                topics::TASK_PAUSED_EVENT_TOPIC,
                Box::new(ev::TaskPaused {
                    container_id: req_id.to_owned(),
                    ..Default::default()
                }),
            );
        } else {
            self.publisher.publish(
                topics::TASK_RESUMED_EVENT_TOPIC,
                Box::new(ev::TaskResumed {
                    container_id: req_id.to_owned(),
                    ..Default::default()
                }),
            );
        }
        Ok(())
    }

    /// Pause: `HcsPauseComputeSystem`. NotFound for an unknown task; FailedPrecondition unless
    /// running and not paused.
    pub fn pause(&self, req: &api::PauseRequest) -> Result<(), ShimError> {
        self.set_paused(&req.id, true)
    }

    /// Resume: `HcsResumeComputeSystem`. NotFound for an unknown task; FailedPrecondition
    /// unless paused.
    pub fn resume(&self, req: &api::ResumeRequest) -> Result<(), ShimError> {
        self.set_paused(&req.id, false)
    }

    /// ResizePty: `HcsModifyProcess` (console size). NotFound for an unknown task/exec;
    /// FailedPrecondition without a terminal; ignored unless running.
    pub fn resize_pty(&self, req: &api::ResizePtyRequest) -> Result<(), ShimError> {
        let process = {
            let mut st = self.lock();
            let e = Self::exec(&mut st, &req.id, &req.exec_id)?;
            if !e.paths.terminal {
                return Err(ShimError::precondition(format!(
                    "{} has no terminal",
                    exec_name(&req.exec_id)
                )));
            }
            if e.state != ProcState::Running {
                return Ok(());
            }
            e.process.clone()
        };
        let (w, h) = (
            u16::try_from(req.width).unwrap_or(u16::MAX),
            u16::try_from(req.height).unwrap_or(u16::MAX),
        );
        if let Some(p) = process {
            bounded("resize console", self.platform.bounds.call, move || {
                p.resize_console(w, h)
            })?;
        }
        Ok(())
    }

    /// Update: the resources HCS can change on a running container, through
    /// `HcsModifyComputeSystem` (memory limit → `Container/Memory/SizeInMB`, processor limit /
    /// weight → `Container/Processor`; see [`crate::update`]). NotFound for an unknown task;
    /// FailedPrecondition unless the init is running and the task not paused; InvalidArgument
    /// for resources that cannot be decoded; Unimplemented, naming each field, for anything
    /// else (the request is refused as a whole, before any HCS call).
    pub fn update(&self, req: &api::UpdateTaskRequest) -> Result<(), ShimError> {
        let _op = self.op_lock();
        let system = {
            let mut st = self.lock();
            let t = Self::task(&mut st, &req.id)?;
            let running = t.execs.get("").map(|e| e.state) == Some(ProcState::Running);
            if !running || t.paused {
                return Err(ShimError::precondition(format!(
                    "cannot update task {:?}: it is {}",
                    req.id,
                    if running { "paused" } else { "not running" }
                )));
            }
            t.system.clone()
        };
        let (type_url, value) = req
            .resources
            .as_ref()
            .map_or(("", &[][..]), |a| (a.type_url.as_str(), a.value.as_slice()));
        let mut annotations: Vec<String> = req.annotations.keys().cloned().collect();
        annotations.sort();
        let cpus = thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let requests =
            crate::update::modify_requests(type_url, value, &annotations, cpus).map_err(|e| match e {
                crate::update::UpdateError::Invalid(m) => ShimError::new(Code::INVALID_ARGUMENT, m),
                crate::update::UpdateError::Unsupported(m) => ShimError::new(Code::UNIMPLEMENTED, m),
            })?;
        for doc in requests {
            let system = system.clone();
            bounded("modify compute system", self.platform.bounds.call, move || {
                system.modify(&doc)
            })?;
        }
        Ok(())
    }

    /// Checkpoint: NotFound for an unknown task, else Unimplemented — HCS has no checkpoint of
    /// a process-isolated container (hcsshim's runhcs-v1 refuses it too).
    pub fn checkpoint(&self, req: &api::CheckpointTaskRequest) -> Result<(), ShimError> {
        Self::task(&mut self.lock(), &req.id)?;
        Err(ShimError::new(
            Code::UNIMPLEMENTED,
            format!(
                "Checkpoint of task {:?} is not implemented by containerd-shim-hcs-v1: HCS cannot \
                 checkpoint a process-isolated container",
                req.id
            ),
        ))
    }

    /// Connect: the shim's pid and the init's pid. NotFound for an unknown task.
    pub fn connect(&self, req: &api::ConnectRequest) -> Result<api::ConnectResponse, ShimError> {
        let mut st = self.lock();
        let e = Self::exec(&mut st, &req.id, "")?;
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: e.pid,
            version: concat!("containerd-shim-hcs-v1 ", env!("CARGO_PKG_VERSION")).to_owned(),
            ..Default::default()
        })
    }
}

/// The bundle directory's root filesystem as the launch of the simulator on this host: chroot
/// through the shim binary when root, else the host in `root/cwd` (see [`Launch`]).
pub fn simulator_launch(bundle: &BundleSpec) -> Launch {
    let Some(root) = bundle.root.clone() else {
        return Launch::Direct;
    };
    #[cfg(unix)]
    {
        if rustix::process::geteuid().is_root() {
            if let Ok(helper) = std::env::current_exe() {
                return Launch::Chroot { helper, root };
            }
        }
    }
    log::warn!(
        "not running as root: processes run on the host without chroot, in {}",
        root.display()
    );
    Launch::HostInRoot { root }
}

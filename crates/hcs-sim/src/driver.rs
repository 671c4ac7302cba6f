//! The in-process driver's model calls: `impl hcs::Driver for Model`, each call of the driver
//! contract carried out on the [`Engine`](crate::engine::Engine) — the prologue (connectivity
//! and the fault plan), the checked model transition, the answer (done or pending) and the
//! epilogue (injected notifications, crash or disconnect). Documents are read and written by
//! [`crate::documents`]. The [`Simulator`](crate::Simulator)'s own `impl Driver`
//! (`calls.rs`) wraps these calls with the record and `fail … performed`.

use crate::codes::{self, ForGeneration};
use crate::config::Backend;
use crate::documents::{
    basic_container_properties, basic_properties, image_name, parse_json, parse_params, parse_system_config,
    rfc3339, to_100ns,
};
use crate::engine::{bad_handle, unavailable, Engine};
use crate::host;
use crate::model::{
    CallbackRec, CbTarget, MappedDirectory, ProcKind, ProcRec, ScriptedRun, State, StopKind, SystemOp,
    SystemRec, SystemState, TransitionError,
};
use crate::sched::{Delivery, Target, Task};
use crate::signal;
use crate::sync::lock;
use hcs::{
    ApiGeneration, CallbackHandle, Driver, DriverResult, Failure, HResult, Method, NotificationKind,
    NotifyContext, PipeReader, PipeWriter, ProcessHandle, ProcessInfo, Reply, SystemHandle,
};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// One live process, for the properties answer.
struct ProcRow {
    pid: u32,
    image: String,
    /// The host pid to read `/proc` of (host backend only).
    host_pid: Option<u32>,
    created: SystemTime,
}

/// What the locked part of a properties query found: the finished answer (no property types
/// asked for), or the basic document with what the rest needs (read outside the lock).
enum Basic {
    Done(String),
    More(Value, Vec<String>, Vec<ProcRow>, Option<(Instant, SystemTime)>),
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The record of process `proc` of system `sys`; `E_HANDLE` when it is gone.
fn process_rec(st: &State, sys: u64, proc: u64) -> Result<&ProcRec, Failure> {
    st.systems
        .get(&sys)
        .and_then(|s| s.processes.get(&proc))
        .ok_or_else(bad_handle)
}

/// The failure of a refused transition, in the generation's encoding.
fn transition_failure(e: TransitionError, generation: ApiGeneration) -> Failure {
    codes::failure(e.code(generation), e.to_string())
}

/// A reply that is pending or done.
fn reply<T>(value: T, pending: bool) -> Reply<T> {
    if pending {
        Reply::pending(value)
    } else {
        Reply::done(value)
    }
}

/// The model's side of every driver call (wrapped by the `Simulator`'s `impl Driver`).
pub(crate) struct Model {
    pub(crate) engine: Arc<Engine>,
}

impl Driver for Model {
    fn name(&self) -> &str {
        "sim"
    }

    fn generation(&self) -> ApiGeneration {
        self.engine.generation
    }

    fn enumerate_compute_systems(&self, query: &str) -> DriverResult<String> {
        let sh = &self.engine;
        sh.begin(Method::EnumerateComputeSystems, None, None)?;
        let v = parse_json(query, sh.generation, "query")?;
        let q: hcs_schema::ComputeSystemQuery = serde_json::from_value(v)
            .map_err(|e| codes::failure(codes::INVALID_ARG, format!("invalid ComputeSystemQuery: {e}")))?;
        let st = sh.lock();
        let list: Vec<hcs_schema::ContainerProperties> = st
            .systems
            .values()
            .filter(|s| q.ids.is_empty() || q.ids.contains(&s.id))
            .filter(|s| q.types.is_empty() || q.types.iter().any(|t| t.eq_ignore_ascii_case(&s.system_type)))
            .filter(|s| q.names.is_empty() || q.names.contains(&s.name))
            .filter(|s| q.owners.is_empty() || q.owners.contains(&s.owner))
            .map(basic_container_properties)
            .collect();
        drop(st);
        // Typed rows straight to text (no `Value` maps); plain structs always serialise.
        let text = serde_json::to_string(&list).unwrap_or_else(|_| "[]".to_owned());
        Ok(Reply::done(text))
    }

    fn create_compute_system(
        &self,
        id: &str,
        configuration: &str,
        ctx: NotifyContext,
    ) -> DriverResult<SystemHandle> {
        let sh = &self.engine;
        let _span = tracing::debug_span!("hcs_sim", op = "CreateComputeSystem", system = id).entered();
        let fired = sh.begin(Method::CreateComputeSystem, Some(id), None)?;
        if id.is_empty() {
            return Err(codes::failure(
                codes::INVALID_ARG,
                "the compute system id is empty",
            ));
        }
        let v = parse_json(configuration, sh.generation, "compute system configuration")?;
        if !v.is_object() {
            return Err(codes::failure(
                codes::INVALID_JSON.of(sh.generation),
                "the compute system configuration must be a JSON object",
            ));
        }
        let cfg = parse_system_config(&v);
        let mut st = sh.lock();
        if st.by_id.contains_key(id) {
            let code = codes::ALREADY_EXISTS.of(sh.generation);
            return Err(codes::failure(
                code,
                format!("A compute system with id `{id}` already exists."),
            ));
        }
        let sys = st.key();
        let handle = st.handle();
        st.systems.insert(
            sys,
            SystemRec {
                id: id.to_string(),
                system_type: cfg.system_type,
                name: cfg.name,
                owner: cfg.owner,
                os: cfg.os,
                terminate_on_last_close: cfg.terminate_on_last_close,
                state: SystemState::Created,
                stopping: None,
                stop_gen: 0,
                exit: None,
                memory_mb: cfg.memory_mb,
                mapped_directories: Vec::new(),
                handles: HashSet::from([handle]),
                callbacks: Vec::new(),
                processes: Default::default(),
                started: None,
            },
        );
        st.by_id.insert(id.to_string(), sys);
        st.system_handles.insert(handle, sys);
        let pending = sh.complete(&mut st, Method::CreateComputeSystem, sys, Some(ctx), &fired);
        sh.after(&mut st, Some(sys), None, &fired);
        let h = SystemHandle::new(handle).ok_or_else(bad_handle)?;
        Ok(reply(h, pending))
    }

    fn open_compute_system(&self, id: &str) -> DriverResult<SystemHandle> {
        let sh = &self.engine;
        let fired = sh.begin(Method::OpenComputeSystem, Some(id), None)?;
        let mut st = sh.lock();
        let Some(&sys) = st.by_id.get(id) else {
            let code = codes::NOT_FOUND.of(sh.generation);
            return Err(codes::failure(
                code,
                format!("A compute system with id `{id}` was not found."),
            ));
        };
        let handle = st.handle();
        st.system_handles.insert(handle, sys);
        if let Some(s) = st.systems.get_mut(&sys) {
            s.handles.insert(handle);
        }
        sh.after(&mut st, Some(sys), None, &fired);
        Ok(Reply::done(SystemHandle::new(handle).ok_or_else(bad_handle)?))
    }

    fn close_compute_system(&self, system: SystemHandle) -> Result<(), Failure> {
        let sh = &self.engine;
        let id = sh.system_id(system)?;
        sh.begin(Method::CloseComputeSystem, Some(&id), Some(system.raw()))?;
        let st = sh.lock();
        if !st.system_handles.contains_key(&system.raw()) {
            return Err(bad_handle());
        }
        let mut st = sh.drop_registrations_via(st, system.raw());
        let Some(sys) = st.system_handles.remove(&system.raw()) else {
            return Err(bad_handle());
        };
        let Some(s) = st.systems.get_mut(&sys) else {
            return Ok(());
        };
        s.handles.remove(&system.raw());
        // Closing the last handle is an implicit terminate, where a terminate is valid.
        if s.handles.is_empty() && s.terminate_on_last_close && s.check(SystemOp::Terminate).is_ok() {
            tracing::debug!(system = %s.id, "hcs-sim: last handle closed; terminating");
            sh.begin_stop(&mut st, sys, StopKind::Forced);
        }
        sh.maybe_remove(&mut st, sys);
        Ok(())
    }

    fn start_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.lifecycle(
            Method::StartComputeSystem,
            SystemOp::Start,
            system,
            options,
            Some(ctx),
            |_, st, sys| {
                if let Some(s) = st.systems.get_mut(&sys) {
                    s.started = Some((Instant::now(), SystemTime::now()));
                }
            },
        )
    }

    fn shutdown_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.lifecycle(
            Method::ShutdownComputeSystem,
            SystemOp::Shutdown,
            system,
            options,
            None,
            |sh, st, sys| sh.begin_stop(st, sys, StopKind::Graceful),
        )
    }

    fn terminate_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.lifecycle(
            Method::TerminateComputeSystem,
            SystemOp::Terminate,
            system,
            options,
            None,
            |sh, st, sys| sh.begin_stop(st, sys, StopKind::Forced),
        )
    }

    fn pause_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.lifecycle(
            Method::PauseComputeSystem,
            SystemOp::Pause,
            system,
            options,
            Some(ctx),
            |sh, st, sys| sh.freeze(st, sys),
        )
    }

    fn resume_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.lifecycle(
            Method::ResumeComputeSystem,
            SystemOp::Resume,
            system,
            options,
            Some(ctx),
            |sh, st, sys| sh.thaw(st, sys),
        )
    }

    fn save_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.lifecycle(
            Method::SaveComputeSystem,
            SystemOp::Save,
            system,
            options,
            Some(ctx),
            |sh, st, sys| sh.freeze(st, sys),
        )
    }

    fn get_compute_system_properties(&self, system: SystemHandle, query: &str) -> DriverResult<String> {
        let sh = &self.engine;
        let basic = sh.with_system(Method::GetComputeSystemProperties, system, |st, sys, _| {
            let v = parse_json(query, sh.generation, "property query")?;
            let mut types = Vec::new();
            match v.get("PropertyTypes") {
                None | Some(Value::Null) => {}
                Some(Value::Array(a)) => {
                    for t in a {
                        match t.as_str() {
                            Some(name @ ("Statistics" | "ProcessList" | "Memory")) => types.push(name.to_string()),
                            _ => {
                                return Err(codes::failure(
                                    codes::INVALID_ARG,
                                    format!("unsupported property type {t}; the simulator answers Statistics, ProcessList and Memory"),
                                ))
                            }
                        }
                    }
                }
                Some(_) => return Err(codes::failure(codes::INVALID_ARG, "PropertyTypes must be an array")),
            }
            let s = st.systems.get(&sys).ok_or_else(bad_handle)?;
            if types.is_empty() {
                // The common query (no property types): the typed document printed directly,
                // without an intermediate `Value` map.
                let text = serde_json::to_string(&crate::documents::basic_container_properties(s))
                    .map_err(|e| codes::failure(codes::INVALID_ARG, e.to_string()))?;
                return Ok(Basic::Done(text));
            }
            let mut doc = basic_properties(s);
            if types.iter().any(|t| t == "Memory") {
                doc["Memory"] = json!({ "SizeInMB": s.memory_mb });
            }
            let procs = process_rows(sh, st, sys);
            Ok(Basic::More(doc, types, procs, s.started))
        })?;
        let (mut doc, types, procs, started) = match basic {
            Basic::Done(text) => return Ok(Reply::done(text)),
            Basic::More(doc, types, procs, started) => (doc, types, procs, started),
        };
        // /proc is read outside the state lock.
        let stats: Vec<_> = procs
            .iter()
            .map(|row| row.host_pid.and_then(host::proc_stats).unwrap_or_default())
            .collect();
        if types.iter().any(|t| t == "ProcessList") {
            let list: Vec<Value> = procs
                .iter()
                .zip(&stats)
                .map(|(row, st)| {
                    serde_json::to_value(hcs_schema::ProcessDetails {
                        process_id: row.pid,
                        image_name: row.image.clone(),
                        create_timestamp: Some(rfc3339(row.created)),
                        user_time_100ns: st.user_100ns,
                        kernel_time_100ns: st.kernel_100ns,
                        memory_working_set_private_bytes: st.private_bytes,
                        memory_working_set_shared_bytes: st.shared_bytes,
                        memory_commit_bytes: st.rss_bytes,
                    })
                    .unwrap_or(Value::Null)
                })
                .collect();
            doc["ProcessList"] = Value::Array(list);
        }
        if types.iter().any(|t| t == "Statistics") {
            let user: u64 = stats.iter().map(|s| s.user_100ns).sum();
            let kernel: u64 = stats.iter().map(|s| s.kernel_100ns).sum();
            let now = SystemTime::now();
            doc["Statistics"] = json!({
                "Timestamp": rfc3339(now),
                "ContainerStartTime": started.map(|(_, t)| rfc3339(t)),
                "Uptime100ns": started.map_or(0, |(i, _)| to_100ns(i.elapsed())),
                "Processor": {
                    "TotalRuntime100ns": user + kernel,
                    "RuntimeUser100ns": user,
                    "RuntimeKernel100ns": kernel,
                },
                "Memory": {
                    "MemoryUsageCommitBytes": stats.iter().map(|s| s.rss_bytes).sum::<u64>(),
                    "MemoryUsageCommitPeakBytes": stats.iter().map(|s| s.peak_rss_bytes).sum::<u64>(),
                    "MemoryUsagePrivateWorkingSetBytes": stats.iter().map(|s| s.private_bytes).sum::<u64>(),
                },
                "Storage": { "ReadCountNormalized": 0, "ReadSizeBytes": 0, "WriteCountNormalized": 0, "WriteSizeBytes": 0 },
            });
        }
        Ok(Reply::done(doc.to_string()))
    }

    fn modify_compute_system(&self, system: SystemHandle, configuration: &str) -> DriverResult<()> {
        let sh = &self.engine;
        sh.with_system(Method::ModifyComputeSystem, system, |st, sys, fired| {
            let v = parse_json(configuration, sh.generation, "modify request")?;
            let s = st.systems.get_mut(&sys).ok_or_else(bad_handle)?;
            s.transition(SystemOp::Modify)
                .map_err(|e| transition_failure(e, sh.generation))?;
            let path = v.get("ResourcePath").and_then(Value::as_str).unwrap_or_default();
            let request = v.get("RequestType").and_then(Value::as_str).unwrap_or_default();
            let settings = v.get("Settings").cloned().unwrap_or(Value::Null);
            let unsupported = || {
                codes::failure(
                    codes::INVALID_ARG,
                    format!("unsupported modify request: ResourcePath `{path}` RequestType `{request}`"),
                )
            };
            match (path, request, s.system_type.as_str()) {
                ("VirtualMachine/ComputeTopology/Memory/SizeInMB", "Update", "VirtualMachine") => {
                    let mb = settings.as_u64().filter(|mb| *mb > 0).ok_or_else(|| {
                        codes::failure(codes::INVALID_ARG, "Settings must be a positive size in MB")
                    })?;
                    s.memory_mb = Some(mb);
                }
                // What HCS can change on a running process-isolated container (hcsshim's
                // runhcs Update): the silo's memory limit and its processor limit / weight.
                ("Container/Memory/SizeInMB", "Update", "Container") => {
                    let mb = settings.as_u64().filter(|mb| *mb > 0).ok_or_else(|| {
                        codes::failure(codes::INVALID_ARG, "Settings must be a positive size in MB")
                    })?;
                    s.memory_mb = Some(mb);
                }
                ("Container/Processor", "Update", "Container") => {
                    let field = |k: &str| match settings.get(k) {
                        None => Ok(None),
                        Some(v) => v
                            .as_u64()
                            .filter(|n| (1..=10_000).contains(n))
                            .map(Some)
                            .ok_or_else(|| {
                                codes::failure(
                                    codes::INVALID_ARG,
                                    format!("Processor {k} must be an integer in 1-10000, not {v}"),
                                )
                            }),
                    };
                    let known = settings
                        .as_object()
                        .is_some_and(|o| o.keys().all(|k| k == "Limit" || k == "Weight"));
                    if !known {
                        return Err(codes::failure(
                            codes::INVALID_ARG,
                            "Container/Processor Settings must be an object with Limit and/or Weight",
                        ));
                    }
                    let (limit, weight) = (field("Limit")?, field("Weight")?);
                    if limit.is_none() && weight.is_none() {
                        return Err(codes::failure(
                            codes::INVALID_ARG,
                            "Container/Processor Settings must set Limit or Weight",
                        ));
                    }
                }
                ("Container/MappedDirectories", "Add", "Container") => {
                    let get = |k: &str| {
                        settings
                            .get(k)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    let dir = MappedDirectory {
                        host_path: get("HostPath"),
                        container_path: get("ContainerPath"),
                        read_only: settings.get("ReadOnly").and_then(Value::as_bool).unwrap_or(false),
                    };
                    if dir.host_path.is_empty() || dir.container_path.is_empty() {
                        return Err(codes::failure(
                            codes::INVALID_ARG,
                            "a mapped directory needs HostPath and ContainerPath",
                        ));
                    }
                    if s.mapped_directories
                        .iter()
                        .any(|d| d.container_path == dir.container_path)
                    {
                        return Err(codes::failure(
                            codes::INVALID_ARG,
                            format!("`{}` is already mapped", dir.container_path),
                        ));
                    }
                    s.mapped_directories.push(dir);
                }
                ("Container/MappedDirectories", "Remove", "Container") => {
                    let target = settings
                        .get("ContainerPath")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let before = s.mapped_directories.len();
                    s.mapped_directories.retain(|d| d.container_path != target);
                    if s.mapped_directories.len() == before {
                        return Err(codes::failure(
                            codes::INVALID_ARG,
                            format!("`{target}` is not mapped"),
                        ));
                    }
                }
                _ => return Err(unsupported()),
            }
            Ok(reply((), fired.pending.is_some()))
        })
    }

    fn register_compute_system_callback(
        &self,
        system: SystemHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        let sh = &self.engine;
        let handle = sh.with_system(Method::RegisterComputeSystemCallback, system, |st, sys, _| {
            let handle = st.handle();
            st.callbacks.insert(
                handle,
                CallbackRec {
                    ctx,
                    target: CbTarget::System(sys),
                    via: system.raw(),
                    live: true,
                    in_flight: 0,
                    delivering: None,
                },
            );
            let s = st.systems.get_mut(&sys).ok_or_else(bad_handle)?;
            s.callbacks.push(handle);
            // Notifications are sticky (AsyncModel.md): a registration on a stopped system
            // still learns of the exit.
            let exited = s
                .exit
                .filter(|_| s.state == SystemState::Stopped)
                .map(|k| (k, s.id.clone()));
            if let Some((kind, id)) = exited {
                let (status, payload) = sh.exit_payload(kind);
                sh.emit(
                    st,
                    NotificationKind::SystemExited,
                    Some(&id),
                    vec![Target::Registration(handle)],
                    status,
                    Some(payload),
                    Duration::ZERO,
                );
            }
            Ok(handle)
        })?;
        CallbackHandle::new(handle).ok_or_else(bad_handle)
    }

    fn unregister_compute_system_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        self.unregister(Method::UnregisterComputeSystemCallback, callback, false)
    }

    fn create_process(
        &self,
        system: SystemHandle,
        parameters: &str,
    ) -> DriverResult<(ProcessHandle, ProcessInfo)> {
        let sh = &self.engine;
        let _span = tracing::debug_span!("hcs_sim", op = "CreateProcess", handle = system.raw()).entered();
        let id = sh.system_id(system)?;
        let fired = sh.begin(Method::CreateProcess, Some(&id), Some(system.raw()))?;
        let params = parse_params(parameters, sh.generation)?;
        let check = |st: &State| -> Result<u64, Failure> {
            let sys = *st.system_handles.get(&system.raw()).ok_or_else(bad_handle)?;
            st.systems[&sys]
                .check(SystemOp::CreateProcess)
                .map_err(|e| transition_failure(e, sh.generation))?;
            Ok(sys)
        };
        let checked = check(&sh.lock())?;
        let image = image_name(&params.argv[0]);
        let (mut st, sys, proc, kind, pid, info) = match &sh.backend {
            Backend::Host => {
                // Spawn outside the lock, then re-check the system.
                let mut spawned = sh.spawn_host(checked, &params)?;
                let mut st = sh.lock();
                let sys = match check(&st) {
                    Ok(sys) => sys,
                    Err(e) => {
                        drop(st);
                        spawned.child.discard();
                        return Err(e);
                    }
                };
                let proc = st.key();
                let pid = spawned.child.id();
                let info = ProcessInfo {
                    pid,
                    stdin: spawned.stdin.take().map(PipeWriter::from_file),
                    stdout: spawned.stdout.take().map(PipeReader::from_file),
                    stderr: spawned.stderr.take().map(PipeReader::from_file),
                };
                sh.adopt(sys, proc, spawned.child, spawned.console.take());
                (st, sys, proc, ProcKind::Host, pid, info)
            }
            Backend::Scripted(script) => {
                let Some(behaviour) = script.lookup(&params.command_line).cloned() else {
                    return Err(codes::failure(
                        codes::FILE_NOT_FOUND,
                        format!(
                            "The system cannot find the file specified. (no script entry for `{}`)",
                            params.command_line
                        ),
                    ));
                };
                let mut st = sh.lock();
                let sys = check(&st)?;
                let proc = st.key();
                let pid = st.next_scripted_pid;
                st.next_scripted_pid = st.next_scripted_pid.wrapping_add(4);
                let stdin_buf = Arc::new(Mutex::new(Vec::new()));
                let info = ProcessInfo {
                    pid,
                    stdin: params
                        .stdin
                        .then(|| PipeWriter::new(CaptureWriter(Arc::clone(&stdin_buf)))),
                    stdout: params
                        .stdout
                        .then(|| PipeReader::new(std::io::Cursor::new(behaviour.stdout.clone()))),
                    stderr: params
                        .stderr
                        .then(|| PipeReader::new(std::io::Cursor::new(behaviour.stderr.clone()))),
                };
                if let Some(runtime) = behaviour.runtime {
                    sh.schedule(
                        runtime,
                        Task::ScriptedExit {
                            sys,
                            proc,
                            generation: 0,
                        },
                    );
                }
                let run = ScriptedRun {
                    remaining: behaviour.runtime,
                    behaviour,
                    generation: 0,
                    resumed_at: Instant::now(),
                    frozen: false,
                    stdin: stdin_buf,
                };
                (st, sys, proc, ProcKind::Scripted(run), pid, info)
            }
        };
        let handle = st.handle();
        st.process_handles.insert(handle, (sys, proc));
        if let Some(s) = st.systems.get_mut(&sys) {
            s.processes.insert(
                proc,
                ProcRec {
                    pid,
                    command_line: params.command_line.clone(),
                    image,
                    handles: HashSet::from([handle]),
                    callbacks: Vec::new(),
                    exit_code: None,
                    kind,
                    modify_requests: Vec::new(),
                    created: SystemTime::now(),
                },
            );
        }
        sh.after(&mut st, Some(sys), Some(proc), &fired);
        drop(st);
        let h = ProcessHandle::new(handle).ok_or_else(bad_handle)?;
        Ok(Reply::done((h, info)))
    }

    fn open_process(&self, system: SystemHandle, pid: u32) -> DriverResult<ProcessHandle> {
        let sh = &self.engine;
        sh.with_system(Method::OpenProcess, system, |st, sys, _| {
            let s = st.systems.get(&sys).ok_or_else(bad_handle)?;
            let proc = s
                .processes
                .iter()
                .filter(|(_, p)| p.pid == pid)
                .max_by_key(|(k, p)| (p.exit_code.is_none(), **k))
                .map(|(k, _)| *k)
                .ok_or_else(|| {
                    codes::failure(
                        codes::PROCESS_NOT_FOUND,
                        format!("Element not found. (no process {pid})"),
                    )
                })?;
            let handle = st.handle();
            st.process_handles.insert(handle, (sys, proc));
            if let Some(p) = st.systems.get_mut(&sys).and_then(|s| s.processes.get_mut(&proc)) {
                p.handles.insert(handle);
            }
            Ok(Reply::done(ProcessHandle::new(handle).ok_or_else(bad_handle)?))
        })
    }

    fn close_process(&self, process: ProcessHandle) -> Result<(), Failure> {
        let sh = &self.engine;
        let id = sh.process_system_id(process)?;
        sh.begin(Method::CloseProcess, Some(&id), Some(process.raw()))?;
        let st = sh.lock();
        if !st.process_handles.contains_key(&process.raw()) {
            return Err(bad_handle());
        }
        let mut st = sh.drop_registrations_via(st, process.raw());
        let Some((sys, proc)) = st.process_handles.remove(&process.raw()) else {
            return Err(bad_handle());
        };
        if let Some(s) = st.systems.get_mut(&sys) {
            if let Some(p) = s.processes.get_mut(&proc) {
                p.handles.remove(&process.raw());
                if p.handles.is_empty() && p.exit_code.is_some() {
                    s.processes.remove(&proc);
                }
            }
        }
        sh.maybe_remove(&mut st, sys);
        Ok(())
    }

    fn terminate_process(&self, process: ProcessHandle) -> DriverResult<()> {
        let sh = &self.engine;
        sh.with_process(Method::TerminateProcess, process, |st, sys, proc, fired| {
            let p = process_rec(st, sys, proc)?;
            if p.exit_code.is_some() {
                return Err(codes::failure(
                    codes::TERMINATE_GONE.of(sh.generation),
                    "The process has already exited.",
                ));
            }
            sh.send_signal(st, process.raw(), sys, proc, signal::SIGKILL, fired.hold.clone());
            Ok(Reply::done(()))
        })
    }

    /// `{"Signal": n}`: 0 (Windows CtrlC) is delivered as `SIGINT`; 1–64 are Linux signal
    /// numbers delivered as is (to the process group); anything else is `E_INVALIDARG`. An
    /// empty document or `{}` means signal 0.
    fn signal_process(&self, process: ProcessHandle, options: &str) -> DriverResult<()> {
        let sh = &self.engine;
        sh.with_process(Method::SignalProcess, process, |st, sys, proc, fired| {
            let v = parse_json(options, sh.generation, "signal options")?;
            let sig = match v.get("Signal") {
                None | Some(Value::Null) => 0,
                Some(n) => n
                    .as_i64()
                    .ok_or_else(|| codes::failure(codes::INVALID_ARG, "Signal must be an integer"))?,
            };
            let sig = match sig {
                0 => signal::SIGINT,
                1..=64 => sig as i32,
                _ => {
                    return Err(codes::failure(
                        codes::INVALID_ARG,
                        format!("unsupported signal {sig}"),
                    ))
                }
            };
            let p = process_rec(st, sys, proc)?;
            if p.exit_code.is_some() {
                return Err(codes::failure(
                    codes::PROCESS_GONE.of(sh.generation),
                    "The process has already exited.",
                ));
            }
            sh.send_signal(st, process.raw(), sys, proc, sig, fired.hold.clone());
            Ok(Reply::done(()))
        })
    }

    /// The simulator hands each standard stream out once, from `create_process`; this call
    /// reports the pid with no streams (as HCS does for streams it did not create).
    fn get_process_info(&self, process: ProcessHandle) -> DriverResult<ProcessInfo> {
        let sh = &self.engine;
        sh.with_process(Method::GetProcessInfo, process, |st, sys, proc, _| {
            let p = process_rec(st, sys, proc)?;
            Ok(Reply::done(ProcessInfo {
                pid: p.pid,
                ..Default::default()
            }))
        })
    }

    fn get_process_properties(&self, process: ProcessHandle) -> DriverResult<String> {
        let sh = &self.engine;
        sh.with_process(Method::GetProcessProperties, process, |st, sys, proc, _| {
            let p = process_rec(st, sys, proc)?;
            Ok(Reply::done(Engine::process_status(p.pid, p.exit_code)))
        })
    }

    fn modify_process(&self, process: ProcessHandle, settings: &str) -> DriverResult<()> {
        let sh = &self.engine;
        sh.with_process(Method::ModifyProcess, process, |st, sys, proc, _| {
            let v = parse_json(settings, sh.generation, "process modify request")?;
            let request: hcs_schema::ProcessModifyRequest = serde_json::from_value(v).map_err(|e| {
                codes::failure(
                    codes::INVALID_ARG,
                    format!("unsupported process modify request: {e}"),
                )
            })?;
            let p = st
                .systems
                .get_mut(&sys)
                .and_then(|s| s.processes.get_mut(&proc))
                .ok_or_else(bad_handle)?;
            if p.exit_code.is_some() {
                return Err(codes::failure(
                    codes::PROCESS_GONE.of(sh.generation),
                    "The process has already exited.",
                ));
            }
            match request.operation {
                hcs_schema::ProcessModifyOperation::ConsoleSize if request.console_size.is_none() => {
                    return Err(codes::failure(
                        codes::INVALID_ARG,
                        "ConsoleSize request without ConsoleSize",
                    ))
                }
                hcs_schema::ProcessModifyOperation::CloseHandle if request.close_handle.is_none() => {
                    return Err(codes::failure(
                        codes::INVALID_ARG,
                        "CloseHandle request without CloseHandle",
                    ))
                }
                hcs_schema::ProcessModifyOperation::ConsoleSize => {
                    // A console process on the host backend: its pseudo-terminal is resized.
                    if let Some(size) = request.console_size {
                        if let Err(e) = sh.reaper.resize_console(proc, size.height, size.width) {
                            return Err(codes::failure(
                                HResult::E_FAIL,
                                format!("cannot resize the process's console: {e}"),
                            ));
                        }
                    }
                }
                _ => {}
            }
            p.modify_requests.push(settings.to_string());
            Ok(Reply::done(()))
        })
    }

    fn register_process_callback(
        &self,
        process: ProcessHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        let sh = &self.engine;
        let handle = sh.with_process(Method::RegisterProcessCallback, process, |st, sys, proc, _| {
            let handle = st.handle();
            st.callbacks.insert(
                handle,
                CallbackRec {
                    ctx,
                    target: CbTarget::Process(sys, proc),
                    via: process.raw(),
                    live: true,
                    in_flight: 0,
                    delivering: None,
                },
            );
            let s = st.systems.get_mut(&sys).ok_or_else(bad_handle)?;
            let id = s.id.clone();
            let p = s.processes.get_mut(&proc).ok_or_else(bad_handle)?;
            p.callbacks.push(handle);
            if let Some(code) = p.exit_code {
                // Sticky: a registration on an exited process still learns of the exit.
                let payload = Engine::process_status(p.pid, Some(code));
                sh.emit(
                    st,
                    NotificationKind::ProcessExited,
                    Some(&id),
                    vec![Target::Registration(handle)],
                    HResult::S_OK,
                    Some(payload),
                    Duration::ZERO,
                );
            }
            Ok(handle)
        })?;
        CallbackHandle::new(handle).ok_or_else(bad_handle)
    }

    fn unregister_process_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        self.unregister(Method::UnregisterProcessCallback, callback, true)
    }

    fn get_service_properties(&self, _query: &str) -> DriverResult<String> {
        self.engine.begin(Method::GetServiceProperties, None, None)?;
        Ok(Reply::done(
            json!({ "SupportedSchemaVersions": [{ "Major": 2, "Minor": 1 }] }).to_string(),
        ))
    }
}

impl Model {
    /// The lifecycle calls (start, pause, resume, save, shutdown, terminate): parse the options,
    /// take the checked state transition `sys_op`, run `effect` on the system, answer (pending
    /// or done, completing to `ctx`).
    fn lifecycle(
        &self,
        op: Method,
        sys_op: SystemOp,
        system: SystemHandle,
        options: &str,
        ctx: Option<NotifyContext>,
        effect: impl FnOnce(&Arc<Engine>, &mut State, u64),
    ) -> DriverResult<()> {
        let sh = &self.engine;
        sh.with_system(op, system, |st, sys, fired| {
            parse_json(options, sh.generation, format_args!("{} options", sys_op.name()))?;
            let s = st.systems.get_mut(&sys).ok_or_else(bad_handle)?;
            s.transition(sys_op)
                .map_err(|e| transition_failure(e, sh.generation))?;
            effect(sh, st, sys);
            let pending = sh.complete(st, op, sys, ctx, fired);
            Ok(reply((), pending))
        })
    }

    fn unregister(&self, op: Method, callback: CallbackHandle, process: bool) -> Result<(), Failure> {
        let sh = &self.engine;
        let _span = tracing::debug_span!("hcs_sim", op = %op, handle = callback.raw()).entered();
        let id = {
            let st = sh.lock();
            if !st.connected {
                return Err(unavailable());
            }
            let rec = st
                .callbacks
                .get(&callback.raw())
                .filter(|c| c.live)
                .ok_or_else(bad_handle)?;
            let (sys, is_process) = match rec.target {
                CbTarget::System(sys) => (sys, false),
                CbTarget::Process(sys, _) => (sys, true),
            };
            if is_process != process {
                return Err(bad_handle());
            }
            st.systems.get(&sys).map(|s| s.id.clone())
        };
        let fired = sh.begin(op, id.as_deref(), Some(callback.raw()))?;
        let st = sh.lock();
        let (ctx, target) = match st.callbacks.get(&callback.raw()) {
            Some(rec) if rec.live => (rec.ctx, rec.target),
            _ => return Err(bad_handle()),
        };
        // A late ProcessExited tells the process's real state (HCS never reports an exit that
        // did not happen): its pid, and `Exited: false` while it still runs.
        let process_now = match target {
            CbTarget::Process(sys, key) => st
                .systems
                .get(&sys)
                .and_then(|s| s.processes.get(&key))
                .map(|p| (p.pid, p.exit_code)),
            CbTarget::System(_) => None,
        };
        let mut st = sh.remove_callback(st, callback.raw());
        for (kind, after) in &fired.late {
            let payload = match kind {
                NotificationKind::SystemExited => Some(sh.exit_payload(StopKind::Graceful).1),
                NotificationKind::ProcessExited => {
                    let (pid, code) = process_now.unwrap_or((0, None));
                    Some(Engine::process_status(pid, code))
                }
                _ => None,
            };
            tracing::debug!(
                ctx = ctx.raw(),
                kind = %kind,
                "hcs-sim: late callback scheduled"
            );
            sh.schedule(
                sh.latency + *after,
                Task::Deliver(Delivery {
                    target: Target::Late(ctx),
                    kind: *kind,
                    status: HResult::S_OK,
                    payload,
                    epoch: st.epoch,
                }),
            );
        }
        sh.after(&mut st, None, None, &fired);
        Ok(())
    }
}
/// The live processes of system `sys`, for the properties answer.
fn process_rows(engine: &Engine, st: &State, sys: u64) -> Vec<ProcRow> {
    st.systems
        .get(&sys)
        .map(|s| {
            s.live_processes()
                .map(|(k, p)| ProcRow {
                    pid: p.pid,
                    image: p.image.clone(),
                    host_pid: match p.kind {
                        ProcKind::Host => engine.reaper.pid(*k),
                        ProcKind::Scripted(_) => None,
                    },
                    created: p.created,
                })
                .collect()
        })
        .unwrap_or_default()
}

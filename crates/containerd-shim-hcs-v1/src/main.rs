//! `containerd-shim-hcs-v1`: a containerd runtime v2 shim (task API v2 over ttrpc, as
//! containerd 1.6/1.7 speak it) on the `hcs` library.
//!
//! containerd starts it as `containerd-shim-hcs-v1 -namespace NS -address SOCK -publish-binary
//! BIN -id ID start` in the bundle directory; `start` re-executes the binary as the server
//! (`-socket ADDR`) and prints the address. The server serves one task: see [`service`] for
//! every task RPC, the HCS calls it makes and its errors per state.
//!
//! On Linux the HCS behind it is the simulator (`hcs-sim`), which runs each process on the
//! host: as root inside the bundle's root filesystem through this same binary acting as a
//! chroot helper (`__hcs-exec`, see [`spec::Launch`]); not as root, on the host without chroot.
//! On Windows it is the native driver (`hcs-native`: V2 where `computecore.dll` loads, else V1);
//! the Windows lane compile-checks it (`scripts/test-windows.sh -p containerd-shim-hcs-v1`).

mod rootfs;
mod service;
mod spec;
mod stats;
mod stdio;
#[cfg(test)]
mod tests;
mod update;

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::{
    self as shim, api, publisher::RemotePublisher, Config, DeleteResponse, ExitSignal, Flags, TtrpcContext,
    TtrpcResult,
};
use service::{Platform, Publisher, Service};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};

/// The runtime name containerd knows this shim by.
const RUNTIME_ID: &str = "io.containerd.hcs.v1";

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The per-system supervisor of the simulator's processes (see `driver`): this binary
    // re-executed with the hidden first argument, checked before anything else is set up.
    if args.get(1).is_some_and(|a| a == hcs_sim::supervisor::HCSCTL_ARG) {
        std::process::exit(hcs_sim::supervisor::main());
    }
    if args.get(1).is_some_and(|a| a == spec::HELPER_ARG) {
        helper(&args[2..]);
    }
    // The simulator reaps its own children (pidfds); the library's SIGCHLD reaper
    // (`waitpid(-1)`) would steal their exit statuses, so it is off, and so is the subreaper.
    let config = Config {
        no_reaper: true,
        no_sub_reaper: true,
        ..Default::default()
    };
    shim::run::<HcsShim>(RUNTIME_ID, Some(config));
}

/// The chroot helper: `__hcs-exec ROOT CWD KEY=VALUE… -- PROGRAM ARGS…`. It chroots *its own*
/// process into ROOT (`std::os::unix::fs::chroot`, safe for the current process), changes to
/// CWD, replaces its environment with the pairs given and execs PROGRAM. Exit codes: 125 when
/// the chroot or the directory change fails, 127 when the program is not found, 126 when it
/// cannot be executed.
#[cfg(unix)]
fn helper(args: &[std::ffi::OsString]) -> ! {
    use std::os::unix::process::CommandExt;
    let fail = |code: i32, msg: String| -> ! {
        eprintln!("containerd-shim-hcs-v1: {msg}");
        std::process::exit(code)
    };
    let sep = args.iter().position(|a| a == "--");
    let (Some(sep), true) = (sep, args.len() >= 2) else {
        fail(
            125,
            "usage: __hcs-exec ROOT CWD KEY=VALUE... -- PROGRAM ARGS...".into(),
        )
    };
    if sep < 2 || sep + 1 >= args.len() {
        fail(
            125,
            "usage: __hcs-exec ROOT CWD KEY=VALUE... -- PROGRAM ARGS...".into(),
        )
    }
    let (root, cwd) = (&args[0], &args[1]);
    let mut env = Vec::new();
    for pair in &args[2..sep] {
        let s = pair.to_string_lossy();
        match s.split_once('=') {
            Some((k, v)) => env.push((k.to_owned(), v.to_owned())),
            None => fail(125, format!("bad environment entry {s:?}")),
        }
    }
    if let Err(e) = std::os::unix::fs::chroot(root) {
        fail(125, format!("chroot {}: {e}", root.to_string_lossy()));
    }
    if let Err(e) = std::env::set_current_dir("/").and_then(|()| std::env::set_current_dir(cwd)) {
        fail(125, format!("chdir {}: {e}", cwd.to_string_lossy()));
    }
    let program = &args[sep + 1];
    let e = std::process::Command::new(program)
        .args(&args[sep + 2..])
        .env_clear()
        .envs(env)
        .exec();
    let code = if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    fail(code, format!("{}: {e}", program.to_string_lossy()))
}

#[cfg(not(unix))]
fn helper(_args: &[std::ffi::OsString]) -> ! {
    eprintln!("containerd-shim-hcs-v1: the chroot helper needs Unix");
    std::process::exit(125)
}

/// Environment variable naming a directory of simulator fault plans, one per task id
/// (`<dir>/<id>.json`, the `hcs-sim` JSON form): for tests that drive the shim through
/// containerd (the shim inherits containerd's environment).
#[cfg_attr(not(unix), allow(dead_code))] // the simulator only
const FAULTS_DIR_ENV: &str = "HCS_SHIM_SIM_FAULTS_DIR";
/// Environment variable overriding the bound of each HCS call in a handler (milliseconds).
const CALL_BOUND_ENV: &str = "HCS_SHIM_CALL_BOUND_MS";
/// Environment variable naming an `hcs-simd` socket: when a service answers there, the shim's
/// HCS is that service (its containers then show in `hcsctl list`, and the service's
/// supervisors hold their processes); when none answers, the shim runs its own simulator and
/// logs why.
#[cfg_attr(not(unix), allow(dead_code))] // the simulator only
const SERVICE_ENV: &str = "HCS_SHIM_SERVICE_SOCKET";

/// The driver behind the shim: on Unix the `hcs-simd` service named by [`SERVICE_ENV`] when one
/// answers there, else the simulator, configured as `hcsctl` configures it
/// (V2, no modelled latency, synchronous answers, fast reaping, and on Linux each system's
/// processes under a per-system supervisor: this binary re-executed with
/// [`hcs_sim::supervisor::HCSCTL_ARG`]), with the fault plan of task `id` when
/// [`FAULTS_DIR_ENV`] names a directory holding one.
///
/// The supervisor holds the container's whole process tree (its own session, a child
/// subreaper) and kills it when its link to this process closes: a shim killed with `kill -9`
/// takes its container's processes with it.
#[cfg(unix)]
fn driver(id: &str) -> Result<Arc<dyn hcs::Driver>, String> {
    if let Some(socket) = std::env::var_os(SERVICE_ENV) {
        match hcs_simd::ClientDriver::connect(&socket) {
            Ok(service) => {
                log::info!(
                    "task {id:?}: HCS is the hcs-simd service at {}",
                    socket.to_string_lossy()
                );
                return Ok(service);
            }
            Err(e) => log::warn!("task {id:?}: {SERVICE_ENV}: {e}; using a simulator of the shim's own"),
        }
    }
    let mut config = hcs_sim::SimConfig::default()
        .generation(hcs::ApiGeneration::V2)
        .latency(std::time::Duration::ZERO)
        .all_sync()
        .reap_interval(std::time::Duration::from_micros(250));
    if cfg!(target_os = "linux") {
        config = config.supervisor(
            hcs_sim::SupervisorProgram::new("/proc/self/exe").arg(hcs_sim::supervisor::HCSCTL_ARG),
        );
    }
    if let Some(dir) = std::env::var_os(FAULTS_DIR_ENV) {
        let path = std::path::Path::new(&dir).join(format!("{id}.json"));
        if path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let plan =
                hcs_sim::FaultPlan::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            log::warn!("task {id:?}: simulator fault plan {} installed", path.display());
            config = config.faults(plan);
        }
    }
    let sim = hcs_sim::Simulator::try_new(config).map_err(|e| e.to_string())?;
    Ok(sim)
}

/// The driver behind the shim off Unix (Windows): the native driver `hcs-native` chooses —
/// V2 (`computecore.dll`) where it loads with its exports, else V1 (`vmcompute.dll`).
#[cfg(not(unix))]
fn driver(_id: &str) -> Result<Arc<dyn hcs::Driver>, String> {
    hcs_native::driver().map_err(|e| e.to_string())
}

/// Events to containerd, in order, from one thread, so that a slow containerd never blocks a
/// handler.
struct EventQueue {
    tx: Mutex<Sender<(&'static str, Box<dyn MessageDyn>)>>,
}

impl EventQueue {
    fn start(remote: RemotePublisher, namespace: String) -> EventQueue {
        let (tx, rx) = mpsc::channel::<(&'static str, Box<dyn MessageDyn>)>();
        let spawned = std::thread::Builder::new()
            .name("shim-events".into())
            .spawn(move || {
                for (topic, event) in rx {
                    let ctx = shim::protos::ttrpc::context::with_timeout(5_000_000_000);
                    if let Err(e) = remote.publish(ctx, topic, &namespace, event) {
                        log::warn!("cannot publish {topic}: {e}");
                    }
                }
            });
        if let Err(e) = spawned {
            log::warn!("cannot start the event thread: {e}");
        }
        EventQueue { tx: Mutex::new(tx) }
    }
}

impl Publisher for EventQueue {
    fn publish(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        let _ = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((topic, event));
    }
}

/// The shim: the `start` / `delete` actions and the server's lifetime.
struct HcsShim {
    namespace: String,
    id: String,
    exit: Arc<ExitSignal>,
}

impl shim::Shim for HcsShim {
    type T = TaskApi;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        HcsShim {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    fn start_shim(&mut self, opts: shim::StartOpts) -> Result<String, shim::Error> {
        let grouping = opts.id.clone();
        let (_pid, address) = shim::spawn(opts, &grouping, Vec::new())?;
        Ok(address)
    }

    /// Cleanup after a dead shim: its compute systems lived in its own simulator, so there is
    /// nothing left to stop; answers at once with status 137 (killed) and the current time.
    fn delete_shim(&mut self) -> Result<DeleteResponse, shim::Error> {
        let mut r = DeleteResponse::new();
        r.exit_status = 128 + 9;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut ts = shim::protos::protobuf::well_known_types::timestamp::Timestamp::new();
        ts.seconds = now.as_secs() as i64;
        ts.nanos = now.subsec_nanos() as i32;
        r.exited_at = Some(ts).into();
        Ok(r)
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        let events = Arc::new(EventQueue::start(publisher, self.namespace.clone()));
        let driver = match driver(&self.id) {
            Ok(d) => d,
            Err(e) => {
                log::error!("no HCS driver: {e}");
                eprintln!("containerd-shim-hcs-v1: no HCS driver: {e}");
                std::process::exit(1);
            }
        };
        let platform = Platform {
            driver,
            launch: Arc::new(launch),
            bounds: bounds(),
        };
        TaskApi {
            svc: Service::new(platform, events),
            exit: self.exit.clone(),
        }
    }
}

/// How a process spec becomes a command line: through the simulator's chroot helper on Unix
/// (see [`service::simulator_launch`]); on Windows HCS runs the command line itself.
fn launch(bundle: &spec::BundleSpec) -> spec::Launch {
    if cfg!(unix) {
        service::simulator_launch(bundle)
    } else {
        spec::Launch::Direct
    }
}

/// The service's bounds: the defaults, with the call bound from [`CALL_BOUND_ENV`] when set.
fn bounds() -> service::Bounds {
    let mut b = service::Bounds::default();
    if let Some(ms) = std::env::var(CALL_BOUND_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        b.call = std::time::Duration::from_millis(ms.clamp(100, 600_000));
    }
    b
}

/// The ttrpc task service: each RPC is handled by [`Service`].
struct TaskApi {
    svc: Arc<Service>,
    exit: Arc<ExitSignal>,
}

impl shim::Task for TaskApi {
    fn state(&self, _: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        Ok(self.svc.state(&req)?)
    }
    fn create(&self, _: &TtrpcContext, req: api::CreateTaskRequest) -> TtrpcResult<api::CreateTaskResponse> {
        Ok(self.svc.create(&req)?)
    }
    fn start(&self, _: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        Ok(self.svc.start(&req)?)
    }
    fn delete(&self, _: &TtrpcContext, req: api::DeleteRequest) -> TtrpcResult<api::DeleteResponse> {
        Ok(self.svc.delete(&req)?)
    }
    fn pids(&self, _: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        Ok(self.svc.pids(&req)?)
    }
    fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        self.svc.pause(&req)?;
        Ok(api::Empty::new())
    }
    fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        self.svc.resume(&req)?;
        Ok(api::Empty::new())
    }
    fn checkpoint(&self, _: &TtrpcContext, req: api::CheckpointTaskRequest) -> TtrpcResult<api::Empty> {
        self.svc.checkpoint(&req)?;
        Ok(api::Empty::new())
    }
    fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        self.svc.kill(&req)?;
        Ok(api::Empty::new())
    }
    fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        self.svc.exec_process(&req)?;
        Ok(api::Empty::new())
    }
    fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<api::Empty> {
        self.svc.resize_pty(&req)?;
        Ok(api::Empty::new())
    }
    fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        self.svc.close_io(&req)?;
        Ok(api::Empty::new())
    }
    fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        self.svc.update(&req)?;
        Ok(api::Empty::new())
    }
    fn wait(&self, _: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        Ok(self.svc.wait(&req)?)
    }
    fn stats(&self, _: &TtrpcContext, req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        Ok(self.svc.stats(&req)?)
    }
    fn connect(&self, _: &TtrpcContext, req: api::ConnectRequest) -> TtrpcResult<api::ConnectResponse> {
        Ok(self.svc.connect(&req)?)
    }
    /// Ends the server once the task is deleted (or at once with `now`); a shutdown while the
    /// task exists is ignored, as containerd's own shims do.
    fn shutdown(&self, _: &TtrpcContext, req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        if req.now || !self.svc.has_task() {
            self.exit.signal();
        }
        Ok(api::Empty::new())
    }
}

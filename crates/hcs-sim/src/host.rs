//! The host process backend: spawning commands (through the system's supervisor, see
//! [`crate::supervisor`], or directly), the children awaiting their exit (reaped by the
//! service thread, or by their supervisor, which reports the exit), signals and statistics
//! from `/proc`.

use crate::codes;
use crate::config::SupervisorProgram;
use crate::signal;
#[cfg(target_os = "linux")]
use crate::supervisor::{client, Supervisor};
use crate::sync::lock;
use hcs::{Failure, HResult};
use std::collections::HashMap;
use std::fs::File;
#[cfg(unix)]
use std::os::fd::OwnedFd;
#[cfg(unix)]
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ExitStatus};
#[cfg(unix)]
use std::process::{Command, Stdio};
#[cfg(target_os = "linux")]
use std::sync::Arc;
use std::sync::Mutex;

/// What `create_process` asked for (from `ProcessParameters`).
#[derive(Debug, Default)]
#[cfg_attr(not(unix), allow(dead_code))] // the working directory and environment feed host spawns
pub(crate) struct Params {
    pub(crate) command_line: String,
    pub(crate) argv: Vec<String>,
    pub(crate) working_directory: Option<String>,
    pub(crate) environment: Vec<(String, String)>,
    pub(crate) stdin: bool,
    pub(crate) stdout: bool,
    pub(crate) stderr: bool,
    /// `EmulateConsole`: the process runs on a pseudo-terminal (see [`Pty`]).
    pub(crate) emulate_console: bool,
    /// `ConsoleSize` at creation, `[height, width]`.
    pub(crate) console_size: Option<[u16; 2]>,
}

/// A spawned host process, until the reaper adopts it.
pub(crate) enum HostChild {
    /// Spawned by the simulator itself (no supervisor configured, or it could not start).
    #[cfg_attr(not(unix), allow(dead_code))] // no host spawn off Unix
    Direct(Child),
    /// Spawned by its system's supervisor, which reaps it and reports its exit.
    #[cfg(target_os = "linux")]
    Supervised { pid: u32, sup: Arc<Supervisor> },
}

impl HostChild {
    /// Its host pid.
    pub(crate) fn id(&self) -> u32 {
        match self {
            HostChild::Direct(c) => c.id(),
            #[cfg(target_os = "linux")]
            HostChild::Supervised { pid, .. } => *pid,
        }
    }

    /// Kills a child that will not be adopted (its process group; a direct child is reaped).
    pub(crate) fn discard(self) {
        match self {
            HostChild::Direct(mut c) => {
                let _ = signal::kill_group(c.id(), signal::SIGKILL);
                let _ = c.kill();
                let _ = c.wait();
            }
            #[cfg(target_os = "linux")]
            HostChild::Supervised { pid, sup } => sup.signal(pid, signal::SIGKILL),
        }
    }
}

/// A spawned child and the caller's ends of its pipes.
pub(crate) struct Spawned {
    pub(crate) child: HostChild,
    pub(crate) stdin: Option<File>,
    pub(crate) stdout: Option<File>,
    pub(crate) stderr: Option<File>,
    /// The pseudo-terminal master of a console process (a descriptor of its own), kept to
    /// resize the console.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) console: Option<ConsoleFd>,
}

/// The pseudo-terminal master kept for resizing (Linux; nothing elsewhere, where the
/// simulator makes no pseudo-terminal and a console process gets pipes).
#[cfg(target_os = "linux")]
pub(crate) type ConsoleFd = OwnedFd;
/// The pseudo-terminal master kept for resizing (Linux; nothing elsewhere, where the
/// simulator makes no pseudo-terminal and a console process gets pipes).
#[cfg(not(target_os = "linux"))]
pub(crate) type ConsoleFd = std::convert::Infallible;

/// The pseudo-terminal of a process created with `EmulateConsole` (the simulator's stand-in
/// for a Windows pseudo console): the process gets the slave on its stdin, stdout and stderr
/// (and, under a supervisor, as its controlling terminal in a session of its own, see
/// [`crate::supervisor`]); the caller gets the master as the process's stdin and stdout (no
/// separate stderr, as HCS gives none for a console process); `ConsoleSize` sets its window
/// size (`TIOCSWINSZ`, which also sends `SIGWINCH` to the terminal's foreground process group).
#[cfg(target_os = "linux")]
pub(crate) struct Pty {
    /// The master (close-on-exec).
    pub(crate) master: OwnedFd,
    /// The slave (close-on-exec; dup'ed onto the child's standard descriptors).
    pub(crate) slave: OwnedFd,
}

#[cfg(target_os = "linux")]
impl Pty {
    /// Opens a pseudo-terminal pair, sized `[height, width]` when `size` is given.
    pub(crate) fn open(size: Option<[u16; 2]>) -> std::io::Result<Pty> {
        use rustix::fs::{Mode, OFlags};
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let name = ptsname(&master, Vec::new())?;
        let slave = rustix::fs::open(
            name.as_c_str(),
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        if let Some([height, width]) = size {
            set_console_size(&master, height, width)?;
        }
        Ok(Pty { master, slave })
    }

    /// The caller's handles: the master as stdin and stdout (each a descriptor of its own, when
    /// asked for), and one more for resizing.
    fn caller_ends(&self, params: &Params) -> std::io::Result<(Option<File>, Option<File>, OwnedFd)> {
        let dup = |wanted: bool| -> std::io::Result<Option<File>> {
            Ok(match wanted {
                true => Some(File::from(self.master.try_clone()?)),
                false => None,
            })
        };
        Ok((dup(params.stdin)?, dup(params.stdout)?, self.master.try_clone()?))
    }
}

/// Sets the window size of a pseudo-terminal (`TIOCSWINSZ` on its master).
#[cfg(target_os = "linux")]
pub(crate) fn set_console_size(master: &OwnedFd, height: u16, width: u16) -> std::io::Result<()> {
    let size = rustix::termios::Winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(master, size)?;
    Ok(())
}

#[cfg(unix)]
fn pipe_or_null(wanted: bool) -> Stdio {
    if wanted {
        Stdio::piped()
    } else {
        Stdio::null()
    }
}

#[cfg(unix)]
/// The checks every host spawn makes first: a command line, and a working directory that
/// exists (`ERROR_DIRECTORY` otherwise, as HRESULT with a result document).
fn check_params(params: &Params) -> Result<(), Failure> {
    if params.argv.is_empty() {
        return Err(Failure::with_document(
            codes::INVALID_ARG,
            codes::result_document(codes::INVALID_ARG, "the command line is empty"),
        ));
    }
    if let Some(dir) = &params.working_directory {
        if !std::path::Path::new(dir).is_dir() {
            let code = codes::DIRECTORY_INVALID;
            let message = format!("The directory name is invalid: `{dir}`");
            return Err(Failure::with_document(
                code,
                codes::result_document(code, &message),
            ));
        }
    }
    Ok(())
}

/// The failure of a spawn that the operating system refused, as HCS reports a missing image:
/// `ERROR_FILE_NOT_FOUND` as HRESULT `0x80070002`, `E_ACCESSDENIED`, else `E_FAIL`; with a
/// result document.
#[cfg(unix)]
fn spawn_failure(kind: std::io::ErrorKind, params: &Params, why: &dyn std::fmt::Display) -> Failure {
    let code = match kind {
        std::io::ErrorKind::NotFound => codes::FILE_NOT_FOUND,
        std::io::ErrorKind::PermissionDenied => HResult::E_ACCESSDENIED,
        _ => HResult::E_FAIL,
    };
    let message = format!(
        "failed to create process for command line `{}`: {why}",
        params.command_line
    );
    Failure::with_document(code, codes::result_document(code, &message))
}

/// Spawns the command directly, as the leader of a new process group (the fallback when no
/// supervisor runs the system's processes). A missing program (or working directory) fails
/// with `ERROR_FILE_NOT_FOUND` as HRESULT `0x80070002`, as HCS reports a missing image, with a
/// result document.
#[cfg(unix)]
pub(crate) fn spawn(params: &Params) -> Result<Spawned, Failure> {
    check_params(params)?;
    let Some((program, args)) = params.argv.split_first() else {
        return Err(Failure::new(codes::INVALID_ARG));
    };
    #[cfg(target_os = "linux")]
    if params.emulate_console {
        return spawn_console_direct(program, args, params);
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(pipe_or_null(params.stdin))
        .stdout(pipe_or_null(params.stdout))
        .stderr(pipe_or_null(params.stderr))
        .process_group(0);
    if let Some(dir) = &params.working_directory {
        cmd.current_dir(dir);
    }
    cmd.envs(params.environment.iter().map(|(k, v)| (k, v)));
    let mut child = cmd.spawn().map_err(|e| spawn_failure(e.kind(), params, &e))?;
    let stdin = child.stdin.take().map(|p| File::from(OwnedFd::from(p)));
    let stdout = child.stdout.take().map(|p| File::from(OwnedFd::from(p)));
    let stderr = child.stderr.take().map(|p| File::from(OwnedFd::from(p)));
    Ok(Spawned {
        child: HostChild::Direct(child),
        stdin,
        stdout,
        stderr,
        console: None,
    })
}

/// A console process spawned directly: the pty slave on its stdin, stdout and stderr, in a
/// process group of its own. Without a supervisor it gets no controlling terminal (that needs
/// a session of its own, which `Command` cannot start without `pre_exec`): `isatty` and the
/// window size work, terminal job control does not.
#[cfg(target_os = "linux")]
fn spawn_console_direct(program: &str, args: &[String], params: &Params) -> Result<Spawned, Failure> {
    let os = |e: std::io::Error| spawn_failure(e.kind(), params, &e);
    let pty = Pty::open(params.console_size).map_err(os)?;
    let slave = || pty.slave.try_clone().map(Stdio::from).map_err(os);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(slave()?)
        .stdout(slave()?)
        .stderr(slave()?)
        .process_group(0);
    if let Some(dir) = &params.working_directory {
        cmd.current_dir(dir);
    }
    cmd.envs(params.environment.iter().map(|(k, v)| (k, v)));
    let child = cmd.spawn().map_err(os)?;
    drop(cmd); // its copies of the slave
    let (stdin, stdout, console) = match pty.caller_ends(params) {
        Ok(ends) => ends,
        Err(e) => {
            HostChild::Direct(child).discard();
            return Err(os(e));
        }
    };
    Ok(Spawned {
        child: HostChild::Direct(child),
        stdin,
        stdout,
        stderr: None,
        console: Some(console),
    })
}

/// Spawns the command through the system's supervisor: the pipes are made here, the child's
/// ends handed over with the request.
#[cfg(target_os = "linux")]
fn spawn_supervised(sup: &Arc<Supervisor>, params: &Params) -> Result<Spawned, Failure> {
    use crate::supervisor::{FailKind, Request};
    use client::SpawnError;
    use rustix::pipe::{pipe_with, PipeFlags};
    let os = |e: rustix::io::Errno| spawn_failure(std::io::ErrorKind::Other, params, &e);
    let mut theirs = Vec::new();
    let mut ours: [Option<File>; 3] = [None, None, None];
    let mut console = None;
    if params.emulate_console {
        // The supervisor gets the slave (one descriptor, for all three); we keep the master.
        let pty = Pty::open(params.console_size).map_err(|e| spawn_failure(e.kind(), params, &e))?;
        let (stdin, stdout, master) = pty
            .caller_ends(params)
            .map_err(|e| spawn_failure(e.kind(), params, &e))?;
        (ours[0], ours[1], console) = (stdin, stdout, Some(master));
        theirs.push(pty.slave);
    } else {
        for (i, wanted) in [params.stdin, params.stdout, params.stderr]
            .into_iter()
            .enumerate()
        {
            if wanted {
                let (r, w) = pipe_with(PipeFlags::CLOEXEC).map_err(os)?;
                let (child_end, our_end) = if i == 0 { (r, w) } else { (w, r) };
                theirs.push(child_end);
                ours[i] = Some(File::from(our_end));
            }
        }
    }
    let console_flag = params.emulate_console;
    let request = Request::Spawn {
        argv: params.argv.clone(),
        cwd: params.working_directory.clone(),
        env: params.environment.clone(),
        stdin: params.stdin && !console_flag,
        stdout: params.stdout && !console_flag,
        stderr: params.stderr && !console_flag,
        console: console_flag,
    };
    let pid = sup.spawn(&request, &theirs).map_err(|e| match e {
        SpawnError::Refused(kind, message) => {
            let kind = match kind {
                FailKind::NotFound => std::io::ErrorKind::NotFound,
                FailKind::PermissionDenied => std::io::ErrorKind::PermissionDenied,
                FailKind::Other => std::io::ErrorKind::Other,
            };
            spawn_failure(kind, params, &message)
        }
        SpawnError::Link(why) => {
            let message = format!(
                "the compute system's supervisor (pid {}) failed while creating `{}`: {why}",
                sup.pid, params.command_line
            );
            Failure::with_document(HResult::E_FAIL, codes::result_document(HResult::E_FAIL, &message))
        }
    })?;
    drop(theirs);
    let [stdin, stdout, stderr] = ours;
    Ok(Spawned {
        child: HostChild::Supervised {
            pid,
            sup: Arc::clone(sup),
        },
        stdin,
        stdout,
        stderr,
        console,
    })
}

/// Off Unix the host backend is unavailable (it needs process groups and POSIX signals):
/// `create_process` fails with `E_NOTIMPL` and a result document saying so. Use
/// [`crate::Backend::Scripted`] there.
#[cfg(not(unix))]
pub(crate) fn spawn(params: &Params) -> Result<Spawned, Failure> {
    let message = format!(
        "the simulator's host process backend needs Unix (process groups and POSIX signals); \
         use Backend::Scripted on this platform (command line `{}`)",
        params.command_line
    );
    Err(Failure::with_document(
        HResult::E_NOTIMPL,
        codes::result_document(HResult::E_NOTIMPL, &message),
    ))
}

/// The exit code reported for a host exit status: the code, or `128 + signal` for a process
/// killed by a signal (the Linux shell convention, e.g. 137 after `SIGKILL`).
#[cfg(unix)]
pub(crate) fn exit_code(status: ExitStatus) -> u32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u32,
        (None, Some(sig)) => 128 + sig as u32,
        (None, None) => 255,
    }
}

/// The exit code reported for a host exit status (no host children exist off Unix).
#[cfg(not(unix))]
pub(crate) fn exit_code(status: ExitStatus) -> u32 {
    status.code().map_or(255, |c| c as u32)
}

/// The exit code reported for the processes of a system whose supervisor died: killed.
#[cfg(target_os = "linux")]
const LOST_EXIT_CODE: u32 = 128 + 9;

/// How many exit reports of not-yet-adopted processes are kept (see `Children::early`); a spawn
/// is adopted right after its `Spawned` reply, so only a handful are ever waiting.
#[cfg(target_os = "linux")]
const EARLY_EXITS: usize = 1024;

enum Host {
    Direct {
        child: Child,
        /// A pidfd of the child (Linux), readable once it has exited.
        #[cfg(target_os = "linux")]
        pidfd: Option<OwnedFd>,
    },
    /// Reaped by the supervisor, which reports the exit on its link.
    #[cfg(target_os = "linux")]
    Supervised { pid: u32, sup: Arc<Supervisor> },
}

struct Child2 {
    sys: u64,
    host: Host,
    /// The pseudo-terminal master of a console process (to resize it).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // always `None` there
    console: Option<ConsoleFd>,
}

impl Child2 {
    fn id(&self) -> u32 {
        match &self.host {
            Host::Direct { child, .. } => child.id(),
            #[cfg(target_os = "linux")]
            Host::Supervised { pid, .. } => *pid,
        }
    }
}

/// What the service thread may wait on, and sweeps when it is readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    /// The pidfd of a direct child (its process key).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Proc(u64),
    /// The link of a system's supervisor (the system key): an exit report, or its end.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Link(u64),
    /// The pidfd of a supervisor whose system stopped, to reap it.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Retired,
}

/// Which host children the service thread checks.
#[derive(Debug)]
pub(crate) enum Sweep {
    /// None of them (exit reports already read from a supervisor link are still handled).
    None,
    /// Every child and every supervisor.
    All,
    /// These (their descriptors are readable).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // only `poll` names children
    Only(Vec<Key>),
}

/// A supervisor link read by a sweep: system, supervisor, `(pid, exit code)` reports, and
/// whether the link is broken.
#[cfg(target_os = "linux")]
type Drained = (u64, Arc<Supervisor>, Vec<(u32, u32)>, bool);

/// What a sweep found.
#[derive(Debug, Default)]
pub(crate) struct Reaped {
    /// `(sys, proc, exit code)` of every process that exited.
    pub(crate) exits: Vec<(u64, u64, u32)>,
    /// Systems whose supervisor died (their processes are among `exits`, as killed).
    pub(crate) lost: Vec<u64>,
}

#[derive(Default)]
struct Children {
    map: HashMap<u64, Child2>,
    /// The running supervisor of each system that has one.
    #[cfg(target_os = "linux")]
    supervisors: HashMap<u64, Arc<Supervisor>>,
    /// Supervisors told to kill everything and exit, not reaped yet.
    #[cfg(target_os = "linux")]
    retired: Vec<Arc<Supervisor>>,
    /// A supervisor started ahead of need ([`Reaper::prepare`]), for the next system.
    #[cfg(target_os = "linux")]
    spare: Option<Arc<Supervisor>>,
    /// Exit reports `(sys, pid, code)` read before their process was adopted: the process
    /// exited between the supervisor's `Spawned` and [`Reaper::adopt`]. Matched at adoption
    /// (else the exit would be lost and the process would never exit in the model); dropped
    /// with the system's supervisor, and at most [`EARLY_EXITS`] kept.
    #[cfg(target_os = "linux")]
    early: Vec<(u64, u32, u32)>,
    /// Exits `(sys, proc, code)` matched at adoption, for the next sweep to report.
    #[cfg(target_os = "linux")]
    adopted_exits: Vec<(u64, u64, u32)>,
    /// Changes whenever a child or supervisor is added or removed (so pidfd duplicates can be
    /// refreshed).
    generation: u64,
}

/// The host children: owns every unreaped direct [`Child`], so a pid it signals cannot have
/// been reused, and the per-system supervisors ([`crate::supervisor`]) with the processes they
/// run. The service thread (see [`crate::service`]) sweeps them and reports the exits to the
/// model; on Linux it learns of an exit from the child's pidfd or the supervisor's link at
/// once, elsewhere (or for a child without a pidfd) it sweeps every `reap_interval`.
#[derive(Default)]
pub(crate) struct Reaper {
    children: Mutex<Children>,
    /// The supervisor program, if one is configured.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    program: Option<SupervisorProgram>,
}

/// The service thread's duplicates of the descriptors to wait on: duplicates, so that a child
/// reaped meanwhile cannot turn its number into an unrelated descriptor; made again only when
/// the children change.
#[cfg(target_os = "linux")]
#[derive(Default)]
pub(crate) struct Pidfds {
    generation: Option<u64>,
    /// What each descriptor is; `None` when some child has no pidfd (or a `dup` failed).
    fds: Option<Vec<(Key, OwnedFd)>>,
}

impl Reaper {
    /// A reaper whose systems' processes run under `program`'s supervisors (`None`: spawned
    /// directly).
    pub(crate) fn new(program: Option<SupervisorProgram>) -> Reaper {
        Reaper {
            children: Mutex::default(),
            program,
        }
    }

    /// Spawns a host process for system `sys`: through its supervisor (started on first need)
    /// when one is configured, else directly.
    #[cfg(unix)]
    pub(crate) fn spawn(&self, sys: u64, params: &Params) -> Result<Spawned, Failure> {
        #[cfg(target_os = "linux")]
        if let Some(program) = &self.program {
            check_params(params)?;
            match self.supervisor_for(sys, program) {
                Ok(sup) => return spawn_supervised(&sup, params),
                Err(e) => tracing::warn!(
                    program = %program.program.display(), error = %e,
                    "hcs-sim: cannot start the system's supervisor; spawning directly (no containment)"
                ),
            }
        }
        let _ = sys;
        spawn(params)
    }

    /// Off Unix there is no host backend.
    #[cfg(not(unix))]
    pub(crate) fn spawn(&self, sys: u64, params: &Params) -> Result<Spawned, Failure> {
        let _ = sys;
        spawn(params)
    }

    /// Starts a supervisor ahead of need (when one is configured and none is spare), so
    /// that its start-up overlaps the caller's work until the first process is created; the
    /// next system that needs a supervisor takes it.
    pub(crate) fn prepare(&self) {
        #[cfg(target_os = "linux")]
        if let Some(program) = &self.program {
            if lock(&self.children).spare.is_some() {
                return;
            }
            match Supervisor::start(program) {
                Ok(sup) => {
                    let mut children = lock(&self.children);
                    if let Some(old) = children.spare.replace(Arc::new(sup)) {
                        old.kill_all();
                        children.retired.push(old);
                        children.generation += 1;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "hcs-sim: cannot start a spare supervisor"),
            }
        }
    }

    /// The running supervisor of system `sys`: the spare, or started if it has none.
    #[cfg(target_os = "linux")]
    fn supervisor_for(&self, sys: u64, program: &SupervisorProgram) -> std::io::Result<Arc<Supervisor>> {
        let spare = {
            let mut children = lock(&self.children);
            if let Some(sup) = children.supervisors.get(&sys) {
                return Ok(Arc::clone(sup));
            }
            children.spare.take()
        };
        let started = match spare {
            // A spare that died meanwhile is replaced.
            Some(spare) if !spare.try_reap() => spare,
            _ => Arc::new(Supervisor::start(program)?),
        };
        tracing::debug!(sys, pid = started.pid, "hcs-sim: supervisor started");
        let mut children = lock(&self.children);
        if let Some(sup) = children.supervisors.get(&sys).cloned() {
            // Another spawn of the same system won the race: retire ours.
            started.kill_all();
            children.retired.push(started);
            children.generation += 1;
            return Ok(sup);
        }
        children.supervisors.insert(sys, Arc::clone(&started));
        children.generation += 1;
        Ok(started)
    }

    /// The pid of system `sys`'s supervisor, if one runs.
    pub(crate) fn supervisor_pid(&self, sys: u64) -> Option<u32> {
        #[cfg(target_os = "linux")]
        {
            lock(&self.children).supervisors.get(&sys).map(|s| s.pid)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = sys;
            None
        }
    }

    /// Whether a supervisor link needs the service thread although it may not be readable
    /// (exit reports read during a spawn, or a link a spawn found broken).
    pub(crate) fn needs_attention(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            lock(&self.children)
                .supervisors
                .values()
                .any(|s| s.needs_attention())
        }
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// System `sys` stopped: its supervisor (if any) kills what is left of its process tree
    /// and exits. Returns `true` if there was one (the service thread should refresh what it
    /// waits on, and will reap it).
    pub(crate) fn retire(&self, sys: u64) -> bool {
        #[cfg(target_os = "linux")]
        {
            let mut children = lock(&self.children);
            let Some(sup) = children.supervisors.remove(&sys) else {
                return false;
            };
            children.early.retain(|&(s, _, _)| s != sys);
            tracing::debug!(
                sys,
                pid = sup.pid,
                "hcs-sim: system stopped; its supervisor kills what is left"
            );
            sup.kill_all();
            children
                .map
                .retain(|_, c| !(c.sys == sys && matches!(c.host, Host::Supervised { .. })));
            children.retired.push(sup);
            children.generation += 1;
            true
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = sys;
            false
        }
    }

    /// Takes ownership of a child of process `proc` in system `sys`. The caller wakes the
    /// service thread, which reaps it (or reads its exit from its supervisor).
    pub(crate) fn adopt(&self, sys: u64, proc: u64, child: HostChild, console: Option<ConsoleFd>) {
        let host = match child {
            HostChild::Direct(child) => {
                #[cfg(target_os = "linux")]
                let pidfd = rustix::process::Pid::from_raw(child.id() as i32).and_then(|pid| {
                    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
                });
                Host::Direct {
                    child,
                    #[cfg(target_os = "linux")]
                    pidfd,
                }
            }
            #[cfg(target_os = "linux")]
            HostChild::Supervised { pid, sup } => Host::Supervised { pid, sup },
        };
        let mut children = lock(&self.children);
        #[cfg(target_os = "linux")]
        if let Host::Supervised { pid, .. } = &host {
            if let Some(i) = children.early.iter().position(|&(s, p, _)| s == sys && p == *pid) {
                // It exited before we got here: the service thread reports it at its next sweep
                // (the engine pokes it after every adoption).
                let (_, _, code) = children.early.remove(i);
                children.adopted_exits.push((sys, proc, code));
                return;
            }
        }
        children.map.insert(proc, Child2 { sys, host, console });
        children.generation += 1;
    }

    /// Resizes the console of process `proc` (`[height, width]`). `Ok(false)` when it has no
    /// console (not created with `EmulateConsole`) or has exited.
    #[cfg(target_os = "linux")]
    pub(crate) fn resize_console(&self, proc: u64, height: u16, width: u16) -> std::io::Result<bool> {
        let children = lock(&self.children);
        match children.map.get(&proc).and_then(|c| c.console.as_ref()) {
            Some(master) => set_console_size(master, height, width).map(|()| true),
            None => Ok(false),
        }
    }

    /// No pseudo-terminals off Linux.
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn resize_console(&self, _proc: u64, _height: u16, _width: u16) -> std::io::Result<bool> {
        Ok(false)
    }

    /// Signals the process group of process `proc`, if it has not been reaped. Returns `false`
    /// when it has already exited.
    pub(crate) fn signal(&self, proc: u64, sig: i32) -> bool {
        let children = lock(&self.children);
        match children.map.get(&proc) {
            Some(c) => {
                match &c.host {
                    Host::Direct { child, .. } => {
                        if let Err(e) = signal::kill_group(child.id(), sig) {
                            tracing::debug!(pid = child.id(), sig, error = %e, "hcs-sim: kill failed");
                        }
                    }
                    #[cfg(target_os = "linux")]
                    Host::Supervised { pid, sup } => sup.signal(*pid, sig),
                }
                true
            }
            None => false,
        }
    }

    /// The pid of an unreaped child.
    pub(crate) fn pid(&self, proc: u64) -> Option<u32> {
        lock(&self.children).map.get(&proc).map(Child2::id)
    }

    /// Number of unreaped children.
    pub(crate) fn running(&self) -> usize {
        lock(&self.children).map.len()
    }

    /// Pids of unreaped children.
    pub(crate) fn pids(&self) -> Vec<u32> {
        lock(&self.children).map.values().map(Child2::id).collect()
    }

    /// Kills (SIGKILL to the group) and reaps every direct child, and has every supervisor
    /// kill its system's whole tree and exit (reaping it), without reporting the exits.
    #[cfg_attr(not(target_os = "linux"), allow(irrefutable_let_patterns))] // only `Direct` there
    pub(crate) fn kill_all(&self) {
        let (children, sups) = {
            let mut children = lock(&self.children);
            children.generation += 1;
            let map: Vec<Child2> = children.map.drain().map(|(_, c)| c).collect();
            // Running supervisors and the spare are told to kill everything; retired ones were.
            #[cfg(target_os = "linux")]
            let mut sups: Vec<Arc<Supervisor>> = children.supervisors.drain().map(|(_, s)| s).collect();
            #[cfg(target_os = "linux")]
            sups.extend(children.spare.take());
            #[cfg(target_os = "linux")]
            for s in &sups {
                s.kill_all();
            }
            #[cfg(target_os = "linux")]
            sups.append(&mut children.retired);
            #[cfg(not(target_os = "linux"))]
            let sups: Vec<()> = Vec::new();
            (map, sups)
        };
        for c in children {
            if let Host::Direct { mut child, .. } = c.host {
                let _ = signal::kill_group(child.id(), signal::SIGKILL);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // A supervisor with something below it is waited for: when this returns, its tree is
        // dead. An idle one has nothing to kill; it is reaped on a thread of its own if it
        // has not exited yet, instead of holding up the caller.
        #[cfg(target_os = "linux")]
        {
            let (idle, busy): (Vec<_>, Vec<_>) = sups.into_iter().partition(|s| s.is_idle());
            for s in &busy {
                s.reap_within(std::time::Duration::from_secs(2));
            }
            let idle: Arc<Vec<Arc<Supervisor>>> =
                Arc::new(idle.into_iter().filter(|s| !s.try_reap()).collect());
            if !idle.is_empty() {
                fn reap(sups: &[Arc<Supervisor>]) {
                    for s in sups {
                        s.reap_within(std::time::Duration::from_secs(2));
                    }
                }
                let theirs = Arc::clone(&idle);
                let spawned = std::thread::Builder::new()
                    .name("hcs-sim-reap".into())
                    .spawn(move || reap(&theirs));
                if spawned.is_err() {
                    reap(&idle);
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        drop(sups);
    }

    /// Checks the children `sweep` names (with `try_wait`, or by reading their supervisor's
    /// exit reports), forgets those that exited and returns their `(sys, proc, exit code)`,
    /// and the systems whose supervisor died, for the caller to report without this lock.
    #[cfg_attr(not(target_os = "linux"), allow(irrefutable_let_patterns))] // only `Direct` there
    pub(crate) fn reap(&self, sweep: &Sweep) -> Reaped {
        let mut out = Reaped::default();
        // Supervisor links first, without the children's lock: a spawn in progress holds a
        // link, and the engine (which signals under its own lock) must not wait on that.
        #[cfg(target_os = "linux")]
        let named = |k: Key| match sweep {
            Sweep::All => true,
            Sweep::None => false,
            Sweep::Only(keys) => keys.contains(&k),
        };
        #[cfg(target_os = "linux")]
        let drained: Vec<Drained> = {
            let sups: Vec<(u64, Arc<Supervisor>)> = lock(&self.children)
                .supervisors
                .iter()
                .map(|(sys, s)| (*sys, Arc::clone(s)))
                .collect();
            sups.into_iter()
                .filter(|(sys, s)| named(Key::Link(*sys)) || s.needs_attention())
                .map(|(sys, s)| {
                    let (exits, broken) = s.drain();
                    (sys, s, exits, broken)
                })
                .collect()
        };
        let mut children = lock(&self.children);
        let before = out.exits.len();
        match sweep {
            Sweep::None => {}
            Sweep::All => {
                children.map.retain(|&proc, c| match &mut c.host {
                    Host::Direct { child, .. } => try_reap_direct(c.sys, proc, child, &mut out.exits),
                    #[cfg(target_os = "linux")]
                    Host::Supervised { .. } => true,
                });
            }
            Sweep::Only(keys) => {
                for key in keys {
                    if let Key::Proc(proc) = key {
                        if let Some(c) = children.map.get_mut(proc) {
                            let sys = c.sys;
                            if let Host::Direct { child, .. } = &mut c.host {
                                if !try_reap_direct(sys, *proc, child, &mut out.exits) {
                                    children.map.remove(proc);
                                }
                            }
                        }
                    }
                }
            }
        }
        #[cfg(target_os = "linux")]
        {
            // Supervisors whose link was readable, or that a spawn left exits or a broken link to.
            for (sys, sup, exits, broken) in drained {
                for (pid, code) in exits {
                    let found = children.map.iter().find_map(|(proc, c)| match &c.host {
                        Host::Supervised { pid: p, .. } if c.sys == sys && *p == pid => Some(*proc),
                        _ => None,
                    });
                    match found {
                        Some(proc) => {
                            children.map.remove(&proc);
                            out.exits.push((sys, proc, code));
                        }
                        // Not adopted yet (see `Children::early`).
                        None => {
                            if children.early.len() >= EARLY_EXITS {
                                children.early.remove(0);
                            }
                            children.early.push((sys, pid, code));
                        }
                    }
                }
                // A supervisor retired meanwhile is no longer this system's.
                let current = children
                    .supervisors
                    .get(&sys)
                    .is_some_and(|s| Arc::ptr_eq(s, &sup));
                if broken && current {
                    tracing::warn!(
                        sys,
                        pid = sup.pid,
                        "hcs-sim: a system's supervisor died; the system exits unexpectedly"
                    );
                    // Should it still run (it sent something malformed), it kills everything;
                    // what is left in its session is killed here in any case.
                    sup.kill_all();
                    sup.kill_session();
                    children.supervisors.remove(&sys);
                    let lost: Vec<u64> = children
                        .map
                        .iter()
                        .filter(|(_, c)| c.sys == sys && matches!(c.host, Host::Supervised { .. }))
                        .map(|(proc, _)| *proc)
                        .collect();
                    for proc in lost {
                        children.map.remove(&proc);
                        out.exits.push((sys, proc, LOST_EXIT_CODE));
                    }
                    children.retired.push(sup);
                    children.generation += 1;
                    out.lost.push(sys);
                }
            }
            let adopted = std::mem::take(&mut children.adopted_exits);
            out.exits.extend(adopted);
            if named(Key::Retired) || (!children.retired.is_empty() && matches!(sweep, Sweep::All)) {
                let n = children.retired.len();
                children.retired.retain(|s| !s.try_reap());
                if children.retired.len() != n {
                    children.generation += 1;
                }
            }
        }
        if out.exits.len() != before {
            children.generation += 1;
        }
        out
    }

    /// Brings `cache` up to date with the children and supervisors and returns its
    /// descriptor duplicates with what each is: empty when there is nothing to wait for,
    /// `None` when some child has no pidfd (or a `dup` failed).
    #[cfg(target_os = "linux")]
    pub(crate) fn pidfds<'a>(&self, cache: &'a mut Pidfds) -> Option<&'a [(Key, OwnedFd)]> {
        let children = lock(&self.children);
        if cache.generation != Some(children.generation) {
            cache.fds = None; // close the stale duplicates first
            let direct = children.map.iter().filter_map(|(&proc, c)| match &c.host {
                Host::Direct { pidfd, .. } => {
                    Some(Some((Key::Proc(proc), pidfd.as_ref()?.try_clone().ok()?)))
                }
                Host::Supervised { .. } => None,
            });
            let links = children
                .supervisors
                .iter()
                .map(|(&sys, s)| Some((Key::Link(sys), s.link().try_clone_to_owned().ok()?)));
            let retired = children
                .retired
                .iter()
                .filter_map(|s| s.pidfd().map(|fd| Some((Key::Retired, fd))));
            cache.fds = direct.chain(links).chain(retired).collect();
            cache.generation = Some(children.generation);
        }
        cache.fds.as_deref()
    }
}

/// `try_wait` of one direct child (after containing its group); `false` once it has exited
/// (its exit pushed to `exits`).
fn try_reap_direct(sys: u64, proc: u64, child: &mut Child, exits: &mut Vec<(u64, u64, u32)>) -> bool {
    contain_exited(child);
    match child.try_wait() {
        Ok(Some(status)) => {
            exits.push((sys, proc, exit_code(status)));
            false
        }
        Ok(None) => true,
        Err(e) => {
            tracing::warn!(error = %e, "hcs-sim: try_wait failed; treating the child as gone");
            exits.push((sys, proc, 255));
            false
        }
    }
}

/// Containment: when a host child has exited (and is not reaped yet, so its pid still names
/// its process group), every process left in its group — the background children of a shell,
/// a daemon it started — is killed with `SIGKILL`, as a job object kills its processes when the
/// job ends. The zombie keeps the group id reserved, so the signal cannot reach an unrelated
/// group. Processes that left the group (`setsid`, their own group) are not reached.
///
/// Only where `waitid(WNOWAIT)` exists (Linux, Android, FreeBSD); elsewhere the group is left
/// alone (signalling it after the reap could reach a reused group id).
#[cfg(unix)]
fn contain_exited(child: &Child) {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
        use nix::unistd::Pid;
        let Ok(pid) = i32::try_from(child.id()) else {
            return;
        };
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(Pid::from_raw(pid)), flags) {
            Ok(WaitStatus::StillAlive) | Err(_) => {}
            Ok(_) => {
                let _ = signal::kill_group(child.id(), signal::SIGKILL);
            }
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    let _ = child;
}

/// No host children off Unix.
#[cfg(not(unix))]
fn contain_exited(_child: &Child) {}

/// CPU and memory figures of one host process, from `/proc/<pid>/stat` and
/// `/proc/<pid>/status`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ProcStats {
    pub(crate) user_100ns: u64,
    pub(crate) kernel_100ns: u64,
    pub(crate) private_bytes: u64,
    pub(crate) shared_bytes: u64,
    pub(crate) rss_bytes: u64,
    pub(crate) peak_rss_bytes: u64,
    pub(crate) state: char,
}

/// Clock ticks per second of `/proc` times: `USER_HZ`, fixed at 100 by the Linux user ABI.
const USER_HZ: u64 = 100;

/// Reads the statistics of `pid`; `None` if it is gone.
pub(crate) fn proc_stats(pid: u32) -> Option<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain anything.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let state = fields.first()?.chars().next()?;
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let to_100ns = |t: u64| t * (10_000_000 / USER_HZ);
    let mut s = ProcStats {
        user_100ns: to_100ns(ticks(11)),
        kernel_100ns: to_100ns(ticks(12)),
        state,
        ..Default::default()
    };
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        let kb = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |v| v * 1024)
        };
        s.private_bytes = kb("RssAnon:");
        s.shared_bytes = kb("RssFile:") + kb("RssShmem:");
        s.rss_bytes = kb("VmRSS:");
        s.peak_rss_bytes = kb("VmHWM:");
    }
    Some(s)
}

/// The `/proc` state letter of `pid` (`R`, `S`, `T` for stopped, `Z`, ...).
pub fn proc_state(pid: u32) -> Option<char> {
    proc_stats(pid).map(|s| s.state)
}

#[cfg(all(test, target_os = "linux"))]
mod early_exit_tests {
    use super::*;

    /// The `hcs-sim-supervisor` binary Cargo builds next to this test's `deps/` directory.
    fn supervisor_binary() -> Option<std::path::PathBuf> {
        let exe = std::env::current_exe().ok()?;
        let bin = exe.parent()?.parent()?.join("hcs-sim-supervisor");
        bin.exists().then_some(bin)
    }

    /// A process that exits between its supervisor's `Spawned` reply and its adoption: the
    /// sweep that reads the exit report does not know the pid yet. The report is kept and
    /// matched at adoption; before, it was dropped and the process never exited in the model
    /// (the service's conformance check `handle_hygiene` timed out about one run in fifteen).
    #[test]
    fn an_exit_reported_before_the_adoption_is_matched_at_the_adoption() {
        let Some(bin) = supervisor_binary() else {
            eprintln!(
                "skipped: no hcs-sim-supervisor binary next to the test (build the package's binaries)"
            );
            return;
        };
        let reaper = Reaper::new(Some(SupervisorProgram::new(bin)));
        let params = Params {
            command_line: "true".into(),
            argv: vec!["true".into()],
            working_directory: None,
            environment: Vec::new(),
            stdin: false,
            stdout: false,
            stderr: false,
            emulate_console: false,
            console_size: None,
        };
        let spawned = reaper.spawn(7, &params).expect("spawn through the supervisor");
        assert!(
            matches!(spawned.child, HostChild::Supervised { .. }),
            "supervised"
        );
        // Let `true` exit and its report arrive, and read it before the adoption.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let reaped = reaper.reap(&Sweep::All);
            assert!(
                reaped.exits.is_empty(),
                "no process is adopted yet: {:?}",
                reaped.exits
            );
            if !lock(&reaper.children).early.is_empty() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the exit report never came");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        reaper.adopt(7, 42, spawned.child, None);
        let reaped = reaper.reap(&Sweep::None);
        assert_eq!(
            reaped.exits,
            vec![(7, 42, 0)],
            "the early exit is reported for the adopted process"
        );
        assert!(lock(&reaper.children).map.is_empty(), "nothing left to reap");
        reaper.retire(7);
    }
}

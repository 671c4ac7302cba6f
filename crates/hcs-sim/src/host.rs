//! The host process backend: spawning commands, the children awaiting their exit (reaped by
//! the service thread), signals and statistics from `/proc`.

use crate::codes;
use crate::signal;
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
}

/// A spawned child and the caller's ends of its pipes.
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) stdin: Option<File>,
    pub(crate) stdout: Option<File>,
    pub(crate) stderr: Option<File>,
}

#[cfg(unix)]
fn pipe_or_null(wanted: bool) -> Stdio {
    if wanted {
        Stdio::piped()
    } else {
        Stdio::null()
    }
}

/// Spawns the command as the leader of a new process group. A missing program (or working
/// directory) fails with `ERROR_FILE_NOT_FOUND` as HRESULT `0x80070002`, as HCS reports a
/// missing image, with a result document.
#[cfg(unix)]
pub(crate) fn spawn(params: &Params) -> Result<Spawned, Failure> {
    let Some((program, args)) = params.argv.split_first() else {
        return Err(Failure::with_document(
            codes::INVALID_ARG,
            codes::result_document(codes::INVALID_ARG, "the command line is empty"),
        ));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(pipe_or_null(params.stdin))
        .stdout(pipe_or_null(params.stdout))
        .stderr(pipe_or_null(params.stderr))
        .process_group(0);
    if let Some(dir) = &params.working_directory {
        if !std::path::Path::new(dir).is_dir() {
            let code = codes::DIRECTORY_INVALID;
            let message = format!("The directory name is invalid: `{dir}`");
            return Err(Failure::with_document(
                code,
                codes::result_document(code, &message),
            ));
        }
        cmd.current_dir(dir);
    }
    cmd.envs(params.environment.iter().map(|(k, v)| (k, v)));
    let mut child = cmd.spawn().map_err(|e| {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => codes::FILE_NOT_FOUND,
            std::io::ErrorKind::PermissionDenied => HResult::E_ACCESSDENIED,
            _ => HResult::E_FAIL,
        };
        let message = format!(
            "failed to create process for command line `{}`: {e}",
            params.command_line
        );
        Failure::with_document(code, codes::result_document(code, &message))
    })?;
    let stdin = child.stdin.take().map(|p| File::from(OwnedFd::from(p)));
    let stdout = child.stdout.take().map(|p| File::from(OwnedFd::from(p)));
    let stderr = child.stderr.take().map(|p| File::from(OwnedFd::from(p)));
    Ok(Spawned {
        child,
        stdin,
        stdout,
        stderr,
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

struct Child2 {
    sys: u64,
    child: Child,
    /// A pidfd of the child (Linux), readable once it has exited.
    #[cfg(target_os = "linux")]
    pidfd: Option<OwnedFd>,
}

/// Which host children the service thread checks with `try_wait`.
#[derive(Debug)]
pub(crate) enum Sweep {
    /// None of them.
    None,
    /// Every child.
    All,
    /// The children of these process keys (their pidfds are readable).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // only `poll` names children
    Only(Vec<u64>),
}

#[derive(Default)]
struct Children {
    map: HashMap<u64, Child2>,
    /// Changes whenever a child is added or removed (so pidfd duplicates can be refreshed).
    generation: u64,
}

/// The host children: owns every unreaped [`Child`], so a pid it signals cannot have been
/// reused. The service thread (see [`crate::service`]) sweeps them with `try_wait` and reports
/// the exits to the model; on Linux it learns of an exit from the child's pidfd at once,
/// elsewhere (or for a child without a pidfd) it sweeps every `reap_interval`.
#[derive(Default)]
pub(crate) struct Reaper {
    children: Mutex<Children>,
}

/// The service thread's duplicates of the children's pidfds, to `poll` on: duplicates, so that
/// a child reaped meanwhile cannot turn its number into an unrelated descriptor; made again
/// only when the children change.
#[cfg(target_os = "linux")]
#[derive(Default)]
pub(crate) struct Pidfds {
    generation: Option<u64>,
    /// Process key and pidfd of every child; `None` when some child has no pidfd (or a `dup`
    /// failed).
    fds: Option<Vec<(u64, OwnedFd)>>,
}

impl Reaper {
    /// Takes ownership of a child of process `proc` in system `sys`. The caller wakes the
    /// service thread, which reaps it.
    pub(crate) fn adopt(&self, sys: u64, proc: u64, child: Child) {
        #[cfg(target_os = "linux")]
        let pidfd = rustix::process::Pid::from_raw(child.id() as i32)
            .and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok());
        let mut children = lock(&self.children);
        children.map.insert(
            proc,
            Child2 {
                sys,
                child,
                #[cfg(target_os = "linux")]
                pidfd,
            },
        );
        children.generation += 1;
    }

    /// Signals the process group of process `proc`, if it has not been reaped. Returns `false`
    /// when it has already exited.
    pub(crate) fn signal(&self, proc: u64, sig: i32) -> bool {
        let children = lock(&self.children);
        match children.map.get(&proc) {
            Some(c) => {
                if let Err(e) = signal::kill_group(c.child.id(), sig) {
                    tracing::debug!(pid = c.child.id(), sig, error = %e, "hcs-sim: kill failed");
                }
                true
            }
            None => false,
        }
    }

    /// The pid of an unreaped child.
    pub(crate) fn pid(&self, proc: u64) -> Option<u32> {
        lock(&self.children).map.get(&proc).map(|c| c.child.id())
    }

    /// Number of unreaped children.
    pub(crate) fn running(&self) -> usize {
        lock(&self.children).map.len()
    }

    /// Pids of unreaped children.
    pub(crate) fn pids(&self) -> Vec<u32> {
        lock(&self.children).map.values().map(|c| c.child.id()).collect()
    }

    /// Kills (SIGKILL to the group) and reaps every child, without reporting the exits.
    pub(crate) fn kill_all(&self) {
        let children: Vec<Child2> = {
            let mut children = lock(&self.children);
            children.generation += 1;
            children.map.drain().map(|(_, c)| c).collect()
        };
        for mut c in children {
            let _ = signal::kill_group(c.child.id(), signal::SIGKILL);
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
    }

    /// Checks the children `sweep` names with `try_wait`, forgets those that exited and
    /// returns their `(sys, proc, exit code)`, for the caller to report without this lock.
    pub(crate) fn reap(&self, sweep: &Sweep) -> Vec<(u64, u64, u32)> {
        let mut exits = Vec::new();
        let mut try_reap = |proc: u64, c: &mut Child2| {
            contain_exited(&c.child);
            try_wait_child(proc, c, &mut exits)
        };
        fn try_wait_child(proc: u64, c: &mut Child2, exits: &mut Vec<(u64, u64, u32)>) -> bool {
            match c.child.try_wait() {
                Ok(Some(status)) => {
                    exits.push((c.sys, proc, exit_code(status)));
                    false
                }
                Ok(None) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "hcs-sim: try_wait failed; treating the child as gone");
                    exits.push((c.sys, proc, 255));
                    false
                }
            }
        }
        let mut children = lock(&self.children);
        match sweep {
            Sweep::None => {}
            Sweep::All => children.map.retain(|&proc, c| try_reap(proc, c)),
            Sweep::Only(procs) => {
                for proc in procs {
                    if let Some(c) = children.map.get_mut(proc) {
                        if !try_reap(*proc, c) {
                            children.map.remove(proc);
                        }
                    }
                }
            }
        }
        if !exits.is_empty() {
            children.generation += 1;
        }
        exits
    }

    /// Brings `cache` up to date with the children and returns its pidfd duplicates with
    /// their process keys: empty without children, `None` when some child has no pidfd (or a
    /// `dup` failed).
    #[cfg(target_os = "linux")]
    pub(crate) fn pidfds<'a>(&self, cache: &'a mut Pidfds) -> Option<&'a [(u64, OwnedFd)]> {
        let children = lock(&self.children);
        if cache.generation != Some(children.generation) {
            cache.fds = None; // close the stale duplicates first
            cache.fds = children
                .map
                .iter()
                .map(|(&proc, c)| Some((proc, c.pidfd.as_ref()?.try_clone().ok()?)))
                .collect();
            cache.generation = Some(children.generation);
        }
        cache.fds.as_deref()
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

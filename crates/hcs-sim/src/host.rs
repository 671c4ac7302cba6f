//! The host process backend: spawning commands, the one shared reaper thread, signals and
//! statistics from `/proc`.

use crate::codes;
use crate::signal;
use crate::sim::Shared;
use crate::sync::{lock, start_service_thread};
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
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

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
            // Win32 ERROR_DIRECTORY (267) as HRESULT, what CreateProcess reports for a bad
            // current directory.
            let code = HResult(0x8007_010B);
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

#[derive(Default)]
struct Inner {
    children: HashMap<u64, Child2>,
    started: bool,
    /// The eventfd that wakes the reaper out of `poll` (Linux).
    #[cfg(target_os = "linux")]
    wake: Option<OwnedFd>,
}

/// The one reaper: sweeps `try_wait` over every live child and reports exits to the model.
/// On Linux it then sleeps in `poll(2)` on the children's pidfds (and an eventfd for new
/// children and shutdown), so an exit is seen at once; elsewhere, or when a pidfd cannot be
/// opened, it sweeps again every `reap_interval`. Owns every unreaped [`Child`], so a pid it
/// signals cannot have been reused.
#[derive(Default)]
pub(crate) struct Reaper {
    inner: Mutex<Inner>,
    cv: Condvar,
}

impl Reaper {
    /// Takes ownership of a child of process `proc` in system `sys`.
    pub(crate) fn adopt(&self, shared: &Arc<Shared>, sys: u64, proc: u64, child: Child) {
        let mut inner = lock(&self.inner);
        #[cfg(target_os = "linux")]
        let pidfd = {
            if inner.wake.is_none() {
                inner.wake = rustix::event::eventfd(
                    0,
                    rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
                )
                .ok();
            }
            rustix::process::Pid::from_raw(child.id() as i32)
                .and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok())
        };
        inner.children.insert(
            proc,
            Child2 {
                sys,
                child,
                #[cfg(target_os = "linux")]
                pidfd,
            },
        );
        start_service_thread(&mut inner.started, "reaper", shared, run);
        poke(&inner);
        drop(inner);
        self.cv.notify_all();
    }

    /// Signals the process group of process `proc`, if it has not been reaped. Returns `false`
    /// when it has already exited.
    pub(crate) fn signal(&self, proc: u64, sig: i32) -> bool {
        let inner = lock(&self.inner);
        match inner.children.get(&proc) {
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
        lock(&self.inner).children.get(&proc).map(|c| c.child.id())
    }

    /// Number of unreaped children.
    pub(crate) fn running(&self) -> usize {
        lock(&self.inner).children.len()
    }

    /// Pids of unreaped children.
    pub(crate) fn pids(&self) -> Vec<u32> {
        lock(&self.inner)
            .children
            .values()
            .map(|c| c.child.id())
            .collect()
    }

    /// Kills (SIGKILL to the group) and reaps every child, without reporting the exits.
    pub(crate) fn kill_all(&self) {
        let children: Vec<Child2> = lock(&self.inner).children.drain().map(|(_, c)| c).collect();
        for mut c in children {
            let _ = signal::kill_group(c.child.id(), signal::SIGKILL);
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
    }

    /// Wakes the thread (used at shutdown).
    pub(crate) fn wake(&self) {
        let guard = lock(&self.inner);
        poke(&guard);
        self.cv.notify_all();
    }

    /// Whether the reaper thread has been started.
    pub(crate) fn started(&self) -> bool {
        lock(&self.inner).started
    }
}

fn run(shared: Arc<Shared>) {
    let reaper = &shared.reaper;
    let interval = shared.reap_interval.max(Duration::from_micros(100));
    loop {
        let exits = {
            let mut inner = lock(&reaper.inner);
            loop {
                if shared.shutdown.load(Ordering::Acquire) {
                    return;
                }
                if !inner.children.is_empty() {
                    break;
                }
                inner = reaper.cv.wait(inner).unwrap_or_else(|p| p.into_inner());
            }
            let mut exits = Vec::new();
            inner.children.retain(|&proc, c| match c.child.try_wait() {
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
            });
            exits
        };
        for (sys, proc, code) in exits {
            shared.host_exited(sys, proc, code);
        }
        if !sleep_in_poll(reaper, interval) {
            std::thread::sleep(interval);
        }
    }
}

/// Wakes the reaper out of `poll` (Linux; elsewhere it polls on a timer anyway).
fn poke(inner: &Inner) {
    #[cfg(target_os = "linux")]
    if let Some(wake) = &inner.wake {
        let _ = rustix::io::write(wake, &1u64.to_ne_bytes());
    }
    #[cfg(not(target_os = "linux"))]
    let _ = inner;
}

/// Sleeps until a child exits or the reaper is poked, or at most `interval` × 400 (a safety
/// net). Returns `false` without sleeping when that is not possible (no eventfd, a child
/// without a pidfd, not Linux): the caller then sleeps `interval`.
#[cfg(target_os = "linux")]
fn sleep_in_poll(reaper: &Reaper, interval: Duration) -> bool {
    use rustix::event::{PollFd, PollFlags};
    // Duplicates, so that a child reaped (and its pidfd closed) meanwhile cannot turn into
    // an unrelated descriptor under the `poll`.
    let fds: Option<Vec<OwnedFd>> = {
        let inner = lock(&reaper.inner);
        let Some(wake) = &inner.wake else {
            return false;
        };
        std::iter::once(Some(wake))
            .chain(inner.children.values().map(|c| c.pidfd.as_ref()))
            .map(|fd| fd.and_then(|fd| fd.try_clone().ok()))
            .collect()
    };
    let Some(fds) = fds else {
        return false;
    };
    let mut polled: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(fd, PollFlags::IN)).collect();
    let cap = interval.saturating_mul(400);
    let timeout = rustix::event::Timespec {
        tv_sec: cap.as_secs() as i64,
        tv_nsec: i64::from(cap.subsec_nanos()),
    };
    match rustix::event::poll(&mut polled, Some(&timeout)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => {
            let mut buf = [0u8; 8];
            let _ = rustix::io::read(&fds[0], &mut buf);
            true
        }
        Err(_) => false,
    }
}

/// Not Linux: no pidfds; the caller sleeps `interval`.
#[cfg(not(target_os = "linux"))]
fn sleep_in_poll(_reaper: &Reaper, _interval: Duration) -> bool {
    false
}

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

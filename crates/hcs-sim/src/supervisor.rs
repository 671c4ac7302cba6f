//! The per-system supervisor: one small process per simulated compute system, as `vmwp.exe` is
//! per VM, that holds the system's whole process tree. It starts a session of its own (`setsid`:
//! no controlling terminal, so a command that opens `/dev/tty` gets an error instead of being
//! stopped by `SIGTTIN`), becomes a child subreaper (`PR_SET_CHILD_SUBREAPER`: double-forked and
//! `setsid` descendants are reparented to it, not to init), spawns the system's processes, each
//! the leader of its own process group (a console process: of its own session, with its
//! pseudo-terminal as controlling terminal, through the console step, see [`CONSOLE_ARG`]),
//! reports their exits, forwards signals to their groups,
//! and kills every process below it when asked (the system stopped) or when its link to the
//! simulator closes (the simulator was dropped, or the process that owned it died, `kill -9`
//! included: the kernel closes the link, which no thread's death can do by accident as
//! `PR_SET_PDEATHSIG` would). Its own death is its system's unexpected exit.
//!
//! **Hosting it.** [`main`] is the process entry point: any binary can call it and exit with
//! its result. The `hcs-sim-supervisor` binary of this crate does only that; `hcsctl` does it
//! when its first argument is [`HCSCTL_ARG`] (so that it needs no second file: it re-executes
//! `/proc/self/exe`), and so does `containerd-shim-hcs-v1`. A host needs nothing more for
//! console processes: [`main`] itself recognises [`CONSOLE_ARG`]. Point the simulator at one with [`crate::SimConfig::supervisor`]; without
//! one the simulator spawns commands directly (the fallback: own process group only, no
//! session, no subreaper). Linux only (child subreapers are a Linux feature); elsewhere [`main`]
//! fails and the simulator uses the fallback.
//!
//! **The link** is a `SOCK_SEQPACKET` Unix socket pair; the supervisor's end is its standard
//! input. Each datagram is one JSON message (at most [`MAX_MESSAGE`] bytes). The simulator
//! sends `{"op":"Spawn","argv":[..],"cwd":..,"env":[[k,v],..],"stdin":b,"stdout":b,"stderr":b}`
//! with the child's ends of the requested pipes attached (`SCM_RIGHTS`, in that order), or with
//! `"console":true` (absent: `false`) and one descriptor, the pseudo-terminal slave,
//! `{"op":"Signal","pid":n,"signal":n}` and `{"op":"KillAll"}`; the supervisor answers a spawn
//! with `{"op":"Spawned","pid":n}` or `{"op":"SpawnFailed","kind":"NotFound"|"PermissionDenied"|
//! "Other","message":".."}`, and reports each exit of a spawned process with
//! `{"op":"Exited","pid":n,"code":n,"idle":b}` (`128 + signal` for a process killed by a
//! signal; `idle`: the supervisor has no child left at all, so nothing below it to kill). A
//! malformed or oversized message is an error on either side: the supervisor kills everything
//! and exits with status 2; the simulator fails the call and treats the link as broken.

// Off Linux only `main` (which fails) is used: the protocol has no user there.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use serde::{Deserialize, Serialize};

/// The first argument that makes `hcsctl` run [`main`] instead of its command line.
pub const HCSCTL_ARG: &str = "__hcs-sim-supervisor";

/// The argument that makes [`main`] the console step of a console process instead of a
/// supervisor: the supervisor re-executes itself (`/proc/self/exe` with its own arguments)
/// followed by this and the command; that process starts a session (`setsid`), makes its
/// standard input (the pseudo-terminal slave) its controlling terminal (`TIOCSCTTY`) and
/// `exec`s the command — what a `pre_exec` hook would do, without `unsafe`.
pub const CONSOLE_ARG: &str = "__hcs-sim-console";

/// The largest message on the link, in bytes.
pub const MAX_MESSAGE: usize = 128 * 1024;

/// A request from the simulator to the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", deny_unknown_fields)]
pub(crate) enum Request {
    /// Spawn a process (the pipes requested are attached, in the order stdin, stdout, stderr).
    Spawn {
        argv: Vec<String>,
        cwd: Option<String>,
        env: Vec<(String, String)>,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        /// A console process: one descriptor is attached, a pseudo-terminal slave, which
        /// becomes its stdin, stdout, stderr and controlling terminal, in a session of its own
        /// (`stdin`/`stdout`/`stderr` are then `false`).
        #[serde(default)]
        console: bool,
    },
    /// Send `signal` to the process group of spawned process `pid` (if it has not exited).
    Signal { pid: u32, signal: i32 },
    /// Kill every process below the supervisor, then exit.
    KillAll,
}

/// Why a spawn failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum FailKind {
    /// The program (or a directory on its path) does not exist.
    NotFound,
    /// Permission denied.
    PermissionDenied,
    /// Anything else.
    Other,
}

/// A message from the supervisor to the simulator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", deny_unknown_fields)]
pub(crate) enum Reply {
    /// The process was spawned.
    Spawned { pid: u32 },
    /// The process could not be spawned.
    SpawnFailed { kind: FailKind, message: String },
    /// A spawned process exited with `code`; `idle`: no child of the supervisor is left (no
    /// process at all below it).
    Exited { pid: u32, code: u32, idle: bool },
}

/// A malformed message on the link.
#[derive(Debug, thiserror::Error)]
#[error("malformed message on the supervisor link: {0}")]
pub(crate) struct Malformed(String);

/// Decodes one message.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, Malformed> {
    if bytes.len() > MAX_MESSAGE {
        return Err(Malformed(format!(
            "{} bytes (at most {MAX_MESSAGE})",
            bytes.len()
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| Malformed(e.to_string()))
}

/// Encodes one message.
pub(crate) fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing these enums (strings, integers, booleans) cannot fail.
    serde_json::to_vec(msg).unwrap_or_default()
}

/// The supervisor process: runs until told to kill everything or until its link (standard
/// input) closes, then kills every process below it and returns the exit status for the
/// process (0 after an orderly end, 2 after a protocol error, 1 when it could not start).
/// Call it from `main` and exit with its result; it never returns early on a live link.
///
/// Started with [`CONSOLE_ARG`] among its arguments it is instead the console step of a
/// console process (see there): it `exec`s the command, or returns 127 (not found) or 126
/// (cannot be executed) after saying why on the terminal.
pub fn main() -> i32 {
    #[cfg(target_os = "linux")]
    {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        if let Some(i) = args.iter().position(|a| a == CONSOLE_ARG) {
            return imp::console(&args[i + 1..]);
        }
        imp::main()
    }
    #[cfg(not(target_os = "linux"))]
    {
        eprintln!("hcs-sim supervisor: needs Linux (child subreapers)");
        1
    }
}

#[cfg(target_os = "linux")]
pub(crate) use client::Supervisor;

#[cfg(target_os = "linux")]
mod imp {
    //! The supervisor process itself.
    use super::{decode, encode, FailKind, Malformed, Reply, Request, MAX_MESSAGE};
    use nix::errno::Errno;
    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
    use nix::unistd::Pid;
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendFlags};
    use std::collections::HashSet;
    use std::io::{self, IoSliceMut, Read};
    use std::mem::MaybeUninit;
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Why the supervisor ends.
    enum End {
        /// Told to (`KillAll`), or the link closed.
        Orderly,
        /// A termination signal.
        Signalled,
        /// The link broke or carried something malformed.
        Error(String),
    }

    /// The console step (see [`super::CONSOLE_ARG`]): `argv` is the command.
    pub(super) fn console(argv: &[std::ffi::OsString]) -> i32 {
        let Some((program, args)) = argv.split_first() else {
            eprintln!("hcs-sim console: no command");
            return 127;
        };
        // Not a process group leader (the supervisor spawns this step without one), so
        // `setsid` succeeds; the new session has no controlling terminal until TIOCSCTTY.
        if let Err(e) = rustix::process::setsid() {
            eprintln!("hcs-sim console: setsid failed: {e}");
            return 126;
        }
        if let Err(e) = rustix::process::ioctl_tiocsctty(io::stdin()) {
            eprintln!("hcs-sim console: cannot make the terminal the controlling terminal: {e}");
            return 126;
        }
        let e = Command::new(program).args(args).exec();
        eprintln!("{}: {e}", program.to_string_lossy());
        match e.kind() {
            io::ErrorKind::NotFound => 127,
            _ => 126,
        }
    }

    pub(super) fn main() -> i32 {
        let link = match io::stdin().as_fd().try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => {
                eprintln!("hcs-sim supervisor: no link on standard input: {e}");
                return 1;
            }
        };
        // Its own session: no controlling terminal for anything below it.
        if let Err(e) = nix::unistd::setsid() {
            eprintln!("hcs-sim supervisor: setsid failed: {e}");
        }
        // Orphans below it come to it, not to init.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            eprintln!("hcs-sim supervisor: cannot become a child subreaper: {e}");
            return 1;
        }
        let mut sup = match Sup::new(link) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("hcs-sim supervisor: cannot set up signals: {e}");
                return 1;
            }
        };
        let end = sup.serve();
        sup.kill_all();
        match end {
            End::Orderly | End::Signalled => 0,
            End::Error(why) => {
                eprintln!("hcs-sim supervisor: {why}; killed every process of the system");
                2
            }
        }
    }

    struct Sup {
        link: OwnedFd,
        /// Woken (a byte) by `SIGCHLD` and the termination signals.
        wake: UnixStream,
        /// Set by a termination signal.
        term: Arc<AtomicBool>,
        /// Spawned processes not reaped yet (each the leader of its process group).
        commands: HashSet<u32>,
        /// The receive buffer (one message, plus a byte to see truncation).
        buf: Vec<u8>,
        /// The supervisor's own arguments (after the program), to re-execute itself as the
        /// console step of a console process.
        own_args: Vec<std::ffi::OsString>,
    }

    impl Sup {
        fn new(link: OwnedFd) -> io::Result<Sup> {
            let (wake, notify) = UnixStream::pair()?;
            wake.set_nonblocking(true)?;
            notify.set_nonblocking(true)?;
            let term = Arc::new(AtomicBool::new(false));
            signal_hook::low_level::pipe::register(signal_hook::consts::SIGCHLD, notify.try_clone()?)?;
            // Handled signals revert to their default action in the children at `exec`, so
            // this also undoes a SIGINT/SIGQUIT ignored by whoever started the simulator (a
            // shell's background job): the system's processes start with default actions.
            for sig in [
                signal_hook::consts::SIGTERM,
                signal_hook::consts::SIGINT,
                signal_hook::consts::SIGHUP,
                signal_hook::consts::SIGQUIT,
            ] {
                signal_hook::flag::register(sig, Arc::clone(&term))?;
                signal_hook::low_level::pipe::register(sig, notify.try_clone()?)?;
            }
            Ok(Sup {
                link,
                wake,
                term,
                commands: HashSet::new(),
                buf: vec![0u8; MAX_MESSAGE + 1],
                own_args: std::env::args_os().skip(1).collect(),
            })
        }

        fn serve(&mut self) -> End {
            loop {
                if self.term.load(Ordering::Relaxed) {
                    return End::Signalled;
                }
                if let Err(e) = self.reap() {
                    return End::Error(e);
                }
                let mut fds = [
                    PollFd::new(&self.link, PollFlags::IN),
                    PollFd::new(&self.wake, PollFlags::IN),
                ];
                match poll(&mut fds, None) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return End::Error(format!("poll failed: {e}")),
                }
                let (link_ready, wake_ready) = (!fds[0].revents().is_empty(), !fds[1].revents().is_empty());
                if wake_ready {
                    let mut buf = [0u8; 64];
                    while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
                }
                if link_ready {
                    match self.receive() {
                        Ok(None) => {}
                        Ok(Some(end)) => return end,
                        Err(e) => return End::Error(e),
                    }
                }
            }
        }

        /// Reads and handles one request; `Some` when the supervisor must end.
        fn receive(&mut self) -> Result<Option<End>, String> {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let msg = match rustix::net::recvmsg(
                &self.link,
                &mut [IoSliceMut::new(&mut self.buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
            ) {
                Ok(m) => m,
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return Ok(None),
                Err(e) => return Ok(Some(End::Error(format!("the link failed: {e}")))),
            };
            let mut fds: Vec<OwnedFd> = Vec::new();
            for m in control.drain() {
                if let RecvAncillaryMessage::ScmRights(r) = m {
                    fds.extend(r);
                }
            }
            if msg.bytes == 0 && fds.is_empty() {
                return Ok(Some(End::Orderly)); // the simulator is gone
            }
            if msg.bytes > MAX_MESSAGE
                || msg.flags.contains(rustix::net::ReturnFlags::TRUNC)
                || msg.flags.contains(rustix::net::ReturnFlags::CTRUNC)
            {
                return Err("a message too large (or with too many descriptors)".into());
            }
            let request: Request = decode(&self.buf[..msg.bytes]).map_err(|e: Malformed| e.to_string())?;
            match request {
                Request::Spawn {
                    argv,
                    cwd,
                    env,
                    stdin,
                    stdout,
                    stderr,
                    console,
                } => {
                    if console {
                        if stdin || stdout || stderr || fds.len() != 1 {
                            return Err(format!(
                                "a console spawn came with {} descriptor(s) and pipe flags {:?}",
                                fds.len(),
                                (stdin, stdout, stderr)
                            ));
                        }
                        let Some(slave) = fds.pop() else {
                            return Err("a console spawn without its terminal".into());
                        };
                        let reply = match console_stdio(slave) {
                            Ok(stdio) => self.spawn_console(&argv, cwd.as_deref(), &env, stdio),
                            Err(e) => Reply::SpawnFailed {
                                kind: FailKind::Other,
                                message: format!("cannot duplicate the terminal: {e}"),
                            },
                        };
                        self.send(&reply)?;
                        return Ok(None);
                    }
                    let wanted = [stdin, stdout, stderr].iter().filter(|w| **w).count();
                    if wanted != fds.len() {
                        return Err(format!(
                            "a spawn asking for {wanted} pipe(s) came with {} descriptor(s)",
                            fds.len()
                        ));
                    }
                    let mut fds = fds.into_iter();
                    let mut stdio = |wanted: bool| match wanted {
                        true => fds.next().map_or_else(Stdio::null, Stdio::from),
                        false => Stdio::null(),
                    };
                    let (i, o, e) = (stdio(stdin), stdio(stdout), stdio(stderr));
                    let reply = self.spawn(&argv, cwd.as_deref(), &env, [i, o, e]);
                    self.send(&reply)?;
                }
                Request::Signal { pid, signal } => self.signal(pid, signal),
                Request::KillAll => return Ok(Some(End::Orderly)),
            }
            Ok(None)
        }

        fn spawn(
            &mut self,
            argv: &[String],
            cwd: Option<&str>,
            env: &[(String, String)],
            stdio: [Stdio; 3],
        ) -> Reply {
            let Some((program, args)) = argv.split_first() else {
                return Reply::SpawnFailed {
                    kind: FailKind::Other,
                    message: "the command line is empty".into(),
                };
            };
            let [i, o, e] = stdio;
            let mut cmd = Command::new(program);
            cmd.args(args).stdin(i).stdout(o).stderr(e).process_group(0);
            if let Some(dir) = cwd {
                cmd.current_dir(dir);
            }
            cmd.envs(env.iter().map(|(k, v)| (k, v)));
            match cmd.spawn() {
                Ok(child) => {
                    // Reaped with `waitpid` below (dropping a `Child` does not wait).
                    let pid = child.id();
                    self.commands.insert(pid);
                    Reply::Spawned { pid }
                }
                Err(e) => Reply::SpawnFailed {
                    kind: match e.kind() {
                        io::ErrorKind::NotFound => FailKind::NotFound,
                        io::ErrorKind::PermissionDenied => FailKind::PermissionDenied,
                        _ => FailKind::Other,
                    },
                    message: e.to_string(),
                },
            }
        }

        /// Spawns a console process: this binary re-executed as the console step
        /// ([`super::CONSOLE_ARG`]), which starts a session, takes the terminal on its
        /// standard input as its controlling terminal and `exec`s the command. Its session id
        /// and process group id are its pid, so signals and the containment below reach it as
        /// they reach any spawned process. A program that cannot be found fails here, before
        /// anything runs, as a direct spawn would.
        fn spawn_console(
            &mut self,
            argv: &[String],
            cwd: Option<&str>,
            env: &[(String, String)],
            stdio: [Stdio; 3],
        ) -> Reply {
            let Some(program) = argv.first() else {
                return Reply::SpawnFailed {
                    kind: FailKind::Other,
                    message: "the command line is empty".into(),
                };
            };
            if !findable(program, cwd, env) {
                return Reply::SpawnFailed {
                    kind: FailKind::NotFound,
                    message: format!("{program}: No such file or directory (os error 2)"),
                };
            }
            let [i, o, e] = stdio;
            let mut cmd = Command::new("/proc/self/exe");
            cmd.args(&self.own_args)
                .arg(super::CONSOLE_ARG)
                .args(argv)
                .stdin(i)
                .stdout(o)
                .stderr(e);
            if let Some(dir) = cwd {
                cmd.current_dir(dir);
            }
            cmd.envs(env.iter().map(|(k, v)| (k, v)));
            match cmd.spawn() {
                Ok(child) => {
                    let pid = child.id();
                    self.commands.insert(pid);
                    Reply::Spawned { pid }
                }
                Err(e) => Reply::SpawnFailed {
                    kind: FailKind::Other,
                    message: format!("cannot start the console step: {e}"),
                },
            }
        }

        /// Signals the process group of a spawned process that has not been reaped (so its pid,
        /// and the group id, cannot have been reused).
        fn signal(&self, pid: u32, signal: i32) {
            let (Ok(sig), Ok(raw)) = (Signal::try_from(signal), i32::try_from(pid)) else {
                return;
            };
            if raw > 1 && self.commands.contains(&pid) {
                let _ = kill(Pid::from_raw(-raw), sig).or_else(|_| kill(Pid::from_raw(raw), sig));
            }
        }

        fn send(&self, reply: &Reply) -> Result<(), String> {
            rustix::net::send(&self.link, &encode(reply), SendFlags::NOSIGNAL)
                .map(|_| ())
                .map_err(|e| format!("cannot write to the link: {e}"))
        }

        /// Reaps every exited child. An exited spawned process has what is left of its process
        /// group killed first (while its zombie still reserves the group id), then its exit is
        /// reported; orphans that came to us are just reaped.
        fn reap(&mut self) -> Result<(), String> {
            loop {
                let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
                let status = match waitid(Id::All, flags) {
                    Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(()),
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(format!("waitid failed: {e}")),
                    Ok(s) => s,
                };
                let Some(pid) = status.pid() else { return Ok(()) };
                let code = match status {
                    WaitStatus::Exited(_, code) => code as u32,
                    WaitStatus::Signaled(_, sig, _) => 128 + sig as u32,
                    _ => 255,
                };
                let raw = pid.as_raw() as u32;
                let command = self.commands.remove(&raw);
                if command {
                    let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
                }
                let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
                if command {
                    // No child left (not even a zombie): nothing below the supervisor at all.
                    let idle = matches!(waitid(Id::All, flags), Err(Errno::ECHILD));
                    self.send(&Reply::Exited { pid: raw, code, idle })?;
                }
            }
        }

        /// Kills every process below the supervisor and reaps them: the process groups of the
        /// spawned processes, then every child (orphans included) until none is left; each
        /// killed child's own children come to us and are killed in the next round.
        pub(super) fn kill_all(&mut self) {
            let deadline = Instant::now() + Duration::from_secs(10);
            for pid in self.commands.drain() {
                if let Ok(raw) = i32::try_from(pid) {
                    let _ = kill(Pid::from_raw(-raw), Signal::SIGKILL);
                }
            }
            let me = std::process::id();
            loop {
                for pid in children(me) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                loop {
                    match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                        Ok(WaitStatus::StillAlive) => break,
                        Ok(_) | Err(Errno::EINTR) => {}
                        Err(_) => return, // ECHILD: nothing is left
                    }
                }
                if Instant::now() >= deadline {
                    eprintln!("hcs-sim supervisor: processes still alive after 10 s of SIGKILL");
                    return;
                }
                let mut fds = [PollFd::new(&self.wake, PollFlags::IN)];
                let t = Timespec {
                    tv_sec: 0,
                    tv_nsec: 2_000_000,
                };
                let _ = poll(&mut fds, Some(&t));
                let mut buf = [0u8; 64];
                while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
            }
        }
    }

    /// The terminal slave as the three standard descriptors of a console process.
    fn console_stdio(slave: OwnedFd) -> io::Result<[Stdio; 3]> {
        Ok([
            Stdio::from(slave.try_clone()?),
            Stdio::from(slave.try_clone()?),
            Stdio::from(slave),
        ])
    }

    /// Whether `program` names something `exec` could find: a path (relative to `cwd`) that
    /// exists, or a name found on the `PATH` the process gets (its environment's, else ours).
    fn findable(program: &str, cwd: Option<&str>, env: &[(String, String)]) -> bool {
        use std::path::Path;
        let base = Path::new(cwd.unwrap_or("."));
        if program.contains('/') {
            return base.join(program).is_file();
        }
        let path = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        path.split(':')
            .map(|dir| if dir.is_empty() { "." } else { dir })
            .any(|dir| base.join(dir).join(program).is_file())
    }

    /// The children of process `pid` (a single-threaded process: its main thread's list), from
    /// `/proc`; by scanning every process's parent when that file is missing.
    fn children(pid: u32) -> Vec<i32> {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            return s.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        }
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                    stat.rfind(')')
                        .and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse::<u32>().ok())
                        == Some(pid)
                })
            })
            .collect()
    }
}

#[cfg(target_os = "linux")]
pub(crate) mod client {
    //! The simulator's side of a link: starting a supervisor, spawning through it, signals,
    //! exits.
    use super::{decode, encode, session_members, FailKind, Reply, Request, MAX_MESSAGE};
    use crate::config::SupervisorProgram;
    use crate::sync::lock;
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use rustix::net::{
        AddressFamily, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags,
        SocketType,
    };
    use std::io::{self, IoSlice};
    use std::mem::MaybeUninit;
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// The mutex's guard unless another thread holds it (a poisoned mutex is taken anyway).
    fn try_lock<T>(m: &Mutex<T>) -> Option<std::sync::MutexGuard<'_, T>> {
        match m.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// How long a spawn waits for the supervisor's answer.
    const ANSWER_WAIT: Duration = Duration::from_secs(10);

    /// What went wrong with a spawn through the supervisor.
    #[derive(Debug)]
    pub(crate) enum SpawnError {
        /// The supervisor refused (the program cannot be run).
        Refused(FailKind, String),
        /// The link is broken, or the supervisor did not answer in time or sent something
        /// malformed.
        Link(String),
    }

    struct Io {
        /// Exits read while waiting for a spawn's answer, for the service thread.
        exits: Vec<(u32, u32)>,
        /// The link closed or broke (the supervisor is gone or misbehaved).
        broken: bool,
        /// The receive buffer (one message, plus a byte to see truncation), made once.
        buf: Vec<u8>,
    }

    /// One running supervisor, seen from the simulator.
    pub(crate) struct Supervisor {
        /// Its pid.
        pub(crate) pid: u32,
        link: OwnedFd,
        io: Mutex<Io>,
        child: Mutex<Option<Child>>,
        /// Nothing runs below it, as far as its reports tell: no process spawned yet, or the
        /// last exit report said no child was left.
        idle: AtomicBool,
    }

    impl Supervisor {
        /// Starts a supervisor process running `program`.
        pub(crate) fn start(program: &SupervisorProgram) -> io::Result<Supervisor> {
            let (ours, theirs) = rustix::net::socketpair(
                AddressFamily::UNIX,
                SocketType::SEQPACKET,
                SocketFlags::CLOEXEC,
                None,
            )?;
            let child = Command::new(&program.program)
                .args(&program.args)
                .stdin(Stdio::from(theirs))
                .stdout(Stdio::null())
                // Not the caller's stderr: the supervisor may outlive the caller by a moment
                // (reaping, killing), and must not hold the caller's output open meanwhile
                // (`out=$(hcsctl run … 2>&1)` waits for the end of that pipe). Its failures
                // reach the caller through the link (a broken link is a clear error).
                .stderr(Stdio::null())
                .spawn()?;
            Ok(Supervisor {
                pid: child.id(),
                link: ours,
                io: Mutex::new(Io {
                    exits: Vec::new(),
                    broken: false,
                    buf: Vec::new(),
                }),
                child: Mutex::new(Some(child)),
                idle: AtomicBool::new(true),
            })
        }

        /// The link, to poll for readability (an exit report, or the supervisor's end).
        pub(crate) fn link(&self) -> BorrowedFd<'_> {
            self.link.as_fd()
        }

        /// Spawns a process; `stdio` are the child's ends of the pipes requested (in order).
        pub(crate) fn spawn(&self, request: &Request, stdio: &[OwnedFd]) -> Result<u32, SpawnError> {
            let bytes = encode(request);
            if bytes.len() > MAX_MESSAGE {
                return Err(SpawnError::Refused(
                    FailKind::Other,
                    format!(
                        "the process parameters are too large ({} bytes of JSON, at most {MAX_MESSAGE})",
                        bytes.len()
                    ),
                ));
            }
            let mut io = lock(&self.io);
            if io.broken {
                return Err(SpawnError::Link("the supervisor is gone".into()));
            }
            let borrowed: Vec<BorrowedFd<'_>> = stdio.iter().map(|f| f.as_fd()).collect();
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !borrowed.is_empty() {
                control.push(SendAncillaryMessage::ScmRights(&borrowed));
            }
            if let Err(e) = rustix::net::sendmsg(
                &self.link,
                &[IoSlice::new(&bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                io.broken = true;
                return Err(SpawnError::Link(format!("cannot write to the supervisor: {e}")));
            }
            let deadline = Instant::now() + ANSWER_WAIT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(SpawnError::Link(format!(
                        "the supervisor did not answer within {} s",
                        ANSWER_WAIT.as_secs()
                    )));
                }
                let reply = match self.receive(&mut io, Some(left)) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(e) => return Err(SpawnError::Link(e)),
                };
                match reply {
                    Reply::Spawned { pid } => {
                        self.idle.store(false, Ordering::Relaxed);
                        return Ok(pid);
                    }
                    Reply::SpawnFailed { kind, message } => return Err(SpawnError::Refused(kind, message)),
                    Reply::Exited { pid, code, idle } => {
                        io.exits.push((pid, code));
                        self.idle.store(idle, Ordering::Relaxed);
                    }
                }
            }
        }

        /// Receives one message, waiting at most `wait` (`None`: not at all). `Ok(None)`: none
        /// yet. An error marks the link broken.
        fn receive(&self, io: &mut Io, wait: Option<Duration>) -> Result<Option<Reply>, String> {
            if io.broken {
                return Err("the supervisor is gone".into());
            }
            if let Some(wait) = wait {
                let mut fds = [PollFd::new(&self.link, PollFlags::IN)];
                let t = Timespec {
                    tv_sec: wait.as_secs() as i64,
                    tv_nsec: i64::from(wait.subsec_nanos()),
                };
                match poll(&mut fds, Some(&t)) {
                    Ok(0) => return Ok(None),
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => {
                        io.broken = true;
                        return Err(format!("cannot poll the supervisor link: {e}"));
                    }
                }
            }
            if io.buf.is_empty() {
                io.buf = vec![0u8; MAX_MESSAGE + 1];
            }
            let (n, len) = match rustix::net::recv(
                &self.link,
                &mut io.buf[..],
                RecvFlags::DONTWAIT | RecvFlags::TRUNC,
            ) {
                Ok((n, len)) => (n, len),
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return Ok(None),
                Err(e) => {
                    io.broken = true;
                    return Err(format!("cannot read from the supervisor: {e}"));
                }
            };
            if len == 0 {
                io.broken = true;
                return Err("the supervisor exited".into());
            }
            let decoded = match n < len {
                true => Err(format!(
                    "a message of {len} bytes from the supervisor (at most {MAX_MESSAGE})"
                )),
                false => decode::<Reply>(&io.buf[..n]).map_err(|e| e.to_string()),
            };
            decoded.map(Some).inspect_err(|_| io.broken = true)
        }

        /// Reads every exit report available without waiting. Returns them and whether the
        /// link is broken (the supervisor died, or sent something malformed).
        /// A spawn in progress holds the link: nothing is read then (the spawner keeps what it
        /// reads, and the engine wakes the service thread after the spawn if needed).
        pub(crate) fn drain(&self) -> (Vec<(u32, u32)>, bool) {
            let Some(mut io) = try_lock(&self.io) else {
                return (Vec::new(), false);
            };
            loop {
                match self.receive(&mut io, None) {
                    Ok(Some(Reply::Exited { pid, code, idle })) => {
                        io.exits.push((pid, code));
                        self.idle.store(idle, Ordering::Relaxed);
                    }
                    Ok(Some(other)) => {
                        tracing::warn!(?other, "hcs-sim: unexpected message from a supervisor");
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(pid = self.pid, error = %e, "hcs-sim: supervisor link closed");
                        break;
                    }
                }
            }
            (std::mem::take(&mut io.exits), io.broken)
        }

        /// Whether the service thread must look at this link although it may not be readable:
        /// exit reports read during a spawn wait in memory, or a spawn found the link broken.
        /// `false` while a spawn holds the link (see [`Supervisor::drain`]).
        pub(crate) fn needs_attention(&self) -> bool {
            try_lock(&self.io).is_some_and(|io| !io.exits.is_empty() || io.broken)
        }

        /// Sends `signal` to the process group of spawned process `pid` (without waiting; a
        /// full link drops it, with a warning).
        pub(crate) fn signal(&self, pid: u32, signal: i32) {
            self.send_now(&Request::Signal { pid, signal });
        }

        /// Tells the supervisor to kill everything and exit.
        pub(crate) fn kill_all(&self) {
            self.send_now(&Request::KillAll);
        }

        fn send_now(&self, request: &Request) {
            let bytes = encode(request);
            if let Err(e) = rustix::net::send(&self.link, &bytes, SendFlags::NOSIGNAL | SendFlags::DONTWAIT) {
                tracing::warn!(pid = self.pid, ?request, error = %e, "hcs-sim: cannot write to a supervisor");
            }
        }

        /// Whether nothing runs below the supervisor (see [`Reply::Exited`]): then a `KillAll`
        /// has nothing to kill, and nobody needs to wait for it to be done.
        pub(crate) fn is_idle(&self) -> bool {
            self.idle.load(Ordering::Relaxed) && !self.needs_attention()
        }

        /// Reaps the supervisor process if it has exited; `true` once reaped.
        pub(crate) fn try_reap(&self) -> bool {
            let mut child = lock(&self.child);
            match child.as_mut().map(Child::try_wait) {
                None | Some(Ok(Some(_))) | Some(Err(_)) => {
                    *child = None;
                    true
                }
                Some(Ok(None)) => false,
            }
        }

        /// Waits up to `limit` for the supervisor to exit, then kills it and what is left in its
        /// session; reaps it.
        pub(crate) fn reap_within(&self, limit: Duration) {
            let deadline = Instant::now() + limit;
            // Sleeps on the pidfd (readable at the exit), not on a timer.
            let pidfd = self.pidfd();
            while !self.try_reap() {
                if Instant::now() >= deadline {
                    tracing::warn!(pid = self.pid, "hcs-sim: a supervisor did not exit; killing it");
                    let mut child = lock(&self.child);
                    if let Some(c) = child.as_mut() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    *child = None;
                    drop(child);
                    self.kill_session();
                    return;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                match &pidfd {
                    Some(fd) => {
                        let mut fds = [PollFd::new(fd, PollFlags::IN)];
                        let t = Timespec {
                            tv_sec: left.as_secs() as i64,
                            tv_nsec: i64::from(left.subsec_nanos()),
                        };
                        let _ = poll(&mut fds, Some(&t));
                    }
                    None => std::thread::sleep(left.min(Duration::from_millis(1))),
                }
            }
        }

        /// The second line of defence when a supervisor died or misbehaved: `SIGKILL` to every
        /// process still in the session it created (the session id is its pid). No other
        /// session can have that id while one of its members lives, so this reaches nothing
        /// else; descendants that started sessions of their own are out of reach (the
        /// supervisor is the one that kills those).
        pub(crate) fn kill_session(&self) {
            use nix::sys::signal::{kill, Signal};
            for _ in 0..5 {
                let members = session_members(self.pid);
                if members.is_empty() {
                    return;
                }
                for pid in members {
                    let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }

        /// A pidfd of the supervisor process, readable once it exits.
        pub(crate) fn pidfd(&self) -> Option<OwnedFd> {
            let pid = rustix::process::Pid::from_raw(self.pid as i32)?;
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
        }
    }
}

/// The processes (zombies aside) whose session id is `sid`, other than `sid` itself, from
/// `/proc`.
#[cfg(target_os = "linux")]
fn session_members(sid: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            p as u32 != sid
                && std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                        return false;
                    };
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    f.first() != Some(&"Z") && f.get(3).and_then(|s| s.parse::<u32>().ok()) == Some(sid)
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let r = Request::Spawn {
            argv: vec!["sh".into(), "-c".into(), "echo \"hi\"".into()],
            cwd: Some("/tmp".into()),
            env: vec![("A".into(), "b=c".into())],
            stdin: true,
            stdout: false,
            stderr: true,
            console: false,
        };
        assert_eq!(decode::<Request>(&encode(&r)).unwrap(), r);
        // `console` defaults to false (a peer that does not know it), and round-trips.
        let old =
            br#"{"op":"Spawn","argv":["a"],"cwd":null,"env":[],"stdin":false,"stdout":false,"stderr":false}"#;
        assert!(matches!(
            decode::<Request>(old).unwrap(),
            Request::Spawn { console: false, .. }
        ));
        let c = Request::Spawn {
            argv: vec!["sh".into()],
            cwd: None,
            env: Vec::new(),
            stdin: false,
            stdout: false,
            stderr: false,
            console: true,
        };
        assert_eq!(decode::<Request>(&encode(&c)).unwrap(), c);
        for r in [
            Reply::Spawned { pid: 7 },
            Reply::Exited {
                pid: 7,
                code: 137,
                idle: true,
            },
            Reply::SpawnFailed {
                kind: FailKind::NotFound,
                message: "no".into(),
            },
        ] {
            assert_eq!(decode::<Reply>(&encode(&r)).unwrap(), r);
        }
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"{",
            b"null",
            br#"{"op":"Exited"}"#,
            br#"{"op":"Exited","pid":1,"code":0}"#,
            br#"{"op":"Exited","pid":-1,"code":0,"idle":true}"#,
            br#"{"op":"Exited","pid":1,"code":0,"idle":true,"extra":1}"#,
            br#"{"op":"Launch","pid":1}"#,
            br#"{"op":"SpawnFailed","kind":"Weird","message":""}"#,
        ] {
            let e = decode::<Reply>(bad).unwrap_err();
            assert!(e.to_string().starts_with("malformed message"), "{e}");
        }
        let big = vec![b' '; MAX_MESSAGE + 1];
        assert!(decode::<Reply>(&big).unwrap_err().to_string().contains("at most"));
    }
}

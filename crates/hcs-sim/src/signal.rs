//! Signals for host child process groups, through `nix`'s safe `kill(2)` (Unix only; off Unix
//! the signal numbers are the Linux ones, used by the scripted backend's exit codes, and there
//! are no host children to signal).

use std::io;

/// `SIGINT`.
#[cfg(unix)]
pub(crate) const SIGINT: i32 = nix::libc::SIGINT;
/// `SIGKILL`.
#[cfg(unix)]
pub(crate) const SIGKILL: i32 = nix::libc::SIGKILL;
/// `SIGTERM`.
#[cfg(unix)]
pub(crate) const SIGTERM: i32 = nix::libc::SIGTERM;
/// `SIGSTOP`.
#[cfg(unix)]
pub(crate) const SIGSTOP: i32 = nix::libc::SIGSTOP;
/// `SIGCONT`.
#[cfg(unix)]
pub(crate) const SIGCONT: i32 = nix::libc::SIGCONT;

/// `SIGINT` (Linux numbering).
#[cfg(not(unix))]
pub(crate) const SIGINT: i32 = 2;
/// `SIGKILL` (Linux numbering).
#[cfg(not(unix))]
pub(crate) const SIGKILL: i32 = 9;
/// `SIGTERM` (Linux numbering).
#[cfg(not(unix))]
pub(crate) const SIGTERM: i32 = 15;
/// `SIGSTOP` (Linux numbering).
#[cfg(not(unix))]
pub(crate) const SIGSTOP: i32 = 19;
/// `SIGCONT` (Linux numbering).
#[cfg(not(unix))]
pub(crate) const SIGCONT: i32 = 18;

/// Off Unix there are no host children (the host backend is unavailable): always unsupported.
#[cfg(not(unix))]
pub(crate) fn kill_group(pid: u32, signal: i32) -> io::Result<()> {
    let _ = (pid, signal);
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Sends `signal` to the process group led by `pid` (every host child is spawned as the leader
/// of its own group, so the whole command tree of one simulated process gets the signal, as a
/// job object would on Windows). Falls back to the single process if the group is gone.
///
/// Callers only pass pids of children that have not been reaped yet (the reaper's map lock is
/// held), so the pid cannot have been reused by an unrelated process.
#[cfg(unix)]
pub(crate) fn kill_group(pid: u32, signal: i32) -> io::Result<()> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pid = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if pid <= 1 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let signal = Signal::try_from(signal).map_err(io::Error::from)?;
    // `-pid` names the process group of an unreaped child we spawned with `process_group(0)`
    // (pid > 1, so never "every process" or our own group); fall back to the child alone.
    kill(Pid::from_raw(-pid), signal)
        .or_else(|_| kill(Pid::from_raw(pid), signal))
        .map_err(io::Error::from)
}

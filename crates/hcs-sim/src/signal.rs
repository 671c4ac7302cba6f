//! The only `unsafe` of the crate: `kill(2)` on host child process groups (Unix only; off Unix
//! the signal numbers are the Linux ones, used by the scripted backend's exit codes, and there
//! are no host children to signal).
#![cfg_attr(unix, allow(unsafe_code))]

use std::io;

/// `SIGINT`.
#[cfg(unix)]
pub(crate) const SIGINT: i32 = libc::SIGINT;
/// `SIGKILL`.
#[cfg(unix)]
pub(crate) const SIGKILL: i32 = libc::SIGKILL;
/// `SIGTERM`.
#[cfg(unix)]
pub(crate) const SIGTERM: i32 = libc::SIGTERM;
/// `SIGSTOP`.
#[cfg(unix)]
pub(crate) const SIGSTOP: i32 = libc::SIGSTOP;
/// `SIGCONT`.
#[cfg(unix)]
pub(crate) const SIGCONT: i32 = libc::SIGCONT;

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
    let pid = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if pid <= 1 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill(2) takes two integers and touches no memory of this process. `-pid` names
    // the process group of an unreaped child we spawned with `process_group(0)` (pid > 1, so
    // never "every process" or our own group).
    let rc = unsafe { libc::kill(-pid, signal) };
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: as above, for the single unreaped child `pid` (> 1).
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

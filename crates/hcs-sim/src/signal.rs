//! The only `unsafe` of the crate: `kill(2)` on host child process groups.
#![allow(unsafe_code)]

use std::io;

/// `SIGINT`.
pub(crate) const SIGINT: i32 = libc::SIGINT;
/// `SIGKILL`.
pub(crate) const SIGKILL: i32 = libc::SIGKILL;
/// `SIGTERM`.
pub(crate) const SIGTERM: i32 = libc::SIGTERM;
/// `SIGSTOP`.
pub(crate) const SIGSTOP: i32 = libc::SIGSTOP;
/// `SIGCONT`.
pub(crate) const SIGCONT: i32 = libc::SIGCONT;

/// Sends `signal` to the process group led by `pid` (every host child is spawned as the leader
/// of its own group, so the whole command tree of one simulated process gets the signal, as a
/// job object would on Windows). Falls back to the single process if the group is gone.
///
/// Callers only pass pids of children that have not been reaped yet (the reaper's map lock is
/// held), so the pid cannot have been reused by an unrelated process.
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

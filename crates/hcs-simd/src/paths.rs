//! Where the service's socket lives and how it is claimed: the default path
//! (`$XDG_RUNTIME_DIR/hcs-sim/hcs.sock`, else `/run/hcs-sim/hcs.sock` for root, overridable with
//! `HCS_SIM_SOCKET`), the `0700` directory, the lock file that makes one daemon per socket, the
//! stale-socket check, and the `0600` bind.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The environment variable that overrides the default socket path.
pub const SOCKET_ENV: &str = "HCS_SIM_SOCKET";

/// The default socket path: `$HCS_SIM_SOCKET` if set, else `$XDG_RUNTIME_DIR/hcs-sim/hcs.sock`,
/// else `/run/hcs-sim/hcs.sock` for root, else `$TMPDIR/hcs-sim-<uid>/hcs.sock` (a directory
/// of the user's own, created `0700`).
pub fn default_socket_path() -> PathBuf {
    if let Some(p) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        return Path::new(&dir).join("hcs-sim").join("hcs.sock");
    }
    let uid = rustix::process::getuid();
    if uid.is_root() {
        return PathBuf::from("/run/hcs-sim/hcs.sock");
    }
    std::env::temp_dir()
        .join(format!("hcs-sim-{}", uid.as_raw()))
        .join("hcs.sock")
}

/// Why the socket could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// A live daemon serves on this socket; it is never stolen.
    #[error("another hcs-simd is already serving on {}", .0.display())]
    AlreadyRunning(PathBuf),
    /// A file-system or socket error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ClaimError {
    let context = context.into();
    move |source| ClaimError::Io { context, source }
}

/// The claimed socket: the bound listener and the lock held for the daemon's lifetime.
#[derive(Debug)]
pub struct Claimed {
    /// The listening socket (mode `0600`).
    pub listener: std::os::unix::net::UnixListener,
    /// The lock file (`<socket>.lock`), locked exclusively while this value lives.
    pub lock: File,
    /// The lock file's path.
    pub lock_path: PathBuf,
}

/// Claims `socket`: creates its directory (`0700`, only the components that do not exist),
/// takes the exclusive lock `<socket>.lock` (a second daemon fails with
/// [`ClaimError::AlreadyRunning`]), replaces a stale socket left by a dead daemon (one nobody
/// answers on), never a live one, and binds the socket with mode `0600`.
pub fn claim(socket: &Path) -> Result<Claimed, ClaimError> {
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err(format!("cannot create {}", dir.display())))?;
        }
    }
    let mut lock_name = socket.as_os_str().to_owned();
    lock_name.push(".lock");
    let lock_path = PathBuf::from(lock_name);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(format!("cannot open {}", lock_path.display())))?;
    let _ = lock.set_permissions(std::fs::Permissions::from_mode(0o600));
    match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Err(ClaimError::AlreadyRunning(socket.to_owned())),
        Err(e) => {
            return Err(ClaimError::Io {
                context: format!("cannot lock {}", lock_path.display()),
                source: e.into(),
            })
        }
    }
    if socket.exists() || std::fs::symlink_metadata(socket).is_ok() {
        // We hold the lock, so no daemon of ours owns it; still, never steal a live socket.
        if UnixStream::connect(socket).is_ok() {
            return Err(ClaimError::AlreadyRunning(socket.to_owned()));
        }
        tracing::warn!(socket = %socket.display(), "hcs-simd: replacing the stale socket of a dead daemon");
        std::fs::remove_file(socket)
            .map_err(io_err(format!("cannot remove the stale {}", socket.display())))?;
    }
    // Bind with a umask that leaves the socket 0600 from its first moment (single-threaded here).
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = std::os::unix::net::UnixListener::bind(socket);
    rustix::process::umask(old);
    let listener = bound.map_err(io_err(format!("cannot bind {}", socket.display())))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(format!("cannot chmod {}", socket.display())))?;
    Ok(Claimed {
        listener,
        lock,
        lock_path,
    })
}

//! Relaying a process's standard streams to and from the paths containerd gives (FIFOs made by
//! `ctr`/containerd, or plain files).
//!
//! Each relay is a thread. Output relays open their path for writing (blocking until containerd
//! has its reading end open, which it has before it calls `Create`/`Exec`) and copy until the
//! process's pipe ends; when the path cannot be opened, the pipe is still drained so that the
//! process never blocks on a full pipe. The stdin relay opens its path for reading and copies
//! into the process until end of file or `CloseIO`, then closes the process's stdin.

use hcs::{PipeReader, PipeWriter};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The stdio paths of a process, as containerd gave them (empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    /// stdin path.
    pub stdin: String,
    /// stdout path.
    pub stdout: String,
    /// stderr path.
    pub stderr: String,
    /// Whether the process has a terminal (then stderr is merged into stdout).
    pub terminal: bool,
}

/// The process end of stdin, shared between the relay thread and `CloseIO`.
#[derive(Default)]
pub struct StdinSlot(Mutex<Option<PipeWriter>>);

impl StdinSlot {
    /// Closes the process's stdin (idempotent).
    pub fn close(&self) {
        let w = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(w);
    }

    fn write_all(&self, buf: &[u8]) -> bool {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match g.as_mut() {
            Some(w) => w.write_all(buf).and_then(|()| w.flush()).is_ok(),
            None => false,
        }
    }
}

/// The running relays of one process.
pub struct Relays {
    outputs: usize,
    done: Mutex<Receiver<()>>,
    /// The process's stdin, when it has one.
    pub stdin: Option<Arc<StdinSlot>>,
    stdin_path: Option<PathBuf>,
}

impl Relays {
    /// Waits (at most `bound`) for the output relays to reach end of file.
    pub fn drain(&self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..self.outputs {
            if done
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// Releases the stdin relay if it is still waiting for a writer to open its FIFO (so that
    /// its thread ends), and closes the process's stdin.
    pub fn release_stdin(&self) {
        if let Some(slot) = &self.stdin {
            slot.close();
        }
        if let Some(path) = &self.stdin_path {
            let _ = open_nonblocking_writer(path);
        }
    }
}

/// How long an output relay waits, after the process's end of file, for the reader of its path
/// to take what is still buffered in the FIFO.
#[cfg_attr(not(unix), allow(dead_code))] // FIONREAD: Unix only
const CONSUME_BOUND: Duration = Duration::from_secs(1);

/// Waits (at most [`CONSUME_BOUND`]) until the FIFO behind `w` is empty. containerd's reader
/// (`ctr run`) closes its ends as soon as it learns of the exit, dropping whatever it has not
/// read yet; the exit is only recorded once the relays are done, so this keeps short outputs.
#[cfg(unix)]
fn wait_consumed(w: &std::fs::File) {
    let deadline = Instant::now() + CONSUME_BOUND;
    while let Ok(n) = rustix::io::ioctl_fionread(w) {
        if n == 0 || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(not(unix))]
fn wait_consumed(_w: &std::fs::File) {}

#[cfg(unix)]
fn open_nonblocking_writer(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking_writer(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    OpenOptions::new().write(true).open(path)
}

fn output(path: String, mut from: PipeReader, done: Sender<()>) {
    let spawned = thread::Builder::new().name("shim-stdout".into()).spawn(move || {
        let mut to = if path.is_empty() {
            None
        } else {
            OpenOptions::new().write(true).open(&path).ok()
        };
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(w) = to.as_mut() {
                        if w.write_all(&buf[..n]).is_err() {
                            // The reader went away: keep draining the pipe.
                            to = None;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if let Some(w) = &to {
            wait_consumed(w);
        }
        drop(to);
        let _ = done.send(());
    });
    if let Err(e) = spawned {
        log::warn!("cannot start an output relay: {e}");
    }
}

/// Starts the relays of a process with the streams `stdio` from HCS.
pub fn attach(paths: &StdioPaths, stdio: hcs::Stdio) -> Relays {
    let (tx, done) = mpsc::channel();
    let mut outputs = 0;
    if let Some(out) = stdio.stdout {
        output(paths.stdout.clone(), out, tx.clone());
        outputs += 1;
    }
    if let Some(err) = stdio.stderr {
        let path = if paths.terminal {
            String::new()
        } else {
            paths.stderr.clone()
        };
        output(path, err, tx.clone());
        outputs += 1;
    }
    let mut stdin = None;
    let mut stdin_path = None;
    if let Some(w) = stdio.stdin {
        let slot = Arc::new(StdinSlot(Mutex::new(Some(w))));
        if paths.stdin.is_empty() {
            slot.close();
        } else {
            let path = PathBuf::from(&paths.stdin);
            stdin_path = Some(path.clone());
            let relay = slot.clone();
            let spawned = thread::Builder::new().name("shim-stdin".into()).spawn(move || {
                if let Ok(mut f) = OpenOptions::new().read(true).open(&path) {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        match f.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                if !relay.write_all(&buf[..n]) {
                                    break;
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                }
                relay.close();
            });
            if let Err(e) = spawned {
                log::warn!("cannot start the stdin relay: {e}");
                slot.close();
            }
        }
        stdin = Some(slot);
    }
    Relays {
        outputs,
        done: Mutex::new(done),
        stdin,
        stdin_path,
    }
}

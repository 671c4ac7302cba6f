//! The event plumbing of `hcsctl run`: interrupts (SIGINT/SIGTERM/SIGHUP, Ctrl-C on Windows) and
//! the relays between our standard streams and the command's. On Unix a single thread does all
//! of it: the signal handlers only write a byte to a socket ([`signal_hook`]), and the thread
//! sleeps in one `poll(2)` over that socket, a control socket, the command's stdout and stderr
//! and our stdin. It blocks nowhere else: a write waits for `POLLOUT` first and is at most
//! `PIPE_BUF` bytes unless it goes to a regular file, so an interrupt is forwarded promptly even
//! while a reader of our output has stalled. Elsewhere (Windows, or a driver whose streams are
//! not OS pipes) the handler is `ctrlc`'s thread and each stream gets a relay thread. Interrupts
//! reach the supervisor as [`Event::Interrupt`] and cancel the [`hcs::CancelToken`]
//! of a start in progress. On Unix a change of our terminal's size (`SIGWINCH`) reaches it as
//! [`Event::Resize`], so that a console process (`exec -t`) follows the size of our window.

use hcs::{CancelToken, PipeReader, PipeWriter, Process};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What happened while the process ran.
pub(crate) enum Event {
    /// The n-th interrupt (1-based) and the signal that caused it (`SIGINT` for Ctrl-C).
    Interrupt(usize, i32),
    /// The process's wait future was woken: the process has probably exited.
    Exited,
    /// Our terminal's size changed (`SIGWINCH`; Unix only).
    #[cfg_attr(not(unix), allow(dead_code))]
    Resize,
}

/// What an interrupt does, wherever it is caught: it cancels the token (a start in progress
/// gives up) and sends [`Event::Interrupt`] with its 1-based ordinal to the supervisor.
pub(crate) struct Interrupts {
    count: AtomicUsize,
    tx: Sender<Event>,
    cancel: CancelToken,
}

impl Interrupts {
    /// Interrupts reported on `tx`, cancelling `cancel`.
    pub(crate) fn new(tx: Sender<Event>, cancel: CancelToken) -> Interrupts {
        Interrupts {
            count: AtomicUsize::new(0),
            tx,
            cancel,
        }
    }

    /// Handles one interrupt caused by signal `sig`. A second interrupt, or a `SIGTERM`, also
    /// arms the watchdog that abandons a driver call that does not return (see [`busy`]).
    fn raise(&self, sig: i32) {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        self.cancel.cancel();
        if n >= 2 || sig == SIGTERM {
            arm_abandon_watchdog(sig);
        }
        let _ = self.tx.send(Event::Interrupt(n, sig));
    }

    /// Reports a change of our terminal's size.
    #[cfg_attr(not(unix), allow(dead_code))]
    fn resized(&self) {
        let _ = self.tx.send(Event::Resize);
    }
}

/// `SIGINT` (Linux numbering; also what a Windows Ctrl-C stands for).
pub(crate) const SIGINT: i32 = 2;
/// `SIGHUP`.
#[cfg_attr(not(unix), allow(dead_code))] // only caught on Unix
pub(crate) const SIGHUP: i32 = 1;
/// `SIGTERM`.
pub(crate) const SIGTERM: i32 = 15;
/// `SIGWINCH` (Linux numbering): not an interrupt, a change of the terminal's size.
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) const SIGWINCH: i32 = 28;

/// How long a driver call may stay blocked after the interrupt that asks to give up on it.
const ABANDON_AFTER: Duration = Duration::from_millis(500);

/// The driver call in progress on the supervisor: its generation (odd while a call runs) and
/// its name. `hcsctl` makes every driver call from one thread, so one slot suffices.
static BUSY: AtomicU64 = AtomicU64::new(0);
static BUSY_WHAT: Mutex<&'static str> = Mutex::new("");
static WATCHDOG: AtomicBool = AtomicBool::new(false);

/// Runs the driver call `f` (named `what`), marked as in progress: after a second interrupt or
/// a `SIGTERM`, a call that stays blocked for [`ABANDON_AFTER`] is abandoned and `hcsctl` exits
/// (`128 + signal`). The library never abandons an in-flight call (design I5); the CLI, as a
/// whole process, may.
pub(crate) fn busy<T>(what: &'static str, f: impl FnOnce() -> T) -> T {
    *BUSY_WHAT.lock().unwrap_or_else(|p| p.into_inner()) = what;
    BUSY.fetch_add(1, Ordering::SeqCst);
    let r = f();
    BUSY.fetch_add(1, Ordering::SeqCst);
    r
}

/// Starts (once) the thread that abandons a blocked driver call (see [`busy`]).
fn arm_abandon_watchdog(sig: i32) {
    if WATCHDOG.swap(true, Ordering::SeqCst) {
        return;
    }
    let r = std::thread::Builder::new()
        .name("hcsctl-watchdog".into())
        .spawn(move || {
            let mut seen: Option<(u64, Instant)> = None;
            loop {
                let gen = BUSY.load(Ordering::SeqCst);
                if gen % 2 == 1 {
                    match seen {
                        Some((g, since)) if g == gen => {
                            if since.elapsed() >= ABANDON_AFTER {
                                let what = *BUSY_WHAT.lock().unwrap_or_else(|p| p.into_inner());
                                let _ = std::io::stdout().flush();
                                let _ = writeln!(
                                    std::io::stderr(),
                                    "hcsctl: interrupted: abandoning the blocked {what} call; the compute system may still exist"
                                );
                                std::process::exit(128 + sig);
                            }
                        }
                        _ => seen = Some((gen, Instant::now())),
                    }
                } else {
                    seen = None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot start the watchdog thread");
    }
}

/// The first failed write to our own stdout or stderr (the relays stop copying that stream
/// and close the command's end, so the command sees `EPIPE`).
static OUTPUT_ERROR: Mutex<Option<(&'static str, std::io::Error)>> = Mutex::new(None);
/// Whether the last byte relayed to our stdout was not a newline.
static STDOUT_MID_LINE: AtomicBool = AtomicBool::new(false);

/// Records a failed write to our stream `name` (`"stdout"` or `"stderr"`).
fn record_output_error(name: &'static str, e: std::io::Error) {
    tracing::debug!(stream = name, error = %e, "writing our output failed; closing the command's stream");
    let mut slot = OUTPUT_ERROR.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        *slot = Some((name, e));
    }
}

/// Notes the bytes just written to our `name` stream (tracks whether stdout ends mid-line).
fn note_written(name: &str, bytes: &[u8]) {
    if name == "stdout" {
        if let Some(&last) = bytes.last() {
            STDOUT_MID_LINE.store(last != b'\n', Ordering::Relaxed);
        }
    }
}

/// The first failed write to our stdout or stderr, with the stream's name.
pub(crate) fn take_output_error() -> Option<(&'static str, std::io::Error)> {
    OUTPUT_ERROR.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// Whether the command's output relayed to our stdout ended without a newline.
pub(crate) fn stdout_mid_line() -> bool {
    STDOUT_MID_LINE.load(Ordering::Relaxed)
}

/// The error a write to a closed standard stream gets.
#[cfg(unix)]
fn closed_stream() -> std::io::Error {
    std::io::Error::from_raw_os_error(9) // EBADF
}

/// The command's standard streams as handed to [`Io::attach`].
pub(crate) struct Streams {
    /// The process's stdin and the process (to close its stdin at our EOF); `None`: no relay.
    pub(crate) stdin: Option<(PipeWriter, Arc<Process>)>,
    /// The process's stdout.
    pub(crate) stdout: Option<PipeReader>,
    /// The process's stderr.
    pub(crate) stderr: Option<PipeReader>,
}

/// Relays one output stream on its own thread until EOF, then sends `()` on `done`.
fn spawn_output_relay<W: Write + 'static>(
    name: &'static str,
    mut from: PipeReader,
    to: fn() -> W,
    done: Sender<()>,
) {
    let r = std::thread::Builder::new()
        .name(format!("hcsctl-{name}"))
        .spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            let mut out = to();
            loop {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Err(e) = out.write_all(&buf[..n]).and_then(|()| out.flush()) {
                            // Our own stream is gone: stop, closing the command's end so that
                            // it sees EPIPE (as it would writing there itself).
                            record_output_error(name, e);
                            break;
                        }
                        note_written(name, &buf[..n]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::debug!(stream = name, error = %e, "relay read failed");
                        break;
                    }
                }
            }
            let _ = out.flush();
            let _ = done.send(());
        });
    if let Err(e) = r {
        tracing::warn!(stream = name, error = %e, "cannot spawn relay thread");
    }
}

/// Relays our stdin to the process on its own thread; at EOF closes the process's stdin.
fn spawn_input_relay(mut to: PipeWriter, process: Arc<Process>) {
    let r = std::thread::Builder::new()
        .name("hcsctl-stdin".into())
        .spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            let mut stdin = std::io::stdin().lock();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
                            break; // the process closed its stdin or exited
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            drop(to);
            close_stdin(&process);
        });
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot spawn the stdin relay thread");
    }
}

fn close_stdin(process: &Process) {
    if let Err(e) = process.close_stdin() {
        tracing::debug!(error = %e, "close_stdin after EOF");
    }
}

/// Relays the streams that [`Io`]'s poll loop cannot take (not OS pipes) on threads; returns
/// how many output relays will report on `done`.
fn attach_with_threads(streams: Streams, done: &Sender<()>) -> usize {
    let mut relays = 0;
    if let Some(out) = streams.stdout {
        relays += 1;
        spawn_output_relay("stdout", out, std::io::stdout, done.clone());
    }
    if let Some(err) = streams.stderr {
        relays += 1;
        spawn_output_relay("stderr", err, std::io::stderr, done.clone());
    }
    if let Some((to, process)) = streams.stdin {
        spawn_input_relay(to, process);
    }
    relays
}

/// Locks `m`, ignoring poisoning.
#[cfg(unix)]
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(unix)]
pub(crate) use unix::Io;

/// The interrupt handler (`ctrlc`'s thread) and the relay threads.
#[cfg(not(unix))]
pub(crate) struct Io;

#[cfg(not(unix))]
impl Io {
    /// Installs the Ctrl-C handler, which hands every interrupt to `interrupts`.
    pub(crate) fn start(interrupts: Interrupts) -> Io {
        let r = ctrlc::set_handler(move || interrupts.raise(SIGINT));
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot install the Ctrl-C handler");
        }
        Io
    }

    /// Starts relaying `streams` on threads; returns how many output relays will send `()` on
    /// `done` when their stream ends.
    pub(crate) fn attach(&self, streams: Streams, done: &Sender<()>) -> usize {
        attach_with_threads(streams, done)
    }
}

#[cfg(unix)]
mod unix {
    use super::{
        attach_with_threads, close_stdin, closed_stream, note_written, record_output_error, Interrupts,
        Streams, SIGHUP, SIGINT, SIGTERM, SIGWINCH,
    };
    use hcs::{PipeReader, Process};
    use rustix::event::{poll, PollFd, PollFlags};
    use std::fs::File;
    use std::io::{ErrorKind, Read, Write};
    use std::os::fd::{AsFd, BorrowedFd};
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::Sender;
    use std::sync::{Arc, Mutex};

    /// What the supervisor hands to the thread: the streams and where to report their end.
    struct Attach {
        outputs: Vec<Output>,
        input: Option<Input>,
    }

    /// State shared between [`Io`] and its thread.
    struct Ctl {
        attach: Mutex<Option<Attach>>,
        stop: AtomicBool,
        wake: UnixStream,
    }

    impl Ctl {
        fn poke(&self) {
            // Non-blocking: a full socket already holds a wake-up.
            let _ = (&self.wake).write(&[1]);
        }
    }

    /// The interrupt handler and relay thread (see the module docs).
    pub(crate) struct Io {
        /// `None` when the handlers or the thread could not be set up (interrupts are then not
        /// handled, and streams get relay threads).
        ctl: Option<Arc<Ctl>>,
    }

    /// Bytes read per `read(2)` from a source.
    const CHUNK: usize = 64 * 1024;
    /// The most written to a pipe or socket after one `POLLOUT` (never blocks: `PIPE_BUF`).
    const PIPE_CHUNK: usize = 4096;

    /// A destination's write limit per readiness: unbounded for regular files (a write to a file
    /// does not wait for a reader), `PIPE_BUF` for everything else — pipes and sockets may be
    /// nearly full, and a terminal's output buffer is small (and stops on XOFF).
    fn write_limit(f: &File) -> usize {
        match f.metadata() {
            Ok(m) if m.file_type().is_file() => usize::MAX,
            _ => PIPE_CHUNK,
        }
    }

    /// Whether `f` is `/dev/null` opened read-write: what the Rust runtime puts in place of a
    /// standard stream that was closed when `hcsctl` started (`>&-`). A shell's `>/dev/null`
    /// opens it write-only. Output for such a stream is reported as a write error (`EBADF`),
    /// as the command would get writing to a closed descriptor.
    fn is_substituted_null(f: &File) -> bool {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let (Ok(ours), Ok(null)) = (f.metadata(), std::fs::metadata("/dev/null")) else {
            return false;
        };
        if !(ours.file_type().is_char_device() && ours.rdev() == null.rdev()) {
            return false;
        }
        rustix::fs::fcntl_getfl(f).is_ok_and(|fl| fl & rustix::fs::OFlags::RWMODE == rustix::fs::OFlags::RDWR)
    }

    /// A byte buffer being copied from a source to a destination.
    struct Copy {
        /// The stream's name (`stdout`, `stderr`, `stdin`), for logs and write errors.
        name: &'static str,
        src: File,
        dst: Option<File>,
        limit: usize,
        buf: Vec<u8>,
        off: usize,
        eof: bool,
    }

    impl Copy {
        fn new(name: &'static str, src: File, dst: Option<File>) -> Copy {
            let limit = dst.as_ref().map_or(PIPE_CHUNK, write_limit);
            Copy {
                name,
                src,
                dst,
                limit,
                buf: Vec::new(),
                off: 0,
                eof: false,
            }
        }
        /// Whether buffered bytes wait for the destination.
        fn pending(&self) -> bool {
            self.off < self.buf.len()
        }
        /// Reads once from the source (it polled readable); `false` at EOF or on an error.
        fn fill(&mut self) -> bool {
            let what = self.name;
            self.buf.resize(CHUNK, 0);
            self.off = 0;
            loop {
                match self.src.read(&mut self.buf) {
                    Ok(0) => {
                        self.buf.clear();
                        return false;
                    }
                    Ok(n) => {
                        self.buf.truncate(n);
                        if self.dst.is_none() {
                            // Our stream is closed: the data cannot be delivered. Stop, and
                            // close the command's end (it sees EPIPE).
                            record_output_error(self.name, closed_stream());
                            self.buf.clear();
                            return false;
                        }
                        return true;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::debug!(stream = what, error = %e, "relay read failed");
                        self.buf.clear();
                        return false;
                    }
                }
            }
        }
        /// Writes once to the destination (it polled writable); the error when it is gone.
        fn flush_some(&mut self) -> Result<(), std::io::Error> {
            let Some(dst) = self.dst.as_mut() else {
                self.buf.clear();
                self.off = 0;
                return Err(closed_stream());
            };
            let end = self.buf.len().min(self.off.saturating_add(self.limit));
            match dst.write(&self.buf[self.off..end]) {
                Ok(n) => {
                    note_written(self.name, &self.buf[self.off..self.off + n]);
                    self.off += n;
                    Ok(())
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
                Err(e) => {
                    self.dst = None;
                    self.buf.clear();
                    self.off = 0;
                    Err(e)
                }
            }
        }
    }

    /// The command's stdout or stderr copied to ours.
    struct Output {
        name: &'static str,
        copy: Copy,
        done: Sender<()>,
    }

    /// Our stdin copied to the command's.
    struct Input {
        copy: Copy,
        process: Arc<Process>,
    }

    /// What one polled descriptor stands for.
    #[derive(Clone, Copy)]
    enum Slot {
        Signal(usize),
        Control,
        OutSrc(usize),
        OutDst(usize),
        InSrc,
        InDst,
    }

    impl Io {
        /// Installs the interrupt handlers and starts the thread, which hands every interrupt
        /// to `interrupts`.
        pub(crate) fn start(interrupts: Interrupts) -> Io {
            match Self::try_start(interrupts) {
                Ok(ctl) => Io { ctl: Some(ctl) },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the interrupt handlers");
                    Io { ctl: None }
                }
            }
        }

        fn try_start(interrupts: Interrupts) -> std::io::Result<Arc<Ctl>> {
            let (ctl_r, ctl_w) = UnixStream::pair()?;
            for s in [&ctl_r, &ctl_w] {
                s.set_nonblocking(true)?;
            }
            // One socket per signal, so the thread knows which one arrived.
            let mut sigs = Vec::new();
            for (ours, theirs) in [
                (SIGINT, signal_hook::consts::SIGINT),
                (SIGTERM, signal_hook::consts::SIGTERM),
                (SIGHUP, signal_hook::consts::SIGHUP),
                (SIGWINCH, signal_hook::consts::SIGWINCH),
            ] {
                let (r, w) = UnixStream::pair()?;
                r.set_nonblocking(true)?;
                w.set_nonblocking(true)?;
                signal_hook::low_level::pipe::register(theirs, w)?;
                sigs.push((ours, r));
            }
            let ctl = Arc::new(Ctl {
                attach: Mutex::new(None),
                stop: AtomicBool::new(false),
                wake: ctl_w,
            });
            let thread_ctl = ctl.clone();
            std::thread::Builder::new()
                .name("hcsctl-io".into())
                .spawn(move || run(&thread_ctl, &sigs, ctl_r, &interrupts))?;
            Ok(ctl)
        }

        /// Starts relaying `streams`; returns how many output relays will send `()` on `done`
        /// when their stream ends.
        pub(crate) fn attach(&self, streams: Streams, done: &Sender<()>) -> usize {
            let Some(ctl) = &self.ctl else {
                return attach_with_threads(streams, done);
            };
            let mut outputs = Vec::new();
            // Takes an OS pipe into the poll loop; gives back any other reader.
            let mut take =
                |name, stream: Option<PipeReader>, ours: std::io::Result<_>| match stream?.into_file() {
                    Ok(src) => {
                        outputs.push(Output {
                            name,
                            copy: Copy::new(
                                name,
                                src,
                                ours.ok().map(File::from).filter(|f| !is_substituted_null(f)),
                            ),
                            done: done.clone(),
                        });
                        None
                    }
                    Err(stream) => Some(stream),
                };
            let mut rest = Streams {
                stdin: None,
                stdout: take(
                    "stdout",
                    streams.stdout,
                    std::io::stdout().as_fd().try_clone_to_owned(),
                ),
                stderr: take(
                    "stderr",
                    streams.stderr,
                    std::io::stderr().as_fd().try_clone_to_owned(),
                ),
            };
            let mut input = None;
            if let Some((to, process)) = streams.stdin {
                let ours = std::io::stdin().as_fd().try_clone_to_owned();
                match (to.into_file(), ours) {
                    (Ok(dst), Ok(src)) => {
                        input = Some(Input {
                            copy: Copy::new("stdin", File::from(src), Some(dst)),
                            process,
                        })
                    }
                    (Ok(dst), Err(e)) => {
                        tracing::debug!(error = %e, "cannot duplicate our stdin; closing the command's");
                        drop(dst);
                        close_stdin(&process);
                    }
                    (Err(to), _) => rest.stdin = Some((to, process)),
                }
            }
            let relays = outputs.len() + attach_with_threads(rest, done);
            *super::lock(&ctl.attach) = Some(Attach { outputs, input });
            ctl.poke();
            relays
        }
    }

    impl Drop for Io {
        fn drop(&mut self) {
            if let Some(ctl) = &self.ctl {
                ctl.stop.store(true, Ordering::Release);
                ctl.poke();
            }
        }
    }

    /// Reads whatever a non-blocking socket holds; returns the number of bytes.
    fn drain(s: &UnixStream) -> usize {
        let mut buf = [0u8; 64];
        let mut total = 0;
        loop {
            match (&*s).read(&mut buf) {
                Ok(0) => return total,
                Ok(n) => total += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return total,
            }
        }
    }

    fn run(ctl: &Ctl, sigs: &[(i32, UnixStream)], control: UnixStream, interrupts: &Interrupts) {
        let mut outputs: Vec<Output> = Vec::new();
        let mut input: Option<Input> = None;
        loop {
            if ctl.stop.load(Ordering::Acquire) {
                return;
            }
            let mut slots: Vec<(BorrowedFd<'_>, PollFlags, Slot)> =
                vec![(control.as_fd(), PollFlags::IN, Slot::Control)];
            for (i, (_, s)) in sigs.iter().enumerate() {
                slots.push((s.as_fd(), PollFlags::IN, Slot::Signal(i)));
            }
            for (i, o) in outputs.iter().enumerate() {
                match (&o.copy.dst, o.copy.pending()) {
                    (Some(dst), true) => slots.push((dst.as_fd(), PollFlags::OUT, Slot::OutDst(i))),
                    _ if !o.copy.eof => slots.push((o.copy.src.as_fd(), PollFlags::IN, Slot::OutSrc(i))),
                    _ => {}
                }
            }
            if let Some(inp) = &input {
                match (&inp.copy.dst, inp.copy.pending()) {
                    (Some(dst), true) => slots.push((dst.as_fd(), PollFlags::OUT, Slot::InDst)),
                    (Some(_), false) => slots.push((inp.copy.src.as_fd(), PollFlags::IN, Slot::InSrc)),
                    (None, _) => {}
                }
            }
            let mut fds: Vec<PollFd<'_>> = slots.iter().map(|(fd, ev, _)| PollFd::new(fd, *ev)).collect();
            match poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    tracing::error!(error = %e, "poll failed; the I/O thread stops");
                    return;
                }
            }
            let ready: Vec<Slot> = fds
                .iter()
                .zip(&slots)
                .filter(|(fd, _)| !fd.revents().is_empty())
                .map(|(_, (_, _, slot))| *slot)
                .collect();
            drop(fds);
            drop(slots);
            for slot in ready {
                match slot {
                    Slot::Signal(i) => {
                        let (signo, sock) = &sigs[i];
                        let n = drain(sock);
                        if *signo == SIGWINCH {
                            // Only the latest size matters.
                            if n > 0 {
                                interrupts.resized();
                            }
                        } else {
                            for _ in 0..n {
                                interrupts.raise(*signo);
                            }
                        }
                    }
                    Slot::Control => {
                        drain(&control);
                        if let Some(a) = super::lock(&ctl.attach).take() {
                            outputs.extend(a.outputs);
                            input = a.input.or(input);
                        }
                    }
                    Slot::OutSrc(i) => {
                        let o = &mut outputs[i];
                        if !o.copy.fill() {
                            o.copy.eof = true;
                            let _ = o.done.send(());
                        }
                    }
                    Slot::OutDst(i) => {
                        let o = &mut outputs[i];
                        if let Err(e) = o.copy.flush_some() {
                            // Our stream is gone: stop relaying and close the command's end.
                            record_output_error(o.name, e);
                            o.copy.eof = true;
                            let _ = o.done.send(());
                        }
                    }
                    Slot::InSrc => {
                        if let Some(inp) = &mut input {
                            if !inp.copy.fill() {
                                inp.copy.dst = None;
                                close_stdin(&inp.process);
                            }
                        }
                    }
                    Slot::InDst => {
                        if let Some(inp) = &mut input {
                            if inp.copy.flush_some().is_err() {
                                // The command closed its stdin or exited.
                                close_stdin(&inp.process);
                            }
                        }
                    }
                }
            }
            outputs.retain(|o| !o.copy.eof || o.copy.pending());
            if input.as_ref().is_some_and(|i| i.copy.dst.is_none()) {
                input = None;
            }
        }
    }
}

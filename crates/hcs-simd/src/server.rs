//! The service: one `mio` event loop that accepts clients, checks their credentials
//! (`SO_PEERCRED`: its own uid and root only), splits frames, runs the handshake, and hands
//! each call to a small fixed pool of worker threads that call the in-process simulator (calls
//! that cannot block — reads, registrations, a forced terminate: `runs_inline` — run on the
//! loop itself while no fault plan is in force). Replies and the
//! simulator's notifications are written to the client's socket by the thread that has them
//! (loop, worker or engine thread; non-blocking, under the connection's outbox lock) when
//! nothing is queued before them; otherwise, or when the socket is full, they wait in the
//! per-connection outbox that the loop flushes (woken through a waker). Handles are per
//! connection: a connection may use only the handles it obtained, and
//! when it closes (cleanly, killed, or for a bad frame) a worker unregisters its callbacks and
//! closes its handles, so `ShouldTerminateOnLastHandleClosed` systems end and nothing else is
//! touched. Process stdio leaves as descriptors (`SCM_RIGHTS`). `SIGTERM`/`SIGINT` terminate
//! every system, say goodbye to every client and remove the socket. Design §14.

use crate::paths::{claim, ClaimError};
use crate::protocol::{
    encode, encode_kind, encode_status, Call, CallResult, ClientFrame, Decoder, Generation, ServerFrame,
    Stats, Value, MAGIC, PROTOCOL_VERSION,
};
use hcs::notify::Subscription;
use hcs::{
    CallbackHandle, Driver, DriverResult, Failure, HResult, NotificationKind, NotifyContext, ProcessHandle,
    ProcessInfo, Reply, SystemHandle,
};
use hcs_sim::{FaultPlan, SimConfig, Simulator};
use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, IoSlice, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// The most bytes queued for one client before the service gives up on it (a client that
/// stops reading its notifications is disconnected, not allowed to grow the service).
pub const MAX_OUTBOX: usize = 64 << 20;

/// The default number of worker threads (fixed; it does not grow with clients).
pub const DEFAULT_WORKERS: usize = 8;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);
const FIRST_CONN: usize = 3;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How to run the service.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The socket to serve on.
    pub socket: PathBuf,
    /// The simulator's configuration (generation, latency, fault plan, supervisor, ...).
    pub sim: SimConfig,
    /// Worker threads for calls into the simulator.
    pub workers: usize,
}

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket could not be claimed (another daemon, or a file-system error).
    #[error(transparent)]
    Claim(#[from] ClaimError),
    /// The fault plan was refused by the simulator.
    #[error("invalid fault plan: {0}")]
    Plan(#[from] hcs_sim::PlanError),
    /// An I/O error of the event loop.
    #[error("event loop: {0}")]
    Io(#[from] io::Error),
}

/// What the loop, the workers and the notification sinks share.
struct Shared {
    sim: Arc<Simulator>,
    waker: Waker,
    /// Connections with something new in their outbox (or to close).
    ready: Mutex<Vec<Token>>,
    connections: AtomicUsize,
    contexts: AtomicUsize,
    /// A fault plan with rules is in force: any call may then block or be delayed, so every
    /// call goes to the worker pool.
    faults_active: AtomicBool,
}

/// `true` when `plan` has at least one rule.
fn has_rules(plan: &FaultPlan) -> bool {
    plan.to_json()
        .get("rules")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|r| !r.is_empty())
}

/// Calls that cannot block while no fault plan is in force: the event loop runs them itself,
/// sparing two thread hand-offs. They only read the engine's state or register a callback,
/// except `Terminate`: a forced stop signals the system's processes without waiting
/// (`kill(2)`, or a non-blocking write to its supervisor's link: `Supervisor::send_now`), and
/// the exit notification of a system left without processes is written by the loop itself,
/// ahead of the reply (the daemon's simulator runs with `inline_deliveries`). Everything else (spawns,
/// graceful stops, process signals, closes that drain deliveries, controls) runs on the worker
/// pool.
fn runs_inline(call: &Call) -> bool {
    matches!(
        call,
        Call::Terminate { .. }
            | Call::Enumerate { .. }
            | Call::Open { .. }
            | Call::Properties { .. }
            | Call::ProcessProperties { .. }
            | Call::ProcessInfo { .. }
            | Call::RegisterSystem { .. }
            | Call::RegisterProcess { .. }
            | Call::ServiceProperties { .. }
            | Call::Stats
            | Call::BlockedOn { .. }
    )
}

impl Shared {
    fn wake(&self, token: Token) {
        lock(&self.ready).push(token);
        if let Err(e) = self.waker.wake() {
            tracing::error!("hcs-simd: cannot wake the event loop: {e}");
        }
    }
}

/// A frame waiting to be written, with the descriptors to attach to its first byte.
struct Outgoing {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// What waits to be written to one client, in order. Every write to the client's socket
/// happens under this lock, so frames never interleave.
#[derive(Default)]
struct Outbox {
    frames: VecDeque<Outgoing>,
    /// Bytes of the front frame already written.
    sent: usize,
    bytes: usize,
    overflow: bool,
    closed: bool,
}

impl Outbox {
    /// Writes queued frames until the queue is empty (`Ok(true)`) or the socket is full
    /// (`Ok(false)`).
    fn write(&mut self, stream: &UnixStream) -> io::Result<bool> {
        while let Some(front) = self.frames.front_mut() {
            match send(stream, &front.bytes[self.sent..], &front.fds) {
                Ok(n) => {
                    front.fds.clear();
                    self.sent += n;
                    if self.sent >= front.bytes.len() {
                        self.bytes -= front.bytes.len();
                        self.sent = 0;
                        self.frames.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// One client context in use: the server-side subscription that forwards to it, and what
/// keeps it alive (the systems it was used with, the callback registrations made with it, and
/// the calls using it right now: an entry is never pruned between the call that made it and the
/// bookkeeping after that call, or a registration made in that window would forward to nothing).
struct CtxEntry {
    sub: Subscription,
    systems: HashSet<u64>,
    callbacks: usize,
    in_calls: usize,
}

#[derive(Default)]
struct Handles {
    closed: bool,
    systems: HashSet<u64>,
    processes: HashSet<u64>,
    /// Callback handle → (client context, is a process registration, the system or process
    /// handle it was made through).
    callbacks: HashMap<u64, (u64, bool, u64)>,
    contexts: HashMap<u64, CtxEntry>,
}

/// The part of a connection the workers and the notification sinks reach.
struct ConnShared {
    token: Token,
    peer: String,
    /// The client's socket (non-blocking). The loop reads it; anyone writes it under `out`.
    stream: UnixStream,
    out: Mutex<Outbox>,
    handles: Mutex<Handles>,
    server: Weak<Shared>,
}

impl ConnShared {
    fn push(&self, frame: &ServerFrame, fds: Vec<OwnedFd>) {
        tracing::trace!(peer = %self.peer, ?frame, fds = fds.len(), "hcs-simd: frame out");
        let bytes = match encode(frame) {
            Ok(b) => b,
            Err(e) => {
                // Only an oversized reply can fail; the call gets a failure instead.
                tracing::warn!(peer = %self.peer, "hcs-simd: cannot encode a frame: {e}");
                let ServerFrame::Reply { id, .. } = frame else {
                    return;
                };
                let fallback = ServerFrame::Reply {
                    id: *id,
                    result: CallResult::Err {
                        code: HResult::E_OUTOFMEMORY.0,
                        document: Some(e.to_string()),
                    },
                };
                match encode(&fallback) {
                    Ok(b) => b,
                    Err(_) => return,
                }
            }
        };
        {
            let mut out = lock(&self.out);
            if out.closed || out.overflow {
                return;
            }
            if out.bytes + bytes.len() > MAX_OUTBOX {
                out.overflow = true;
            } else {
                let first = out.frames.is_empty();
                out.bytes += bytes.len();
                out.frames.push_back(Outgoing { bytes, fds });
                // Nothing queued before it: write it now, from this thread, if the socket takes
                // it; the loop is woken only for what remains (full, or broken: its flush finds
                // out and closes).
                if first && matches!(out.write(&self.stream), Ok(true)) {
                    return;
                }
            }
        }
        if let Some(s) = self.server.upgrade() {
            s.wake(self.token);
        }
    }
}

/// The loop's side of a connection.
struct Conn {
    decoder: Decoder,
    shared: Arc<ConnShared>,
    hello: bool,
    /// Registered for writability too (only while its outbox waits for room: a writable
    /// interest would otherwise wake the loop each time the client reads a reply).
    writable: bool,
}

type Job = Box<dyn FnOnce() + Send>;

/// A bound, not yet running service.
pub struct Server {
    config: ServerConfig,
    listener: UnixListener,
    claimed: crate::paths::Claimed,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("socket", &self.config.socket)
            .finish()
    }
}

impl Server {
    /// Claims the socket (see [`crate::paths::claim`]); fails when another daemon serves on it.
    pub fn bind(config: ServerConfig) -> Result<Server, ServeError> {
        let claimed = claim(&config.socket)?;
        let std_listener = claimed.listener.try_clone()?;
        std_listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(std_listener);
        Ok(Server {
            config,
            listener,
            claimed,
        })
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.config.socket
    }

    /// Runs until `SIGTERM` or `SIGINT`, then shuts down cleanly (systems terminated, clients
    /// told, socket removed).
    pub fn run(self) -> Result<(), ServeError> {
        let Server {
            config,
            mut listener,
            claimed,
        } = self;
        let sim = Simulator::try_new(config.sim.clone())?;
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let shared = Arc::new(Shared {
            sim: sim.clone(),
            waker,
            ready: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            contexts: AtomicUsize::new(0),
            faults_active: AtomicBool::new(has_rules(&config.sim.faults)),
        });
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let (sig_read, sig_write) = std::os::unix::net::UnixStream::pair()?;
        sig_read.set_nonblocking(true)?;
        sig_write.set_nonblocking(true)?;
        let sig_write2 = sig_write.try_clone()?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, sig_write)?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, sig_write2)?;
        let mut sig_read = UnixStream::from_std(sig_read);
        poll.registry()
            .register(&mut sig_read, SIGNALS, Interest::READABLE)?;

        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for i in 0..config.workers.max(1) {
            let rx = job_rx.clone();
            std::thread::Builder::new()
                .name(format!("hcs-simd-worker-{i}"))
                .spawn(move || loop {
                    let job = lock(&rx).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })?;
        }
        tracing::info!(
            socket = %config.socket.display(),
            pid = std::process::id(),
            generation = ?sim.generation(),
            workers = config.workers.max(1),
            "hcs-simd: serving"
        );
        let mut lp = Loop {
            poll,
            shared,
            jobs: job_tx,
            conns: HashMap::new(),
            next: FIRST_CONN,
            uid: rustix::process::getuid().as_raw(),
            generation: sim.generation().into(),
            buf: vec![0u8; 64 * 1024],
        };
        let result = lp.run(&mut listener, &mut sig_read);
        lp.shutdown(&mut listener);
        let _ = std::fs::remove_file(&config.socket);
        let _ = std::fs::remove_file(&claimed.lock_path);
        drop(claimed);
        tracing::info!("hcs-simd: stopped");
        result
    }
}

/// Builds the service's simulator configuration from a base and an optional fault-plan file.
pub fn with_fault_plan(config: SimConfig, plan: Option<&Path>) -> Result<SimConfig, hcs_sim::PlanError> {
    match plan {
        Some(p) => Ok(config.faults(FaultPlan::from_file(p)?)),
        None => Ok(config),
    }
}

struct Loop {
    poll: Poll,
    shared: Arc<Shared>,
    jobs: mpsc::Sender<Job>,
    conns: HashMap<Token, Conn>,
    next: usize,
    uid: u32,
    generation: Generation,
    /// The read buffer (kept: zeroing 64 KiB per read cost more than the engine's call).
    buf: Vec<u8>,
}

impl Loop {
    fn run(&mut self, listener: &mut UnixListener, signals: &mut UnixStream) -> Result<(), ServeError> {
        let mut events = Events::with_capacity(256);
        loop {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(listener),
                    WAKER => {}
                    SIGNALS => {
                        let mut buf = [0u8; 64];
                        while matches!(signals.read(&mut buf), Ok(n) if n > 0) {}
                        tracing::info!("hcs-simd: termination signal; shutting down");
                        return Ok(());
                    }
                    token => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read(token, ev.is_read_closed() || ev.is_error());
                        }
                        if ev.is_writable() {
                            self.flush(token);
                        }
                    }
                }
            }
            // Outboxes that workers and notification sinks filled since the last round.
            let ready: Vec<Token> = std::mem::take(&mut *lock(&self.shared.ready));
            let mut seen = HashSet::new();
            for t in ready {
                if seen.insert(t) {
                    self.flush(t);
                }
            }
        }
    }

    fn accept(&mut self, listener: &mut UnixListener) {
        loop {
            let (mut stream, _) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("hcs-simd: accept failed: {e}");
                    return;
                }
            };
            let cred = match rustix::net::sockopt::socket_peercred(&stream) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("hcs-simd: refused a client whose credentials cannot be read: {e}");
                    continue;
                }
            };
            let uid = cred.uid.as_raw();
            let peer = format!("pid {} uid {}", cred.pid.as_raw_nonzero(), uid);
            if uid != self.uid && uid != 0 {
                tracing::warn!(
                    peer = %peer,
                    "hcs-simd: refused connection from uid {uid} (only uid {} and root may connect)",
                    self.uid
                );
                let reason = format!("uid {uid} may not use this service");
                if let Ok(b) = encode(&ServerFrame::Refused { reason }) {
                    let _ = rustix::net::send(
                        &stream,
                        &b,
                        rustix::net::SendFlags::NOSIGNAL | rustix::net::SendFlags::DONTWAIT,
                    );
                }
                continue;
            }
            let token = Token(self.next);
            self.next += 1;
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut stream, token, Interest::READABLE)
            {
                tracing::warn!(peer = %peer, "hcs-simd: cannot register a client: {e}");
                continue;
            }
            tracing::debug!(peer = %peer, "hcs-simd: client connected");
            self.shared.connections.fetch_add(1, Ordering::SeqCst);
            let shared = Arc::new(ConnShared {
                token,
                peer,
                stream,
                out: Mutex::new(Outbox::default()),
                handles: Mutex::new(Handles::default()),
                server: Arc::downgrade(&self.shared),
            });
            self.conns.insert(
                token,
                Conn {
                    decoder: Decoder::new(),
                    shared,
                    hello: false,
                    writable: false,
                },
            );
        }
    }

    /// Reads what the client sent and serves its frames. The registration is edge-triggered,
    /// so the read must not stop while bytes are left: it goes on until the socket would
    /// block, or until a read comes back shorter than the buffer *without* descriptors. A
    /// Unix stream read returns short only when the queue is empty, after bytes that carried
    /// descriptors (which this side never accepts: they are dropped, and `MSG_CTRUNC` says
    /// so), or where the sender's credentials change (only with `SO_PASSCRED`, which the
    /// service does not set). The rule spares the call that would only say `EAGAIN`, which
    /// sits between a request's arrival and its service. It is off when the event also said
    /// the peer closed or failed (`closing`): the end of stream after the last bytes raises no
    /// new edge either, so the read goes on to it. Tests:
    /// `frames.rs::bytes_that_carry_descriptors_are_still_read_to_the_end` and the bad frames
    /// followed by a shutdown in `each_kind_of_bad_frame_closes_only_its_connection_with_a_logged_reason`.
    fn read(&mut self, token: Token, closing: bool) {
        let buf = &mut self.buf;
        let mut frames = Vec::new();
        let outcome: Result<(), String> = {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            loop {
                match recv(&conn.shared.stream, buf) {
                    Ok((0, _)) => {
                        break match conn.decoder.finish() {
                            Ok(()) => Err(String::new()),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Ok((n, truncated)) => {
                        conn.decoder.push(&buf[..n]);
                        let mut bad = None;
                        loop {
                            match conn.decoder.next_frame::<ClientFrame>() {
                                Ok(Some(frame)) => frames.push(frame),
                                Ok(None) => break,
                                Err(e) => {
                                    bad = Some(e.to_string());
                                    break;
                                }
                            }
                        }
                        if let Some(b) = bad {
                            break Err(b);
                        }
                        if n < buf.len() && !truncated && !closing {
                            break Ok(()); // the queue is empty (see above)
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => break Err(format!("read failed: {e}")),
                }
            }
        };
        // Frames decoded before an error are still served, in order.
        for frame in frames {
            if let Err(reason) = self.frame(token, frame) {
                self.close(token, &reason);
                return;
            }
        }
        if let Err(reason) = outcome {
            self.close(token, &reason);
        }
    }

    fn frame(&mut self, token: Token, frame: ClientFrame) -> Result<(), String> {
        let Some(conn) = self.conns.get_mut(&token) else {
            return Ok(());
        };
        tracing::trace!(peer = %conn.shared.peer, ?frame, "hcs-simd: frame in");
        match (conn.hello, frame) {
            (false, ClientFrame::Hello { magic, version }) => {
                if magic != MAGIC || version != PROTOCOL_VERSION {
                    let reason = format!(
                        "handshake refused: {magic:?} version {version}; this service speaks {MAGIC:?} version {PROTOCOL_VERSION}"
                    );
                    conn.shared.push(
                        &ServerFrame::Refused {
                            reason: reason.clone(),
                        },
                        Vec::new(),
                    );
                    self.flush(token);
                    return Err(reason);
                }
                conn.hello = true;
                conn.shared.push(
                    &ServerFrame::Welcome {
                        version: PROTOCOL_VERSION,
                        generation: self.generation,
                        pid: std::process::id(),
                    },
                    Vec::new(),
                );
                Ok(())
            }
            (false, ClientFrame::Call { .. }) => {
                Err("out-of-order frame: a call before the handshake".into())
            }
            (true, ClientFrame::Hello { .. }) => Err("out-of-order frame: a second handshake".into()),
            (true, ClientFrame::Call { id, call }) => {
                let conn = conn.shared.clone();
                let shared = self.shared.clone();
                if !shared.faults_active.load(Ordering::SeqCst) && runs_inline(&call) {
                    let (result, fds) = serve(&shared, &conn, call);
                    conn.push(&ServerFrame::Reply { id, result }, fds);
                    return Ok(());
                }
                let job: Job = Box::new(move || {
                    let (result, fds) = serve(&shared, &conn, call);
                    conn.push(&ServerFrame::Reply { id, result }, fds);
                });
                self.jobs
                    .send(job)
                    .map_err(|_| "the worker pool is gone".to_string())
            }
        }
    }

    fn flush(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let result: Result<bool, String> = {
            let mut out = lock(&conn.shared.out);
            if out.overflow {
                Err(format!(
                    "the client does not read: more than {MAX_OUTBOX} bytes queued"
                ))
            } else {
                out.write(&conn.shared.stream)
                    .map_err(|e| format!("write failed: {e}"))
            }
        };
        match result {
            Ok(empty) => {
                // Watch for room only while something waits for it.
                if empty == conn.writable {
                    let interest = if empty {
                        Interest::READABLE
                    } else {
                        Interest::READABLE | Interest::WRITABLE
                    };
                    let fd = conn.shared.stream.as_raw_fd();
                    match self
                        .poll
                        .registry()
                        .reregister(&mut SourceFd(&fd), token, interest)
                    {
                        Ok(()) => conn.writable = !empty,
                        Err(e) => self.close(token, &format!("cannot watch the socket: {e}")),
                    }
                }
            }
            Err(reason) => self.close(token, &reason),
        }
    }

    /// Closes a connection: logs why (an empty reason is a client that went away), and
    /// releases its handles on a worker.
    fn close(&mut self, token: Token, reason: &str) {
        let Some(conn) = self.conns.remove(&token) else {
            return;
        };
        {
            // What is already queued (a welcome, a refusal, replies) goes out if it can
            // without waiting; the rest is dropped with the connection. Nothing is written to
            // it after this.
            let mut out = lock(&conn.shared.out);
            let _ = out.write(&conn.shared.stream);
            out.closed = true;
            out.frames.clear();
            out.sent = 0;
            out.bytes = 0;
        }
        let fd = conn.shared.stream.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        // The descriptor itself closes with the last reference (a worker may hold one): end
        // the connection for the client now.
        let _ = conn.shared.stream.shutdown(std::net::Shutdown::Both);
        if reason.is_empty() {
            tracing::debug!(peer = %conn.shared.peer, "hcs-simd: client disconnected");
        } else {
            tracing::warn!(peer = %conn.shared.peer, "hcs-simd: closing connection: {reason}");
        }
        let shared = self.shared.clone();
        let c = conn.shared.clone();
        let job: Job = Box::new(move || release(&shared, &c));
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            job();
        }
    }

    fn shutdown(&mut self, listener: &mut UnixListener) {
        let _ = self.poll.registry().deregister(listener);
        let sim = self.shared.sim.clone();
        for id in sim.live_systems() {
            if let Ok(r) = sim.open_compute_system(&id) {
                let _ = sim.terminate_compute_system(r.value, "");
                let _ = sim.close_compute_system(r.value);
            }
            tracing::info!(system = %id, "hcs-simd: terminated at shutdown");
        }
        // Let the exits reach the clients, then say goodbye (a client that does not read is
        // not waited for long).
        self.drain_for(Duration::from_secs(1), || sim.running_host_processes() == 0);
        for conn in self.conns.values() {
            conn.shared.push(
                &ServerFrame::Goodbye {
                    reason: "the service is shutting down".into(),
                },
                Vec::new(),
            );
        }
        self.drain_for(Duration::from_secs(1), || true);
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for t in tokens {
            if let Some(conn) = self.conns.remove(&t) {
                let fd = conn.shared.stream.as_raw_fd();
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                lock(&conn.shared.out).closed = true;
                let _ = conn.shared.stream.shutdown(std::net::Shutdown::Both);
                release(&self.shared, &conn.shared);
            }
        }
    }
}

impl Loop {
    /// Flushes every outbox until all are empty and `done()` holds, or `limit` passes.
    fn drain_for(&mut self, limit: Duration, done: impl Fn() -> bool) {
        let deadline = Instant::now() + limit;
        let mut events = Events::with_capacity(64);
        while Instant::now() < deadline {
            let tokens: Vec<Token> = self.conns.keys().copied().collect();
            for t in tokens {
                self.flush(t);
            }
            let pending = self
                .conns
                .values()
                .any(|c| !lock(&c.shared.out).frames.is_empty());
            if !pending && done() {
                return;
            }
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(5)));
        }
    }
}

/// Writes `bytes`, attaching `fds` (if any) to the first byte.
/// Reads into `buf` without blocking; returns the byte count and whether descriptors came
/// with the bytes (and were dropped: `MSG_CTRUNC`, as no room is given for them).
fn recv(stream: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    let mut control = rustix::net::RecvAncillaryBuffer::default();
    let r = rustix::net::recvmsg(
        stream,
        &mut [io::IoSliceMut::new(buf)],
        &mut control,
        rustix::net::RecvFlags::DONTWAIT | rustix::net::RecvFlags::CMSG_CLOEXEC,
    )?;
    Ok((r.bytes, r.flags.contains(rustix::net::ReturnFlags::CTRUNC)))
}

fn send(stream: &UnixStream, bytes: &[u8], fds: &[OwnedFd]) -> io::Result<usize> {
    let flags = rustix::net::SendFlags::NOSIGNAL | rustix::net::SendFlags::DONTWAIT;
    if fds.is_empty() {
        return Ok(rustix::net::send(stream, bytes, flags)?);
    }
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    control.push(rustix::net::SendAncillaryMessage::ScmRights(&borrowed));
    Ok(rustix::net::sendmsg(
        stream,
        &[IoSlice::new(bytes)],
        &mut control,
        flags,
    )?)
}

/// Releases everything a closed connection held: its callback registrations, process and
/// system handles (in that order), then its notification contexts.
fn release(shared: &Shared, conn: &ConnShared) {
    let taken = {
        let mut h = lock(&conn.handles);
        h.closed = true;
        std::mem::take(&mut *h)
    };
    let sim = &shared.sim;
    let (mut cbs, mut procs, mut syss) = (0, 0, 0);
    for (cb, (_, is_process, _)) in &taken.callbacks {
        if let Some(h) = CallbackHandle::new(*cb) {
            let r = if *is_process {
                sim.unregister_process_callback(h)
            } else {
                sim.unregister_compute_system_callback(h)
            };
            cbs += usize::from(r.is_ok());
        }
    }
    for p in &taken.processes {
        if let Some(h) = ProcessHandle::new(*p) {
            procs += usize::from(sim.close_process(h).is_ok());
        }
    }
    for s in &taken.systems {
        if let Some(h) = SystemHandle::new(*s) {
            syss += usize::from(sim.close_compute_system(h).is_ok());
        }
    }
    let contexts = taken.contexts.len();
    shared.contexts.fetch_sub(contexts, Ordering::SeqCst);
    drop(taken);
    shared.connections.fetch_sub(1, Ordering::SeqCst);
    if cbs + procs + syss > 0 {
        tracing::info!(
            peer = %conn.peer,
            callbacks = cbs,
            processes = procs,
            systems = syss,
            "hcs-simd: released the handles of a closed connection"
        );
    }
}

fn invalid_handle() -> Failure {
    Failure::with_document(HResult::E_HANDLE, "the handle is not open on this connection")
}

/// A call on a connection that closed meanwhile (its reply is never sent).
fn closed_connection() -> Failure {
    Failure::with_document(HResult::E_HANDLE, "the connection closed")
}

impl Handles {
    fn system(&self, raw: u64) -> Result<SystemHandle, Failure> {
        if self.closed {
            return Err(closed_connection());
        }
        self.systems
            .contains(&raw)
            .then(|| SystemHandle::new(raw))
            .flatten()
            .ok_or_else(invalid_handle)
    }
    fn process(&self, raw: u64) -> Result<ProcessHandle, Failure> {
        if self.closed {
            return Err(closed_connection());
        }
        self.processes
            .contains(&raw)
            .then(|| ProcessHandle::new(raw))
            .flatten()
            .ok_or_else(invalid_handle)
    }
    /// Forgets the registrations made through `handle` (closing a handle removes them, as
    /// `HcsCloseComputeSystem`/`HcsCloseProcess` do).
    fn forget_callbacks_via(&mut self, handle: u64) {
        let gone: Vec<u64> = self
            .callbacks
            .iter()
            .filter(|(_, (_, _, via))| *via == handle)
            .map(|(cb, _)| *cb)
            .collect();
        for cb in gone {
            if let Some((ctx, _, _)) = self.callbacks.remove(&cb) {
                if let Some(e) = self.contexts.get_mut(&ctx) {
                    e.callbacks = e.callbacks.saturating_sub(1);
                }
            }
        }
    }
    /// Drops the contexts nothing keeps alive any more; returns them to drop outside the lock.
    fn prune(&mut self, shared: &Shared) -> Vec<CtxEntry> {
        let dead: Vec<u64> = self
            .contexts
            .iter()
            .filter(|(_, e)| e.systems.is_empty() && e.callbacks == 0 && e.in_calls == 0)
            .map(|(k, _)| *k)
            .collect();
        shared.contexts.fetch_sub(dead.len(), Ordering::SeqCst);
        dead.into_iter()
            .filter_map(|k| self.contexts.remove(&k))
            .collect()
    }
}

/// The server-side context that forwards to the client's context `client`, created on first use,
/// and held for the call that asked for it: every `context` is balanced by one [`used_with`] (or
/// by [`register`]'s adoption of the registration) after that call.
fn context(shared: &Arc<Shared>, conn: &Arc<ConnShared>, client: u64) -> Result<NotifyContext, Failure> {
    let mut h = lock(&conn.handles);
    if h.closed {
        return Err(closed_connection());
    }
    if let Some(e) = h.contexts.get_mut(&client) {
        e.in_calls += 1;
        return Ok(e.sub.context());
    }
    let weak = Arc::downgrade(conn);
    let sub = Subscription::new(
        move |kind: NotificationKind, status: HResult, payload: Option<&str>| {
            if let Some(conn) = weak.upgrade() {
                conn.push(
                    &ServerFrame::Notify {
                        ctx: client,
                        kind: encode_kind(kind),
                        status: encode_status(status),
                        payload: payload.map(str::to_owned),
                    },
                    Vec::new(),
                );
            }
        },
    );
    let ctx = sub.context();
    shared.contexts.fetch_add(1, Ordering::SeqCst);
    h.contexts.insert(
        client,
        CtxEntry {
            sub,
            systems: HashSet::new(),
            callbacks: 0,
            in_calls: 1,
        },
    );
    Ok(ctx)
}

/// Ends the call that took client context `client` with [`context`]: notes that it was used
/// with `system` (it stays alive while the connection holds that handle), releases the call's
/// hold, then prunes unused contexts.
fn used_with(shared: &Shared, conn: &ConnShared, client: u64, system: Option<u64>) {
    let dead = {
        let mut h = lock(&conn.handles);
        let held = system.filter(|s| h.systems.contains(s));
        if let Some(e) = h.contexts.get_mut(&client) {
            if let Some(s) = held {
                e.systems.insert(s);
            }
            e.in_calls = e.in_calls.saturating_sub(1);
        }
        h.prune(shared)
    };
    drop(dead);
}

fn ok<T>(r: Reply<T>, value: impl FnOnce(T) -> Value) -> CallResult {
    CallResult::Ok {
        value: value(r.value),
        document: r.document,
        pending: r.pending,
    }
}

fn err(f: Failure) -> CallResult {
    CallResult::Err {
        code: f.code.0,
        document: f.document,
    }
}

fn unit(r: DriverResult<()>) -> CallResult {
    match r {
        Ok(r) => ok(r, |()| Value::Unit),
        Err(f) => err(f),
    }
}

fn text(r: DriverResult<String>) -> CallResult {
    match r {
        Ok(r) => ok(r, |text| Value::Text { text }),
        Err(f) => err(f),
    }
}

/// Turns process information into the wire value and the descriptors to attach.
fn process_value(handle: Option<u64>, info: ProcessInfo) -> (Value, Vec<OwnedFd>) {
    let mut fds = Vec::new();
    let stdin = info.stdin.and_then(|w| w.into_file().ok()).map(OwnedFd::from);
    let stdout = info.stdout.and_then(|r| r.into_file().ok()).map(OwnedFd::from);
    let stderr = info.stderr.and_then(|r| r.into_file().ok()).map(OwnedFd::from);
    let flags = (stdin.is_some(), stdout.is_some(), stderr.is_some());
    fds.extend(stdin);
    fds.extend(stdout);
    fds.extend(stderr);
    (
        Value::Process {
            handle,
            pid: info.pid,
            stdin: flags.0,
            stdout: flags.1,
            stderr: flags.2,
        },
        fds,
    )
}

/// Runs one call for `conn` against the simulator.
fn serve(shared: &Arc<Shared>, conn: &Arc<ConnShared>, call: Call) -> (CallResult, Vec<OwnedFd>) {
    let sim = &shared.sim;
    let sys = |raw: u64| lock(&conn.handles).system(raw);
    let proc_ = |raw: u64| lock(&conn.handles).process(raw);
    macro_rules! try_ {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(f) => return (err(f), Vec::new()),
            }
        };
    }
    let result = match call {
        Call::Enumerate { query } => text(sim.enumerate_compute_systems(&query)),
        Call::Create {
            id,
            configuration,
            ctx,
        } => {
            let server_ctx = try_!(context(shared, conn, ctx));
            match sim.create_compute_system(&id, &configuration, server_ctx) {
                Ok(r) => {
                    let h = r.value;
                    if !adopt(conn, |hs| hs.systems.insert(h.raw())) {
                        let _ = sim.close_compute_system(h);
                        return (err(closed_connection()), Vec::new());
                    }
                    used_with(shared, conn, ctx, Some(h.raw()));
                    ok(r, |h| Value::Handle { handle: h.raw() })
                }
                Err(f) => {
                    used_with(shared, conn, ctx, None);
                    err(f)
                }
            }
        }
        Call::Open { id } => match sim.open_compute_system(&id) {
            Ok(r) => {
                let h = r.value;
                if !adopt(conn, |hs| hs.systems.insert(h.raw())) {
                    let _ = sim.close_compute_system(h);
                    return (err(closed_connection()), Vec::new());
                }
                ok(r, |h| Value::Handle { handle: h.raw() })
            }
            Err(f) => err(f),
        },
        Call::Close { system } => {
            let h = try_!(sys(system));
            match sim.close_compute_system(h) {
                Ok(()) => {
                    let dead = {
                        let mut hs = lock(&conn.handles);
                        hs.systems.remove(&system);
                        for e in hs.contexts.values_mut() {
                            e.systems.remove(&system);
                        }
                        // Registrations made through this handle went with it.
                        hs.forget_callbacks_via(system);
                        hs.prune(shared)
                    };
                    drop(dead);
                    CallResult::Ok {
                        value: Value::Unit,
                        document: None,
                        pending: false,
                    }
                }
                Err(f) => err(f),
            }
        }
        Call::Start { system, options, ctx } => pending_op(shared, conn, system, ctx, |h, c| {
            sim.start_compute_system(h, &options, c)
        }),
        Call::Pause { system, options, ctx } => pending_op(shared, conn, system, ctx, |h, c| {
            sim.pause_compute_system(h, &options, c)
        }),
        Call::Resume { system, options, ctx } => pending_op(shared, conn, system, ctx, |h, c| {
            sim.resume_compute_system(h, &options, c)
        }),
        Call::Save { system, options, ctx } => pending_op(shared, conn, system, ctx, |h, c| {
            sim.save_compute_system(h, &options, c)
        }),
        Call::Shutdown { system, options } => unit(sim.shutdown_compute_system(try_!(sys(system)), &options)),
        Call::Terminate { system, options } => {
            unit(sim.terminate_compute_system(try_!(sys(system)), &options))
        }
        Call::Properties { system, query } => {
            text(sim.get_compute_system_properties(try_!(sys(system)), &query))
        }
        Call::Modify {
            system,
            configuration,
        } => unit(sim.modify_compute_system(try_!(sys(system)), &configuration)),
        Call::RegisterSystem { system, ctx } => {
            let h = try_!(sys(system));
            register(shared, conn, ctx, (false, system), |c| {
                sim.register_compute_system_callback(h, c)
            })
        }
        Call::RegisterProcess { process, ctx } => {
            let h = try_!(proc_(process));
            register(shared, conn, ctx, (true, process), |c| {
                sim.register_process_callback(h, c)
            })
        }
        Call::UnregisterSystem { callback } | Call::UnregisterProcess { callback } => {
            let entry = {
                let hs = lock(&conn.handles);
                if hs.closed {
                    return (err(closed_connection()), Vec::new());
                }
                hs.callbacks.get(&callback).copied()
            };
            let Some((ctx, is_process, _)) = entry else {
                return (err(invalid_handle()), Vec::new());
            };
            let Some(h) = CallbackHandle::new(callback) else {
                return (err(invalid_handle()), Vec::new());
            };
            let r = if is_process {
                sim.unregister_process_callback(h)
            } else {
                sim.unregister_compute_system_callback(h)
            };
            match r {
                Ok(()) => {
                    let dead = {
                        let mut hs = lock(&conn.handles);
                        hs.callbacks.remove(&callback);
                        if let Some(e) = hs.contexts.get_mut(&ctx) {
                            e.callbacks = e.callbacks.saturating_sub(1);
                        }
                        hs.prune(shared)
                    };
                    drop(dead);
                    CallResult::Ok {
                        value: Value::Unit,
                        document: None,
                        pending: false,
                    }
                }
                Err(f) => err(f),
            }
        }
        Call::CreateProcess { system, parameters } => {
            match sim.create_process(try_!(sys(system)), &parameters) {
                Ok(r) => {
                    let (h, info) = r.value;
                    if !adopt(conn, |hs| hs.processes.insert(h.raw())) {
                        let _ = sim.close_process(h);
                        return (err(closed_connection()), Vec::new());
                    }
                    let (value, fds) = process_value(Some(h.raw()), info);
                    return (
                        CallResult::Ok {
                            value,
                            document: r.document,
                            pending: r.pending,
                        },
                        fds,
                    );
                }
                Err(f) => err(f),
            }
        }
        Call::OpenProcess { system, pid } => match sim.open_process(try_!(sys(system)), pid) {
            Ok(r) => {
                let h = r.value;
                if !adopt(conn, |hs| hs.processes.insert(h.raw())) {
                    let _ = sim.close_process(h);
                    return (err(closed_connection()), Vec::new());
                }
                ok(r, |h| Value::Handle { handle: h.raw() })
            }
            Err(f) => err(f),
        },
        Call::CloseProcess { process } => {
            let h = try_!(proc_(process));
            match sim.close_process(h) {
                Ok(()) => {
                    let dead = {
                        let mut hs = lock(&conn.handles);
                        hs.processes.remove(&process);
                        hs.forget_callbacks_via(process);
                        hs.prune(shared)
                    };
                    drop(dead);
                    CallResult::Ok {
                        value: Value::Unit,
                        document: None,
                        pending: false,
                    }
                }
                Err(f) => err(f),
            }
        }
        Call::TerminateProcess { process } => unit(sim.terminate_process(try_!(proc_(process)))),
        Call::SignalProcess { process, options } => unit(sim.signal_process(try_!(proc_(process)), &options)),
        Call::ProcessInfo { process } => match sim.get_process_info(try_!(proc_(process))) {
            Ok(r) => {
                let (value, fds) = process_value(None, r.value);
                return (
                    CallResult::Ok {
                        value,
                        document: r.document,
                        pending: r.pending,
                    },
                    fds,
                );
            }
            Err(f) => err(f),
        },
        Call::ProcessProperties { process } => text(sim.get_process_properties(try_!(proc_(process)))),
        Call::ModifyProcess { process, settings } => {
            unit(sim.modify_process(try_!(proc_(process)), &settings))
        }
        Call::ServiceProperties { query } => text(sim.get_service_properties(&query)),
        Call::ModifyServiceSettings { settings } => unit(sim.modify_service_settings(&settings)),
        Call::CancelPending { ctx, kind } => {
            let server_ctx = lock(&conn.handles).contexts.get(&ctx).map(|e| e.sub.context());
            match server_ctx {
                Some(c) => match sim.cancel_pending(c, crate::protocol::decode_kind(kind)) {
                    Ok(()) => unit(Ok(Reply::done(()))),
                    Err(f) => err(f),
                },
                None => unit(Ok(Reply::done(()))),
            }
        }
        Call::SetFaultPlan { plan } => match serde_json::from_str::<FaultPlan>(&plan) {
            Ok(plan) => {
                let active = has_rules(&plan);
                // Calls go to the workers from now on, before the plan can make one block.
                if active {
                    shared.faults_active.store(true, Ordering::SeqCst);
                }
                match sim.set_fault_plan(plan) {
                    Ok(()) => {
                        shared.faults_active.store(active, Ordering::SeqCst);
                        unit(Ok(Reply::done(())))
                    }
                    Err(e) => err(Failure::with_document(HResult::E_INVALIDARG, e.to_string())),
                }
            }
            Err(e) => err(Failure::with_document(
                HResult::E_INVALIDARG,
                format!("invalid fault plan: {e}"),
            )),
        },
        Call::ClearFaults => {
            sim.clear_faults();
            shared.faults_active.store(false, Ordering::SeqCst);
            unit(Ok(Reply::done(())))
        }
        Call::Release { gate } => {
            sim.release(&gate);
            unit(Ok(Reply::done(())))
        }
        Call::Crash { id } => match sim.crash(&id) {
            Ok(()) => unit(Ok(Reply::done(()))),
            Err(e) => err(Failure::with_document(HResult::E_INVALIDARG, e.to_string())),
        },
        Call::BlockedOn { gate } => CallResult::Ok {
            value: Value::Count {
                count: sim.blocked_on(&gate),
            },
            document: None,
            pending: false,
        },
        Call::RestartService => {
            sim.restart_service();
            unit(Ok(Reply::done(())))
        }
        Call::Stats => {
            let counts = sim.handle_counts();
            let hs = lock(&conn.handles);
            CallResult::Ok {
                value: Value::Stats(Stats {
                    connections: shared.connections.load(Ordering::SeqCst),
                    systems: counts.systems,
                    processes: counts.processes,
                    callbacks: counts.callbacks,
                    live_systems: sim.live_systems().len(),
                    host_processes: sim.running_host_processes(),
                    contexts: shared.contexts.load(Ordering::SeqCst),
                    mine_systems: hs.systems.len(),
                    mine_processes: hs.processes.len(),
                    mine_callbacks: hs.callbacks.len(),
                    threads: std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count()),
                }),
                document: None,
                pending: false,
            }
        }
    };
    (result, Vec::new())
}

/// Records a new handle on the connection; `false` when the connection already closed (the
/// caller then closes the handle itself).
fn adopt(conn: &ConnShared, f: impl FnOnce(&mut Handles) -> bool) -> bool {
    let mut h = lock(&conn.handles);
    if h.closed {
        return false;
    }
    f(&mut h);
    true
}

fn pending_op(
    shared: &Arc<Shared>,
    conn: &Arc<ConnShared>,
    system: u64,
    ctx: u64,
    call: impl FnOnce(SystemHandle, NotifyContext) -> DriverResult<()>,
) -> CallResult {
    let h = match lock(&conn.handles).system(system) {
        Ok(h) => h,
        Err(f) => return err(f),
    };
    let server_ctx = match context(shared, conn, ctx) {
        Ok(c) => c,
        Err(f) => return err(f),
    };
    let r = call(h, server_ctx);
    used_with(shared, conn, ctx, Some(system));
    unit(r)
}

fn register(
    shared: &Arc<Shared>,
    conn: &Arc<ConnShared>,
    ctx: u64,
    (is_process, via): (bool, u64),
    call: impl FnOnce(NotifyContext) -> Result<CallbackHandle, Failure>,
) -> CallResult {
    let server_ctx = match context(shared, conn, ctx) {
        Ok(c) => c,
        Err(f) => return err(f),
    };
    match call(server_ctx) {
        Ok(cb) => {
            let adopted = {
                let mut hs = lock(&conn.handles);
                if hs.closed {
                    false
                } else {
                    hs.callbacks.insert(cb.raw(), (ctx, is_process, via));
                    if let Some(e) = hs.contexts.get_mut(&ctx) {
                        e.callbacks += 1;
                        e.in_calls = e.in_calls.saturating_sub(1);
                    }
                    true
                }
            };
            if !adopted {
                let _ = if is_process {
                    shared.sim.unregister_process_callback(cb)
                } else {
                    shared.sim.unregister_compute_system_callback(cb)
                };
                return err(closed_connection());
            }
            CallResult::Ok {
                value: Value::Handle { handle: cb.raw() },
                document: None,
                pending: false,
            }
        }
        Err(f) => {
            used_with(shared, conn, ctx, None);
            err(f)
        }
    }
}

//! The client driver: [`ClientDriver`] implements [`hcs::Driver`] over the service's socket,
//! so `hcs::System` and `hcs::Process` run on `hcs-simd` unchanged. Calls are frames answered
//! by id (any number in flight from any number of threads). One thread at a time holds the
//! connection's *reader role*: it reads the socket, hands replies (with their stdio descriptors,
//! `SCM_RIGHTS`) to their callers and notifications to [`hcs::dispatch`] (which never blocks),
//! then passes the role on. A calling thread takes the role when it is free and so reads its own
//! reply (one thread wake-up per call instead of two); a watcher thread per connection takes it
//! when bytes arrive while no call reads, so notifications arrive promptly between calls. When
//! the connection drops, every
//! call in flight or made later fails with `RPC_S_SERVER_UNAVAILABLE` (in HRESULT form;
//! [`hcs::Error::is_service_disconnected`] holds) and every context the client had registered,
//! or had a pending operation on, receives `ServiceDisconnect` at once.

use crate::protocol::{
    decode_kind, encode, encode_kind, Call, CallResult, ClientFrame, Decoder, ServerFrame, Stats, Value,
    MAGIC, PROTOCOL_VERSION,
};
use hcs::{
    ApiGeneration, CallbackHandle, Driver, DriverResult, Failure, HResult, NotificationKind, NotifyContext,
    PipeReader, PipeWriter, ProcessHandle, ProcessInfo, Reply, SystemHandle,
};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, IoSliceMut, Read};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rustix::event::epoll;

/// The watcher's registration while armed: one wake for readable bytes or the end of the
/// stream, then disarmed until re-armed.
fn armed() -> epoll::EventFlags {
    epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ONESHOT
}

/// How long [`ClientDriver::connect`] waits for the service's answer to the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `RPC_S_SERVER_UNAVAILABLE` in HRESULT form: what every call fails with once the connection
/// to the service is gone (the code the simulator uses for its own service disconnect).
pub fn server_unavailable() -> HResult {
    HResult(0x8007_0000 | HResult::RPC_S_SERVER_UNAVAILABLE.0)
}

/// Why [`ClientDriver::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket could not be reached.
    #[error("cannot connect to hcs-simd at {path}: {source}")]
    Io {
        /// The socket path.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The service refused the connection (wrong protocol version, or a uid it does not serve).
    #[error("hcs-simd refused the connection: {0}")]
    Refused(String),
    /// The service answered something that is not a handshake reply.
    #[error("hcs-simd handshake failed: {0}")]
    Handshake(String),
}

type Answer = (CallResult, Vec<OwnedFd>);

/// What a waiting caller receives: its answer, the reader role (it then reads the socket
/// itself until its answer arrives), or the end of the connection.
enum Msg {
    Answer(Answer),
    Role,
    Closed,
}

/// One call's mailbox: the holder of the reader role leaves the caller's answer here, or hands
/// it the role. (A mutex and a condition variable, woken only when the caller sleeps on it:
/// lighter than a channel per call, which was a visible share of a call's cost.)
#[derive(Default)]
struct Mailbox {
    mail: Mutex<Mail>,
    cv: Condvar,
}

#[derive(Default)]
struct Mail {
    answer: Option<Answer>,
    role: bool,
    /// The connection ended before an answer.
    closed: bool,
    /// An answer or the end was delivered (the mailbox is out of [`State::waiting`]).
    delivered: bool,
    /// The caller is asleep on [`Mailbox::cv`].
    sleeping: bool,
    /// The caller stopped waiting (a failed write, or an unwind): a role handed here would be
    /// lost, so it is refused.
    left: bool,
}

impl Mail {
    /// The next message, in the order they can be sent (a role is only ever handed to a
    /// caller before its answer arrives).
    fn take(&mut self) -> Option<Msg> {
        if std::mem::take(&mut self.role) {
            Some(Msg::Role)
        } else if let Some(a) = self.answer.take() {
            Some(Msg::Answer(a))
        } else if self.closed {
            Some(Msg::Closed)
        } else {
            None
        }
    }
}

impl Mailbox {
    fn try_take(&self) -> Option<Msg> {
        lock(&self.mail).take()
    }

    /// Sleeps until a message is there.
    fn recv(&self) -> Msg {
        let mut m = lock(&self.mail);
        loop {
            if let Some(msg) = m.take() {
                return msg;
            }
            m.sleeping = true;
            m = self.cv.wait(m).unwrap_or_else(|e| e.into_inner());
            m.sleeping = false;
        }
    }

    /// Puts `f`'s change in the mailbox and wakes its caller if it sleeps; `false` (and no
    /// change) when the caller has left.
    fn put(&self, f: impl FnOnce(&mut Mail)) -> bool {
        let mut m = lock(&self.mail);
        if m.left {
            return false;
        }
        f(&mut m);
        if m.sleeping {
            self.cv.notify_one();
        }
        true
    }

    fn answer(&self, a: Answer) {
        self.put(|m| {
            m.answer = Some(a);
            m.delivered = true;
        });
    }

    fn close(&self) {
        self.put(|m| {
            m.closed = true;
            m.delivered = true;
        });
    }

    fn offer_role(&self) -> bool {
        self.put(|m| m.role = true)
    }
}

/// A call's place in [`State::waiting`] while its caller waits. Dropped when the caller stops
/// waiting, however it does (answer, failed write, unwind): an entry still listed is removed,
/// and a role handed over but not taken is passed on, so the reader role is never lost.
struct Waiting<'a> {
    inner: &'a Inner,
    id: u64,
    mailbox: Arc<Mailbox>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let (listed, role) = {
            let mut m = lock(&self.mailbox.mail);
            m.left = true;
            (!m.delivered, std::mem::take(&mut m.role))
        };
        if listed {
            lock(&self.inner.state).take_waiting(self.id);
        }
        if role {
            self.inner.release();
        }
    }
}

#[derive(Default)]
struct State {
    dead: Option<String>,
    next_id: u64,
    /// The calls whose answer has not arrived (a few at a time: one per calling thread).
    waiting: Vec<(u64, Arc<Mailbox>)>,
    /// Callback handle → its context.
    callbacks: HashMap<u64, u64>,
    /// Contexts with pending operations whose completion has not arrived, with their count.
    /// A completion can arrive before its call's pending reply (the service writes a
    /// notification as soon as it is made), so a count may go below zero for a moment; an
    /// entry is removed when it reaches zero either way.
    pending: HashMap<u64, i64>,
    /// A thread holds the reader role (only that thread touches [`Inner::reader`] and reads
    /// the socket).
    reading: bool,
}

impl State {
    /// Removes call `id`'s mailbox from the waiting calls.
    fn take_waiting(&mut self, id: u64) -> Option<Arc<Mailbox>> {
        let i = self.waiting.iter().position(|(k, _)| *k == id)?;
        Some(self.waiting.swap_remove(i).1)
    }

    /// Counts `n` more pending operations on `ctx` (a pending reply: 1; a completion: -1).
    fn pending_added(&mut self, ctx: u64, n: i64) {
        let count = self.pending.entry(ctx).or_default();
        *count += n;
        if *count == 0 {
            self.pending.remove(&ctx);
        }
    }
}

/// The reading side of the connection, used only by the holder of the reader role.
struct Reader {
    decoder: Decoder,
    /// Descriptors received and not yet claimed by a reply.
    fds: VecDeque<OwnedFd>,
    buf: Vec<u8>,
}

struct Inner {
    stream: UnixStream,
    write: Mutex<()>,
    state: Mutex<State>,
    reader: Mutex<Reader>,
    /// The watcher's epoll instance, with the socket registered one-shot: armed while the
    /// role is free, disarmed by a caller that takes it (so that its reply does not also wake
    /// the watcher), re-armed by whoever frees it.
    epoll: OwnedFd,
}

/// An [`hcs::Driver`] that talks to `hcs-simd` over its Unix socket. Cheap to share
/// (`Arc<ClientDriver>` is an `Arc<dyn Driver>`); one connection, one watcher thread.
pub struct ClientDriver {
    inner: Arc<Inner>,
    generation: ApiGeneration,
    server_pid: u32,
}

impl std::fmt::Debug for ClientDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientDriver")
            .field("generation", &self.generation)
            .field("server_pid", &self.server_pid)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl ClientDriver {
    /// Connects to the service at `path` and runs the handshake.
    pub fn connect(path: impl AsRef<Path>) -> Result<Arc<ClientDriver>, ConnectError> {
        let path = path.as_ref();
        let io_err = |source| ConnectError::Io {
            path: path.display().to_string(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(io_err)?;
        let hello = encode(&ClientFrame::Hello {
            magic: MAGIC.into(),
            version: PROTOCOL_VERSION,
        })
        .map_err(|e| ConnectError::Handshake(e.to_string()))?;
        // A service that refuses this client may have closed the connection already: its
        // `Refused` frame is still readable, so a failed write is judged by what arrives.
        let wrote = write_all(&stream, &hello);
        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(io_err)?;
        let mut decoder = Decoder::new();
        let mut buf = [0u8; 4096];
        let welcome = loop {
            match decoder.next_frame::<ServerFrame>() {
                Ok(Some(f)) => break f,
                Ok(None) => {}
                Err(e) => return Err(ConnectError::Handshake(e.to_string())),
            }
            match (&stream).read(&mut buf) {
                Ok(0) => {
                    return Err(ConnectError::Refused(match &wrote {
                        Ok(()) => "the service closed the connection during the handshake".into(),
                        Err(e) => format!("the service closed the connection during the handshake ({e})"),
                    }))
                }
                Ok(n) => decoder.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if wrote.is_err() => {
                    return Err(ConnectError::Refused(format!(
                        "the service closed the connection during the handshake ({e})"
                    )))
                }
                Err(e) => return Err(io_err(e)),
            }
        };
        stream.set_read_timeout(None).map_err(io_err)?;
        let (generation, server_pid) = match welcome {
            ServerFrame::Welcome {
                version,
                generation,
                pid,
            } if version == PROTOCOL_VERSION => (generation.into(), pid),
            ServerFrame::Refused { reason } => return Err(ConnectError::Refused(reason)),
            other => return Err(ConnectError::Handshake(format!("unexpected answer {other:?}"))),
        };
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| io_err(e.into()))?;
        epoll::add(&epoll, &stream, epoll::EventData::new_u64(0), armed()).map_err(|e| io_err(e.into()))?;
        let inner = Arc::new(Inner::new(stream, decoder, epoll));
        let for_watcher = inner.clone();
        std::thread::Builder::new()
            .name("hcs-simd-client".into())
            .spawn(move || watch(&for_watcher))
            .map_err(io_err)?;
        Ok(Arc::new(ClientDriver {
            inner,
            generation,
            server_pid,
        }))
    }

    /// Connects to [`crate::default_socket_path`].
    pub fn connect_default() -> Result<Arc<ClientDriver>, ConnectError> {
        Self::connect(crate::default_socket_path())
    }

    /// The service's process id, as it said in the handshake.
    pub fn server_pid(&self) -> u32 {
        self.server_pid
    }

    /// `false` once the connection is gone (every call then fails with
    /// [`server_unavailable`]).
    pub fn is_connected(&self) -> bool {
        lock(&self.inner.state).dead.is_none()
    }

    /// Closes the connection now (as if the service had gone): calls in flight fail and
    /// registered contexts receive `ServiceDisconnect`. Dropping the driver does the same.
    pub fn disconnect(&self) {
        let _ = self.inner.stream.shutdown(std::net::Shutdown::Both);
    }

    /// The service's accounting, including this connection's own handles.
    pub fn stats(&self) -> Result<Stats, Failure> {
        match self.call(Call::Stats)? {
            (
                CallResult::Ok {
                    value: Value::Stats(s),
                    ..
                },
                _,
            ) => Ok(s),
            (CallResult::Err { code, document }, _) => Err(failure(code, document)),
            other => Err(protocol_error(&other.0)),
        }
    }

    /// Replaces the service's fault plan (an `hcs_sim::FaultPlan` as JSON; rules that name a
    /// system id apply to that system only).
    pub fn set_fault_plan(&self, plan: serde_json::Value) -> Result<(), Failure> {
        self.unit(Call::SetFaultPlan {
            plan: plan.to_string(),
        })
        .map(|_| ())
    }

    /// Removes every fault rule of the service.
    pub fn clear_faults(&self) -> Result<(), Failure> {
        self.unit(Call::ClearFaults).map(|_| ())
    }

    /// Releases the calls the service holds at fault gate `gate`.
    pub fn release(&self, gate: &str) -> Result<(), Failure> {
        self.unit(Call::Release { gate: gate.into() }).map(|_| ())
    }

    /// Crashes system `id` in the service (its unexpected exit).
    pub fn crash(&self, id: &str) -> Result<(), Failure> {
        self.unit(Call::Crash { id: id.into() }).map(|_| ())
    }

    /// How many calls the service holds at fault gate `gate`.
    pub fn blocked_on(&self, gate: &str) -> Result<usize, Failure> {
        match self.call(Call::BlockedOn { gate: gate.into() })? {
            (
                CallResult::Ok {
                    value: Value::Count { count },
                    ..
                },
                _,
            ) => Ok(count),
            (CallResult::Err { code, document }, _) => Err(failure(code, document)),
            other => Err(protocol_error(&other.0)),
        }
    }

    /// Ends a simulated service disconnect (one a fault plan caused) in the service.
    pub fn restart_service(&self) -> Result<(), Failure> {
        self.unit(Call::RestartService).map(|_| ())
    }

    /// Sends one call and waits for its answer (or for the connection to drop).
    ///
    /// The reader role is taken, when free, *before* the call is written: a caller preempted
    /// right after its write (the service's thread, woken by it, often runs first on a shared
    /// CPU) then finds its answer waiting when it runs again, instead of the watcher waking to
    /// read it and handing it over.
    fn call(&self, call: Call) -> Result<Answer, Failure> {
        let mailbox = Arc::new(Mailbox::default());
        let (id, role) = {
            let mut st = lock(&self.inner.state);
            if let Some(reason) = &st.dead {
                return Err(disconnected(reason));
            }
            let id = st.next_id;
            st.next_id += 1;
            st.waiting.push((id, mailbox.clone()));
            (id, !std::mem::replace(&mut st.reading, true))
        };
        let waiting = Waiting {
            inner: &self.inner,
            id,
            mailbox,
        };
        if role {
            // The reply is ours to read: it need not wake the watcher too.
            self.inner.set_watch(epoll::EventFlags::ONESHOT);
        }
        let frame = ClientFrame::Call { id, call };
        tracing::trace!(?frame, "hcs-simd client: frame out");
        let written = match encode(&frame) {
            Ok(bytes) => {
                let _w = lock(&self.inner.write);
                write_all(&self.inner.stream, &bytes).map_err(|e| {
                    let failure = disconnected(&format!("cannot write to the service: {e}"));
                    (failure.with_source(e), true)
                })
            }
            Err(e) => Err((
                Failure::with_document(HResult::E_INVALIDARG, e.to_string()),
                false,
            )),
        };
        if let Err((failure, broken)) = written {
            drop(waiting); // no longer waiting
            if broken {
                // The reader sees the same broken connection and tells every registration.
                let _ = self.inner.stream.shutdown(std::net::Shutdown::Both);
            }
            if role {
                self.inner.release();
            }
            return Err(failure);
        }
        self.inner.wait_answer(&waiting.mailbox, role)
    }

    fn unit(&self, call: Call) -> DriverResult<()> {
        match self.call(call)? {
            (
                CallResult::Ok {
                    document, pending, ..
                },
                _,
            ) => Ok(reply((), document, pending)),
            (CallResult::Err { code, document }, _) => Err(failure(code, document)),
        }
    }

    fn text(&self, call: Call) -> DriverResult<String> {
        match self.call(call)? {
            (
                CallResult::Ok {
                    value: Value::Text { text },
                    document,
                    pending,
                },
                _,
            ) => Ok(reply(text, document, pending)),
            (CallResult::Err { code, document }, _) => Err(failure(code, document)),
            (other, _) => Err(protocol_error(&other)),
        }
    }

    fn handle(&self, call: Call) -> DriverResult<u64> {
        match self.call(call)? {
            (
                CallResult::Ok {
                    value: Value::Handle { handle },
                    document,
                    pending,
                },
                _,
            ) => Ok(reply(handle, document, pending)),
            (CallResult::Err { code, document }, _) => Err(failure(code, document)),
            (other, _) => Err(protocol_error(&other)),
        }
    }

    /// A pending-capable call on context `ctx`: a pending answer marks `ctx` as waiting for a
    /// completion (so that it hears of a lost connection).
    fn pending_capable(&self, ctx: NotifyContext, call: Call) -> DriverResult<()> {
        let r = self.unit(call)?;
        if r.pending {
            lock(&self.inner.state).pending_added(ctx.raw(), 1);
        }
        Ok(r)
    }

    fn registered(&self, ctx: NotifyContext, call: Call) -> Result<CallbackHandle, Failure> {
        let h = self.handle(call)?.value;
        let cb = CallbackHandle::new(h).ok_or_else(|| protocol_error(&"a zero callback handle"))?;
        lock(&self.inner.state).callbacks.insert(h, ctx.raw());
        Ok(cb)
    }

    fn unregistered(&self, callback: CallbackHandle, call: Call) -> Result<(), Failure> {
        self.unit(call)?;
        lock(&self.inner.state).callbacks.remove(&callback.raw());
        Ok(())
    }

    fn process_info(&self, answer: Answer) -> DriverResult<(Option<u64>, ProcessInfo)> {
        match answer {
            (
                CallResult::Ok {
                    value:
                        Value::Process {
                            handle,
                            pid,
                            stdin,
                            stdout,
                            stderr,
                        },
                    document,
                    pending,
                },
                fds,
            ) => {
                let mut fds = fds.into_iter();
                let mut next = |wanted: bool| if wanted { fds.next().map(File::from) } else { None };
                let info = ProcessInfo {
                    pid,
                    stdin: next(stdin).map(PipeWriter::from_file),
                    stdout: next(stdout).map(PipeReader::from_file),
                    stderr: next(stderr).map(PipeReader::from_file),
                };
                Ok(reply((handle, info), document, pending))
            }
            (CallResult::Err { code, document }, _) => Err(failure(code, document)),
            (other, _) => Err(protocol_error(&other)),
        }
    }
}

impl Drop for ClientDriver {
    fn drop(&mut self) {
        self.disconnect();
    }
}

fn reply<T>(value: T, document: Option<String>, pending: bool) -> Reply<T> {
    let r = if pending {
        Reply::pending(value)
    } else {
        Reply::done(value)
    };
    match document {
        Some(d) => r.with_document(d),
        None => r,
    }
}

fn failure(code: u32, document: Option<String>) -> Failure {
    let mut f = Failure::new(HResult(code));
    f.document = document;
    f
}

/// The failure of every call once the service is gone.
fn disconnected(reason: &str) -> Failure {
    Failure::with_document(server_unavailable(), format!("hcs-simd: {reason}")).with_source(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        reason.to_owned(),
    ))
}

fn protocol_error(what: &dyn std::fmt::Debug) -> Failure {
    Failure::with_document(
        HResult::E_UNEXPECTED,
        format!("hcs-simd answered with an unexpected value: {what:?}"),
    )
}

fn write_all(stream: &UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match rustix::net::send(stream, bytes, rustix::net::SendFlags::NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What one read of the socket found.
enum Got {
    Data,
    WouldBlock,
}

impl Inner {
    /// The connection's state after the handshake: `decoder` holds what was read past it,
    /// `epoll` watches `stream` (armed).
    fn new(stream: UnixStream, decoder: Decoder, epoll: OwnedFd) -> Inner {
        Inner {
            stream,
            write: Mutex::new(()),
            state: Mutex::new(State {
                next_id: 1,
                ..State::default()
            }),
            reader: Mutex::new(Reader {
                decoder,
                fds: VecDeque::new(),
                buf: vec![0u8; 64 * 1024],
            }),
            epoll,
        }
    }

    fn gone(&self) -> Failure {
        let reason = lock(&self.state)
            .dead
            .clone()
            .unwrap_or_else(|| "the connection closed".into());
        disconnected(&reason)
    }

    /// Waits for the answer to a call already sent: reads the socket itself while it holds the
    /// reader role (`held`: taken before the call was written, the watch disarmed), otherwise
    /// waits for its answer or for the role to be handed to it.
    fn wait_answer(&self, mailbox: &Mailbox, held: bool) -> Result<Answer, Failure> {
        if !held {
            let mut role = match mailbox.try_take() {
                Some(Msg::Answer(a)) => return Ok(a),
                Some(Msg::Role) => true,
                Some(Msg::Closed) => return Err(self.gone()),
                None => false,
            };
            if !role {
                let mut st = lock(&self.state);
                if st.dead.is_none() && !st.reading {
                    st.reading = true;
                    role = true;
                }
            }
            if role {
                // The reply is ours to read: it need not wake the watcher too. (A role handed
                // over comes with the watch disarmed already.)
                self.set_watch(epoll::EventFlags::ONESHOT);
            } else {
                match mailbox.recv() {
                    Msg::Answer(a) => return Ok(a),
                    Msg::Role => {}
                    Msg::Closed => return Err(self.gone()),
                }
            }
        }
        // The role is ours: read until the answer is there.
        let mut r = lock(&self.reader);
        loop {
            if let Err(reason) = self.frames(&mut r) {
                self.shut(reason);
                break;
            }
            match mailbox.try_take() {
                Some(Msg::Answer(a)) => {
                    self.release();
                    return Ok(a);
                }
                // Only a waiter without the role is handed the role.
                Some(Msg::Role) | None => {}
                Some(Msg::Closed) => break,
            }
            if let Err(reason) = self.read_some(&mut r, true) {
                self.shut(reason);
                break;
            }
        }
        // The connection is gone; the answer may still have been delivered before.
        drop(r);
        match mailbox.recv() {
            Msg::Answer(a) => Ok(a),
            _ => Err(self.gone()),
        }
    }

    /// Handles every complete frame buffered.
    fn frames(&self, r: &mut Reader) -> Result<(), String> {
        loop {
            match r.decoder.next_frame::<ServerFrame>() {
                Ok(Some(frame)) => handle_frame(self, frame, &mut r.fds)?,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("bad frame from the service: {e}")),
            }
        }
    }

    /// One `recvmsg` into the decoder, with any descriptors that came along; with `block`,
    /// after waiting for bytes (or the end of the stream).
    ///
    /// A blocking wait is a `poll` for `POLLIN`, not a blocking `recvmsg`: a thread asleep in
    /// `recvmsg` is also woken each time the service reads what this side wrote (the kernel's
    /// write-space wake-up of a Unix socket reaches every sleeper on it, and only `poll`-style
    /// waiters filter it by event), which cost a second wake-up per call.
    fn read_some(&self, r: &mut Reader, block: bool) -> Result<Got, String> {
        if block {
            let mut fds = [rustix::event::PollFd::new(
                &self.stream,
                rustix::event::PollFlags::IN,
            )];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(format!("the connection failed: {e}")),
            }
        }
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(16))];
        let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
        let flags = rustix::net::RecvFlags::CMSG_CLOEXEC | rustix::net::RecvFlags::DONTWAIT;
        let msg = match rustix::net::recvmsg(
            &self.stream,
            &mut [IoSliceMut::new(&mut r.buf)],
            &mut control,
            flags,
        ) {
            Ok(m) => m,
            Err(rustix::io::Errno::INTR) => return Ok(Got::Data),
            Err(rustix::io::Errno::AGAIN) => return Ok(Got::WouldBlock),
            Err(e) => return Err(format!("the connection failed: {e}")),
        };
        for m in control.drain() {
            if let rustix::net::RecvAncillaryMessage::ScmRights(rights) = m {
                r.fds.extend(rights);
            }
        }
        if msg.bytes == 0 {
            return Err(match r.decoder.finish() {
                Ok(()) => "the service closed the connection".to_string(),
                Err(e) => format!("the service closed the connection: {e}"),
            });
        }
        let n = msg.bytes;
        let Reader { decoder, buf, .. } = r;
        decoder.push(&buf[..n]);
        Ok(Got::Data)
    }

    /// Reads and handles everything the socket holds now, without blocking.
    fn drain(&self, r: &mut Reader) -> Result<(), String> {
        loop {
            self.frames(r)?;
            if let Got::WouldBlock = self.read_some(r, false)? {
                return Ok(());
            }
        }
    }

    /// Lets the reader role go: to a caller still waiting for its answer, or free, re-arming
    /// the watcher (which then wakes at once if bytes arrived meanwhile).
    fn release(&self) {
        let next = {
            let mut st = lock(&self.state);
            match st.waiting.first() {
                Some((_, mailbox)) if st.dead.is_none() => Some(mailbox.clone()),
                _ => {
                    st.reading = false;
                    None
                }
            }
        };
        // The role goes with the message (`reading` stays set). Should its caller have left
        // meanwhile, free the role.
        if let Some(mailbox) = next {
            if mailbox.offer_role() {
                return;
            }
            lock(&self.state).reading = false;
        }
        self.set_watch(armed());
    }

    fn set_watch(&self, flags: epoll::EventFlags) {
        if let Err(e) = epoll::modify(&self.epoll, &self.stream, epoll::EventData::new_u64(0), flags) {
            tracing::warn!("hcs-simd client: cannot watch the connection: {e}");
        }
    }

    /// The connection is over: every call in flight fails, every context the client
    /// registered (or had a pending operation on) receives `ServiceDisconnect`.
    fn shut(&self, reason: String) {
        let (waiting, contexts) = {
            let mut st = lock(&self.state);
            if st.dead.is_some() {
                return;
            }
            tracing::debug!("hcs-simd client: disconnected: {reason}");
            st.dead = Some(reason);
            st.reading = false;
            let waiting = std::mem::take(&mut st.waiting);
            let mut contexts: Vec<u64> = st.callbacks.values().copied().collect();
            contexts.extend(st.pending.iter().filter(|(_, n)| **n > 0).map(|(c, _)| *c));
            contexts.sort_unstable();
            contexts.dedup();
            (waiting, contexts)
        };
        for (_, mailbox) in waiting {
            mailbox.close();
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        // The watcher wakes (the stream has ended) and leaves.
        self.set_watch(armed());
        for ctx in contexts {
            hcs::dispatch(ctx, NotificationKind::ServiceDisconnect, HResult::S_OK, None);
        }
    }
}

/// The watcher thread: takes the reader role when bytes arrive while no caller holds it
/// (notifications between calls), and ends with the connection.
fn watch(inner: &Inner) {
    let mut events = [epoll::Event {
        flags: epoll::EventFlags::empty(),
        data: epoll::EventData::new_u64(0),
    }; 4];
    // First what the handshake may have read past the welcome.
    let mut woken = true;
    loop {
        if woken {
            let take = {
                let mut st = lock(&inner.state);
                if st.dead.is_some() {
                    return;
                }
                // Held: the holder re-arms the watch when it lets the role go.
                !std::mem::replace(&mut st.reading, true)
            };
            if take {
                let mut r = lock(&inner.reader);
                match inner.drain(&mut r) {
                    Ok(()) => inner.release(),
                    Err(reason) => inner.shut(reason),
                }
            }
        }
        woken = match epoll::wait(&inner.epoll, &mut events[..], None) {
            Ok(n) => n > 0,
            Err(rustix::io::Errno::INTR) => false,
            Err(e) => {
                inner.shut(format!("cannot watch the connection: {e}"));
                return;
            }
        };
    }
}

fn handle_frame(inner: &Inner, frame: ServerFrame, fds: &mut VecDeque<OwnedFd>) -> Result<(), String> {
    tracing::trace!(?frame, "hcs-simd client: frame in");
    match frame {
        ServerFrame::Reply { id, result } => {
            let n = match &result {
                CallResult::Ok { value, .. } => value.fd_count(),
                CallResult::Err { .. } => 0,
            };
            if fds.len() < n {
                return Err(format!(
                    "a reply announced {n} descriptors but {} arrived",
                    fds.len()
                ));
            }
            let mine: Vec<OwnedFd> = fds.drain(..n).collect();
            let waiter = lock(&inner.state).take_waiting(id);
            match waiter {
                Some(mailbox) => mailbox.answer((result, mine)),
                None => tracing::warn!(id, "hcs-simd client: a reply to no call; ignored"),
            }
            Ok(())
        }
        ServerFrame::Notify {
            ctx,
            kind,
            status,
            payload,
        } => {
            let kind = decode_kind(kind);
            if kind.is_completion() {
                lock(&inner.state).pending_added(ctx, -1);
            }
            hcs::dispatch(ctx, kind, HResult(status), payload.as_deref());
            Ok(())
        }
        ServerFrame::Goodbye { reason } => Err(format!("the service is going away: {reason}")),
        ServerFrame::Welcome { .. } | ServerFrame::Refused { .. } => {
            Err("an out-of-order handshake frame from the service".into())
        }
    }
}

impl Driver for ClientDriver {
    fn name(&self) -> &str {
        "hcs-simd"
    }

    fn generation(&self) -> ApiGeneration {
        self.generation
    }

    fn enumerate_compute_systems(&self, query: &str) -> DriverResult<String> {
        self.text(Call::Enumerate { query: query.into() })
    }

    fn create_compute_system(
        &self,
        id: &str,
        configuration: &str,
        ctx: NotifyContext,
    ) -> DriverResult<SystemHandle> {
        let r = self.handle(Call::Create {
            id: id.into(),
            configuration: configuration.into(),
            ctx: ctx.raw(),
        })?;
        let h = SystemHandle::new(r.value).ok_or_else(|| protocol_error(&"a zero system handle"))?;
        if r.pending {
            lock(&self.inner.state).pending_added(ctx.raw(), 1);
        }
        Ok(reply(h, r.document, r.pending))
    }

    fn open_compute_system(&self, id: &str) -> DriverResult<SystemHandle> {
        let r = self.handle(Call::Open { id: id.into() })?;
        let h = SystemHandle::new(r.value).ok_or_else(|| protocol_error(&"a zero system handle"))?;
        Ok(reply(h, r.document, r.pending))
    }

    fn close_compute_system(&self, system: SystemHandle) -> Result<(), Failure> {
        self.unit(Call::Close { system: system.raw() }).map(|_| ())
    }

    fn start_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.pending_capable(
            ctx,
            Call::Start {
                system: system.raw(),
                options: options.into(),
                ctx: ctx.raw(),
            },
        )
    }

    fn shutdown_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.unit(Call::Shutdown {
            system: system.raw(),
            options: options.into(),
        })
    }

    fn terminate_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.unit(Call::Terminate {
            system: system.raw(),
            options: options.into(),
        })
    }

    fn pause_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.pending_capable(
            ctx,
            Call::Pause {
                system: system.raw(),
                options: options.into(),
                ctx: ctx.raw(),
            },
        )
    }

    fn resume_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.pending_capable(
            ctx,
            Call::Resume {
                system: system.raw(),
                options: options.into(),
                ctx: ctx.raw(),
            },
        )
    }

    fn save_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.pending_capable(
            ctx,
            Call::Save {
                system: system.raw(),
                options: options.into(),
                ctx: ctx.raw(),
            },
        )
    }

    fn get_compute_system_properties(&self, system: SystemHandle, query: &str) -> DriverResult<String> {
        self.text(Call::Properties {
            system: system.raw(),
            query: query.into(),
        })
    }

    fn modify_compute_system(&self, system: SystemHandle, configuration: &str) -> DriverResult<()> {
        self.unit(Call::Modify {
            system: system.raw(),
            configuration: configuration.into(),
        })
    }

    fn register_compute_system_callback(
        &self,
        system: SystemHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        self.registered(
            ctx,
            Call::RegisterSystem {
                system: system.raw(),
                ctx: ctx.raw(),
            },
        )
    }

    fn unregister_compute_system_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        self.unregistered(
            callback,
            Call::UnregisterSystem {
                callback: callback.raw(),
            },
        )
    }

    fn create_process(
        &self,
        system: SystemHandle,
        parameters: &str,
    ) -> DriverResult<(ProcessHandle, ProcessInfo)> {
        let answer = self.call(Call::CreateProcess {
            system: system.raw(),
            parameters: parameters.into(),
        })?;
        let r = self.process_info(answer)?;
        let (handle, info) = r.value;
        let h = handle
            .and_then(ProcessHandle::new)
            .ok_or_else(|| protocol_error(&"a process without a handle"))?;
        Ok(reply((h, info), r.document, r.pending))
    }

    fn open_process(&self, system: SystemHandle, pid: u32) -> DriverResult<ProcessHandle> {
        let r = self.handle(Call::OpenProcess {
            system: system.raw(),
            pid,
        })?;
        let h = ProcessHandle::new(r.value).ok_or_else(|| protocol_error(&"a zero process handle"))?;
        Ok(reply(h, r.document, r.pending))
    }

    fn close_process(&self, process: ProcessHandle) -> Result<(), Failure> {
        self.unit(Call::CloseProcess {
            process: process.raw(),
        })
        .map(|_| ())
    }

    fn terminate_process(&self, process: ProcessHandle) -> DriverResult<()> {
        self.unit(Call::TerminateProcess {
            process: process.raw(),
        })
    }

    fn signal_process(&self, process: ProcessHandle, options: &str) -> DriverResult<()> {
        self.unit(Call::SignalProcess {
            process: process.raw(),
            options: options.into(),
        })
    }

    fn get_process_info(&self, process: ProcessHandle) -> DriverResult<ProcessInfo> {
        let answer = self.call(Call::ProcessInfo {
            process: process.raw(),
        })?;
        let r = self.process_info(answer)?;
        Ok(reply(r.value.1, r.document, r.pending))
    }

    fn get_process_properties(&self, process: ProcessHandle) -> DriverResult<String> {
        self.text(Call::ProcessProperties {
            process: process.raw(),
        })
    }

    fn modify_process(&self, process: ProcessHandle, settings: &str) -> DriverResult<()> {
        self.unit(Call::ModifyProcess {
            process: process.raw(),
            settings: settings.into(),
        })
    }

    fn register_process_callback(
        &self,
        process: ProcessHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        self.registered(
            ctx,
            Call::RegisterProcess {
                process: process.raw(),
                ctx: ctx.raw(),
            },
        )
    }

    fn unregister_process_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        self.unregistered(
            callback,
            Call::UnregisterProcess {
                callback: callback.raw(),
            },
        )
    }

    fn get_service_properties(&self, query: &str) -> DriverResult<String> {
        self.text(Call::ServiceProperties { query: query.into() })
    }

    fn modify_service_settings(&self, settings: &str) -> DriverResult<()> {
        self.unit(Call::ModifyServiceSettings {
            settings: settings.into(),
        })
    }

    fn cancel_pending(&self, ctx: NotifyContext, kind: NotificationKind) -> Result<(), Failure> {
        self.unit(Call::CancelPending {
            ctx: ctx.raw(),
            kind: encode_kind(kind),
        })
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `Inner` over one end of a socket pair (the other end is returned), not connected to
    /// any service: enough for the reader-role bookkeeping.
    fn inner() -> (Arc<Inner>, UnixStream) {
        let (stream, peer) = UnixStream::pair().expect("socketpair");
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll");
        epoll::add(&epoll, &stream, epoll::EventData::new_u64(0), armed()).expect("watch");
        (Arc::new(Inner::new(stream, Decoder::new(), epoll)), peer)
    }

    fn unit_answer() -> Answer {
        (
            CallResult::Ok {
                value: Value::Unit,
                document: None,
                pending: false,
            },
            Vec::new(),
        )
    }

    /// Lists a waiting call, as `ClientDriver::call` does.
    fn waiting(inner: &Inner, id: u64) -> Waiting<'_> {
        let mailbox = Arc::new(Mailbox::default());
        lock(&inner.state).waiting.push((id, mailbox.clone()));
        Waiting { inner, id, mailbox }
    }

    #[test]
    fn a_sleeping_caller_wakes_for_its_answer_and_for_the_end() {
        let mailbox = Arc::new(Mailbox::default());
        let m2 = mailbox.clone();
        let t = std::thread::spawn(move || matches!(m2.recv(), Msg::Answer(_)));
        std::thread::sleep(Duration::from_millis(20));
        mailbox.answer(unit_answer());
        assert!(t.join().unwrap(), "the caller did not get its answer");

        let mailbox = Arc::new(Mailbox::default());
        let m2 = mailbox.clone();
        let t = std::thread::spawn(move || matches!(m2.recv(), Msg::Closed));
        std::thread::sleep(Duration::from_millis(20));
        mailbox.close();
        assert!(t.join().unwrap(), "the caller did not learn of the end");
    }

    #[test]
    fn a_role_handed_before_the_answer_is_taken_first() {
        let mailbox = Mailbox::default();
        assert!(mailbox.offer_role());
        mailbox.answer(unit_answer());
        assert!(matches!(mailbox.try_take(), Some(Msg::Role)));
        assert!(matches!(mailbox.try_take(), Some(Msg::Answer(_))));
        assert!(mailbox.try_take().is_none());
    }

    #[test]
    fn a_caller_that_left_is_unlisted_and_refuses_the_role() {
        let (inner, _peer) = inner();
        let w = waiting(&inner, 7);
        let mailbox = w.mailbox.clone();
        drop(w);
        assert!(
            lock(&inner.state).waiting.is_empty(),
            "a caller that left is still listed"
        );
        assert!(!mailbox.offer_role(), "a role was handed to a caller that left");
    }

    #[test]
    fn a_role_handed_to_a_caller_that_leaves_goes_on_to_the_next_or_is_freed() {
        let (inner, _peer) = inner();
        lock(&inner.state).reading = true; // the role is held
        let a = waiting(&inner, 1);
        let b = waiting(&inner, 2);
        // The holder lets the role go to one of the two callers (`first`)...
        inner.release();
        assert!(
            lock(&inner.state).reading,
            "the role went free with callers waiting"
        );
        // ...which leaves (a failed write, an unwind) before taking it: it goes on to `second`.
        let (first, second) = if lock(&a.mailbox.mail).role {
            (a, b)
        } else {
            (b, a)
        };
        drop(first);
        assert!(
            matches!(second.mailbox.try_take(), Some(Msg::Role)),
            "the role was not passed on to the other waiting caller"
        );
        // `second` is handed the role again and leaves without taking it: with no caller
        // left to take it, the guard frees it.
        assert!(second.mailbox.offer_role());
        drop(second);
        assert!(!lock(&inner.state).reading, "the role was lost");
        assert!(lock(&inner.state).waiting.is_empty());
    }
}

//! The wire protocol between `hcs-simd` and its clients (`docs/hcs-simd-protocol.md` is the
//! prose version): length-prefixed frames (a 4-byte little-endian length, then that many bytes
//! of one frame in the `postcard` encoding of the types below), at most [`MAX_FRAME`] bytes
//! each, a versioned handshake ([`ClientFrame::Hello`] / [`ServerFrame::Welcome`]), then calls
//! tagged with a client-chosen id and answered by id, and notifications the service sends
//! whenever they happen. Process stdio travels as file descriptors (`SCM_RIGHTS`) attached to
//! the first byte of the reply that announces them. This module only encodes and decodes; it
//! does no I/O.
//!
//! The encoding is positional: a variant is its index in declaration order, a struct its
//! fields in order. New variants go at the end of an enum; `Hello` (the first client variant)
//! and `Welcome` and `Refused` (the first two service variants) keep their index and fields in
//! every version, so that a peer of another version is still told so.

use hcs::{HResult, NotificationKind};
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks; a [`ClientFrame::Hello`] with another is refused.
pub const PROTOCOL_VERSION: u32 = 2;

/// The magic string of the handshake (guards against a client of another service).
pub const MAGIC: &str = "hcs-simd";

/// The largest frame body either side accepts, in bytes (the 4-byte length prefix excluded).
pub const MAX_FRAME: usize = 4 << 20;

/// The size of the length prefix.
pub const PREFIX: usize = 4;

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// The first frame of every connection, and only the first.
    Hello {
        /// Must be [`MAGIC`].
        magic: String,
        /// Must be [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// One call; answered by a [`ServerFrame::Reply`] with the same id.
    Call {
        /// Chosen by the client; echoed in the reply.
        id: u64,
        /// The call.
        call: Call,
    },
}

/// What the service sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// The handshake was accepted.
    Welcome {
        /// The service's protocol version.
        version: u32,
        /// The API generation the simulated service speaks (`"V1"` or `"V2"`).
        generation: Generation,
        /// The service's process id (for logs).
        pid: u32,
    },
    /// The handshake (or the peer) was refused; the service closes the connection after it.
    Refused {
        /// Why.
        reason: String,
    },
    /// The answer to call `id`.
    Reply {
        /// The id of the call.
        id: u64,
        /// What the simulated HCS said.
        result: CallResult,
    },
    /// A notification for the client's callback context `ctx`.
    Notify {
        /// The client's own context value, as it passed it in a call.
        ctx: u64,
        /// The notification kind ([`encode_kind`]).
        kind: u32,
        /// The HRESULT.
        status: u32,
        /// The payload, if any.
        payload: Option<String>,
    },
    /// The service is shutting down; the connection closes after this frame.
    Goodbye {
        /// Why.
        reason: String,
    },
}

/// The API generation, on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Generation {
    /// `vmcompute.dll` semantics.
    V1,
    /// `computecore.dll` semantics.
    V2,
}

impl From<hcs::ApiGeneration> for Generation {
    fn from(g: hcs::ApiGeneration) -> Self {
        match g {
            hcs::ApiGeneration::V1 => Generation::V1,
            hcs::ApiGeneration::V2 => Generation::V2,
        }
    }
}

impl From<Generation> for hcs::ApiGeneration {
    fn from(g: Generation) -> Self {
        match g {
            Generation::V1 => hcs::ApiGeneration::V1,
            Generation::V2 => hcs::ApiGeneration::V2,
        }
    }
}

/// One call: a method of the driver contract (handles are the service's, valid only on the
/// connection that obtained them; `ctx` is the client's own callback context) or a control
/// request of the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the fields are the driver method's parameters, named alike
pub enum Call {
    /// `HcsEnumerateComputeSystems`.
    Enumerate { query: String },
    /// `HcsCreateComputeSystem` (pending-capable).
    Create {
        id: String,
        configuration: String,
        ctx: u64,
    },
    /// `HcsOpenComputeSystem`.
    Open { id: String },
    /// `HcsCloseComputeSystem`.
    Close { system: u64 },
    /// `HcsStartComputeSystem` (pending-capable).
    Start { system: u64, options: String, ctx: u64 },
    /// `HcsShutdownComputeSystem`.
    Shutdown { system: u64, options: String },
    /// `HcsTerminateComputeSystem`.
    Terminate { system: u64, options: String },
    /// `HcsPauseComputeSystem` (pending-capable).
    Pause { system: u64, options: String, ctx: u64 },
    /// `HcsResumeComputeSystem` (pending-capable).
    Resume { system: u64, options: String, ctx: u64 },
    /// `HcsSaveComputeSystem` (pending-capable).
    Save { system: u64, options: String, ctx: u64 },
    /// `HcsGetComputeSystemProperties`.
    Properties { system: u64, query: String },
    /// `HcsModifyComputeSystem`.
    Modify { system: u64, configuration: String },
    /// `HcsRegisterComputeSystemCallback`.
    RegisterSystem { system: u64, ctx: u64 },
    /// `HcsUnregisterComputeSystemCallback`.
    UnregisterSystem { callback: u64 },
    /// `HcsCreateProcess`; the reply carries the stdio descriptors.
    CreateProcess { system: u64, parameters: String },
    /// `HcsOpenProcess`.
    OpenProcess { system: u64, pid: u32 },
    /// `HcsCloseProcess`.
    CloseProcess { process: u64 },
    /// `HcsTerminateProcess`.
    TerminateProcess { process: u64 },
    /// `HcsSignalProcess`.
    SignalProcess { process: u64, options: String },
    /// `HcsGetProcessInfo`.
    ProcessInfo { process: u64 },
    /// `HcsGetProcessProperties`.
    ProcessProperties { process: u64 },
    /// `HcsModifyProcess`.
    ModifyProcess { process: u64, settings: String },
    /// `HcsRegisterProcessCallback`.
    RegisterProcess { process: u64, ctx: u64 },
    /// `HcsUnregisterProcessCallback`.
    UnregisterProcess { callback: u64 },
    /// `HcsGetServiceProperties`.
    ServiceProperties { query: String },
    /// `HcsModifyServiceSettings`.
    ModifyServiceSettings { settings: String },
    /// `Driver::cancel_pending` for the client context `ctx` (`kind` as [`encode_kind`]).
    CancelPending { ctx: u64, kind: u32 },
    /// Control: replaces the service's fault plan (the JSON text of an `hcs_sim::FaultPlan`;
    /// rules may name a system id, which is how a plan targets one system).
    SetFaultPlan { plan: String },
    /// Control: removes every fault rule.
    ClearFaults,
    /// Control: releases the calls held at fault gate `gate`.
    Release { gate: String },
    /// Control: crashes system `id` (its unexpected exit).
    Crash { id: String },
    /// Control: how many calls are held at fault gate `gate` ([`Value::Count`]).
    BlockedOn { gate: String },
    /// Control: ends a simulated service disconnect (`hcs_sim::Simulator::restart_service`).
    RestartService,
    /// Control: the service's accounting ([`Stats`]).
    Stats,
}

/// The answer to a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CallResult {
    /// Success, or pending.
    Ok {
        /// The call's output.
        value: Value,
        /// The result document, if any.
        document: Option<String>,
        /// Accepted; completes later with a notification.
        pending: bool,
    },
    /// Failure.
    Err {
        /// The HRESULT.
        code: u32,
        /// The result document, if any.
        document: Option<String>,
    },
}

/// The output of a successful call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// Nothing.
    Unit,
    /// A system, process or callback handle.
    Handle {
        /// The handle.
        handle: u64,
    },
    /// A JSON document.
    Text {
        /// The document.
        text: String,
    },
    /// Process information. The descriptors of the streams marked `true` are attached to the
    /// frame (`SCM_RIGHTS`), in the order stdin, stdout, stderr.
    Process {
        /// The new process handle (create only).
        handle: Option<u64>,
        /// The process id.
        pid: u32,
        /// A stdin descriptor is attached.
        stdin: bool,
        /// A stdout descriptor is attached.
        stdout: bool,
        /// A stderr descriptor is attached.
        stderr: bool,
    },
    /// The service's accounting.
    Stats(Stats),
    /// A number.
    Count {
        /// The number.
        count: usize,
    },
}

impl Value {
    /// How many descriptors travel with a reply carrying this value.
    pub fn fd_count(&self) -> usize {
        match self {
            Value::Process {
                stdin,
                stdout,
                stderr,
                ..
            } => [stdin, stdout, stderr].into_iter().filter(|b| **b).count(),
            _ => 0,
        }
    }
}

/// The service's accounting, for leak checks and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Open client connections (handshake done or not).
    pub connections: usize,
    /// Open system handles in the simulator (all connections).
    pub systems: usize,
    /// Open process handles in the simulator.
    pub processes: usize,
    /// Live callback registrations in the simulator.
    pub callbacks: usize,
    /// Compute systems the simulator still knows.
    pub live_systems: usize,
    /// Host processes still running.
    pub host_processes: usize,
    /// Server-side notification contexts (one per client context in use).
    pub contexts: usize,
    /// System handles held by the asking connection.
    pub mine_systems: usize,
    /// Process handles held by the asking connection.
    pub mine_processes: usize,
    /// Callback registrations held by the asking connection.
    pub mine_callbacks: usize,
    /// Threads of the service process (from `/proc/self/task`; 0 where unknown).
    pub threads: usize,
}

/// Encodes a notification kind for the wire: its V1 value ([`NotificationKind::v1_value`]).
pub fn encode_kind(kind: NotificationKind) -> u32 {
    kind.v1_value()
}

/// Decodes a notification kind encoded by [`encode_kind`].
pub fn decode_kind(raw: u32) -> NotificationKind {
    if raw == NotificationKind::LiveMigration.v1_value() {
        NotificationKind::LiveMigration
    } else {
        NotificationKind::from_v1(raw)
    }
}

/// The status of a notification, for the wire.
pub fn encode_status(status: HResult) -> u32 {
    status.0
}

/// Why a byte stream is not a valid sequence of frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than [`MAX_FRAME`] bytes.
    #[error("oversized frame: {0} bytes announced (at most {MAX_FRAME})")]
    Oversized(usize),
    /// The body is not a frame of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The stream ended inside a frame.
    #[error("truncated frame: the stream ended {0} bytes into a frame")]
    Truncated(usize),
}

/// Encodes one frame: length prefix and `postcard` body. Fails only when the body would
/// exceed [`MAX_FRAME`].
pub fn encode<T: Serialize>(frame: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&[0u8; PREFIX]);
    let mut out = postcard::to_extend(frame, out).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let body = out.len() - PREFIX;
    if body > MAX_FRAME {
        return Err(FrameError::Oversized(body));
    }
    let len = u32::try_from(body).map_err(|_| FrameError::Oversized(body))?;
    out[..PREFIX].copy_from_slice(&len.to_le_bytes());
    Ok(out)
}

/// Decodes one frame body: exactly one frame, nothing after it.
pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, FrameError> {
    match postcard::take_from_bytes(body) {
        Ok((frame, [])) => Ok(frame),
        Ok((_, rest)) => Err(FrameError::Malformed(format!(
            "{} bytes after the end of the frame",
            rest.len()
        ))),
        Err(e) => Err(FrameError::Malformed(e.to_string())),
    }
}

/// An incremental frame splitter: feed it bytes as they arrive, take whole frame bodies out.
/// It checks the announced length before buffering the body, so an oversized frame is refused
/// after its 4-byte prefix.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame body, `Ok(None)` when more bytes are needed, or the error that
    /// makes the rest of the stream unreadable.
    pub fn next_body(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        Ok(self.take_body()?.map(<[u8]>::to_vec))
    }

    /// The next whole frame, decoded as `T` (straight from the buffer).
    pub fn next_frame<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<T>, FrameError> {
        match self.take_body()? {
            Some(body) => decode(body).map(Some),
            None => Ok(None),
        }
    }

    /// Consumes the next whole frame body and lends it out until the next call.
    fn take_body(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let avail = &self.buf[self.start..];
        let Some(prefix) = avail.get(..PREFIX) else {
            return Ok(None);
        };
        let mut len = [0u8; PREFIX];
        len.copy_from_slice(prefix);
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::Oversized(len));
        }
        if avail.len() < PREFIX + len {
            return Ok(None);
        }
        let at = self.start + PREFIX;
        self.start = at + len;
        Ok(Some(&self.buf[at..at + len]))
    }

    /// Bytes received but not yet returned as a frame (non-zero at end of stream means a
    /// truncated frame: [`Decoder::finish`]).
    pub fn pending_bytes(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Checks the end of the stream: an error when it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.pending_bytes() {
            0 => Ok(()),
            n => Err(FrameError::Truncated(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_the_decoder_in_any_split() {
        let frames = vec![
            ClientFrame::Hello {
                magic: MAGIC.into(),
                version: PROTOCOL_VERSION,
            },
            ClientFrame::Call {
                id: 7,
                call: Call::Create {
                    id: "a".into(),
                    configuration: "{}".into(),
                    ctx: 3,
                },
            },
            ClientFrame::Call {
                id: 8,
                call: Call::Stats,
            },
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(|f| encode(f).unwrap()).collect();
        for chunk in [1, 3, 5, 64, bytes.len()] {
            let mut d = Decoder::new();
            let mut out = Vec::new();
            for piece in bytes.chunks(chunk) {
                d.push(piece);
                while let Some(f) = d.next_frame::<ClientFrame>().unwrap() {
                    out.push(f);
                }
            }
            assert_eq!(out, frames);
            d.finish().unwrap();
        }
    }

    /// The bytes `docs/hcs-simd-protocol.md` shows for a handshake; `Hello` is client variant
    /// 0 and `Welcome` service variant 0 in every version.
    #[test]
    fn the_handshake_bytes_are_those_of_the_protocol_document() {
        let hello = encode(&ClientFrame::Hello {
            magic: MAGIC.into(),
            version: 2,
        })
        .unwrap();
        assert_eq!(hello, [&[11, 0, 0, 0, 0, 8][..], b"hcs-simd", &[2]].concat());
        let welcome = encode(&ServerFrame::Welcome {
            version: 2,
            generation: Generation::V1,
            pid: 4242,
        })
        .unwrap();
        assert_eq!(welcome, [5, 0, 0, 0, 0, 2, 0, 0x92, 0x21]);
        let refused = encode(&ServerFrame::Refused { reason: "no".into() }).unwrap();
        assert_eq!(refused, [4, 0, 0, 0, 1, 2, b'n', b'o']);
    }

    #[test]
    fn bytes_after_a_frame_are_refused() {
        let mut f = encode(&ClientFrame::Call {
            id: 1,
            call: Call::Stats,
        })
        .unwrap();
        f.push(0);
        assert_eq!(
            decode::<ClientFrame>(&f[PREFIX..]),
            Err(FrameError::Malformed("1 bytes after the end of the frame".into()))
        );
    }

    #[test]
    fn an_oversized_prefix_is_refused_before_the_body() {
        let mut d = Decoder::new();
        d.push(&((MAX_FRAME as u32) + 1).to_le_bytes());
        assert_eq!(d.next_body(), Err(FrameError::Oversized(MAX_FRAME + 1)));
    }

    #[test]
    fn a_truncated_stream_is_reported() {
        let mut d = Decoder::new();
        let f = encode(&ClientFrame::Call {
            id: 1,
            call: Call::Stats,
        })
        .unwrap();
        d.push(&f[..f.len() - 1]);
        assert_eq!(d.next_body(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated(f.len() - 1)));
    }

    #[test]
    fn kinds_round_trip() {
        for k in NotificationKind::TRACKED {
            assert_eq!(decode_kind(encode_kind(k)), k);
        }
        assert_eq!(decode_kind(0x6), NotificationKind::Other(0x6));
    }
}

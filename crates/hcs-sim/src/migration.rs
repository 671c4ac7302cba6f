//! Live migration between simulators (design §10.3): a `VirtualMachine` becomes a simulated VM
//! with a synthetic guest memory image, copied to another simulator over a real TCP connection
//! in pre-copy rounds, then a blackout for the last round, verified by checksums.
//!
//! # What is modelled, and what is assumed
//!
//! * **Calls** (V2 only; a V1 simulator answers `E_NOTIMPL`, as `vmcompute.dll` has no such
//!   export): initialize on source (a running VM; a `Container` is refused with Win32
//!   `ERROR_NOT_SUPPORTED`: its processes are host processes), start on source / destination
//!   start (the stream is duplicated and kept by the session), transfer (synchronous, on the
//!   caller's thread: no thread is started), finalize (`Stop` on the source makes the VM exit by
//!   itself, `GracefulExit`; `Resume` on the destination makes it `Running`; `Stop` on the
//!   destination discards it, `ForcedExit`), cancel (optional: [`MigrationConfig::cancel_export`]).
//!   Every call goes through the fault plan (fail, delay, block rules by method).
//! * **The guest**: memory sized from `ComputeTopology.Memory.SizeInMB`
//!   ([`MigrationConfig::default_memory_mb`] when absent), filled with pseudo-random bytes at
//!   initialize; a synthetic guest dirties [`MigrationConfig::dirty_pages_per_sec`] random 4 KiB
//!   pages per second of transfer time (modelled between rounds, so no thread runs it).
//! * **Pre-copy**: round 0 sends all memory, each later round the pages dirtied meanwhile, until
//!   the dirty set is at most [`MigrationConfig::blackout_threshold_pages`] or
//!   [`MigrationConfig::max_rounds`] rounds ran; then the blackout: the guest stops dirtying, the
//!   last dirty pages are sent and, with `ChecksumVerification` in the initialize options, a
//!   checksum of the whole image the destination verifies; the destination acknowledges. The blackout time runs from `BlackoutStarted` to the
//!   verified image on the destination.
//! * **Events (the order is an assumption: HCS documents none).** Source: `SetupDone` (at start)
//!   → `TransferInProgress` (per round, details `{Round, BytesTransferred, DirtyPages}`) →
//!   `BlackoutStarted` → `OfflineDone` → `MigrationDone(Success)`. Destination:
//!   `BlackoutExited{BlackoutDurationMilliseconds, BlackoutStopTimestamp,
//!   BlackoutDurationMicroseconds (simulator extension)}` → `MigrationDone(Success)`. On failure
//!   the source reports `MigrationFailed(result)` then `MigrationRecoveryDone(Success)` (its VM
//!   keeps running) — unless its VM crashed (then `MigrationFailed(SourceMigrationFailed)` and
//!   the exit) — and the destination `MigrationDone(result)`. `result` is `MigrationCancelled`
//!   after a cancel, `GuestInitiatedCancellation` after a guest cancel (the destination sees
//!   `MigrationCancelled`), and for a broken connection the *other* side's failure
//!   (`DestinationMigrationFailed` on the source, `SourceMigrationFailed` on the destination;
//!   assumed: neither can tell a dead peer from a dead link). Events reach a system's
//!   registrations only after `enable_live_migration_events`.
//! * **Processes**: the VM's synthetic (scripted-backend) processes move with it: their pids,
//!   command lines, behaviour and remaining runtime are sent at the end of the blackout and the
//!   processes are created in the destination VM when it resumes (without handles: open them by
//!   pid). Host-backend processes are host processes and do not move (they end with the source
//!   VM).
//! * **Codes**: a cancelled transfer fails with Win32 `ERROR_CANCELLED` in HRESULT form, a broken
//!   connection with `HCS_E_CONNECTION_CLOSED`, a crashed VM with `HCS_E_UNEXPECTED_EXIT`, a bad
//!   peer (session id, memory size, checksum, protocol) with `HCS_E_PROTOCOL_ERROR`, a step in the
//!   wrong phase (and a cancel after the transfer finished) with `HCS_E_INVALID_STATE`.
//! * **Cancel** interrupts a running transfer by shutting the session's stream down (after an
//!   `Abort` frame when the source can send one).
//! * **Accounting**: a session (and its socket) exists from initialize / destination start until
//!   finalize, and is dropped when its system stops or goes away; [`crate::Simulator::leaks`]
//!   lists the rest.

use crate::codes;
use crate::documents::rfc3339;
use crate::engine::Engine;
use crate::model::{ProcKind, StopKind, SystemState};
use crate::sync::lock;
use hcs::{ApiGeneration, Failure, HResult, Method, MigrationTransport, NotificationKind, SystemHandle};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Bytes in a guest page.
pub const PAGE_SIZE: usize = 4096;
const MAGIC: &[u8; 8] = b"HCSSIMLM";
const TAG_DATA: u8 = 1;
const TAG_ROUND_END: u8 = 2;
const TAG_BLACKOUT: u8 = 3;
const TAG_END: u8 = 4;
const TAG_ABORT: u8 = 5;
const TAG_PROCESSES: u8 = 6;
const ABORT_CANCEL: u8 = 1;
const ABORT_GUEST: u8 = 2;
/// Win32 `ERROR_CANCELLED` in HRESULT form.
const CANCELLED: HResult = HResult(0x8007_0000 | 0x4C7);
const NOT_SUPPORTED: HResult = HResult(0x8007_0000 | 0x32);

/// A fault injected into the simulator's migration, at the end of a pre-copy round (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationFault {
    /// The source VM crashes (set on the source simulator).
    CrashSourceAtRound(u32),
    /// The destination VM crashes (set on the destination simulator).
    CrashDestinationAtRound(u32),
    /// The connection is cut (set on the source simulator).
    CutTransportAtRound(u32),
    /// The guest cancels the migration (set on the source simulator).
    GuestCancelAtRound(u32),
    /// The source's transfer stops and waits until [`crate::Simulator::release_migration`] or a
    /// cancel (to cancel "during the transfer" deterministically).
    HoldAtRound(u32),
}

/// How the simulator migrates ([`crate::Simulator::set_migration_config`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationConfig {
    /// Pages the synthetic guest dirties per second of transfer. Default 0.
    pub dirty_pages_per_sec: u64,
    /// The dirty set small enough for the blackout. Default 64 pages (256 KiB).
    pub blackout_threshold_pages: usize,
    /// Most pre-copy rounds before the blackout is forced. Default 8.
    pub max_rounds: u32,
    /// Largest data frame on the wire. Default 1 MiB.
    pub chunk_bytes: usize,
    /// Memory of a VM whose document has no `SizeInMB`. Default 16.
    pub default_memory_mb: u64,
    /// Whether `HcsCancelLiveMigration` exists (the newest export). Default `true`.
    pub cancel_export: bool,
    /// An injected fault, if any.
    pub fault: Option<MigrationFault>,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            dirty_pages_per_sec: 0,
            blackout_threshold_pages: 64,
            max_rounds: 8,
            chunk_bytes: 1 << 20,
            default_memory_mb: 16,
            cancel_export: true,
            fault: None,
        }
    }
}

/// What one finished (or failed) transfer did, per side ([`crate::Simulator::migration_reports`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The system id.
    pub id: String,
    /// `true` on the source side.
    pub source: bool,
    /// `true` when the transfer succeeded.
    pub ok: bool,
    /// Pre-copy rounds (the blackout round not counted).
    pub rounds: u32,
    /// Memory bytes sent (source) or received (destination), all rounds.
    pub bytes: u64,
    /// Size of the guest image.
    pub memory_bytes: u64,
    /// Pages dirty when the blackout began.
    pub blackout_pages: u64,
    /// Blackout duration (source: until the acknowledgement; destination: until verified).
    pub blackout: Duration,
    /// Checksum of the image (source: sent; destination: computed).
    pub checksum: u64,
    /// Wall time of the whole transfer call.
    pub elapsed: Duration,
}

/// The synthetic guest of a simulated VM.
struct Guest {
    memory: Vec<u8>,
    dirty: Vec<u64>,
    rng: u64,
    carry: f64,
}

impl Guest {
    fn new(bytes: usize, seed: u64, fill: bool) -> Guest {
        let mut memory = vec![0u8; bytes];
        let mut rng = seed | 1;
        if fill {
            for chunk in memory.chunks_exact_mut(8) {
                rng = xorshift(rng);
                chunk.copy_from_slice(&rng.to_le_bytes());
            }
        }
        let pages = bytes.div_ceil(PAGE_SIZE);
        Guest {
            memory,
            dirty: vec![0; pages.div_ceil(64)],
            rng,
            carry: 0.0,
        }
    }
    fn pages(&self) -> usize {
        self.memory.len().div_ceil(PAGE_SIZE)
    }
    /// The guest ran for `elapsed` at `rate` pages/s: dirties that many random pages.
    fn run_for(&mut self, elapsed: Duration, rate: u64) {
        let want = rate as f64 * elapsed.as_secs_f64() + self.carry;
        let n = want.floor() as u64;
        self.carry = want - n as f64;
        let pages = self.pages() as u64;
        if pages == 0 {
            return;
        }
        for _ in 0..n {
            self.rng = xorshift(self.rng);
            let p = (self.rng % pages) as usize;
            let at = p * PAGE_SIZE;
            let end = (at + 8).min(self.memory.len());
            let stamp = self.rng.to_le_bytes();
            self.memory[at..end].copy_from_slice(&stamp[..end - at]);
            self.dirty[p / 64] |= 1 << (p % 64);
        }
    }
    fn take_dirty(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        for (w, bits) in self.dirty.iter_mut().enumerate() {
            let mut b = std::mem::take(bits);
            while b != 0 {
                let i = b.trailing_zeros() as usize;
                out.push(w * 64 + i);
                b &= b - 1;
            }
        }
        out
    }
    fn checksum(&self) -> u64 {
        checksum(&self.memory)
    }
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// A 64-bit checksum of a memory image (FNV-style over 8-byte words, then the tail).
pub fn checksum(memory: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = memory.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        h = (h ^ v).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(5);
    }
    for b in words.remainder() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ memory.len() as u64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Initialized,
    Started,
    Transferring,
    Transferred,
    Failed,
    Cancelled,
}

struct Session {
    id: String,
    source: bool,
    phase: Mutex<Phase>,
    session_id: Mutex<u32>,
    stream: Mutex<Option<TcpStream>>,
    /// Held while a frame is written (so a cancel's `Abort` frame never splits one).
    writer: Mutex<()>,
    cancelled: AtomicBool,
    /// `ChecksumVerification` of the initialize options (source): the image's checksum is sent
    /// at the end of the blackout and verified by the destination.
    verify: AtomicBool,
}

impl Session {
    fn shutdown(&self) {
        if let Some(s) = lock(&self.stream).as_ref() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
    fn close_stream(&self) {
        lock(&self.stream).take();
    }
}

#[derive(Default)]
struct Hold {
    held: bool,
    released: bool,
}

/// The migration state of one simulator.
#[derive(Default)]
pub(crate) struct MigrationHost {
    config: Mutex<MigrationConfig>,
    sessions: Mutex<HashMap<u64, Arc<Session>>>,
    guests: Mutex<HashMap<u64, Arc<Mutex<Guest>>>>,
    events: Mutex<HashSet<u64>>,
    reports: Mutex<Vec<MigrationReport>>,
    hold: Mutex<Hold>,
    hold_cv: Condvar,
    /// Synthetic processes received by a destination, created at finalize `Resume`.
    moved: Mutex<HashMap<u64, Vec<MovedProcess>>>,
}

/// A scripted (synthetic) process of a migrating VM, as it travels.
#[derive(Debug, Clone)]
struct MovedProcess {
    pid: u32,
    command_line: String,
    image: String,
    behaviour: crate::config::ScriptedProcess,
    remaining: Option<Duration>,
}

impl MovedProcess {
    fn to_json(&self) -> Value {
        json!({
            "Pid": self.pid, "CommandLine": self.command_line, "Image": self.image,
            "ExitCode": self.behaviour.exit_code, "Stdout": self.behaviour.stdout,
            "Stderr": self.behaviour.stderr, "IgnoreSignals": self.behaviour.ignore_signals,
            "RemainingNanos": self.remaining.map(|d| d.as_nanos() as u64),
        })
    }
    fn from_json(v: &Value) -> Option<MovedProcess> {
        let bytes = |k: &str| -> Option<Vec<u8>> {
            v.get(k)?
                .as_array()?
                .iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect()
        };
        Some(MovedProcess {
            pid: u32::try_from(v.get("Pid")?.as_u64()?).ok()?,
            command_line: v.get("CommandLine")?.as_str()?.to_string(),
            image: v.get("Image")?.as_str()?.to_string(),
            behaviour: crate::config::ScriptedProcess {
                exit_code: u32::try_from(v.get("ExitCode")?.as_u64()?).ok()?,
                stdout: bytes("Stdout")?,
                stderr: bytes("Stderr")?,
                runtime: None,
                ignore_signals: v.get("IgnoreSignals")?.as_bool()?,
            },
            remaining: v
                .get("RemainingNanos")
                .and_then(Value::as_u64)
                .map(Duration::from_nanos),
        })
    }
}

/// Why a transfer ended badly.
struct Stop {
    code: HResult,
    message: String,
    /// The `Result` the reporting side puts in its terminal event.
    result: &'static str,
    /// The VM of this side crashed.
    crashed: bool,
}

impl Stop {
    fn new(code: HResult, result: &'static str, message: impl Into<String>) -> Stop {
        Stop {
            code,
            message: message.into(),
            result,
            crashed: false,
        }
    }
}

fn invalid_state(message: &str) -> Failure {
    codes::failure(HResult::HCS_E_INVALID_STATE, message)
}

fn unsupported_v1() -> Failure {
    Failure::unsupported()
}

/// What a call needs to know of its system (read under the engine lock).
struct SysInfo {
    key: u64,
    id: String,
    vm: bool,
    state: SystemState,
    memory_mb: Option<u64>,
}

impl MigrationHost {
    pub(crate) fn set_config(&self, c: MigrationConfig) {
        *lock(&self.config) = c;
    }
    pub(crate) fn config(&self) -> MigrationConfig {
        lock(&self.config).clone()
    }
    pub(crate) fn reports(&self) -> Vec<MigrationReport> {
        lock(&self.reports).clone()
    }

    /// Waits until a transfer is held by [`MigrationFault::HoldAtRound`].
    pub(crate) fn wait_held(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut h = lock(&self.hold);
        while !h.held {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            h = match self.hold_cv.wait_timeout(h, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
    pub(crate) fn release(&self) {
        lock(&self.hold).released = true;
        self.hold_cv.notify_all();
    }

    /// Holds a source transfer until released, cancelled, or the peer closed the connection.
    fn wait_release(&self, s: &Session, stream: &TcpStream) {
        let mut h = lock(&self.hold);
        h.held = true;
        self.hold_cv.notify_all();
        while !h.released && !s.cancelled.load(Ordering::SeqCst) {
            h = match self.hold_cv.wait_timeout(h, Duration::from_millis(20)) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
            if peer_closed(stream) {
                break;
            }
        }
        h.held = false;
        h.released = false;
    }

    /// Drops sessions and guests of systems that stopped or are gone.
    fn prune(&self, engine: &Engine) {
        let live: HashMap<u64, SystemState> = {
            let st = engine.lock();
            st.systems.iter().map(|(k, s)| (*k, s.state)).collect()
        };
        let alive = |k: &u64| live.get(k).is_some_and(|s| *s != SystemState::Stopped);
        lock(&self.sessions).retain(|k, _| alive(k));
        lock(&self.guests).retain(|k, _| alive(k));
        lock(&self.moved).retain(|k, _| alive(k));
        lock(&self.events).retain(|k| live.contains_key(k));
    }

    /// Open sessions and sockets, for the leak check.
    pub(crate) fn leaks(&self, engine: &Engine) -> Vec<String> {
        self.prune(engine);
        let mut out: Vec<String> = lock(&self.sessions)
            .values()
            .map(|s| {
                let socket = if lock(&s.stream).is_some() {
                    " with its socket open"
                } else {
                    ""
                };
                format!("live-migration session on `{}`{socket}", s.id)
            })
            .collect();
        out.sort();
        out
    }

    /// Sockets the simulator holds (duplicated transports).
    pub(crate) fn sockets(&self, engine: &Engine) -> usize {
        self.prune(engine);
        lock(&self.sessions)
            .values()
            .filter(|s| lock(&s.stream).is_some())
            .count()
    }

    /// Sessions in progress.
    pub(crate) fn sessions(&self, engine: &Engine) -> usize {
        self.prune(engine);
        lock(&self.sessions).len()
    }

    /// Checksum of a VM's guest image, if it has one.
    pub(crate) fn guest_checksum(&self, engine: &Engine, id: &str) -> Option<u64> {
        let key = *engine.lock().by_id.get(id)?;
        let g = lock(&self.guests).get(&key).cloned()?;
        let c = lock(&g).checksum();
        Some(c)
    }

    fn session(&self, key: u64) -> Option<Arc<Session>> {
        lock(&self.sessions).get(&key).cloned()
    }

    /// The prologue: V2, fault plan, the system.
    fn begin(&self, engine: &Arc<Engine>, method: Method, h: SystemHandle) -> Result<SysInfo, Failure> {
        if engine.generation != ApiGeneration::V2 {
            return Err(unsupported_v1());
        }
        self.prune(engine);
        engine.with_system(method, h, |st, sys, _| {
            let s = &st.systems[&sys];
            Ok(SysInfo {
                key: sys,
                id: s.id.clone(),
                vm: s.system_type == "VirtualMachine",
                state: s.state,
                memory_mb: s.memory_mb,
            })
        })
    }

    /// Sends one migration event to the system's registrations, if its events are enabled.
    fn emit(
        &self,
        engine: &Arc<Engine>,
        key: u64,
        source: bool,
        event: &str,
        result: Option<&str>,
        details: Option<Value>,
    ) {
        if !lock(&self.events).contains(&key) {
            return;
        }
        let mut doc = json!({"Origin": if source { "Source" } else { "Destination" }, "Event": event});
        if let Some(r) = result {
            doc["Result"] = json!(r);
        }
        if let Some(d) = details {
            doc["AdditionalDetails"] = d;
        }
        let mut st = engine.lock();
        let Some(s) = st.systems.get(&key) else { return };
        let (id, callbacks) = (s.id.clone(), s.callbacks.clone());
        let targets = Engine::live_callbacks(&st, &callbacks);
        engine.emit(
            &mut st,
            NotificationKind::LiveMigration,
            Some(&id),
            targets,
            HResult::S_OK,
            Some(doc.to_string()),
            Duration::ZERO,
        );
    }

    pub(crate) fn enable_events(&self, engine: &Arc<Engine>, h: SystemHandle) -> Result<(), Failure> {
        let info = self.begin(engine, Method::EnableLiveMigrationEvents, h)?;
        lock(&self.events).insert(info.key);
        Ok(())
    }

    pub(crate) fn compatibility_info(
        &self,
        engine: &Arc<Engine>,
        h: SystemHandle,
    ) -> Result<String, Failure> {
        let info = self.begin(engine, Method::GetComputeSystemProperties, h)?;
        if !info.vm {
            return Err(codes::failure(
                NOT_SUPPORTED,
                "a Container has no migration compatibility data",
            ));
        }
        let mb = info.memory_mb.unwrap_or(self.config().default_memory_mb);
        let data = base64(format!("hcs-sim-vm;memory-mb={mb}").as_bytes());
        Ok(json!({"CompatibilityInfo": {"Data": data}}).to_string())
    }

    pub(crate) fn initialize(
        &self,
        engine: &Arc<Engine>,
        h: SystemHandle,
        options: &str,
    ) -> Result<(), Failure> {
        let info = self.begin(engine, Method::InitializeLiveMigrationOnSource, h)?;
        let doc = crate::documents::parse_json(options, engine.generation, "migration initialize options")?;
        let verify = doc
            .get("ChecksumVerification")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !info.vm {
            return Err(codes::failure(
                NOT_SUPPORTED,
                "only a VirtualMachine can live-migrate: a Container's processes are host processes",
            ));
        }
        if info.state != SystemState::Running {
            return Err(invalid_state("live migration needs a running virtual machine"));
        }
        if self.session(info.key).is_some() {
            return Err(invalid_state("a live migration is already in progress"));
        }
        let cfg = self.config();
        let bytes = info.memory_mb.unwrap_or(cfg.default_memory_mb) as usize * 1024 * 1024;
        let seed = checksum(info.id.as_bytes());
        lock(&self.guests)
            .entry(info.key)
            .or_insert_with(|| Arc::new(Mutex::new(Guest::new(bytes, seed, true))));
        let session = new_session(&info.id, true, Phase::Initialized);
        session.verify.store(verify, Ordering::SeqCst);
        lock(&self.sessions).insert(info.key, session);
        Ok(())
    }

    pub(crate) fn start(
        &self,
        engine: &Arc<Engine>,
        h: SystemHandle,
        options: &str,
        transport: &MigrationTransport,
        source: bool,
    ) -> Result<(), Failure> {
        let method = if source {
            Method::StartLiveMigrationOnSource
        } else {
            Method::StartComputeSystemAsMigrationDestination
        };
        let info = self.begin(engine, method, h)?;
        let doc = crate::documents::parse_json(options, engine.generation, "migration start options")?;
        let pointer = if source {
            "/NetworkSettings/SessionId"
        } else {
            "/DestinationMigrationOptions/NetworkSettings/SessionId"
        };
        let session_id = doc.pointer(pointer).and_then(Value::as_u64).unwrap_or(0) as u32;
        let stream = transport.try_clone().map_err(|e| {
            codes::failure(
                HResult::HCS_E_CONNECTION_CLOSED,
                format!("the migration socket: {e}"),
            )
        })?;
        let session = if source {
            let s = self
                .session(info.key)
                .ok_or_else(|| invalid_state("live migration was not initialized on this source"))?;
            if *lock(&s.phase) != Phase::Initialized {
                return Err(invalid_state("the source has already started"));
            }
            s
        } else {
            if !info.vm {
                return Err(codes::failure(
                    NOT_SUPPORTED,
                    "only a VirtualMachine can be a migration destination",
                ));
            }
            if info.state != SystemState::Created || self.session(info.key).is_some() {
                return Err(invalid_state(
                    "a migration destination must be created and not started",
                ));
            }
            let cfg = self.config();
            let bytes = info.memory_mb.unwrap_or(cfg.default_memory_mb) as usize * 1024 * 1024;
            lock(&self.guests).insert(info.key, Arc::new(Mutex::new(Guest::new(bytes, 1, false))));
            let s = new_session(&info.id, false, Phase::Initialized);
            lock(&self.sessions).insert(info.key, s.clone());
            s
        };
        *lock(&session.stream) = Some(stream);
        *lock(&session.session_id) = session_id;
        *lock(&session.phase) = Phase::Started;
        if source {
            self.emit(engine, info.key, true, "SetupDone", None, None);
        }
        Ok(())
    }

    pub(crate) fn transfer(
        &self,
        engine: &Arc<Engine>,
        h: SystemHandle,
        options: &str,
    ) -> Result<(), Failure> {
        let info = self.begin(engine, Method::StartLiveMigrationTransfer, h)?;
        crate::documents::parse_json(options, engine.generation, "migration transfer options")?;
        let session = self
            .session(info.key)
            .ok_or_else(|| invalid_state("no live migration on this system"))?;
        {
            let mut p = lock(&session.phase);
            if session.cancelled.load(Ordering::SeqCst) {
                return Err(codes::failure(CANCELLED, "the live migration was cancelled"));
            }
            if *p != Phase::Started {
                return Err(invalid_state("the transfer needs a started migration"));
            }
            *p = Phase::Transferring;
        }
        let guest = lock(&self.guests).get(&info.key).cloned();
        let stream = lock(&session.stream).as_ref().map(TcpStream::try_clone);
        let (Some(guest), Some(Ok(stream))) = (guest, stream) else {
            *lock(&session.phase) = Phase::Failed;
            return Err(codes::failure(
                HResult::HCS_E_CONNECTION_CLOSED,
                "the migration socket is gone",
            ));
        };
        let cfg = self.config();
        let started = Instant::now();
        let mut report = MigrationReport {
            id: info.id.clone(),
            source: session.source,
            ok: false,
            rounds: 0,
            bytes: 0,
            memory_bytes: lock(&guest).memory.len() as u64,
            blackout_pages: 0,
            blackout: Duration::ZERO,
            checksum: 0,
            elapsed: Duration::ZERO,
        };
        let r = if session.source {
            self.send(engine, &info, &session, &guest, stream, &cfg, &mut report)
        } else {
            self.receive(engine, &info, &session, &guest, stream, &cfg, &mut report)
        };
        report.elapsed = started.elapsed();
        // The transfer is over either way: the session's socket is no longer needed.
        session.shutdown();
        session.close_stream();
        let r = match r {
            Ok(()) => {
                report.ok = true;
                *lock(&session.phase) = Phase::Transferred;
                Ok(())
            }
            Err(stop) => {
                let cancelled = session.cancelled.load(Ordering::SeqCst);
                let stop = if cancelled && !stop.crashed {
                    Stop::new(
                        CANCELLED,
                        "MigrationCancelled",
                        "the live migration was cancelled",
                    )
                } else {
                    stop
                };
                *lock(&session.phase) = if cancelled {
                    Phase::Cancelled
                } else {
                    Phase::Failed
                };
                if session.source {
                    self.emit(engine, info.key, true, "MigrationFailed", Some(stop.result), None);
                    if !stop.crashed {
                        self.emit(
                            engine,
                            info.key,
                            true,
                            "MigrationRecoveryDone",
                            Some("Success"),
                            None,
                        );
                    }
                } else {
                    self.emit(engine, info.key, false, "MigrationDone", Some(stop.result), None);
                }
                tracing::debug!(system = %info.id, code = %stop.code, message = %stop.message, "hcs-sim: transfer failed");
                Err(codes::failure(stop.code, stop.message))
            }
        };
        lock(&self.reports).push(report);
        r
    }

    fn check_round_fault(
        &self,
        engine: &Arc<Engine>,
        info: &SysInfo,
        session: &Session,
        round: u32,
        stream: &TcpStream,
    ) -> Result<(), Stop> {
        match self.config().fault {
            Some(MigrationFault::CrashSourceAtRound(r)) if r == round && session.source => {
                crash(engine, info.key);
            }
            Some(MigrationFault::CrashDestinationAtRound(r)) if r == round && !session.source => {
                crash(engine, info.key);
            }
            Some(MigrationFault::CutTransportAtRound(r)) if r == round && session.source => {
                let _ = stream.shutdown(Shutdown::Both);
            }
            Some(MigrationFault::GuestCancelAtRound(r)) if r == round && session.source => {
                let _g = lock(&session.writer);
                let _ = (&*stream).write_all(&[TAG_ABORT, ABORT_GUEST]);
                let _ = stream.shutdown(Shutdown::Both);
                return Err(Stop::new(
                    CANCELLED,
                    "GuestInitiatedCancellation",
                    "the guest cancelled the live migration",
                ));
            }
            Some(MigrationFault::HoldAtRound(r)) if r == round && session.source => {
                self.wait_release(session, stream)
            }
            _ => {}
        }
        self.check_alive(engine, info.key, session)
    }

    fn check_alive(&self, engine: &Engine, key: u64, session: &Session) -> Result<(), Stop> {
        let gone = {
            let st = engine.lock();
            st.systems
                .get(&key)
                .is_none_or(|s| s.state == SystemState::Stopped || s.stopping.is_some())
        };
        if gone {
            let result = if session.source {
                "SourceMigrationFailed"
            } else {
                "DestinationMigrationFailed"
            };
            return Err(Stop {
                code: HResult::HCS_E_UNEXPECTED_EXIT,
                message: "the virtual machine exited during the transfer".into(),
                result,
                crashed: true,
            });
        }
        if session.cancelled.load(Ordering::SeqCst) {
            return Err(Stop::new(
                CANCELLED,
                "MigrationCancelled",
                "the live migration was cancelled",
            ));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        engine: &Arc<Engine>,
        info: &SysInfo,
        session: &Session,
        guest: &Mutex<Guest>,
        mut stream: TcpStream,
        cfg: &MigrationConfig,
        report: &mut MigrationReport,
    ) -> Result<(), Stop> {
        let broken = |e: io::Error| {
            Stop::new(
                HResult::HCS_E_CONNECTION_CLOSED,
                "DestinationMigrationFailed",
                format!("the migration connection broke: {e}"),
            )
        };
        let session_id = *lock(&session.session_id);
        let mut g = lock(guest);
        let mut hello = Vec::with_capacity(24);
        hello.extend_from_slice(MAGIC);
        hello.extend_from_slice(&session_id.to_le_bytes());
        hello.extend_from_slice(&(g.memory.len() as u64).to_le_bytes());
        hello.extend_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        self.write_frame(session, &mut stream, &hello, &[])
            .map_err(broken)?;
        let mut pages: Vec<usize> = (0..g.pages()).collect();
        let mut round = 0u32;
        loop {
            let t = Instant::now();
            drop(g);
            report.bytes +=
                self.send_pages(engine, info, session, guest, &mut stream, &pages, cfg, broken)?;
            let mut frame = vec![TAG_ROUND_END];
            frame.extend_from_slice(&round.to_le_bytes());
            self.write_frame(session, &mut stream, &frame, &[])
                .map_err(broken)?;
            g = lock(guest);
            g.run_for(t.elapsed(), cfg.dirty_pages_per_sec);
            pages = g.take_dirty();
            drop(g);
            self.emit(
                engine,
                info.key,
                true,
                "TransferInProgress",
                None,
                Some(json!({"Round": round, "BytesTransferred": report.bytes, "DirtyPages": pages.len()})),
            );
            self.check_round_fault(engine, info, session, round, &stream)?;
            round += 1;
            g = lock(guest);
            if pages.len() <= cfg.blackout_threshold_pages || round >= cfg.max_rounds {
                break;
            }
        }
        drop(g);
        report.rounds = round;
        report.blackout_pages = pages.len() as u64;
        // Blackout: the guest is paused; the last dirty pages, then the checksum.
        self.emit(engine, info.key, true, "BlackoutStarted", None, None);
        let blackout = Instant::now();
        let mut frame = vec![TAG_BLACKOUT];
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        frame.extend_from_slice(&since_epoch.to_le_bytes());
        self.write_frame(session, &mut stream, &frame, &[])
            .map_err(broken)?;
        report.bytes += self.send_pages(engine, info, session, guest, &mut stream, &pages, cfg, broken)?;
        // The VM's synthetic processes travel with it (their state as of the blackout).
        let procs: Vec<Value> = synthetic_processes(engine, info.key)
            .iter()
            .map(MovedProcess::to_json)
            .collect();
        let body = Value::Array(procs).to_string().into_bytes();
        let mut frame = vec![TAG_PROCESSES];
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        self.write_frame(session, &mut stream, &frame, &body)
            .map_err(broken)?;
        // With ChecksumVerification the destination verifies the image; 0 means "not sent".
        let sum = if session.verify.load(Ordering::SeqCst) {
            lock(guest).checksum().max(1)
        } else {
            0
        };
        report.checksum = sum;
        let mut frame = vec![TAG_END];
        frame.extend_from_slice(&sum.to_le_bytes());
        self.write_frame(session, &mut stream, &frame, &[])
            .map_err(broken)?;
        let mut ack = [0u8; 9];
        stream.read_exact(&mut ack).map_err(broken)?;
        report.blackout = blackout.elapsed();
        if ack[0] != 1 {
            return Err(Stop::new(
                HResult::HCS_E_PROTOCOL_ERROR,
                "DestinationMigrationFailed",
                "the destination's memory checksum does not match",
            ));
        }
        self.check_alive(engine, info.key, session)?;
        self.emit(engine, info.key, true, "OfflineDone", Some("Success"), None);
        self.emit(engine, info.key, true, "MigrationDone", Some("Success"), None);
        Ok(())
    }

    fn write_frame(
        &self,
        session: &Session,
        stream: &mut TcpStream,
        head: &[u8],
        body: &[u8],
    ) -> io::Result<()> {
        let _g = lock(&session.writer);
        stream.write_all(head)?;
        if !body.is_empty() {
            stream.write_all(body)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn send_pages(
        &self,
        engine: &Arc<Engine>,
        info: &SysInfo,
        session: &Session,
        guest: &Mutex<Guest>,
        stream: &mut TcpStream,
        pages: &[usize],
        cfg: &MigrationConfig,
        broken: impl Fn(io::Error) -> Stop,
    ) -> Result<u64, Stop> {
        let per_frame = (cfg.chunk_bytes / PAGE_SIZE).max(1);
        let mut sent = 0u64;
        let mut i = 0;
        while i < pages.len() {
            // A run of consecutive pages, at most one frame long.
            let first = pages[i];
            let mut n = 1;
            while i + n < pages.len() && n < per_frame && pages[i + n] == first + n {
                n += 1;
            }
            self.check_alive(engine, info.key, session)?;
            let g = lock(guest);
            let at = first * PAGE_SIZE;
            let end = ((first + n) * PAGE_SIZE).min(g.memory.len());
            let mut head = [0u8; 13];
            head[0] = TAG_DATA;
            head[1..9].copy_from_slice(&(at as u64).to_le_bytes());
            head[9..13].copy_from_slice(&((end - at) as u32).to_le_bytes());
            self.write_frame(session, stream, &head, &g.memory[at..end])
                .map_err(&broken)?;
            sent += (end - at) as u64;
            i += n;
        }
        Ok(sent)
    }

    #[allow(clippy::too_many_arguments)]
    fn receive(
        &self,
        engine: &Arc<Engine>,
        info: &SysInfo,
        session: &Session,
        guest: &Mutex<Guest>,
        mut stream: TcpStream,
        _cfg: &MigrationConfig,
        report: &mut MigrationReport,
    ) -> Result<(), Stop> {
        let broken = |e: io::Error| {
            Stop::new(
                HResult::HCS_E_CONNECTION_CLOSED,
                "SourceMigrationFailed",
                format!("the migration connection broke: {e}"),
            )
        };
        let protocol = |m: &str| {
            Stop::new(
                HResult::HCS_E_PROTOCOL_ERROR,
                "DestinationMigrationFailed",
                m.to_string(),
            )
        };
        let checked = |r: io::Result<()>, s: &Self| -> Result<(), Stop> {
            match r {
                Ok(()) => Ok(()),
                Err(e) => {
                    s.check_alive(engine, info.key, session)?;
                    Err(broken(e))
                }
            }
        };
        let mut hello = [0u8; 24];
        checked(stream.read_exact(&mut hello), self)?;
        let memory_len = lock(guest).memory.len() as u64;
        if &hello[..8] != MAGIC {
            return Err(protocol("the peer is not a migration source"));
        }
        let sid = u32::from_le_bytes([hello[8], hello[9], hello[10], hello[11]]);
        let size = u64::from_le_bytes(hello[12..20].try_into().unwrap_or_default());
        if sid != *lock(&session.session_id) {
            return Err(protocol("the migration session ids differ"));
        }
        if size != memory_len {
            return Err(protocol(
                "the source's memory size differs from this virtual machine's",
            ));
        }
        let mut blackout_start: Option<u64> = None;
        let mut blackout_at: Option<Instant> = None;
        loop {
            let mut tag = [0u8; 1];
            checked(stream.read_exact(&mut tag), self)?;
            match tag[0] {
                TAG_DATA => {
                    let mut head = [0u8; 12];
                    checked(stream.read_exact(&mut head), self)?;
                    let at = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
                    let len = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default()) as u64;
                    if at.checked_add(len).is_none_or(|e| e > memory_len) {
                        return Err(protocol("a memory frame lies outside the guest image"));
                    }
                    let mut g = lock(guest);
                    let (at, end) = (at as usize, (at + len) as usize);
                    checked(stream.read_exact(&mut g.memory[at..end]), self)?;
                    report.bytes += len;
                }
                TAG_ROUND_END => {
                    let mut r = [0u8; 4];
                    checked(stream.read_exact(&mut r), self)?;
                    let round = u32::from_le_bytes(r);
                    report.rounds = round + 1;
                    self.check_round_fault(engine, info, session, round, &stream)?;
                }
                TAG_BLACKOUT => {
                    let mut t = [0u8; 8];
                    checked(stream.read_exact(&mut t), self)?;
                    blackout_start = Some(u64::from_le_bytes(t));
                    blackout_at = Some(Instant::now());
                }
                TAG_END => {
                    let mut t = [0u8; 8];
                    checked(stream.read_exact(&mut t), self)?;
                    let expected = u64::from_le_bytes(t);
                    let sum = if expected == 0 {
                        0
                    } else {
                        lock(guest).checksum().max(1)
                    };
                    report.checksum = sum;
                    let ok = sum == expected;
                    let mut ack = [0u8; 9];
                    ack[0] = u8::from(ok);
                    ack[1..].copy_from_slice(&sum.to_le_bytes());
                    checked(self.write_frame(session, &mut stream, &ack, &[]), self)?;
                    if !ok {
                        return Err(protocol("the memory checksum does not match the source's"));
                    }
                    self.check_alive(engine, info.key, session)?;
                    let now = SystemTime::now();
                    let now_ns = now
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_nanos() as u64;
                    let blackout = match blackout_start {
                        Some(start) => Duration::from_nanos(now_ns.saturating_sub(start)),
                        None => blackout_at.map(|t| t.elapsed()).unwrap_or_default(),
                    };
                    report.blackout = blackout;
                    self.emit(
                        engine,
                        info.key,
                        false,
                        "BlackoutExited",
                        Some("Success"),
                        Some(json!({
                            "BlackoutDurationMilliseconds": blackout.as_millis() as u64,
                            "BlackoutStopTimestamp": rfc3339(now),
                            "BlackoutDurationMicroseconds": blackout.as_micros() as u64,
                        })),
                    );
                    self.emit(engine, info.key, false, "MigrationDone", Some("Success"), None);
                    return Ok(());
                }
                TAG_PROCESSES => {
                    let mut n = [0u8; 4];
                    checked(stream.read_exact(&mut n), self)?;
                    let len = u32::from_le_bytes(n) as usize;
                    if len > 16 << 20 {
                        return Err(protocol("the process list is too large"));
                    }
                    let mut body = vec![0u8; len];
                    checked(stream.read_exact(&mut body), self)?;
                    let list: Option<Vec<MovedProcess>> = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| {
                            v.as_array()
                                .map(|a| a.iter().map(MovedProcess::from_json).collect())
                        })
                        .flatten();
                    let Some(list) = list else {
                        return Err(protocol("the process list is malformed"));
                    };
                    lock(&self.moved).insert(info.key, list);
                }
                TAG_ABORT => {
                    let mut why = [0u8; 1];
                    let _ = stream.read_exact(&mut why);
                    let message = if why[0] == ABORT_GUEST {
                        "the guest cancelled the live migration on the source"
                    } else {
                        "the source cancelled the live migration"
                    };
                    return Err(Stop::new(CANCELLED, "MigrationCancelled", message));
                }
                _ => return Err(protocol("unknown migration frame")),
            }
        }
    }

    pub(crate) fn finalize(
        &self,
        engine: &Arc<Engine>,
        h: SystemHandle,
        options: &str,
    ) -> Result<(), Failure> {
        let info = self.begin(engine, Method::FinalizeLiveMigration, h)?;
        let doc = crate::documents::parse_json(options, engine.generation, "migration finalize options")?;
        let session = self
            .session(info.key)
            .ok_or_else(|| invalid_state("no live migration to finalize on this system"))?;
        let resume = match doc.get("FinalizedOperation").and_then(Value::as_str) {
            Some("Resume") => true,
            Some("Stop") => false,
            _ => {
                return Err(codes::failure(
                    codes::INVALID_ARG,
                    "FinalizedOperation must be \"Resume\" or \"Stop\"",
                ))
            }
        };
        let phase = *lock(&session.phase);
        if phase == Phase::Transferring {
            return Err(invalid_state("a transfer is still running"));
        }
        if resume && !session.source && phase != Phase::Transferred {
            return Err(invalid_state(
                "the destination has no complete memory image to resume",
            ));
        }
        session.shutdown();
        session.close_stream();
        lock(&self.sessions).remove(&info.key);
        let moved = lock(&self.moved).remove(&info.key).unwrap_or_default();
        let mut st = engine.lock();
        match (session.source, resume) {
            (true, false) => {
                lock(&self.guests).remove(&info.key);
                engine.begin_stop(&mut st, info.key, StopKind::Graceful);
            }
            (false, false) => {
                lock(&self.guests).remove(&info.key);
                engine.begin_stop(&mut st, info.key, StopKind::Forced);
            }
            (false, true) => {
                if let Some(s) = st.systems.get_mut(&info.key) {
                    s.state = SystemState::Running;
                    s.started = Some((Instant::now(), SystemTime::now()));
                }
                adopt_processes(engine, &mut st, info.key, moved);
            }
            (true, true) => {}
        }
        Ok(())
    }

    pub(crate) fn cancel(&self, engine: &Arc<Engine>, h: SystemHandle, options: &str) -> Result<(), Failure> {
        if engine.generation != ApiGeneration::V2 || !self.config().cancel_export {
            return Err(Failure::unsupported());
        }
        let info = self.begin(engine, Method::CancelLiveMigration, h)?;
        crate::documents::parse_json(options, engine.generation, "migration cancel options")?;
        let session = self
            .session(info.key)
            .ok_or_else(|| invalid_state("no live migration to cancel on this system"))?;
        let phase = *lock(&session.phase);
        match phase {
            Phase::Transferred | Phase::Failed => {
                return Err(invalid_state("the transfer has already finished"))
            }
            Phase::Cancelled => return Ok(()),
            _ => {}
        }
        session.cancelled.store(true, Ordering::SeqCst);
        if session.source {
            if let Ok(_g) = session.writer.try_lock() {
                if let Some(s) = lock(&session.stream).as_ref() {
                    let _ = (&*s).write_all(&[TAG_ABORT, ABORT_CANCEL]);
                }
            }
        }
        session.shutdown();
        self.hold_cv.notify_all();
        if phase != Phase::Transferring {
            *lock(&session.phase) = Phase::Cancelled;
            session.close_stream();
            if session.source {
                self.emit(
                    engine,
                    info.key,
                    true,
                    "MigrationFailed",
                    Some("MigrationCancelled"),
                    None,
                );
                self.emit(
                    engine,
                    info.key,
                    true,
                    "MigrationRecoveryDone",
                    Some("Success"),
                    None,
                );
            } else {
                self.emit(
                    engine,
                    info.key,
                    false,
                    "MigrationDone",
                    Some("MigrationCancelled"),
                    None,
                );
            }
        }
        Ok(())
    }
}

/// `true` for the properties query that asks for migration compatibility data.
pub(crate) fn is_compatibility_query(query: &str) -> bool {
    serde_json::from_str::<Value>(query)
        .ok()
        .is_some_and(|v| v.pointer("/Queries/CompatibilityInfo").is_some())
}

impl crate::Simulator {
    /// Sets how this simulator migrates VMs (dirty rate, rounds, faults, the cancel export).
    pub fn set_migration_config(&self, config: MigrationConfig) {
        self.migration.set_config(config);
    }
    /// The migration configuration.
    pub fn migration_config(&self) -> MigrationConfig {
        self.migration.config()
    }
    /// Every transfer this simulator ran (one report per transfer call that got going).
    pub fn migration_reports(&self) -> Vec<MigrationReport> {
        self.migration.reports()
    }
    /// Waits until a source transfer is held by [`MigrationFault::HoldAtRound`].
    pub fn wait_migration_held(&self, timeout: Duration) -> bool {
        self.migration.wait_held(timeout)
    }
    /// Lets a transfer held by [`MigrationFault::HoldAtRound`] go on.
    pub fn release_migration(&self) {
        self.migration.release();
    }
    /// Migration sockets (duplicated transports) the simulator holds.
    pub fn migration_sockets(&self) -> usize {
        self.migration.sockets(&self.engine)
    }
    /// Migration sessions in progress (from initialize / destination start until finalize, or
    /// until the system stops).
    pub fn migration_sessions(&self) -> usize {
        self.migration.sessions(&self.engine)
    }
    /// The checksum of a VM's synthetic guest memory ([`checksum`]), once it has one (from
    /// initialize on a source, destination start on a destination).
    pub fn guest_checksum(&self, id: &str) -> Option<u64> {
        self.migration.guest_checksum(&self.engine, id)
    }
}

fn new_session(id: &str, source: bool, phase: Phase) -> Arc<Session> {
    Arc::new(Session {
        id: id.to_string(),
        source,
        phase: Mutex::new(phase),
        session_id: Mutex::new(0),
        stream: Mutex::new(None),
        writer: Mutex::new(()),
        cancelled: AtomicBool::new(false),
        verify: AtomicBool::new(false),
    })
}

/// The live synthetic (scripted-backend) processes of a system, with the runtime they have left.
/// Host-backend processes are host processes and do not move.
fn synthetic_processes(engine: &Engine, key: u64) -> Vec<MovedProcess> {
    let st = engine.lock();
    let Some(s) = st.systems.get(&key) else {
        return Vec::new();
    };
    s.live_processes()
        .filter_map(|(_, p)| match &p.kind {
            ProcKind::Scripted(run) => Some(MovedProcess {
                pid: p.pid,
                command_line: p.command_line.clone(),
                image: p.image.clone(),
                behaviour: run.behaviour.clone(),
                remaining: run.remaining.map(|r| {
                    if run.frozen {
                        r
                    } else {
                        r.saturating_sub(run.resumed_at.elapsed())
                    }
                }),
            }),
            ProcKind::Host => None,
        })
        .collect()
}

/// Creates the moved processes in the resumed destination VM, with their pids and the runtime
/// they had left.
fn adopt_processes(engine: &Arc<Engine>, st: &mut crate::model::State, sys: u64, moved: Vec<MovedProcess>) {
    for m in moved {
        let proc = st.key();
        st.next_scripted_pid = st.next_scripted_pid.max(m.pid.wrapping_add(4));
        if let Some(r) = m.remaining {
            engine.schedule(
                r,
                crate::sched::Task::ScriptedExit {
                    sys,
                    proc,
                    generation: 0,
                },
            );
        }
        let run = crate::model::ScriptedRun {
            remaining: m.remaining,
            behaviour: m.behaviour,
            generation: 0,
            resumed_at: Instant::now(),
            frozen: false,
            stdin: Arc::new(Mutex::new(Vec::new())),
        };
        if let Some(s) = st.systems.get_mut(&sys) {
            s.processes.insert(
                proc,
                crate::model::ProcRec {
                    pid: m.pid,
                    command_line: m.command_line,
                    image: m.image,
                    handles: HashSet::new(),
                    callbacks: Vec::new(),
                    exit_code: None,
                    kind: ProcKind::Scripted(run),
                    modify_requests: Vec::new(),
                    created: SystemTime::now(),
                },
            );
        }
    }
}

/// `true` when the peer has closed its side (a source reads nothing from the destination until
/// the acknowledgement, so anything readable before it is the end of the connection).
fn peer_closed(stream: &TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(1)));
    let mut b = [0u8; 1];
    let closed = matches!(stream.peek(&mut b), Ok(0));
    let _ = stream.set_read_timeout(None);
    closed
}

fn crash(engine: &Arc<Engine>, key: u64) {
    let mut st = engine.lock();
    engine.begin_stop(&mut st, key, StopKind::Unexpected);
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_checksum_are_stable() {
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
        assert_ne!(checksum(&[0; 16]), checksum(&[0; 17]));
        let mut g = Guest::new(PAGE_SIZE * 100, 7, true);
        let before = g.checksum();
        g.run_for(Duration::from_secs(1), 10);
        let dirty = g.take_dirty();
        assert!(!dirty.is_empty() && dirty.len() <= 10);
        assert_ne!(g.checksum(), before);
        assert!(g.take_dirty().is_empty());
    }
}

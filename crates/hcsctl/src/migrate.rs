//! `hcsctl migrate`: live migration of a virtual machine between two hosts (design §10).
//!
//! * Destination: `hcsctl migrate --receive --listen HOST:PORT` binds, prints the address it
//!   listens on (`listening on ADDR`, or `{"listening":"ADDR"}` with `--json`; port 0 picks a free
//!   port), accepts one source, creates the destination VM, receives it, and finalizes it
//!   (`Resume`). On the simulator (one process = one host) the received VM is terminated when
//!   `hcsctl` exits; on a real host it keeps running.
//! * Source: `hcsctl migrate ID --to HOST:PORT` opens the running VM `ID`, migrates it and
//!   finalizes it (`Stop`: the VM exits here). `--config FILE` gives the VM's compute-system
//!   document the destination is created from (HCS keeps no copy one could query).
//!   `--create` first creates and starts VM `ID` from that document (or a default VM of
//!   `--memory-mb`) in this process: the self-contained mode that makes a migration between two
//!   `hcsctl` processes on the simulator possible.
//!
//! Before handing the connection to HCS, the two sides exchange one JSON line each on it (the
//! orchestration HCS leaves to its caller): the source sends
//! `{"Id","Session","Configuration","CompatibilityData"}`, the destination answers
//! `{"Ready":true}` or `{"Error":".."}`. The session id both give HCS is derived from the session
//! name (`hcs_schema::migration::session_id_from`).
//!
//! Output: on a terminal, a progress line (phase, round, bytes, throughput, blackout) on stderr;
//! with `--json`, one JSON line per migration event and a final summary line on stdout. Ctrl-C
//! (or `SIGTERM`) cancels the migration on either side: the source rolls back (`Resume`), the
//! destination discards the VM (`Stop`), and `hcsctl` exits 130 (143 after `SIGTERM`). A failed
//! migration exits 125.

use crate::driver::{self, DriverArgs};
use crate::exit::{CliError, DATA_ERR, HCS_FAILED, INTERRUPTED};
use clap::Args;
use hcs::schema::migration::{session_id_from, CompatibilityInfo, MigrationInitializeOptions};
use hcs::{FinalOperation, Migration, MigrationError, MigrationEvents, MigrationTransport, System, Timeouts};
use serde_json::{json, Value};
use std::io::{IsTerminal, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Options of `hcsctl migrate`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("side").required(true).args(["to", "receive"])))]
pub struct MigrateOptions {
    /// The VM to migrate (source side).
    #[arg(value_name = "ID", required_unless_present = "receive")]
    id: Option<String>,
    /// Source: the destination's address.
    #[arg(long, value_name = "HOST:PORT", requires = "id")]
    to: Option<String>,
    /// Destination: receive a VM.
    #[arg(long, requires = "listen")]
    receive: bool,
    /// Destination: the address to listen on (port 0: any free port, printed).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Source: the VM's compute-system document (JSON file, `-` for stdin).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Source: create and start VM ID in this process first (from --config or a default VM).
    #[arg(long, requires = "to")]
    create: bool,
    /// Memory of the default VM of --create, in MiB.
    #[arg(long, default_value_t = 64)]
    memory_mb: u64,
    /// The migration session's name (both hosts derive the HCS session id from it).
    #[arg(long, default_value = "hcsctl")]
    session: String,
    /// Simulator: guest pages dirtied per second during the transfer.
    #[arg(long, default_value_t = 0)]
    dirty_rate: u64,
    /// Print one JSON line per event and a summary line.
    #[arg(long)]
    json: bool,
    /// Simulator (testing): hold the source's transfer after this pre-copy round until it is
    /// cancelled or the destination goes away.
    #[arg(long, hide = true)]
    sim_hold_round: Option<u32>,
    #[command(flatten)]
    driver: DriverArgs,
}

/// The Ctrl-C / SIGTERM flag: the signal number of the first interrupt, 0 while none. The
/// signal handlers only set an atomic flag (async-signal-safe); one thread folds them into it.
fn interrupts() -> Arc<AtomicI32> {
    let flag = Arc::new(AtomicI32::new(0));
    #[cfg(unix)]
    {
        let mut raised = Vec::new();
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let b = Arc::new(AtomicBool::new(false));
            if signal_hook::flag::register(sig, b.clone()).is_ok() {
                raised.push((sig, b));
            }
        }
        let f = flag.clone();
        let _ = thread::Builder::new()
            .name("hcsctl-signal".into())
            .spawn(move || loop {
                for (sig, b) in &raised {
                    if b.swap(false, Ordering::SeqCst) {
                        let _ = f.compare_exchange(0, *sig, Ordering::SeqCst, Ordering::SeqCst);
                    }
                }
                thread::sleep(Duration::from_millis(10));
            });
    }
    #[cfg(not(unix))]
    {
        let f = flag.clone();
        let _ = ctrlc::set_handler(move || {
            let _ = f.compare_exchange(0, crate::io::SIGINT, Ordering::SeqCst, Ordering::SeqCst);
        });
    }
    flag
}

/// What the progress printer knows.
struct Progress {
    json: bool,
    tty: bool,
    side: &'static str,
    started: Instant,
}

impl Progress {
    fn event(&self, n: &hcs::MigrationNotification, bytes: &mut u64, round: &mut u64) {
        let event = n
            .event()
            .map(|e| format!("{e:?}"))
            .unwrap_or_else(|| "Unknown".into());
        let result = n.result.as_ref().map(|r| format!("{r:?}"));
        let details: Option<Value> = n.info.details().and_then(Result::ok);
        if let Some(d) = &details {
            if let Some(b) = d.get("BytesTransferred").and_then(Value::as_u64) {
                *bytes = b;
            }
            if let Some(r) = d.get("Round").and_then(Value::as_u64) {
                *round = r + 1;
            }
        }
        if self.json {
            let mut line = json!({"side": self.side, "seq": n.seq, "event": event});
            if let Some(r) = result {
                line["result"] = json!(r);
            }
            if let Some(d) = details {
                line["details"] = d;
            }
            if let Some(m) = &n.malformed {
                line["malformed"] = json!(m);
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        } else if self.tty {
            let secs = self.started.elapsed().as_secs_f64().max(1e-6);
            let mib = *bytes as f64 / (1024.0 * 1024.0);
            let blackout = details
                .as_ref()
                .and_then(|d| d.get("BlackoutDurationMilliseconds"))
                .map(|b| format!(", blackout {b} ms"))
                .unwrap_or_default();
            eprint!(
                "\r\x1b[K{}: {event}, round {round}, {mib:.1} MiB, {:.1} MiB/s{blackout}",
                self.side,
                mib / secs
            );
            if n.is_terminal() {
                eprintln!();
            }
        }
    }
}

/// Runs the event printer until `done`; returns (bytes, rounds, blackout ms) seen.
fn print_events(
    mut events: MigrationEvents,
    progress: Progress,
    done: Arc<AtomicBool>,
) -> thread::JoinHandle<(u64, u64, Option<u64>)> {
    thread::spawn(move || {
        let (mut bytes, mut round, mut blackout) = (0u64, 0u64, None);
        let mut drain = |n: Arc<hcs::MigrationNotification>, bytes: &mut u64, round: &mut u64| {
            if let Some(Ok(d)) = n.info.blackout_exited_details() {
                blackout = Some(d.blackout_duration_milliseconds);
            }
            progress.event(&n, bytes, round);
        };
        while !done.load(Ordering::SeqCst) {
            if let Some(n) = events.recv_timeout(Duration::from_millis(20)) {
                drain(n, &mut bytes, &mut round);
            }
        }
        // Events still in flight from HCS's thread after the last call.
        let settle = Instant::now() + Duration::from_millis(100);
        while Instant::now() < settle {
            match events.recv_timeout(Duration::from_millis(20)) {
                Some(n) => drain(n, &mut bytes, &mut round),
                None => break,
            }
        }
        (bytes, round, blackout)
    })
}

/// Cancels `m` when an interrupt arrives, until `done`.
fn watch_interrupts(
    m: Arc<Migration>,
    flag: Arc<AtomicI32>,
    done: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while !done.load(Ordering::SeqCst) {
            if flag.load(Ordering::SeqCst) != 0 {
                match m.cancel() {
                    Ok(path) => tracing::info!(?path, "migration cancelled"),
                    Err(e) => tracing::warn!(error = %e, "cancel failed"),
                }
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    })
}

fn hcs_failed(what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::new(HCS_FAILED, format!("{what}: {e}"))
}

fn interrupted(flag: &AtomicI32) -> CliError {
    let sig = flag.load(Ordering::SeqCst);
    let code = if sig == 0 { INTERRUPTED } else { 128 + sig };
    CliError::new(code, "migration cancelled by an interrupt".to_string())
}

/// Reads one line (at most 1 MiB) byte by byte, so nothing after it is consumed.
fn read_line(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if stream.read(&mut b)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > 1 << 20 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "line too long",
            ));
        }
    }
    String::from_utf8(line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn default_vm(memory_mb: u64) -> String {
    json!({
        "SchemaVersion": {"Major": 2, "Minor": 1},
        "Owner": "hcsctl",
        "ShouldTerminateOnLastHandleClosed": true,
        "VirtualMachine": {"ComputeTopology": {"Memory": {"SizeInMB": memory_mb}, "Processor": {"Count": 1}}}
    })
    .to_string()
}

/// Runs `hcsctl migrate`.
pub fn migrate(opts: MigrateOptions) -> Result<i32, CliError> {
    let flag = interrupts();
    let selected = driver::select(&opts.driver, None)?;
    if let Some(sim) = &selected.sim {
        sim.set_migration_config(hcs_sim::MigrationConfig {
            dirty_pages_per_sec: opts.dirty_rate,
            fault: opts.sim_hold_round.map(hcs_sim::MigrationFault::HoldAtRound),
            ..hcs_sim::MigrationConfig::default()
        });
    }
    let progress = |side| Progress {
        json: opts.json,
        tty: !opts.json && std::io::stderr().is_terminal(),
        side,
        started: Instant::now(),
    };
    if opts.receive {
        receive(&opts, selected, &flag, progress("destination"))
    } else {
        send(&opts, selected, &flag, progress("source"))
    }
}

fn summary(json_out: bool, value: Value) {
    if json_out {
        println!("{value}");
    } else {
        let outcome = value["outcome"].as_str().unwrap_or("?");
        eprintln!(
            "{}: {outcome}: {} bytes in {} rounds, {:.1} MiB/s, blackout {} ms",
            value["side"].as_str().unwrap_or("?"),
            value["bytes"],
            value["rounds"],
            value["mib_per_s"].as_f64().unwrap_or(0.0),
            value["blackout_ms"]
        );
    }
}

fn send(
    opts: &MigrateOptions,
    selected: driver::Selected,
    flag: &Arc<AtomicI32>,
    progress: Progress,
) -> Result<i32, CliError> {
    let id = opts.id.clone().unwrap_or_default();
    let to = opts.to.clone().unwrap_or_default();
    let configuration = match &opts.config {
        Some(path) => crate::config::read_input(path, "configuration")?,
        None if opts.create => default_vm(opts.memory_mb),
        None => {
            return Err(CliError::new(
                DATA_ERR,
                "the source needs --config FILE: the VM's document the destination is created from"
                    .to_string(),
            ))
        }
    };
    let system = if opts.create {
        let s = System::create(selected.driver.clone(), &id, &configuration)
            .map_err(|e| hcs_failed("create", e))?;
        s.start().map_err(|e| hcs_failed("start", e))?;
        s
    } else {
        System::open(selected.driver.clone(), &id).map_err(|e| hcs_failed("open", e))?
    };
    let m = Arc::new(system.migration_source().map_err(|e| hcs_failed("migrate", e))?);
    let options = MigrationInitializeOptions {
        checksum_verification: Some(true),
        ..MigrationInitializeOptions::default()
    };
    m.initialize(&options).map_err(|e| hcs_failed("initialize", e))?;
    let roll_back = |e: CliError| {
        if let Err(f) = m.finalize(FinalOperation::Resume) {
            tracing::debug!(error = %f, "roll-back finalize");
        }
        e
    };
    let compat = m
        .compatibility_info()
        .map_err(|e| roll_back(hcs_failed("compatibility info", e)))?;
    let addr = to
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| roll_back(CliError::new(2, format!("cannot resolve --to {to}"))))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| roll_back(hcs_failed(&format!("connect to {to}"), e)))?;
    let hello = json!({"Id": id, "Session": opts.session, "Configuration": configuration, "CompatibilityData": compat});
    writeln!(stream, "{hello}").map_err(|e| roll_back(hcs_failed("handshake", e)))?;
    let reply = read_line(&mut stream).map_err(|e| roll_back(hcs_failed("handshake", e)))?;
    let reply: Value = serde_json::from_str(&reply).unwrap_or(Value::Null);
    if reply["Ready"] != json!(true) {
        let why = reply["Error"].as_str().unwrap_or("no answer").to_string();
        return Err(roll_back(hcs_failed(
            "the destination refused the migration",
            why,
        )));
    }
    let transport = MigrationTransport::new(stream).map_err(|e| roll_back(hcs_failed("transport", e)))?;
    let sim = selected.sim.clone();
    let done = Arc::new(AtomicBool::new(false));
    let printer = print_events(m.events(), progress, done.clone());
    let watcher = watch_interrupts(m.clone(), flag.clone(), done.clone());
    let started = Instant::now();
    let result = m
        .start(transport, session_id_from(&opts.session))
        .and_then(|()| m.transfer());
    let elapsed = started.elapsed();
    let checksum = sim.as_ref().and_then(|s| s.guest_checksum(&id));
    let outcome = match &result {
        Ok(()) => m
            .finalize(FinalOperation::Stop)
            .map_err(|e| hcs_failed("finalize", e)),
        Err(e) => {
            let _ = m.finalize(FinalOperation::Resume);
            Err(match e {
                MigrationError::Cancelled if flag.load(Ordering::SeqCst) != 0 => interrupted(flag),
                e => hcs_failed("migration failed", e),
            })
        }
    };
    done.store(true, Ordering::SeqCst);
    let _ = watcher.join();
    let (bytes, rounds, _) = printer.join().unwrap_or_default();
    let report = sim.as_ref().and_then(|s| s.migration_reports().pop());
    summary(
        opts.json,
        json!({
            "side": "source", "id": id,
            "outcome": if outcome.is_ok() { "Success" } else { "Failed" },
            "bytes": report.as_ref().map_or(bytes, |r| r.bytes),
            "rounds": report.as_ref().map_or(rounds, |r| u64::from(r.rounds)),
            "elapsed_ms": elapsed.as_millis() as u64,
            "mib_per_s": report.as_ref().map_or(bytes, |r| r.bytes) as f64 / 1048576.0 / elapsed.as_secs_f64().max(1e-6),
            "blackout_ms": report.as_ref().map(|r| r.blackout.as_millis() as u64),
            "guest_checksum": checksum.map(|c| format!("{c:016x}")),
        }),
    );
    if outcome.is_ok() {
        let _ = system.wait_timeout(Duration::from_secs(10));
    }
    drop(m);
    let _ = system.close();
    outcome.map(|()| 0)
}

fn receive(
    opts: &MigrateOptions,
    selected: driver::Selected,
    flag: &Arc<AtomicI32>,
    progress: Progress,
) -> Result<i32, CliError> {
    let listen = opts.listen.clone().unwrap_or_default();
    let listener =
        TcpListener::bind(&listen).map_err(|e| hcs_failed(&format!("cannot listen on {listen}"), e))?;
    let local = listener.local_addr().map_err(|e| hcs_failed("listen", e))?;
    if opts.json {
        println!("{}", json!({"listening": local.to_string()}));
        let _ = std::io::stdout().flush();
    } else {
        eprintln!("listening on {local}");
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| hcs_failed("listen", e))?;
    let mut stream = loop {
        if flag.load(Ordering::SeqCst) != 0 {
            return Err(interrupted(flag));
        }
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(hcs_failed("accept", e)),
        }
    };
    drop(listener);
    stream
        .set_nonblocking(false)
        .map_err(|e| hcs_failed("accept", e))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let hello: Value = read_line(&mut stream)
        .ok()
        .and_then(|l| serde_json::from_str(&l).ok())
        .unwrap_or(Value::Null);
    let _ = stream.set_read_timeout(None);
    let (Some(id), Some(session), Some(configuration)) = (
        hello["Id"].as_str(),
        hello["Session"].as_str(),
        hello["Configuration"].as_str(),
    ) else {
        let _ = writeln!(stream, "{}", json!({"Error": "malformed handshake"}));
        return Err(CliError::new(
            DATA_ERR,
            "the source sent a malformed handshake".to_string(),
        ));
    };
    let compat: CompatibilityInfo =
        serde_json::from_value(hello["CompatibilityData"].clone()).unwrap_or_default();
    let created = Migration::create_destination(
        selected.driver.clone(),
        id,
        configuration,
        compat,
        Timeouts::from_env(),
    );
    let (system, m) = match created {
        Ok(x) => x,
        Err(e) => {
            let _ = writeln!(stream, "{}", json!({"Error": e.to_string()}));
            return Err(hcs_failed("create the destination", e));
        }
    };
    let m = Arc::new(m);
    writeln!(stream, "{}", json!({"Ready": true})).map_err(|e| hcs_failed("handshake", e))?;
    let transport = MigrationTransport::new(stream).map_err(|e| hcs_failed("transport", e))?;
    let sim = selected.sim.clone();
    let done = Arc::new(AtomicBool::new(false));
    let printer = print_events(m.events(), progress, done.clone());
    let watcher = watch_interrupts(m.clone(), flag.clone(), done.clone());
    let started = Instant::now();
    let result = m
        .start(transport, session_id_from(session))
        .and_then(|()| m.transfer());
    let elapsed = started.elapsed();
    let checksum = sim.as_ref().and_then(|s| s.guest_checksum(id));
    let outcome = match &result {
        Ok(()) => m
            .finalize(FinalOperation::Resume)
            .map_err(|e| hcs_failed("finalize", e)),
        Err(e) => {
            let _ = m.finalize(FinalOperation::Stop);
            Err(match e {
                MigrationError::Cancelled if flag.load(Ordering::SeqCst) != 0 => interrupted(flag),
                e => hcs_failed("migration failed", e),
            })
        }
    };
    done.store(true, Ordering::SeqCst);
    let _ = watcher.join();
    let (bytes, rounds, blackout) = printer.join().unwrap_or_default();
    let report = sim.as_ref().and_then(|s| s.migration_reports().pop());
    summary(
        opts.json,
        json!({
            "side": "destination", "id": id,
            "outcome": if outcome.is_ok() { "Success" } else { "Failed" },
            "bytes": report.as_ref().map_or(bytes, |r| r.bytes),
            "rounds": report.as_ref().map_or(rounds, |r| u64::from(r.rounds)),
            "elapsed_ms": elapsed.as_millis() as u64,
            "mib_per_s": report.as_ref().map_or(bytes, |r| r.bytes) as f64 / 1048576.0 / elapsed.as_secs_f64().max(1e-6),
            "blackout_ms": report.as_ref().map(|r| r.blackout.as_millis() as u64).or(blackout),
            "guest_checksum": checksum.map(|c| format!("{c:016x}")),
        }),
    );
    drop(m);
    if sim.is_some() {
        // One process is one simulated host: nothing outlives it.
        let _ = system.terminate();
        let _ = system.wait_timeout(Duration::from_secs(10));
    }
    let _ = system.close();
    outcome.map(|()| 0)
}

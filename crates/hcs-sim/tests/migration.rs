//! Live migration between two simulators in one process over a real loopback TCP connection,
//! through `hcs::System` / `hcs::Migration` (design §10.3): the happy path both ways with
//! checksums, a Container and a V1 refusal, and every fault — source crash, destination crash,
//! transport cut, cancel at each phase from either side, guest cancel, a missing cancel export,
//! fault-plan failures — each ending in a defined state with no leaks on either host.

use hcs::schema::migration::{MigrationEvent, MigrationInitializeOptions, MigrationResult};
use hcs::{
    ApiGeneration, CancelPath, FinalOperation, Migration, MigrationError, MigrationNotification,
    MigrationState, MigrationTransport, System, Timeouts,
};
use hcs_sim::fault::{FaultPlan, Rule};
use hcs_sim::{MigrationConfig, MigrationFault, SimConfig, Simulator, SystemState};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(20);
const VM: &str = r#"{"SchemaVersion":{"Major":2,"Minor":1},"Owner":"lm","VirtualMachine":{"ComputeTopology":{"Memory":{"SizeInMB":4}}}}"#;
const CONTAINER: &str = r#"{"SchemaVersion":{"Major":2,"Minor":1},"Owner":"lm","Container":{}}"#;

fn sim() -> Arc<Simulator> {
    Simulator::new(SimConfig::default().all_sync().generation(ApiGeneration::V2))
}

/// Initialize options with `ChecksumVerification`: the destination verifies the image.
fn verified() -> MigrationInitializeOptions {
    MigrationInitializeOptions {
        checksum_verification: Some(true),
        ..MigrationInitializeOptions::default()
    }
}

fn pair_of_streams() -> (MigrationTransport, MigrationTransport) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (
        MigrationTransport::new(a).unwrap(),
        MigrationTransport::new(b).unwrap(),
    )
}

struct Hosts {
    src_sim: Arc<Simulator>,
    dst_sim: Arc<Simulator>,
    src: System,
    dst: System,
    m_src: Arc<Migration>,
    m_dst: Arc<Migration>,
}

/// A running VM `id` on `src_sim`, initialized as a source, and its destination created on
/// `dst_sim` from the source's compatibility data; nothing started yet.
fn prepare(src_sim: Arc<Simulator>, dst_sim: Arc<Simulator>, id: &str) -> Hosts {
    let src = System::create_with(src_sim.clone(), id, VM, Timeouts::uniform(LONG)).unwrap();
    src.start().unwrap();
    let m_src = src.migration_source().unwrap();
    m_src.initialize(&verified()).unwrap();
    let compat = m_src.compatibility_info().unwrap();
    assert!(compat.data.is_some());
    let (dst, m_dst) =
        Migration::create_destination(dst_sim.clone(), id, VM, compat, Timeouts::uniform(LONG)).unwrap();
    Hosts {
        src_sim,
        dst_sim,
        src,
        dst,
        m_src: Arc::new(m_src),
        m_dst: Arc::new(m_dst),
    }
}

/// Starts both sides on a fresh loopback connection (session id from the session name).
fn start(h: &Hosts) {
    let (a, b) = pair_of_streams();
    let sid = hcs::schema::migration::session_id_from("test-session");
    h.m_dst.start(b, sid).unwrap();
    h.m_src.start(a, sid).unwrap();
}

/// Runs both transfers concurrently; (source result, destination result).
fn transfer(h: &Hosts) -> (Result<(), MigrationError>, Result<(), MigrationError>) {
    let (s, d) = (h.m_src.clone(), h.m_dst.clone());
    let dt = thread::spawn(move || d.transfer());
    let r_src = s.transfer();
    (r_src, dt.join().unwrap())
}

/// Collects events until a terminal one (or `LONG`).
fn until_terminal(ev: &mut hcs::MigrationEvents) -> Vec<Arc<MigrationNotification>> {
    let deadline = Instant::now() + LONG;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        if let Some(n) = ev.recv_timeout(Duration::from_millis(100)) {
            let done = n.is_terminal();
            out.push(n);
            if done {
                break;
            }
        }
    }
    out
}

fn names(events: &[Arc<MigrationNotification>]) -> Vec<String> {
    events
        .iter()
        .map(|n| format!("{:?}", n.event().cloned().unwrap_or(MigrationEvent::Unknown)))
        .collect()
}

/// Finalizes both sides as a failed migration leaves them (source resumes, destination is
/// discarded), closes everything and checks both hosts for leaks.
fn finish_failed(h: Hosts) {
    h.m_src.finalize(FinalOperation::Resume).unwrap();
    h.m_dst.finalize(FinalOperation::Stop).unwrap();
    close_and_check(h);
}

fn close_and_check(h: Hosts) {
    let Hosts {
        src_sim,
        dst_sim,
        src,
        dst,
        m_src,
        m_dst,
    } = h;
    drop((m_src, m_dst));
    for (sys, sim) in [(src, &src_sim), (dst, &dst_sim)] {
        if !sys.is_closed() {
            let _ = sys.terminate();
            let _ = sys.wait_timeout(LONG);
            sys.close().unwrap();
        }
        sim.assert_no_leaks();
        assert_eq!(sim.migration_sockets(), 0);
        assert_eq!(sim.migration_sessions(), 0);
        assert!(sim.service_threads() <= 1, "no thread beyond the service thread");
    }
}

#[test]
fn a_vm_migrates_with_equal_checksums_events_in_the_assumed_order_and_no_leaks() {
    let src_sim = sim();
    src_sim.set_migration_config(MigrationConfig {
        dirty_pages_per_sec: 20_000,
        blackout_threshold_pages: 4,
        max_rounds: 5,
        chunk_bytes: 64 * 1024,
        ..MigrationConfig::default()
    });
    let h = prepare(src_sim, sim(), "vm1");
    let (mut ev_src, mut ev_dst) = (h.m_src.events(), h.m_dst.events());
    start(&h);
    let (a, b) = transfer(&h);
    a.unwrap();
    b.unwrap();
    assert_eq!(h.m_src.state(), MigrationState::TransferCompleted);
    let src_sum = h.src_sim.guest_checksum("vm1").unwrap();
    assert_eq!(
        h.dst_sim.guest_checksum("vm1"),
        Some(src_sum),
        "destination memory equals source memory"
    );
    let reports = [h.src_sim.migration_reports(), h.dst_sim.migration_reports()];
    let (rs, rd) = (&reports[0][0], &reports[1][0]);
    assert!(rs.ok && rd.ok && rs.source && !rd.source);
    assert_eq!((rs.checksum, rd.checksum), (src_sum, src_sum));
    assert_eq!(rs.memory_bytes, 4 << 20);
    assert!(rs.bytes >= rs.memory_bytes && rs.bytes == rd.bytes);

    let src_events = names(&until_terminal(&mut ev_src));
    assert_eq!(src_events.first().map(String::as_str), Some("SetupDone"));
    assert!(src_events.iter().any(|e| e == "TransferInProgress"));
    assert_eq!(
        &src_events[src_events.len() - 3..],
        ["BlackoutStarted", "OfflineDone", "MigrationDone"]
    );
    let dst_events = until_terminal(&mut ev_dst);
    assert_eq!(names(&dst_events), ["BlackoutExited", "MigrationDone"]);
    let d = dst_events[0].info.blackout_exited_details().unwrap().unwrap();
    assert!(!d.blackout_stop_timestamp.is_empty());
    assert_eq!(
        h.m_src.terminal_event().unwrap().result,
        Some(MigrationResult::Success)
    );

    h.m_src.finalize(FinalOperation::Stop).unwrap();
    h.m_dst.finalize(FinalOperation::Resume).unwrap();
    // The source VM exits by itself; the destination runs.
    h.src.wait_timeout(LONG).unwrap();
    assert_eq!(h.dst_sim.system_info("vm1").unwrap().state, SystemState::Running);
    h.src.close().unwrap();
    close_and_check(h);
}

#[test]
fn a_vm_migrates_there_and_back() {
    let (a, b) = (sim(), sim());
    let h = prepare(a.clone(), b.clone(), "round-trip");
    start(&h);
    let (x, y) = transfer(&h);
    x.unwrap();
    y.unwrap();
    let sum = a.guest_checksum("round-trip").unwrap();
    h.m_src.finalize(FinalOperation::Stop).unwrap();
    h.m_dst.finalize(FinalOperation::Resume).unwrap();
    h.src.wait_timeout(LONG).unwrap();
    let Hosts {
        src,
        dst,
        m_src,
        m_dst,
        ..
    } = h;
    drop((m_src, m_dst));
    src.close().unwrap();
    // Back: the destination is now the source; its guest memory is the migrated image.
    let m_back = dst.migration_source().unwrap();
    m_back.initialize(&verified()).unwrap();
    assert_eq!(b.guest_checksum("round-trip"), Some(sum));
    let compat = m_back.compatibility_info().unwrap();
    let (home, m_home) =
        Migration::create_destination(a.clone(), "round-trip", VM, compat, Timeouts::uniform(LONG)).unwrap();
    let h = Hosts {
        src_sim: b,
        dst_sim: a.clone(),
        src: dst,
        dst: home,
        m_src: Arc::new(m_back),
        m_dst: Arc::new(m_home),
    };
    start(&h);
    let (x, y) = transfer(&h);
    x.unwrap();
    y.unwrap();
    assert_eq!(
        a.guest_checksum("round-trip"),
        Some(sum),
        "the image came back unchanged"
    );
    h.m_src.finalize(FinalOperation::Stop).unwrap();
    h.m_dst.finalize(FinalOperation::Resume).unwrap();
    h.src.wait_timeout(LONG).unwrap();
    h.src.close().unwrap();
    close_and_check(h);
}

#[test]
fn a_container_cannot_migrate_and_a_v1_host_refuses_before_any_call() {
    let s = sim();
    let c = System::create_with(s.clone(), "c", CONTAINER, Timeouts::uniform(LONG)).unwrap();
    c.start().unwrap();
    let m = c.migration_source().unwrap();
    let e = m.initialize(&MigrationInitializeOptions::default()).unwrap_err();
    assert!(matches!(&e, MigrationError::NotSupported(_)), "{e}");
    assert!(e.to_string().contains("Container"), "{e}");
    assert_eq!(m.state(), MigrationState::Idle);
    drop(m);
    c.terminate().unwrap();
    c.close().unwrap();
    s.assert_no_leaks();

    let v1 = Simulator::new(SimConfig::default().all_sync());
    let vm = System::create_with(v1.clone(), "vm", VM, Timeouts::uniform(LONG)).unwrap();
    assert!(matches!(
        vm.migration_source(),
        Err(MigrationError::NotSupported(_))
    ));
    vm.terminate().unwrap();
    vm.close().unwrap();
    v1.assert_no_leaks();
}

#[test]
fn a_source_crash_mid_transfer_fails_both_sides_and_leaves_the_destination_discardable() {
    let src_sim = sim();
    src_sim.set_migration_config(MigrationConfig {
        fault: Some(MigrationFault::CrashSourceAtRound(0)),
        dirty_pages_per_sec: 50_000,
        blackout_threshold_pages: 0,
        max_rounds: 4,
        ..MigrationConfig::default()
    });
    let h = prepare(src_sim, sim(), "crash-src");
    let mut ev_dst = h.m_dst.events();
    start(&h);
    let (a, b) = transfer(&h);
    assert!(
        matches!(&a, Err(MigrationError::Hcs(e)) if e.is_unexpected_exit()),
        "{a:?}"
    );
    assert!(b.is_err());
    assert_eq!(h.m_src.state(), MigrationState::Failed);
    let last = until_terminal(&mut ev_dst).pop().unwrap();
    assert_eq!(last.result, Some(MigrationResult::SourceMigrationFailed));
    h.src.wait_timeout(LONG).unwrap();
    assert!(h.src.exit_status().unwrap().unexpected);
    // The source VM is gone: Stop reconciles to a no-op, the destination is discarded.
    h.m_src.finalize(FinalOperation::Stop).unwrap();
    h.m_dst.finalize(FinalOperation::Stop).unwrap();
    close_and_check(h);
}

#[test]
fn a_destination_crash_mid_transfer_leaves_the_source_running() {
    let dst_sim = sim();
    dst_sim.set_migration_config(MigrationConfig {
        fault: Some(MigrationFault::CrashDestinationAtRound(0)),
        ..MigrationConfig::default()
    });
    let src_sim = sim();
    src_sim.set_migration_config(MigrationConfig {
        dirty_pages_per_sec: 50_000,
        blackout_threshold_pages: 0,
        max_rounds: 4,
        ..MigrationConfig::default()
    });
    let h = prepare(src_sim, dst_sim, "crash-dst");
    let mut ev_src = h.m_src.events();
    start(&h);
    let (a, b) = transfer(&h);
    assert!(
        matches!(&b, Err(MigrationError::Hcs(e)) if e.is_unexpected_exit()),
        "{b:?}"
    );
    assert!(a.is_err());
    let ev = until_terminal(&mut ev_src);
    assert_eq!(ev.last().unwrap().event(), Some(&MigrationEvent::MigrationFailed));
    assert_eq!(
        ev.last().unwrap().result,
        Some(MigrationResult::DestinationMigrationFailed)
    );
    h.dst.wait_timeout(LONG).unwrap();
    h.m_src.finalize(FinalOperation::Resume).unwrap();
    assert_eq!(
        h.src_sim.system_info("crash-dst").unwrap().state,
        SystemState::Running
    );
    h.m_dst.finalize(FinalOperation::Stop).unwrap();
    close_and_check(h);
}

#[test]
fn a_transport_cut_mid_transfer_fails_both_sides_cleanly() {
    let src_sim = sim();
    src_sim.set_migration_config(MigrationConfig {
        fault: Some(MigrationFault::CutTransportAtRound(0)),
        dirty_pages_per_sec: 50_000,
        blackout_threshold_pages: 0,
        max_rounds: 4,
        ..MigrationConfig::default()
    });
    let h = prepare(src_sim, sim(), "cut");
    let mut ev_src = h.m_src.events();
    start(&h);
    let (a, b) = transfer(&h);
    assert!(matches!(&a, Err(MigrationError::Hcs(_))), "{a:?}");
    assert!(matches!(&b, Err(MigrationError::Hcs(_))), "{b:?}");
    let ev = names(&until_terminal(&mut ev_src));
    assert_eq!(ev.last().map(String::as_str), Some("MigrationFailed"));
    assert_eq!(
        h.m_src.terminal_event().unwrap().result,
        Some(MigrationResult::DestinationMigrationFailed)
    );
    finish_failed(h);
}

#[test]
fn a_guest_initiated_cancellation_is_reported_on_both_sides() {
    let src_sim = sim();
    src_sim.set_migration_config(MigrationConfig {
        fault: Some(MigrationFault::GuestCancelAtRound(0)),
        dirty_pages_per_sec: 50_000,
        blackout_threshold_pages: 0,
        ..MigrationConfig::default()
    });
    let h = prepare(src_sim, sim(), "guest");
    let mut ev_dst = h.m_dst.events();
    start(&h);
    let (a, b) = transfer(&h);
    assert!(a.is_err() && b.is_err());
    let t = h.m_src.wait_terminal_event(LONG).unwrap();
    assert_eq!(t.result, Some(MigrationResult::GuestInitiatedCancellation));
    assert_eq!(
        until_terminal(&mut ev_dst).pop().unwrap().result,
        Some(MigrationResult::MigrationCancelled)
    );
    finish_failed(h);
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Initialized,
    Started,
    Transferring,
    Transferred,
    Finalized,
}

fn cancel_at(phase: Phase, from_source: bool) {
    let src_sim = sim();
    if matches!(phase, Phase::Transferring) {
        src_sim.set_migration_config(MigrationConfig {
            fault: Some(MigrationFault::HoldAtRound(0)),
            dirty_pages_per_sec: 50_000,
            blackout_threshold_pages: 0,
            ..MigrationConfig::default()
        });
    }
    let h = prepare(src_sim, sim(), "cancel");
    let canceller = if from_source {
        h.m_src.clone()
    } else {
        h.m_dst.clone()
    };
    let what = format!(
        "{phase:?} from the {}",
        if from_source { "source" } else { "destination" }
    );
    match phase {
        Phase::Initialized => {
            let path = canceller.cancel().unwrap();
            // The destination has nothing started yet: nothing to cancel.
            let expected = if from_source {
                CancelPath::Hcs
            } else {
                CancelPath::NoOp
            };
            assert_eq!(path, expected, "{what}");
            // Cancel is owed on both sides: the orchestrator cancels the source too.
            if !from_source {
                assert_eq!(h.m_src.cancel().unwrap(), CancelPath::Hcs);
            }
            finish_failed_or_idle(h);
        }
        Phase::Started => {
            start(&h);
            assert_eq!(canceller.cancel().unwrap(), CancelPath::Hcs, "{what}");
            let (a, b) = transfer(&h);
            assert!(a.is_err() && b.is_err(), "{what}: {a:?} {b:?}");
            finish_failed(h);
        }
        Phase::Transferring => {
            start(&h);
            let (s, d) = (h.m_src.clone(), h.m_dst.clone());
            let ts = thread::spawn(move || s.transfer());
            let td = thread::spawn(move || d.transfer());
            assert!(h.src_sim.wait_migration_held(LONG), "{what}");
            assert_eq!(canceller.cancel().unwrap(), CancelPath::Hcs, "{what}");
            h.src_sim.release_migration();
            let (a, b) = (ts.join().unwrap(), td.join().unwrap());
            let cancelled = if from_source { &a } else { &b };
            assert!(
                matches!(cancelled, Err(MigrationError::Cancelled)),
                "{what}: {a:?} {b:?}"
            );
            assert!(a.is_err() && b.is_err(), "{what}");
            assert_eq!(canceller.state(), MigrationState::Cancelled);
            finish_failed(h);
        }
        Phase::Transferred => {
            start(&h);
            let (a, b) = transfer(&h);
            a.unwrap();
            b.unwrap();
            assert_eq!(canceller.cancel().unwrap(), CancelPath::AlreadyFinished, "{what}");
            // Cancelled after the copy: the source rolls back, the destination discards.
            finish_failed(h);
        }
        Phase::Finalized => {
            start(&h);
            let (a, b) = transfer(&h);
            a.unwrap();
            b.unwrap();
            h.m_src.finalize(FinalOperation::Stop).unwrap();
            h.m_dst.finalize(FinalOperation::Resume).unwrap();
            assert_eq!(canceller.cancel().unwrap(), CancelPath::NoOp, "{what}");
            h.src.wait_timeout(LONG).unwrap();
            close_and_check(h);
        }
    }
}

/// After a cancel before anything was started: the source rolls back (its VM keeps running),
/// the never-started destination is discarded.
fn finish_failed_or_idle(h: Hosts) {
    h.m_src
        .finalize(FinalOperation::Resume)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        h.src_sim.system_info("cancel").unwrap().state,
        SystemState::Running
    );
    close_and_check(h);
}

#[test]
fn cancel_at_each_phase_from_either_side_ends_clean() {
    for phase in [
        Phase::Initialized,
        Phase::Started,
        Phase::Transferring,
        Phase::Transferred,
        Phase::Finalized,
    ] {
        for from_source in [true, false] {
            cancel_at(phase, from_source);
        }
    }
}

#[test]
fn without_the_cancel_export_a_cancel_shuts_the_transport_and_ends_the_transfer() {
    let src_sim = sim();
    src_sim.set_migration_config(MigrationConfig {
        cancel_export: false,
        fault: Some(MigrationFault::HoldAtRound(0)),
        dirty_pages_per_sec: 50_000,
        blackout_threshold_pages: 0,
        ..MigrationConfig::default()
    });
    let h = prepare(src_sim, sim(), "no-cancel");
    start(&h);
    let (s, d) = (h.m_src.clone(), h.m_dst.clone());
    let ts = thread::spawn(move || s.transfer());
    let td = thread::spawn(move || d.transfer());
    assert!(h.src_sim.wait_migration_held(LONG));
    assert_eq!(h.m_src.cancel().unwrap(), CancelPath::TransportShutdown);
    h.src_sim.release_migration();
    let (a, b) = (ts.join().unwrap(), td.join().unwrap());
    assert!(matches!(a, Err(MigrationError::Cancelled)), "{a:?}");
    assert!(b.is_err());
    finish_failed(h);
}

#[test]
fn fault_plan_failures_reach_every_migration_step() {
    use hcs::Method;
    for (method, step) in [
        (Method::InitializeLiveMigrationOnSource, 0),
        (Method::StartComputeSystemAsMigrationDestination, 1),
        (Method::StartLiveMigrationOnSource, 1),
        (Method::StartLiveMigrationTransfer, 2),
        (Method::FinalizeLiveMigration, 3),
    ] {
        let src_sim = sim();
        let dst_sim = sim();
        let plan = FaultPlan::new().rule(Rule::call(method).nth(1).fail(hcs::HResult::E_FAIL));
        src_sim.set_fault_plan(plan.clone()).unwrap();
        dst_sim.set_fault_plan(plan).unwrap();
        if step == 0 {
            let src = System::create_with(src_sim.clone(), "f", VM, Timeouts::uniform(LONG)).unwrap();
            src.start().unwrap();
            let m = src.migration_source().unwrap();
            assert!(
                m.initialize(&MigrationInitializeOptions::default()).is_err(),
                "{method}"
            );
            assert_eq!(m.state(), MigrationState::Failed);
            drop(m);
            src.terminate().unwrap();
            src.close().unwrap();
            src_sim.assert_no_leaks();
            continue;
        }
        let h = prepare(src_sim, dst_sim, "f");
        let (a, b) = pair_of_streams();
        let rd = h.m_dst.start(b, 1);
        let rs = h.m_src.start(a, 1);
        if step == 1 {
            assert!(rd.is_err() || rs.is_err(), "{method}");
            // A side whose start failed never started: cancel the other, roll back, discard.
            let _ = h.m_src.cancel();
            let _ = h.m_dst.cancel();
            h.m_src.finalize(FinalOperation::Resume).unwrap();
            let _ = h.m_dst.finalize(FinalOperation::Stop);
            close_and_check(h);
            continue;
        }
        let (x, y) = transfer(&h);
        if step == 2 {
            // Each side's first transfer fails; the other sees its peer go.
            assert!(x.is_err() && y.is_err(), "{method}");
            finish_failed(h);
            continue;
        }
        x.unwrap();
        y.unwrap();
        assert!(h.m_src.finalize(FinalOperation::Stop).is_err(), "{method}");
        assert_eq!(h.m_src.state(), MigrationState::TransferCompleted);
        h.m_src.finalize(FinalOperation::Stop).unwrap();
        assert!(h.m_dst.finalize(FinalOperation::Resume).is_err());
        h.m_dst.finalize(FinalOperation::Resume).unwrap();
        h.src.wait_timeout(LONG).unwrap();
        close_and_check(h);
    }
}

#[test]
fn the_vms_synthetic_processes_move_with_it() {
    use hcs_sim::{Script, ScriptedProcess};
    let scripted = || {
        let script = Script::new()
            .on("worker", ScriptedProcess::forever())
            .on("batch", ScriptedProcess::exits(7).runtime(Duration::from_secs(2)));
        Simulator::new(
            SimConfig::default()
                .all_sync()
                .generation(ApiGeneration::V2)
                .scripted(script),
        )
    };
    let (a, b) = (scripted(), scripted());
    let src = System::create_with(a.clone(), "procs", VM, Timeouts::uniform(LONG)).unwrap();
    src.start().unwrap();
    let worker = src.create_process(r#"{"CommandLine":"worker"}"#).unwrap();
    let batch = src.create_process(r#"{"CommandLine":"batch"}"#).unwrap();
    let (worker_pid, batch_pid) = (worker.pid(), batch.pid());
    worker.close().unwrap();
    batch.close().unwrap();
    let m_src = src.migration_source().unwrap();
    m_src.initialize(&verified()).unwrap();
    let compat = m_src.compatibility_info().unwrap();
    let (dst, m_dst) =
        Migration::create_destination(b.clone(), "procs", VM, compat, Timeouts::uniform(LONG)).unwrap();
    let h = Hosts {
        src_sim: a,
        dst_sim: b.clone(),
        src,
        dst,
        m_src: Arc::new(m_src),
        m_dst: Arc::new(m_dst),
    };
    start(&h);
    let (x, y) = transfer(&h);
    x.unwrap();
    y.unwrap();
    h.m_src.finalize(FinalOperation::Stop).unwrap();
    h.m_dst.finalize(FinalOperation::Resume).unwrap();
    h.src.wait_timeout(LONG).unwrap();
    let procs = b.system_info("procs").unwrap().processes;
    let pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
    assert!(
        pids.contains(&worker_pid) && pids.contains(&batch_pid),
        "{procs:?}"
    );
    // They run on the destination: the worker until killed, the batch job (2 s from its start
    // on the source, the rest of its runtime carried over) to its exit code.
    let w = h.dst.open_process(worker_pid).unwrap();
    let bj = h.dst.open_process(batch_pid).unwrap();
    bj.wait_timeout(LONG).unwrap();
    assert_eq!(bj.exit_code().unwrap(), 7);
    assert!(
        w.wait_timeout(Duration::from_millis(50)).is_err(),
        "the worker still runs"
    );
    w.close().unwrap();
    bj.close().unwrap();
    h.src.close().unwrap();
    close_and_check(h);
}

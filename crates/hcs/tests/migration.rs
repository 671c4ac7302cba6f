//! The migration API on `System` against the scripted fake (design §10): V1 refusal, the step
//! order and state machine, the lossy event ring and the latched terminal event, malformed
//! payloads, cancel racing the end of the transfer, cancel after close, a missing cancel
//! export, and finalize retries.

mod common;

use common::{block_on, ms, LONG};
use hcs::schema::migration::{
    CompatibilityInfo, MigrationEvent, MigrationInitializeOptions, MigrationOrigin, MigrationResult,
};
use hcs::{
    ApiGeneration, CancelPath, FinalOperation, HResult, Method, Migration, MigrationError, MigrationState,
    MigrationTransport, NotificationKind, System, Timeouts,
};
use hcs_testkit::{Answer, FakeDriver, Gate};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

const VM: &str = r#"{"SchemaVersion":{"Major":2,"Minor":1},"Owner":"test","VirtualMachine":{"ComputeTopology":{"Memory":{"SizeInMB":64}}}}"#;

fn v2_system() -> (Arc<FakeDriver>, System) {
    let fake = FakeDriver::with_generation(ApiGeneration::V2);
    let s = System::create_with(fake.clone(), "vm", VM, Timeouts::uniform(LONG)).expect("create");
    (fake, s)
}

/// A connected loopback pair: (ours, the peer).
fn transport() -> (MigrationTransport, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (MigrationTransport::new(a).unwrap(), b)
}

fn fire(fake: &FakeDriver, payload: Option<&str>) {
    let ctx = fake.last_system_context().expect("registered");
    assert!(fake.fire(ctx, NotificationKind::LiveMigration, 0u32, payload));
}

fn migration_calls(fake: &FakeDriver) -> usize {
    [
        Method::InitializeLiveMigrationOnSource,
        Method::StartLiveMigrationOnSource,
        Method::StartLiveMigrationTransfer,
        Method::FinalizeLiveMigration,
        Method::CancelLiveMigration,
        Method::StartComputeSystemAsMigrationDestination,
        Method::EnableLiveMigrationEvents,
    ]
    .iter()
    .map(|m| fake.count(*m))
    .sum()
}

/// A source session through `Started`.
fn started_source(fake: &FakeDriver, s: &System) -> (Migration, TcpStream) {
    let m = s.migration_source().expect("v2");
    m.initialize(&MigrationInitializeOptions::default()).unwrap();
    let (t, peer) = transport();
    m.start(t, 7).unwrap();
    assert_eq!(m.state(), MigrationState::Started);
    assert_eq!(
        fake.calls_of(Method::StartLiveMigrationOnSource)[0].arg,
        r#"{"NetworkSettings":{"SessionId":7}}"#
    );
    (m, peer)
}

#[test]
fn v1_driver_is_refused_before_any_driver_call() {
    let (fake, s) = common::system();
    let err = s.migration_source().unwrap_err();
    assert!(
        matches!(err, MigrationError::NotSupported(ref m) if m.contains("V1")),
        "{err}"
    );
    let creates = fake.count(Method::CreateComputeSystem);
    let err = Migration::create_destination(
        fake.clone(),
        "d",
        VM,
        CompatibilityInfo::default(),
        Timeouts::uniform(LONG),
    )
    .unwrap_err();
    assert!(matches!(err, MigrationError::NotSupported(_)));
    assert_eq!(fake.count(Method::CreateComputeSystem), creates);
    assert_eq!(migration_calls(&fake), 0);
    s.close().unwrap();
    fake.assert_no_leaks();
}

#[test]
fn source_happy_path_runs_the_steps_in_order_with_their_documents() {
    let (fake, s) = v2_system();
    fake.script(
        Method::GetComputeSystemProperties,
        Answer::ok_with(r#"{"CompatibilityInfo":{"Data":"AAEC"}}"#),
    );
    let (m, _peer) = started_source(&fake, &s);
    assert_eq!(m.compatibility_info().unwrap().data.as_deref(), Some("AAEC"));
    assert_eq!(
        fake.calls_of(Method::GetComputeSystemProperties)
            .last()
            .unwrap()
            .arg,
        hcs::schema::migration::COMPATIBILITY_INFO_QUERY
    );
    m.transfer().unwrap();
    assert_eq!(m.state(), MigrationState::TransferCompleted);
    m.finalize(FinalOperation::Stop).unwrap();
    assert_eq!(m.state(), MigrationState::Finalized(FinalOperation::Stop));
    let order: Vec<Method> = fake
        .calls()
        .into_iter()
        .map(|c| c.method)
        .filter(|m| m.name().contains("Migration"))
        .collect();
    assert_eq!(
        order,
        [
            Method::EnableLiveMigrationEvents,
            Method::InitializeLiveMigrationOnSource,
            Method::StartLiveMigrationOnSource,
            Method::StartLiveMigrationTransfer,
            Method::FinalizeLiveMigration
        ]
    );
    assert_eq!(
        fake.calls_of(Method::InitializeLiveMigrationOnSource)[0].arg,
        r#"{"Origin":"Source"}"#
    );
    assert_eq!(
        fake.calls_of(Method::StartLiveMigrationTransfer)[0].arg,
        r#"{"Origin":"Source"}"#
    );
    assert_eq!(
        fake.calls_of(Method::FinalizeLiveMigration)[0].arg,
        r#"{"Origin":"Source","FinalizedOperation":"Stop"}"#
    );
    drop(m);
    s.close().unwrap();
    fake.assert_no_leaks();
}

#[test]
fn destination_is_created_with_migration_options_and_started_with_the_transport() {
    let fake = FakeDriver::with_generation(ApiGeneration::V2);
    let compat = CompatibilityInfo {
        data: Some("AAEC".into()),
    };
    let (s, m) =
        Migration::create_destination(fake.clone(), "d", VM, compat, Timeouts::uniform(LONG)).unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&fake.calls_of(Method::CreateComputeSystem)[0].arg).unwrap();
    assert_eq!(
        doc["VirtualMachine"]["MigrationOptions"],
        serde_json::json!({"Origin":"Destination","MemoryTransport":"TCP","CompatibilityData":{"Data":"AAEC"}})
    );
    assert!(matches!(
        m.initialize(&MigrationInitializeOptions::default()),
        Err(MigrationError::InvalidState { .. })
    ));
    let (t, _peer) = transport();
    m.start(t, 9).unwrap();
    assert_eq!(
        fake.calls_of(Method::StartComputeSystemAsMigrationDestination)[0].arg,
        r#"{"DestinationMigrationOptions":{"NetworkSettings":{"SessionId":9}}}"#
    );
    m.transfer().unwrap();
    assert_eq!(
        fake.calls_of(Method::StartLiveMigrationTransfer)[0].arg,
        r#"{"Origin":"Destination"}"#
    );
    m.finalize(FinalOperation::Resume).unwrap();
    drop(m);
    s.close().unwrap();
    fake.assert_no_leaks();

    // A Container cannot migrate: refused before create.
    let err = Migration::create_destination(
        fake.clone(),
        "c",
        common::CONFIG,
        CompatibilityInfo::default(),
        Timeouts::uniform(LONG),
    )
    .unwrap_err();
    assert!(matches!(err, MigrationError::NotSupported(ref m) if m.contains("VirtualMachine")));
}

#[test]
fn events_overflowing_the_ring_with_no_reader_never_block_and_the_terminal_event_is_latched() {
    let (fake, s) = v2_system();
    let m = s.migration_source().unwrap();
    let mut early = m.events();
    let t = Instant::now();
    fire(&fake, Some(r#"{"Origin":"Source","Event":"SetupDone"}"#));
    fire(
        &fake,
        Some(r#"{"Origin":"Source","Event":"MigrationDone","Result":"Success"}"#),
    );
    for i in 0..1000 {
        fire(
            &fake,
            Some(&format!(
                r#"{{"Origin":"Source","Event":"TransferInProgress","AdditionalDetails":{{"i":{i}}}}}"#
            )),
        );
    }
    assert!(t.elapsed() < Duration::from_secs(5), "dispatch blocked");
    // The early reader lost all but the last EVENT_BUFFER events, and knows how many.
    let first = early.try_recv().unwrap();
    assert_eq!(early.missed(), 1002 - hcs::migration::EVENT_BUFFER as u64);
    assert_eq!(first.seq, 1002 - hcs::migration::EVENT_BUFFER as u64 + 1);
    assert_eq!(
        first.result,
        Some(MigrationResult::Success),
        "missing Result on progress = success"
    );
    let mut n = 1;
    while early.try_recv().is_some() {
        n += 1;
    }
    assert_eq!(n, hcs::migration::EVENT_BUFFER);
    // The terminal event fell out of the ring but stays latched.
    let term = m.terminal_event().expect("latched");
    assert_eq!(term.event(), Some(&MigrationEvent::MigrationDone));
    assert_eq!(term.seq, 2);
    // A late subscriber starts at the latest event.
    let mut late = s.migration_events();
    assert_eq!(late.try_recv().unwrap().seq, 1002);
    assert!(late.try_recv().is_none());
    drop(m);
    s.close().unwrap();
    // The stream ends once the System is closed.
    assert!(late.recv_timeout(LONG).is_none());
    fake.assert_no_leaks();
}

#[test]
fn malformed_event_payloads_are_reported_not_latched_and_never_panic() {
    let (fake, s) = v2_system();
    let m = s.migration_source().unwrap();
    let mut ev = m.events();
    for bad in [
        Some("{not json"),
        Some(r#"{"Event": 7}"#),
        Some("[1,2]"),
        Some("\u{0}"),
    ] {
        fire(&fake, bad);
    }
    for empty in [None, Some(""), Some("null")] {
        fire(&fake, empty);
    }
    for _ in 0..4 {
        let n = ev.recv_timeout(LONG).unwrap();
        assert!(n.malformed.is_some(), "{n:?}");
        assert!(n.event().is_none());
    }
    for _ in 0..3 {
        let n = ev.recv_timeout(LONG).unwrap();
        assert!(n.malformed.is_none() && n.event().is_none());
    }
    assert!(m.terminal_event().is_none());
    fire(
        &fake,
        Some(r#"{"Origin":"Source","Event":"MigrationFailed","Result":"GuestInitiatedCancellation"}"#),
    );
    let t = m.wait_terminal_event(LONG).unwrap();
    assert_eq!(t.result, Some(MigrationResult::GuestInitiatedCancellation));
    assert_eq!(t.info.origin, Some(MigrationOrigin::Source));
    drop(m);
    s.close().unwrap();
    fake.assert_no_leaks();
}

#[test]
fn the_async_stream_wakes_on_a_new_event() {
    let (fake, s) = v2_system();
    let mut ev = s.migration_events();
    let f2 = fake.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(ms(30));
        fire(
            &f2,
            Some(
                r#"{"Event":"BlackoutExited","AdditionalDetails":{"BlackoutDurationMilliseconds":5,"BlackoutStopTimestamp":"x"}}"#,
            ),
        );
    });
    let n = block_on(ev.recv_async(), LONG).expect("woke").expect("an event");
    let d = n.info.blackout_exited_details().unwrap().unwrap();
    assert_eq!(d.blackout_duration_milliseconds, 5);
    t.join().unwrap();
    s.close().unwrap();
    assert!(
        block_on(ev.recv_async(), LONG).unwrap().is_none(),
        "ends after close"
    );
}

#[test]
fn cancel_interrupts_a_running_transfer_which_then_reports_cancelled() {
    let (fake, s) = v2_system();
    let gate = Gate::new();
    fake.script(
        Method::StartLiveMigrationTransfer,
        Answer::ok().blocking(gate.clone()),
    );
    let (m, _peer) = started_source(&fake, &s);
    let m = Arc::new(m);
    let m2 = m.clone();
    let transfer = std::thread::spawn(move || m2.transfer());
    assert!(gate.wait_entered(LONG));
    assert_eq!(m.state(), MigrationState::Transferring);
    // Cancel runs while the transfer holds its handle use: no lock in the way.
    assert_eq!(m.cancel().unwrap(), CancelPath::Hcs);
    assert_eq!(m.state(), MigrationState::Cancelled);
    assert_eq!(
        fake.calls_of(Method::CancelLiveMigration)[0].arg,
        r#"{"Origin":"Source"}"#
    );
    gate.open();
    assert!(matches!(transfer.join().unwrap(), Err(MigrationError::Cancelled)));
    assert_eq!(m.state(), MigrationState::Cancelled);
    assert_eq!(m.cancel().unwrap(), CancelPath::NoOp, "idempotent");
    assert!(
        matches!(m.transfer(), Err(MigrationError::Cancelled)),
        "a cancelled session stays cancelled"
    );
    m.finalize(FinalOperation::Resume).unwrap();
    drop(m);
    s.close().unwrap();
    fake.assert_no_leaks();
}

#[test]
fn cancel_after_the_transfer_finished_counts_invalid_state_as_cancelled() {
    let (fake, s) = v2_system();
    fake.script(
        Method::CancelLiveMigration,
        Answer::fail(HResult::HCS_E_INVALID_STATE),
    );
    let (m, _peer) = started_source(&fake, &s);
    m.transfer().unwrap();
    assert_eq!(m.cancel().unwrap(), CancelPath::AlreadyFinished);
    assert_eq!(m.state(), MigrationState::Cancelled);
    m.finalize(FinalOperation::Resume).unwrap();
    drop(m);
    s.close().unwrap();
    fake.assert_no_leaks();
}

#[test]
fn cancel_racing_the_end_of_the_transfer_always_ends_cancelled() {
    for round in 0..40 {
        let (fake, s) = v2_system();
        // A cancel that lands after the transfer returned meets HCS's "invalid state".
        fake.set_default(Method::CancelLiveMigration, Answer::ok());
        let (m, _peer) = started_source(&fake, &s);
        let m = Arc::new(m);
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (m2, b2) = (m.clone(), barrier.clone());
        let t = std::thread::spawn(move || {
            b2.wait();
            m2.transfer()
        });
        barrier.wait();
        if round % 2 == 0 {
            std::thread::yield_now();
        }
        let c = m.cancel();
        let r = t.join().unwrap();
        match (&r, &c) {
            (Ok(()), Ok(CancelPath::Hcs | CancelPath::AlreadyFinished)) => {}
            // During the transfer, or before it entered (then it never calls HCS).
            (Err(MigrationError::Cancelled), Ok(CancelPath::Hcs)) => {}
            other => panic!("round {round}: unexpected {other:?}"),
        }
        assert_eq!(m.state(), MigrationState::Cancelled, "round {round}");
        m.finalize(FinalOperation::Resume).unwrap();
        drop(m);
        s.close().unwrap();
        fake.assert_no_leaks();
    }
}

#[test]
fn cancel_after_close_never_reaches_the_driver() {
    let (fake, s) = v2_system();
    let (m, _peer) = started_source(&fake, &s);
    s.close().unwrap();
    assert!(matches!(m.cancel(), Err(MigrationError::Closed)));
    assert!(matches!(m.transfer(), Err(MigrationError::Closed)));
    assert_eq!(fake.count(Method::CancelLiveMigration), 0);
    fake.assert_no_leaks();
}

#[test]
fn close_waits_for_a_running_transfer_and_a_later_cancel_is_refused() {
    let (fake, s) = v2_system();
    let gate = Gate::new();
    fake.script(
        Method::StartLiveMigrationTransfer,
        Answer::ok().blocking(gate.clone()),
    );
    let (m, _peer) = started_source(&fake, &s);
    let m = Arc::new(m);
    let m2 = m.clone();
    let transfer = std::thread::spawn(move || m2.transfer());
    assert!(gate.wait_entered(LONG));
    let s = Arc::new(s);
    let s2 = s.clone();
    let closer = std::thread::spawn(move || s2.close());
    std::thread::sleep(ms(30));
    assert!(
        !closer.is_finished(),
        "close must wait for the transfer's handle use"
    );
    // Close has begun: a cancel now must not touch the handle.
    assert!(matches!(m.cancel(), Err(MigrationError::Closed)));
    gate.open();
    transfer.join().unwrap().unwrap();
    closer.join().unwrap().unwrap();
    assert_eq!(fake.count(Method::CancelLiveMigration), 0);
    fake.assert_no_leaks();
}

#[test]
fn a_missing_cancel_export_shuts_the_transport_down_instead() {
    let (fake, s) = v2_system();
    fake.set_default(Method::CancelLiveMigration, Answer::fail(HResult::E_NOTIMPL));
    let (m, mut peer) = started_source(&fake, &s);
    assert_eq!(m.cancel().unwrap(), CancelPath::TransportShutdown);
    assert_eq!(m.state(), MigrationState::Cancelled);
    use std::io::Read;
    let mut buf = [0u8; 8];
    assert_eq!(
        peer.read(&mut buf).unwrap(),
        0,
        "the peer sees the connection end"
    );
    drop(m);
    s.close().unwrap();

    // Before a transport exists, a missing export is reported as such.
    let (fake, s) = v2_system();
    fake.set_default(Method::CancelLiveMigration, Answer::fail(HResult::E_NOTIMPL));
    let m = s.migration_source().unwrap();
    m.initialize(&MigrationInitializeOptions::default()).unwrap();
    assert!(matches!(m.cancel(), Err(MigrationError::NotSupported(_))));
    assert_eq!(m.state(), MigrationState::Initialized);
    drop(m);
    s.close().unwrap();
    fake.assert_no_leaks();
}

#[test]
fn finalize_retries_reconcile_and_a_failed_finalize_can_be_retried() {
    let (fake, s) = v2_system();
    fake.script(Method::FinalizeLiveMigration, Answer::fail(HResult::E_FAIL));
    let (m, _peer) = started_source(&fake, &s);
    assert!(matches!(
        m.finalize(FinalOperation::Stop),
        Err(MigrationError::InvalidState { .. })
    ));
    m.transfer().unwrap();
    assert!(matches!(
        m.finalize(FinalOperation::Stop),
        Err(MigrationError::Hcs(_))
    ));
    assert_eq!(
        m.state(),
        MigrationState::TransferCompleted,
        "a failed finalize changes nothing"
    );
    m.finalize(FinalOperation::Stop).unwrap();
    m.finalize(FinalOperation::Stop).unwrap();
    assert_eq!(
        fake.count(Method::FinalizeLiveMigration),
        2,
        "a repeated finalize is a no-op"
    );
    assert!(matches!(
        m.finalize(FinalOperation::Resume),
        Err(MigrationError::InvalidState { .. })
    ));
    drop(m);
    s.close().unwrap();

    // After the VM exited: Stop is a no-op, Resume an error; neither calls HCS.
    let (fake, s) = v2_system();
    let (m, _peer) = started_source(&fake, &s);
    m.transfer().unwrap();
    common::exit_system(&fake, 0, "GracefulExit");
    assert!(matches!(
        m.finalize(FinalOperation::Resume),
        Err(MigrationError::InvalidState { .. })
    ));
    m.finalize(FinalOperation::Stop).unwrap();
    assert_eq!(fake.count(Method::FinalizeLiveMigration), 0);
    drop(m);
    s.close().unwrap();
    fake.assert_no_leaks();
}

#[test]
fn a_failed_transfer_is_typed_and_a_missing_export_is_not_supported() {
    let (fake, s) = v2_system();
    fake.script(Method::StartLiveMigrationTransfer, Answer::fail(HResult::E_FAIL));
    let (m, _peer) = started_source(&fake, &s);
    let e = m.transfer().unwrap_err();
    assert!(
        matches!(&e, MigrationError::Hcs(h) if h.hresult() == Some(HResult::E_FAIL)),
        "{e}"
    );
    assert_eq!(m.state(), MigrationState::Failed);
    m.finalize(FinalOperation::Resume).unwrap();
    drop(m);
    s.close().unwrap();

    let (fake, s) = v2_system();
    fake.script(
        Method::InitializeLiveMigrationOnSource,
        Answer::fail(HResult::E_NOTIMPL),
    );
    let m = s.migration_source().unwrap();
    assert!(matches!(
        m.initialize(&MigrationInitializeOptions::default()),
        Err(MigrationError::NotSupported(_))
    ));
    assert_eq!(m.state(), MigrationState::Idle);
    drop(m);
    s.close().unwrap();
    fake.assert_no_leaks();
}

//! Live migration through the V2 driver and the fake `computecore.dll` under Wine (design
//! §10): a VM on the DLL's simulator migrates to a second simulator in this process over a real
//! loopback TCP connection, the socket handed to the DLL with `HcsAddResourceToOperation`, the
//! events arriving through the driver's V2 callback (option 4). Run by `scripts/test-windows.sh`.
#![cfg(windows)]

use hcs::schema::migration::{MigrationEvent, MigrationInitializeOptions, MigrationResult};
use hcs::{ApiGeneration, FinalOperation, Migration, MigrationState, MigrationTransport, System, Timeouts};
use hcs_computecore::{ComputeCoreDriver, ComputeCoreTable, DllSource};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);
const VM: &str = r#"{"SchemaVersion":{"Major":2,"Minor":1},"Owner":"wine","VirtualMachine":{"ComputeTopology":{"Memory":{"SizeInMB":2}}}}"#;

#[test]
fn a_vm_migrates_from_the_fake_dll_to_a_simulator_with_its_socket_attached_to_the_operation() {
    let table =
        ComputeCoreTable::load_from(&DllSource::DefaultSearchOrder).expect("the fake computecore.dll loads");
    assert!(table.has_live_migration() && table.add_resource_to_operation.is_some());
    let driver = ComputeCoreDriver::new(table);
    let src = System::create_with(driver, "lm-wine", VM, Timeouts::uniform(LONG)).unwrap();
    src.start().unwrap();
    let m_src = src.migration_source().unwrap();
    m_src
        .initialize(&MigrationInitializeOptions {
            checksum_verification: Some(true),
            ..MigrationInitializeOptions::default()
        })
        .unwrap();
    let compat = m_src.compatibility_info().unwrap();
    let dst_sim = hcs_sim::Simulator::new(
        hcs_sim::SimConfig::default()
            .all_sync()
            .generation(ApiGeneration::V2),
    );
    let (dst, m_dst) =
        Migration::create_destination(dst_sim.clone(), "lm-wine", VM, compat, Timeouts::uniform(LONG))
            .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    let mut events = m_src.events();
    m_dst.start(MigrationTransport::new(b).unwrap(), 11).unwrap();
    m_src.start(MigrationTransport::new(a).unwrap(), 11).unwrap();
    let m_dst = Arc::new(m_dst);
    let d = m_dst.clone();
    let t = std::thread::spawn(move || d.transfer());
    m_src.transfer().unwrap();
    t.join().unwrap().unwrap();
    assert_eq!(m_src.state(), MigrationState::TransferCompleted);
    let report = dst_sim.migration_reports().pop().unwrap();
    assert!(
        report.ok && report.checksum != 0,
        "the destination verified the image: {report:?}"
    );
    // The events came through the DLL's HCS_EVENT callback.
    let terminal = m_src
        .wait_terminal_event(LONG)
        .expect("a terminal event through the V2 callback");
    assert_eq!(terminal.event(), Some(&MigrationEvent::MigrationDone));
    assert_eq!(terminal.result, Some(MigrationResult::Success));
    assert!(events.recv_timeout(LONG).is_some());
    m_src.finalize(FinalOperation::Stop).unwrap();
    m_dst.finalize(FinalOperation::Resume).unwrap();
    src.wait_timeout(LONG).unwrap();
    drop(m_src);
    drop(m_dst);
    src.close().unwrap();
    dst.terminate().unwrap();
    dst.close().unwrap();
    dst_sim.assert_no_leaks();
}

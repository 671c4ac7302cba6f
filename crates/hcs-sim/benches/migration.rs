//! Live-migration benchmark (design §10.3): a VM of `HCS_BENCH_LM_MIB` MiB (default 256)
//! migrated between two simulators in this process over loopback TCP, through `hcs::Migration`,
//! against a raw loopback TCP copy of the same number of bytes measured in the same run (same
//! 1 MiB writes, the reader filling a buffer of the same size). Then the blackout time and the
//! pre-copy rounds at several guest dirty rates.
//!
//! `cargo bench -p hcs-sim --bench migration` (or with `-- --quick-ratios`: the same figures,
//! exit status 1 when the throughput ratio misses its 0.7 target). Not a timed test.

use hcs::schema::migration::{session_id_from, MigrationInitializeOptions};
use hcs::{ApiGeneration, FinalOperation, Migration, MigrationTransport, System, Timeouts};
use hcs_sim::{MigrationConfig, MigrationReport, SimConfig, Simulator};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(120);

fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

/// Raw copy: `bytes` from a buffer to a reader filling a buffer, 1 MiB writes. Seconds.
fn raw_copy(bytes: usize) -> f64 {
    let src = vec![0x5au8; bytes];
    let (mut a, mut b) = pair();
    let reader = std::thread::spawn(move || {
        let mut dst = vec![0u8; bytes];
        let mut at = 0;
        while at < bytes {
            let n = b.read(&mut dst[at..]).unwrap();
            assert!(n > 0);
            at += n;
        }
        dst[bytes - 1]
    });
    let t = Instant::now();
    for chunk in src.chunks(1 << 20) {
        a.write_all(chunk).unwrap();
    }
    let _ = reader.join().unwrap();
    t.elapsed().as_secs_f64()
}

fn sim(config: MigrationConfig) -> Arc<Simulator> {
    let s = Simulator::new(
        SimConfig::default()
            .all_sync()
            .generation(ApiGeneration::V2)
            .latency(Duration::ZERO),
    );
    s.set_migration_config(config);
    s
}

/// One migration of a `mib` MiB VM; (wall seconds of the transfer, source report).
fn migrate(mib: u64, config: MigrationConfig, verify: bool) -> (f64, MigrationReport) {
    let (src_sim, dst_sim) = (sim(config), sim(MigrationConfig::default()));
    let doc = format!(
        r#"{{"SchemaVersion":{{"Major":2,"Minor":1}},"Owner":"bench","VirtualMachine":{{"ComputeTopology":{{"Memory":{{"SizeInMB":{mib}}}}}}}}}"#
    );
    let src = System::create_with(src_sim.clone(), "vm", &doc, Timeouts::uniform(LONG)).unwrap();
    src.start().unwrap();
    let m_src = src.migration_source().unwrap();
    m_src
        .initialize(&MigrationInitializeOptions {
            checksum_verification: Some(verify),
            ..MigrationInitializeOptions::default()
        })
        .unwrap();
    let compat = m_src.compatibility_info().unwrap();
    let (dst, m_dst) =
        Migration::create_destination(dst_sim.clone(), "vm", &doc, compat, Timeouts::uniform(LONG)).unwrap();
    let (a, b) = pair();
    let sid = session_id_from("bench");
    m_dst.start(MigrationTransport::new(b).unwrap(), sid).unwrap();
    m_src.start(MigrationTransport::new(a).unwrap(), sid).unwrap();
    let m_dst = Arc::new(m_dst);
    let d = m_dst.clone();
    let t = Instant::now();
    let th = std::thread::spawn(move || d.transfer());
    m_src.transfer().unwrap();
    th.join().unwrap().unwrap();
    let secs = t.elapsed().as_secs_f64();
    if verify {
        assert_eq!(src_sim.guest_checksum("vm"), dst_sim.guest_checksum("vm"));
    }
    m_src.finalize(FinalOperation::Stop).unwrap();
    m_dst.finalize(FinalOperation::Resume).unwrap();
    let report = src_sim.migration_reports().pop().unwrap();
    src.wait_timeout(LONG).unwrap();
    drop((m_src, m_dst));
    src.close().unwrap();
    dst.terminate().unwrap();
    dst.close().unwrap();
    (secs, report)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick-ratios");
    if std::env::args().any(|a| a == "--list") {
        return; // cargo bench -- --list
    }
    let mib: u64 = std::env::var("HCS_BENCH_LM_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let bytes = (mib as usize) << 20;
    let runs = 5;
    // Alternate the two so drift on a shared machine hits both.
    let (mut raw, mut lm) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        raw.push(raw_copy(bytes));
        lm.push(migrate(mib, MigrationConfig::default(), false).0);
    }
    let (raw, lm) = (median(raw), median(lm));
    let mibs = |s: f64| mib as f64 / s;
    let ratio = raw / lm;
    println!("migration throughput, {mib} MiB, dirty rate 0, no checksum (median of {runs}):");
    println!("  raw loopback copy  {:8.1} MiB/s  ({:.3} s)", mibs(raw), raw);
    println!("  migration          {:8.1} MiB/s  ({:.3} s)", mibs(lm), lm);
    println!("  ratio migration/raw = {ratio:.2} (target >= 0.70)");
    let (v, r) = migrate(mib, MigrationConfig::default(), true);
    println!(
        "  with ChecksumVerification: {:8.1} MiB/s, blackout {:.1} ms (both sides hash the image)",
        mibs(v),
        r.blackout.as_secs_f64() * 1e3
    );
    println!("blackout vs guest dirty rate ({mib} MiB, 4 KiB pages, threshold 64 pages, at most 8 rounds, no checksum):");
    println!(
        "  {:>12} {:>7} {:>13} {:>12} {:>12}",
        "pages/s", "rounds", "blackout pgs", "blackout ms", "sent MiB"
    );
    for rate in [0u64, 10_000, 50_000, 200_000, 1_000_000] {
        let mut runs: Vec<MigrationReport> = (0..3)
            .map(|_| {
                migrate(
                    mib,
                    MigrationConfig {
                        dirty_pages_per_sec: rate,
                        ..MigrationConfig::default()
                    },
                    false,
                )
                .1
            })
            .collect();
        runs.sort_by_key(|r| r.blackout);
        let r = &runs[1];
        println!(
            "  {:>12} {:>7} {:>13} {:>12.2} {:>12.1}",
            rate,
            r.rounds,
            r.blackout_pages,
            r.blackout.as_secs_f64() * 1e3,
            r.bytes as f64 / 1048576.0
        );
    }
    if quick && ratio < 0.7 {
        eprintln!("migration throughput ratio {ratio:.2} misses its 0.70 target");
        std::process::exit(1);
    }
}

//! `hcs-simd` against raw Unix sockets, measured in the same run, interleaved (design §14;
//! figures in `docs/performance.md`):
//!
//! * `rpc`: one small call through `ClientDriver` (a properties query of a running system) vs a
//!   raw Unix-socket ping-pong of the same request and reply frame sizes between two threads.
//!   Target ≤ 2×.
//! * `notify`: a terminate through `ClientDriver` until a thread blocked in `System::wait`
//!   wakes (one call plus the `SystemExited` notification) vs a raw ping-pong of the same frame
//!   sizes plus a one-way message of the notification's size to a thread blocked in `read`.
//!   Target ≤ 2×.
//!
//! The gated figure is the paired ratio: the median over rounds of (ours / the baseline round
//! run right next to it). `cargo bench -p hcs-simd --bench rpc -- --quick-ratios` runs in a few
//! seconds; without the flag the same loops run five times as many rounds.

#[cfg(unix)]
mod common;

#[cfg(unix)]
mod bench {
    use super::common::{median, Daemon};
    use hcs::{Driver, System, Timeouts};
    use hcs_simd::protocol::{encode, Call, CallResult, ClientFrame, ServerFrame, Value};
    use hcs_simd::ClientDriver;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    const CONFIG: &str = r#"{"Owner":"bench","SchemaVersion":{"Major":2,"Minor":1},"Container":{}}"#;

    /// A raw echo peer: reads `req` bytes, answers `resp` bytes, until the stream closes.
    fn raw_peer(req: usize, resp: usize) -> UnixStream {
        let (a, mut b) = UnixStream::pair().expect("socketpair");
        std::thread::spawn(move || {
            let mut buf = vec![0u8; req];
            let out = vec![7u8; resp];
            while b.read_exact(&mut buf).is_ok() {
                if b.write_all(&out).is_err() {
                    return;
                }
            }
        });
        a
    }

    fn raw_round_trip(s: &mut UnixStream, req: &[u8], resp: &mut [u8]) {
        s.write_all(req).expect("write");
        s.read_exact(resp).expect("read");
    }

    /// `rpc`: returns (ours ns, baseline ns, paired ratio).
    fn rpc(client: &std::sync::Arc<ClientDriver>, rounds: usize, per_round: usize) -> (f64, f64, f64) {
        let sys = System::create_with(
            client.clone(),
            "rpc",
            CONFIG,
            Timeouts::uniform(Duration::from_secs(10)),
        )
        .expect("create");
        sys.start().expect("start");
        let h = client.open_compute_system("rpc").expect("open").value;
        let text = client
            .get_compute_system_properties(h, "{}")
            .expect("properties")
            .value;
        let req = encode(&ClientFrame::Call {
            id: 1_000_000,
            call: Call::Properties {
                system: h.raw(),
                query: "{}".into(),
            },
        })
        .expect("encode")
        .len();
        let resp = encode(&ServerFrame::Reply {
            id: 1_000_000,
            result: CallResult::Ok {
                value: Value::Text { text },
                document: None,
                pending: false,
            },
        })
        .expect("encode")
        .len();
        let mut raw = raw_peer(req, resp);
        let req_bytes = vec![1u8; req];
        let mut resp_bytes = vec![0u8; resp];
        let (mut ours, mut base, mut pairs) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let run_ours = || {
                let t = Instant::now();
                for _ in 0..per_round {
                    client.get_compute_system_properties(h, "{}").expect("properties");
                }
                t.elapsed().as_nanos() as f64 / per_round as f64
            };
            let mut run_base = || {
                let t = Instant::now();
                for _ in 0..per_round {
                    raw_round_trip(&mut raw, &req_bytes, &mut resp_bytes);
                }
                t.elapsed().as_nanos() as f64 / per_round as f64
            };
            let (o, b) = if round % 2 == 0 {
                let o = run_ours();
                (o, run_base())
            } else {
                let b = run_base();
                (run_ours(), b)
            };
            ours.push(o);
            base.push(b);
            pairs.push(o / b);
        }
        client.close_compute_system(h).expect("close");
        sys.terminate().expect("terminate");
        sys.wait().expect("wait");
        sys.close().expect("close");
        (median(ours), median(base), median(pairs))
    }

    /// `notify`: returns (ours ns, baseline ns, paired ratio).
    fn notify(client: &std::sync::Arc<ClientDriver>, rounds: usize) -> (f64, f64, f64) {
        let call = encode(&ClientFrame::Call {
            id: 1_000_000,
            call: Call::Terminate {
                system: 1_000,
                options: String::new(),
            },
        })
        .expect("encode")
        .len();
        let reply = encode(&ServerFrame::Reply {
            id: 1_000_000,
            result: CallResult::Ok {
                value: Value::Unit,
                document: None,
                pending: false,
            },
        })
        .expect("encode")
        .len();
        let note = encode(&ServerFrame::Notify {
            ctx: 1_000,
            kind: 1,
            status: 0,
            payload: Some(r#"{"Status":0,"ExitType":"ForcedExit"}"#.into()),
        })
        .expect("encode")
        .len();
        let mut raw = raw_peer(call, reply);
        let call_bytes = vec![1u8; call];
        let mut reply_bytes = vec![0u8; reply];
        let note_bytes = vec![2u8; note];
        let (mut ours, mut base, mut pairs) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let run_ours = || {
                let sys = std::sync::Arc::new(
                    System::create_with(
                        client.clone(),
                        &format!("n-{round}"),
                        CONFIG,
                        Timeouts::uniform(Duration::from_secs(10)),
                    )
                    .expect("create"),
                );
                sys.start().expect("start");
                let (tx, rx) = mpsc::channel();
                let (ready_tx, ready_rx) = mpsc::channel();
                let s2 = sys.clone();
                std::thread::spawn(move || {
                    let _ = ready_tx.send(());
                    s2.wait().expect("wait");
                    let _ = tx.send(Instant::now());
                });
                ready_rx.recv().expect("waiter");
                std::thread::sleep(Duration::from_millis(2)); // let it block
                let t0 = Instant::now();
                sys.terminate().expect("terminate");
                let t1 = rx.recv().expect("woken");
                sys.close().expect("close");
                (t1 - t0).as_nanos() as f64
            };
            let mut run_base = || {
                let (mut tx_side, mut rx_side) = UnixStream::pair().expect("socketpair");
                let (tx, rx) = mpsc::channel();
                let (ready_tx, ready_rx) = mpsc::channel();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; note];
                    let _ = ready_tx.send(());
                    rx_side.read_exact(&mut buf).expect("read");
                    let _ = tx.send(Instant::now());
                });
                ready_rx.recv().expect("reader");
                std::thread::sleep(Duration::from_millis(2));
                let t0 = Instant::now();
                raw_round_trip(&mut raw, &call_bytes, &mut reply_bytes);
                tx_side.write_all(&note_bytes).expect("write");
                let t1 = rx.recv().expect("woken");
                (t1 - t0).as_nanos() as f64
            };
            let (o, b) = if round % 2 == 0 {
                let o = run_ours();
                (o, run_base())
            } else {
                let b = run_base();
                (run_ours(), b)
            };
            ours.push(o);
            base.push(b);
            pairs.push(o / b);
        }
        (median(ours), median(base), median(pairs))
    }

    /// Info: the same properties query on an in-process simulator of the service's configuration
    /// (the engine's own share of the RPC), ns per call.
    fn in_process(per_round: usize) -> f64 {
        let sim = hcs_sim::Simulator::new(
            hcs_sim::SimConfig::default()
                .generation(hcs::ApiGeneration::V2)
                .all_sync()
                .latency(Duration::ZERO),
        );
        let sys = System::create_with(
            sim.clone(),
            "local",
            CONFIG,
            Timeouts::uniform(Duration::from_secs(10)),
        )
        .expect("create");
        sys.start().expect("start");
        let h = sim.open_compute_system("local").expect("open").value;
        let mut runs = Vec::new();
        for _ in 0..11 {
            let t = Instant::now();
            for _ in 0..per_round {
                sim.get_compute_system_properties(h, "{}").expect("properties");
            }
            runs.push(t.elapsed().as_nanos() as f64 / per_round as f64);
        }
        let _ = sim.close_compute_system(h);
        let _ = sys.terminate();
        let _ = sys.close();
        median(runs)
    }

    pub fn main() {
        // `cargo bench` passes `--bench`; `--quick-ratios` selects the short run.
        let quick = std::env::args().any(|a| a == "--quick-ratios");
        let scale = if quick { 1 } else { 5 };
        let began = Instant::now();
        let daemon = Daemon::start("bench");
        let client = daemon.client();
        let mut ok = true;
        let (o, b, r) = rpc(&client, 21 * scale, 200);
        let pass = r <= 2.0;
        ok &= pass;
        println!(
            "rpc: properties query via ClientDriver {:.1} µs vs raw unix-socket ping-pong {:.1} µs: ratio of medians {:.2}, paired ratio {r:.2} (target ≤ 2) {}",
            o / 1e3,
            b / 1e3,
            o / b,
            if pass { "PASS" } else { "FAIL" }
        );
        println!(
            "rpc (info): the same query on an in-process simulator {:.1} µs",
            in_process(200) / 1e3
        );
        let (o, b, r) = notify(&client, 41 * scale);
        let pass = r <= 2.0;
        ok &= pass;
        println!(
            "notify: terminate + SystemExited to a waiter in System::wait {:.1} µs vs raw ping-pong + one-way message to a blocked reader {:.1} µs: ratio of medians {:.2}, paired ratio {r:.2} (target ≤ 2) {}",
            o / 1e3,
            b / 1e3,
            o / b,
            if pass { "PASS" } else { "FAIL" }
        );
        println!("finished in {:.1} s", began.elapsed().as_secs_f64());
        // `exit` skips destructors: stop the service first.
        drop(client);
        drop(daemon);
        if !ok {
            std::process::exit(1);
        }
    }
}

fn main() {
    #[cfg(unix)]
    bench::main();
    #[cfg(not(unix))]
    eprintln!("hcs-simd benches: Unix only");
}

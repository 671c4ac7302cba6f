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
//!
//! Both pairs run in three CPU placements, each applied alike to ours and to the baseline:
//!
//! * `shared`: the client side (the calling thread, the client's reader, the waiter) and the
//!   server side (the service's threads, the raw peer) all on one CPU;
//! * `split`: the client side on one CPU, the server side on another, so every wake-up crosses
//!   CPUs;
//! * `free`: wherever the scheduler puts them.
//!
//! `shared` and `split` are gated. `free` is printed for information: on a 2-vCPU VM the
//! scheduler sometimes keeps the baseline's two threads on one CPU for a whole run (a ping-pong
//! of ~12 µs instead of ~18) while the client and the service run apart, and the ratio then
//! compares two placements rather than two implementations. Placements need two CPUs; with one,
//! only `free` runs (and is gated).

#[cfg(unix)]
mod common;

#[cfg(unix)]
mod bench {
    use super::common::{median, Daemon};
    use hcs::{Driver, System, Timeouts};
    use hcs_simd::protocol::{encode, Call, CallResult, ClientFrame, ServerFrame, Value};
    use hcs_simd::ClientDriver;
    use rustix::process::Pid;
    use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    const CONFIG: &str = r#"{"Owner":"bench","SchemaVersion":{"Major":2,"Minor":1},"Container":{}}"#;

    /// Where the two sides of a pair run.
    #[derive(Clone, Copy, PartialEq)]
    enum Placement {
        Shared(usize),
        Split(usize, usize),
        Free,
    }

    impl Placement {
        fn name(self) -> &'static str {
            match self {
                Placement::Shared(_) => "shared",
                Placement::Split(..) => "split",
                Placement::Free => "free",
            }
        }

        /// The CPUs of the client side and of the server side (`None`: every CPU allowed).
        fn sides(self) -> (Option<usize>, Option<usize>) {
            match self {
                Placement::Shared(c) => (Some(c), Some(c)),
                Placement::Split(a, b) => (Some(a), Some(b)),
                Placement::Free => (None, None),
            }
        }
    }

    fn cpu_set(cpu: Option<usize>) -> CpuSet {
        let mut set = CpuSet::new();
        match cpu {
            Some(c) => set.set(c),
            None => allowed_at_start().iter().for_each(|&c| set.set(c)),
        }
        set
    }

    /// The CPUs this process was allowed when the bench started.
    fn allowed_at_start() -> &'static [usize] {
        static ALLOWED: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
        ALLOWED.get_or_init(|| {
            let set = sched_getaffinity(None).expect("sched_getaffinity");
            (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect()
        })
    }

    /// Pins every thread of process `pid` (threads it creates later inherit the mask).
    fn pin_process(pid: u32, cpu: Option<usize>) {
        let set = cpu_set(cpu);
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
        for task in tasks.flatten() {
            let tid = task
                .file_name()
                .to_string_lossy()
                .parse::<i32>()
                .expect("a thread id");
            // A thread that ended meanwhile is no matter.
            let _ = sched_setaffinity(Pid::from_raw(tid), &set);
        }
    }

    /// A raw echo peer on the server side's CPU: reads `req` bytes, answers `resp` bytes,
    /// until the stream closes.
    fn raw_peer(req: usize, resp: usize, cpu: Option<usize>) -> UnixStream {
        let (a, mut b) = UnixStream::pair().expect("socketpair");
        std::thread::spawn(move || {
            sched_setaffinity(None, &cpu_set(cpu)).expect("pin the raw peer");
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
    fn rpc(
        client: &std::sync::Arc<ClientDriver>,
        rounds: usize,
        per_round: usize,
        server_cpu: Option<usize>,
        tag: &str,
    ) -> (f64, f64, f64) {
        let sys = System::create_with(
            client.clone(),
            &format!("rpc-{tag}"),
            CONFIG,
            Timeouts::uniform(Duration::from_secs(10)),
        )
        .expect("create");
        sys.start().expect("start");
        let h = client.open_compute_system(sys.id()).expect("open").value;
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
        let mut raw = raw_peer(req, resp, server_cpu);
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
    fn notify(
        client: &std::sync::Arc<ClientDriver>,
        rounds: usize,
        server_cpu: Option<usize>,
        tag: &str,
    ) -> (f64, f64, f64) {
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
        let mut raw = raw_peer(call, reply, server_cpu);
        let call_bytes = vec![1u8; call];
        let mut reply_bytes = vec![0u8; reply];
        let note_bytes = vec![2u8; note];
        let (mut ours, mut base, mut pairs) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let run_ours = || {
                let sys = std::sync::Arc::new(
                    System::create_with(
                        client.clone(),
                        &format!("n-{tag}-{round}"),
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
        let cpus = allowed_at_start();
        let placements = match cpus {
            [.., a, b] => vec![Placement::Shared(*b), Placement::Split(*a, *b), Placement::Free],
            _ => vec![Placement::Free],
        };
        let gated = |p: Placement| p != Placement::Free || placements.len() == 1;
        let mut ok = true;
        for placement in placements.iter().copied() {
            let (client_cpu, server_cpu) = placement.sides();
            pin_process(std::process::id(), client_cpu);
            pin_process(daemon.pid(), server_cpu);
            // A connection per placement: its reader thread starts on the client side.
            let client = daemon.client();
            let name = placement.name();
            let verdict = |r: f64| match (gated(placement), r <= 2.0) {
                (true, true) => "PASS",
                (true, false) => "FAIL",
                (false, _) => "info, not gated",
            };
            let (o, b, r) = rpc(&client, 21 * scale, 200, server_cpu, name);
            ok &= !gated(placement) || r <= 2.0;
            println!(
                "rpc [{name}]: properties query via ClientDriver {:.1} µs vs raw unix-socket ping-pong {:.1} µs: ratio of medians {:.2}, paired ratio {r:.2} (target ≤ 2) {}",
                o / 1e3,
                b / 1e3,
                o / b,
                verdict(r)
            );
            let (o, b, r) = notify(&client, 41 * scale, server_cpu, name);
            ok &= !gated(placement) || r <= 2.0;
            println!(
                "notify [{name}]: terminate + SystemExited to a waiter in System::wait {:.1} µs vs raw ping-pong + one-way message to a blocked reader {:.1} µs: ratio of medians {:.2}, paired ratio {r:.2} (target ≤ 2) {}",
                o / 1e3,
                b / 1e3,
                o / b,
                verdict(r)
            );
        }
        println!(
            "rpc (info): the same query on an in-process simulator {:.1} µs",
            in_process(200) / 1e3
        );
        println!("finished in {:.1} s", began.elapsed().as_secs_f64());
        // `exit` skips destructors: stop the service first.
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

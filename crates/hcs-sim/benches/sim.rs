//! Simulator benchmarks, each against a baseline measured in the same run.
//!
//! * `lifecycle`: create → start → exec (`true`, scripted, exits 0) → process wait → process
//!   close → system close (`ShouldTerminateOnLastHandleClosed`) through `hcs::System` on the
//!   simulator's Scripted backend with zero notification latency (every pending-capable call
//!   answers pending, completions come from the simulator's service thread). Cycles/s on one
//!   thread (baseline) and on two threads; the ratio is the scaling factor (2.0 = linear).
//! * `idle`: heap bytes and threads for 10,000 idle simulated systems held as `hcs::System`
//!   (created; created and started), vs the simulator's own share (the same systems created at
//!   the driver level with no `hcs::System`).
//!
//! `cargo bench -p hcs-sim --bench sim -- --quick-ratios` prints every figure in a few seconds.

// The counting global allocator below is the only unsafe code (forwarding to `System`).
#![allow(unsafe_code)]

use criterion::Criterion;
use hcs::{Driver, NotifyContext, System, Timeouts};
use hcs_sim::{Script, ScriptedProcess, SimConfig, Simulator};
use std::alloc::{GlobalAlloc, Layout, System as SysAlloc};
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

struct Counting;
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { SysAlloc.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE_BYTES.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { SysAlloc.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { SysAlloc.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

const CONFIG: &str = r#"{"Owner":"bench","SchemaVersion":{"Major":2,"Minor":1},"Container":{},"ShouldTerminateOnLastHandleClosed":true}"#;
const PARAMS: &str =
    r#"{"CommandLine":"true","CreateStdInPipe":false,"CreateStdOutPipe":false,"CreateStdErrPipe":false}"#;

fn sim() -> Arc<Simulator> {
    Simulator::new(
        SimConfig::default()
            .scripted(Script::new().otherwise(ScriptedProcess::exits(0)))
            .latency(Duration::ZERO),
    )
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn id() -> String {
    format!("bench-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn cycle(sim: &Arc<Simulator>) {
    let s = System::create_with(sim.clone(), &id(), CONFIG, Timeouts::default()).expect("create");
    s.start().expect("start");
    let p = s.create_process(PARAMS).expect("exec");
    p.wait().expect("process wait");
    assert_eq!(p.exit_code().expect("exit code"), 0);
    p.close().expect("process close");
    s.close().expect("system close");
}

/// Runs `per_thread` cycles on each of `threads` threads at once; returns cycles per second.
fn throughput(sim: &Arc<Simulator>, threads: usize, per_thread: u64) -> f64 {
    let start = Arc::new(Barrier::new(threads + 1));
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let (sim, start) = (sim.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..per_thread {
                    cycle(&sim);
                }
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    for h in hs {
        h.join().unwrap();
    }
    (threads as u64 * per_thread) as f64 / t0.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Interleaved medians of one-thread and two-thread throughput.
fn scaling(reps: usize, per_thread: u64) -> (f64, f64) {
    let sim = sim();
    for _ in 0..50 {
        cycle(&sim); // warm-up: service thread, registry
    }
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for i in 0..reps {
        if i % 2 == 0 {
            one.push(throughput(&sim, 1, 2 * per_thread));
            two.push(throughput(&sim, 2, per_thread));
        } else {
            two.push(throughput(&sim, 2, per_thread));
            one.push(throughput(&sim, 1, 2 * per_thread));
        }
    }
    sim.assert_no_leaks();
    (median(&mut one), median(&mut two))
}

const IDLE: usize = 10_000;

struct Idle {
    label: &'static str,
    bytes: f64,
    threads_before: usize,
    threads_after: usize,
}

fn idle(started: bool, through_system: bool) -> Idle {
    let sim = sim();
    let ids: Vec<String> = (0..IDLE).map(|_| id()).collect();
    // Warm up: service thread and the registry exist before counting.
    cycle(&sim);
    let mut systems: Vec<System> = Vec::with_capacity(IDLE);
    let mut raw = Vec::with_capacity(IDLE);
    let ctx = NotifyContext::new(u64::MAX).unwrap(); // unregistered: notifications are dropped
    let t0 = threads();
    let b0 = LIVE_BYTES.load(Ordering::SeqCst);
    for id in &ids {
        if through_system {
            let s = System::create_with(sim.clone(), id, CONFIG, Timeouts::default()).unwrap();
            if started {
                s.start().unwrap();
            }
            systems.push(s);
        } else {
            let h = sim.create_compute_system(id, CONFIG, ctx).unwrap().value;
            if started {
                sim.start_compute_system(h, "", ctx).unwrap();
            }
            raw.push(h);
        }
    }
    // Pending completions (delivered by the service thread) settle before measuring.
    std::thread::sleep(Duration::from_millis(50));
    let b1 = LIVE_BYTES.load(Ordering::SeqCst);
    let t1 = threads();
    drop(systems);
    for h in raw {
        sim.close_compute_system(h).unwrap();
    }
    Idle {
        label: match (started, through_system) {
            (false, true) => "created, as hcs::System",
            (true, true) => "started, as hcs::System",
            (false, false) => "created, driver level only",
            (true, false) => "started, driver level only",
        },
        bytes: (b1 - b0) as f64 / IDLE as f64,
        threads_before: t0,
        threads_after: t1,
    }
}

fn report_idle() -> bool {
    let mut ok = true;
    for started in [false, true] {
        let ours = idle(started, true);
        let base = idle(started, false);
        for m in [&ours, &base] {
            println!(
                "idle_sim_systems ({}): {:.0} B/system, threads {} → {} for {IDLE} systems",
                m.label, m.bytes, m.threads_before, m.threads_after
            );
        }
        println!(
            "idle_sim_systems ({}): hcs::System share {:.0} B/system, ratio total/simulator-only {:.2} (info)",
            ours.label,
            ours.bytes - base.bytes,
            ours.bytes / base.bytes
        );
        ok &= ours.threads_after == ours.threads_before;
    }
    ok
}

fn quick() -> bool {
    let t = Instant::now();
    let (one, two) = scaling(5, 300);
    println!(
        "sim_lifecycle: 1 thread {one:.0} cycles/s ({:.1} µs/cycle), 2 threads {two:.0} cycles/s, scaling ratio {:.2} (2.00 = linear; info)",
        1e6 / one,
        two / one
    );
    let ok = report_idle();
    println!("quick mode finished in {:.1} s", t.elapsed().as_secs_f64());
    ok
}

fn criterion_mode() -> bool {
    let mut c = Criterion::default().configure_from_args().sample_size(20);
    let sim = sim();
    {
        let mut g = c.benchmark_group("sim_lifecycle");
        g.bench_function("one_thread", |b| {
            b.iter_custom(|n| {
                let t0 = Instant::now();
                for _ in 0..n {
                    cycle(&sim);
                }
                t0.elapsed()
            })
        });
        g.bench_function("two_threads_per_cycle", |b| {
            b.iter_custom(|n| {
                let per = n.div_ceil(2);
                let tput = throughput(&sim, 2, per);
                Duration::from_secs_f64(n as f64 / tput)
            })
        });
        g.finish();
    }
    c.final_summary();
    let (one, two) = scaling(5, 300);
    println!("sim_lifecycle (interleaved medians): 1 thread {one:.0} cycles/s, 2 threads {two:.0} cycles/s, scaling {:.2}", two / one);
    report_idle()
}

fn main() {
    let ok = if std::env::args().any(|a| a == "--quick-ratios") {
        quick()
    } else {
        criterion_mode()
    };
    if !ok {
        std::process::exit(1);
    }
}

//! `hcs-simd` at scale (issue 9; figures in `docs/performance.md`): one service, many idle
//! clients holding many idle systems, and the release `hcsctl` against it, measured in one run.
//!
//! * `threads`: the service's thread count (`Threads:` of `/proc/<pid>/status`) with 1 connected
//!   client, with all of them (default 1,000) and after they created their systems. Target: the
//!   same count (the service's threads do not grow with clients or systems).
//! * `memory` (info): the service's `VmRSS` before and after the clients create and start their
//!   systems (default 10 each), divided by the number of systems; and the supervisor processes
//!   the service runs for them (a system's supervisor starts with its first process, so an idle
//!   system has none; the one started by the `exec` measurement below is reported too).
//! * `list`: wall time of the release `hcsctl list` and `hcsctl list --json` processes against
//!   the service holding every system (as is: `list` also runs one statistics query for each of
//!   the first 64 running systems, for their uptime). Target ≤ 100 ms (median).
//! * `exec`: `hcsctl exec ID -- true` through the service (still holding every system) vs
//!   spawning `true` directly, interleaved; the paired ratio (median over pairs). Target ≤ 4×.
//!
//! The service is this crate's `hcs-simd` binary on a private socket in a temp dir, with
//! `--generation v2 --sync --latency-ms 0` (hcsctl's own simulator settings, no simulated
//! latency), stopped with `SIGTERM` at the end. The soft `RLIMIT_NOFILE` is raised to the hard
//! limit when the run needs more descriptors (the service inherits it).
//!
//! Build the release `hcsctl` first (`bash scripts/build-hcsctl.sh`); it is found in
//! `$HCSCTL_BIN`, else next to the bench's `deps/` directory (`<target>/release/hcsctl`).
//! `cargo bench -p hcs-simd --bench scale -- --quick-ratios` runs the full size (1,000 clients
//! × 10 systems) with 11 `list` and 51 `exec` samples, in about 15 s on a loaded two-core
//! machine; without the flag, 21 and 101. `--clients N` and `--systems-per-client M` set the
//! size. It needs about 2 descriptors per client here and 1 in the service, and is not run in
//! CI (the figures are for a quiet machine; CI only compiles it).

#[cfg(unix)]
mod common;

#[cfg(unix)]
mod bench {
    use super::common::{median, Daemon};
    use hcs::{System, Timeouts};
    use hcs_simd::ClientDriver;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const CONFIG: &str = r#"{"Owner":"bench","SchemaVersion":{"Major":2,"Minor":1},"Container":{}}"#;

    /// Targets.
    const LIST_TARGET_MS: f64 = 100.0;
    const EXEC_TARGET: f64 = 4.0;

    /// The release `hcsctl`: `$HCSCTL_BIN`, else `<target>/release/hcsctl`.
    fn hcsctl() -> PathBuf {
        if let Some(p) = std::env::var_os("HCSCTL_BIN") {
            return p.into();
        }
        let exe = std::env::current_exe().expect("current exe");
        let release = exe.parent().and_then(|d| d.parent()).expect("<target>/release");
        let p = release.join("hcsctl");
        assert!(
            p.exists(),
            "{} not found: run `bash scripts/build-hcsctl.sh` first (or set HCSCTL_BIN)",
            p.display()
        );
        p
    }

    /// A numeric field (`Threads:`, `VmRSS:` in kB) of `/proc/<pid>/status`.
    fn status_field(pid: u32, field: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The pids of `parent`'s child processes (from `/proc/*/stat`).
    fn children_of(parent: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return out;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) {
                out.push(pid);
            }
        }
        out
    }

    /// Raises the soft descriptor limit to the hard one when it is below `needed`.
    fn raise_nofile(needed: u64) {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let lim = getrlimit(Resource::Nofile);
        let soft = lim.current.unwrap_or(u64::MAX);
        if soft >= needed {
            println!("fd limit: soft RLIMIT_NOFILE {soft} ≥ {needed} needed, unchanged");
            return;
        }
        let hard = lim.maximum;
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: hard,
                maximum: hard,
            },
        ) {
            Ok(()) => println!(
                "fd limit: raised the soft RLIMIT_NOFILE from {soft} to the hard limit {} ({needed} needed)",
                hard.map_or_else(|| "unlimited".to_owned(), |h| h.to_string())
            ),
            Err(e) => println!("fd limit: cannot raise the soft RLIMIT_NOFILE {soft} ({needed} needed): {e}"),
        }
    }

    fn max(v: &[f64]) -> f64 {
        v.iter().copied().fold(0.0, f64::max)
    }

    fn verdict(pass: bool) -> &'static str {
        if pass {
            "PASS"
        } else {
            "FAIL"
        }
    }

    fn loadavg() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }

    /// Wall time of one run of `cmd` (output discarded); it must succeed.
    fn timed(cmd: &mut Command) -> f64 {
        let t = Instant::now();
        let st = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("spawn");
        let el = t.elapsed().as_nanos() as f64;
        assert!(st.success(), "{cmd:?} failed: {st}");
        el
    }

    fn hcsctl_cmd(bin: &Path, socket: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.arg(args[0]).arg("--socket").arg(socket).args(&args[1..]);
        c
    }

    /// Creates and starts `per_client` systems for each client, from `threads` threads; the
    /// systems (each holding its creator's handle) are returned.
    fn create_systems(clients: &[Arc<ClientDriver>], per_client: usize, threads: usize) -> Vec<System> {
        let chunk = clients.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            let workers: Vec<_> = clients
                .chunks(chunk)
                .enumerate()
                .map(|(w, part)| {
                    s.spawn(move || {
                        let mut out = Vec::with_capacity(part.len() * per_client);
                        for (i, c) in part.iter().enumerate() {
                            for j in 0..per_client {
                                let id = format!("s{}-{j}", w * chunk + i);
                                let sys = System::create_with(
                                    c.clone(),
                                    &id,
                                    CONFIG,
                                    Timeouts::uniform(Duration::from_secs(30)),
                                )
                                .expect("create");
                                sys.start().expect("start");
                                out.push(sys);
                            }
                        }
                        out
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("creator thread"))
                .collect()
        })
    }

    /// Median and max wall time (ns) of `runs` runs of `hcsctl list [--json]`, the two
    /// interleaved.
    fn list_times(bin: &Path, socket: &Path, runs: usize) -> ((f64, f64), (f64, f64)) {
        let (mut text, mut json) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let mut t = || text.push(timed(&mut hcsctl_cmd(bin, socket, &["list"])));
            let mut j = || json.push(timed(&mut hcsctl_cmd(bin, socket, &["list", "--json"])));
            if i % 2 == 0 {
                t();
                j();
            } else {
                j();
                t();
            }
        }
        (
            (median(text.clone()), max(&text)),
            (median(json.clone()), max(&json)),
        )
    }

    /// Wall time of one run of `cmd` (output discarded), `None` when it had to be killed
    /// after [`HANG`]; it must otherwise succeed.
    fn timed_bounded(cmd: &mut Command) -> Option<f64> {
        let t = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let pid = rustix::process::Pid::from_child(&child);
        let (done, watch) = std::sync::mpsc::channel::<()>();
        let dog = std::thread::spawn(move || {
            let hung = watch.recv_timeout(HANG).is_err();
            if hung {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            hung
        });
        let st = child.wait().expect("wait");
        let el = t.elapsed().as_nanos() as f64;
        let _ = done.send(());
        if dog.join().expect("watchdog") {
            return None;
        }
        assert!(st.success(), "{cmd:?} failed: {st}");
        Some(el)
    }

    /// How long an `exec` run may take before it counts as hung and is killed.
    const HANG: Duration = Duration::from_secs(10);

    /// `hcsctl exec ID -- true` vs `true`, interleaved: (ours ns, baseline ns, paired ratio)
    /// as medians, the number of pairs, and the number of `exec` runs that hung (left out of
    /// the figures).
    fn exec_ratio(bin: &Path, socket: &Path, id: &str, runs: usize) -> (f64, f64, f64, usize, usize) {
        let ours = || timed_bounded(&mut hcsctl_cmd(bin, socket, &["exec", id, "--", "true"]));
        let base = || timed_bounded(&mut Command::new("true")).expect("true does not hang");
        let mut hung = 0;
        for _ in 0..5 {
            hung += usize::from(ours().is_none());
            base();
        }
        let (mut o, mut b, mut pairs) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..runs {
            let (x, y) = if i % 2 == 0 {
                let x = ours();
                (x, base())
            } else {
                let y = base();
                (ours(), y)
            };
            let Some(x) = x else {
                hung += 1;
                continue;
            };
            o.push(x);
            b.push(y);
            pairs.push(x / y);
        }
        let n = pairs.len();
        (median(o), median(b), median(pairs), n, hung)
    }

    /// Info: the same enumeration of `n` started systems on an in-process simulator of the
    /// service's configuration (the engine's share of `list`), ms (median of 5).
    fn in_process_enumerate(n: usize) -> f64 {
        let sim = hcs_sim::Simulator::new(
            hcs_sim::SimConfig::default()
                .generation(hcs::ApiGeneration::V2)
                .all_sync()
                .latency(Duration::ZERO),
        );
        let systems: Vec<System> = (0..n)
            .map(|i| {
                let sys = System::create_with(
                    sim.clone(),
                    &format!("s{i}"),
                    CONFIG,
                    Timeouts::uniform(Duration::from_secs(30)),
                )
                .expect("create");
                sys.start().expect("start");
                sys
            })
            .collect();
        let runs: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                hcs::Driver::enumerate_compute_systems(&*sim, "{}").expect("enumerate");
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        for s in systems {
            let _ = s.terminate();
            let _ = s.close();
        }
        median(runs)
    }

    fn arg_value(args: &[String], name: &str) -> Option<usize> {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1)?.parse().ok()
    }

    pub fn main() {
        let args: Vec<String> = std::env::args().collect();
        let quick = args.iter().any(|a| a == "--quick-ratios");
        let clients_n = arg_value(&args, "--clients").unwrap_or(1000);
        let per_client = arg_value(&args, "--systems-per-client").unwrap_or(10);
        let total = clients_n * per_client;
        let (list_runs, exec_runs) = if quick { (11, 51) } else { (21, 101) };
        let bin = hcsctl();
        let began = Instant::now();
        println!(
            "scale: {clients_n} clients × {per_client} systems = {total} systems; load average at start {}",
            loadavg()
        );
        // Each client holds two descriptors here (its stream and the reader's clone) and one in
        // the service; the service runs in a child that inherits the limit.
        raise_nofile(2 * clients_n as u64 + 256);
        let mut daemon = Daemon::start("scale");
        let pid = daemon.pid();
        let socket = daemon.socket.clone();
        let mut ok = true;

        // Threads with one client (after a call, so that everything lazy has started).
        let first = ClientDriver::connect(&socket).expect("connect");
        first.stats().expect("stats");
        let threads_1 = status_field(pid, "Threads:");
        let rss_1 = status_field(pid, "VmRSS:");
        let mut clients = vec![first];
        let t = Instant::now();
        while clients.len() < clients_n {
            clients.push(ClientDriver::connect(&socket).expect("connect"));
        }
        let connect_s = t.elapsed().as_secs_f64();
        for c in &clients {
            c.stats().expect("stats");
        }
        let threads_n = status_field(pid, "Threads:");
        let rss_before = status_field(pid, "VmRSS:");
        let t = Instant::now();
        let systems = create_systems(&clients, per_client, 4);
        let create_s = t.elapsed().as_secs_f64();
        assert_eq!(systems.len(), total);
        std::thread::sleep(Duration::from_millis(200));
        let threads_sys = status_field(pid, "Threads:");
        let rss_after = status_field(pid, "VmRSS:");
        let supervisors_idle = children_of(pid).len();
        let pass = threads_1 == threads_n && threads_n == threads_sys;
        ok &= pass;
        println!(
            "threads: service {threads_1} with 1 client, {threads_n} with {clients_n} clients, {threads_sys} with their {total} systems (target: constant) {}",
            verdict(pass)
        );
        println!(
            "memory (info): service VmRSS {:.1} MiB with 1 client, {:.1} MiB with {clients_n} ({:.1} KiB per connection), {:.1} MiB with {total} systems: {:.2} KiB per idle system (created and started, its creator's handle open); {supervisors_idle} supervisor processes for idle systems",
            rss_1 as f64 / 1024.0,
            rss_before as f64 / 1024.0,
            rss_before.saturating_sub(rss_1) as f64 / (clients_n.max(2) - 1) as f64,
            rss_after as f64 / 1024.0,
            rss_after.saturating_sub(rss_before) as f64 / total as f64,
        );
        println!(
            "setup (info): {clients_n} connections in {connect_s:.2} s, {total} creates + starts in {create_s:.2} s ({:.0} µs per system from 4 threads)",
            create_s * 1e6 / total as f64
        );

        // Where `list`'s time goes (info): the enumeration call alone, in this process.
        let t = Instant::now();
        let doc = hcs::Driver::enumerate_compute_systems(&*clients[0], "{}")
            .expect("enumerate")
            .value;
        let enum_raw_ms = t.elapsed().as_secs_f64() * 1e3;
        let listed = serde_json::from_str::<serde_json::Value>(&doc)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0);
        assert_eq!(listed, total, "the enumeration lists every system");
        let out = hcsctl_cmd(&bin, &socket, &["list"])
            .stderr(Stdio::inherit())
            .output()
            .expect("hcsctl list");
        assert!(out.status.success(), "hcsctl list failed");
        let lines = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(lines, total + 1, "hcsctl list prints a header and every system");
        let ((text_med, text_max), (json_med, json_max)) = list_times(&bin, &socket, list_runs);
        let pass = text_med / 1e6 <= LIST_TARGET_MS && json_med / 1e6 <= LIST_TARGET_MS;
        ok &= pass;
        println!(
            "list: hcsctl list of {total} systems {:.1} ms (max {:.1}), --json {:.1} ms (max {:.1}), medians of {list_runs} (target ≤ {LIST_TARGET_MS} ms) {}",
            text_med / 1e6,
            text_max / 1e6,
            json_med / 1e6,
            json_max / 1e6,
            verdict(pass)
        );
        println!(
            "list (info): the enumeration call alone {enum_raw_ms:.1} ms through the service ({} KiB document), {:.1} ms on an in-process simulator",
            doc.len() / 1024,
            in_process_enumerate(total)
        );

        let (o, b, r, pairs, hung) = exec_ratio(&bin, &socket, "s0-0", exec_runs);
        let pass = r <= EXEC_TARGET && hung == 0;
        ok &= pass;
        println!(
            "exec: hcsctl exec ID -- true through the service {:.2} ms vs spawning true {:.2} ms: ratio of medians {:.2}, paired ratio {r:.2} over {pairs} pairs (target ≤ {EXEC_TARGET}); {hung} runs hung (killed after {} s, not in the figures) {}",
            o / 1e6,
            b / 1e6,
            o / b,
            HANG.as_secs(),
            verdict(pass)
        );
        let sups = children_of(pid);
        let sup_rss: u64 = sups.iter().map(|&p| status_field(p, "VmRSS:")).sum();
        println!(
            "supervisors (info): {} after exec in one system, VmRSS {:.1} MiB in all",
            sups.len(),
            sup_rss as f64 / 1024.0
        );

        drop(systems);
        drop(clients);
        let clean = daemon.stop();
        println!(
            "service stopped by SIGTERM: {}; finished in {:.1} s; load average at end {}",
            if clean { "cleanly" } else { "no (killed)" },
            began.elapsed().as_secs_f64(),
            loadavg()
        );
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

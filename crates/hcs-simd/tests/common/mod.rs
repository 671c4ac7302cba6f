//! Shared helpers of the `hcs-simd` integration tests: a real `hcs-simd` process on a socket in
//! a temporary directory of its own, killed (and its directory removed) when dropped.
#![allow(dead_code)] // each test binary uses a different part

use hcs_simd::protocol::Stats;
use hcs_simd::ClientDriver;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `hcs-simd` binary under test.
pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_hcs-simd")
}

/// A fresh temporary directory (removed by [`Daemon`]'s drop).
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "hcs-simd-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// A running `hcs-simd`.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `hcs-simd` with `args` on a socket in a new temporary directory and waits until
    /// it answers.
    pub fn start(args: &[&str]) -> Daemon {
        let dir = temp_dir("d");
        let socket = dir.join("run").join("hcs.sock");
        Self::start_at(dir, socket, args)
    }

    /// Starts `hcs-simd` on `socket` (logging into `dir`).
    pub fn start_at(dir: PathBuf, socket: PathBuf, args: &[&str]) -> Daemon {
        let log = dir.join(format!(
            "daemon-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = Command::new(exe())
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the log"))
            .spawn()
            .expect("start hcs-simd");
        let d = Daemon {
            child: Some(child),
            dir,
            socket,
            log,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "hcs-simd did not start: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A new client connection.
    pub fn client(&self) -> Arc<ClientDriver> {
        ClientDriver::connect(&self.socket).expect("connect to hcs-simd")
    }

    /// The service's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The service's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `SIGTERM`, then the exit status (killed after 10 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = rustix::process::Pid::from_raw(c.id() as i32).expect("a pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = c.try_wait().expect("wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("hcs-simd did not stop on SIGTERM: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The service's accounting, through a short-lived connection of its own (which it counts).
    pub fn stats(&self) -> Stats {
        self.client().stats().expect("stats")
    }

    /// Waits until `f(stats)` holds (through `client`), panicking after `limit` with the last.
    pub fn wait_stats(client: &ClientDriver, limit: Duration, f: impl Fn(&Stats) -> bool) -> Stats {
        let deadline = Instant::now() + limit;
        loop {
            let s = client.stats().expect("stats");
            if f(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "accounting did not settle: {s:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("hcs-simd log ({}):\n{}", self.log.display(), self.log_text());
        }
    }
}

/// The pids of live processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmd.is_empty() {
            continue; // a zombie or a kernel thread
        }
        if String::from_utf8_lossy(&cmd).contains(marker) && pid != std::process::id() {
            let state = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            if !state.contains(") Z ") {
                out.push(pid);
            }
        }
    }
    out
}

/// Waits until exactly `n` live processes' command lines contain `marker`, and returns their
/// pids. A process just spawned may not show its new command line at once: its `exec` lets the
/// `vfork`ing parent go on before the kernel has set up the new arguments, so a look right
/// after a spawn can miss it (it did, once, under load).
pub fn wait_processes(marker: &str, n: usize, limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let found = processes_with(marker);
        if found.len() == n || Instant::now() > deadline {
            assert_eq!(
                found.len(),
                n,
                "processes with {marker:?} after {limit:?}: {found:?}"
            );
            return found;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until no live process's command line contains `marker`; the survivors otherwise.
pub fn wait_gone(marker: &str, limit: Duration) -> Result<(), Vec<u32>> {
    let deadline = Instant::now() + limit;
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(left);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A path that does not exist yet inside `dir`.
pub fn path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

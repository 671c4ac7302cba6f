//! What `hcs-simd`'s benches share: the service under test (this crate's `hcs-simd` binary on
//! a private socket in a temporary directory, zero latency, V2 synchronous) and the median.
#![allow(dead_code)] // each bench uses its own part

use hcs_simd::ClientDriver;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The service under test: stopped with `SIGTERM` by [`Daemon::stop`], killed and its
/// directory removed on drop.
pub struct Daemon {
    child: Child,
    dir: PathBuf,
    /// Its socket.
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts `hcs-simd --generation v2 --sync --latency-ms 0` in a fresh directory named
    /// after `tag` and waits until it answers.
    pub fn start(tag: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!("hcs-simd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let socket = dir.join("hcs.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_hcs-simd"))
            .arg("--socket")
            .arg(&socket)
            .args(["--generation", "v2", "--sync", "--latency-ms", "0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hcs-simd");
        let d = Daemon { child, dir, socket };
        d.client();
        d
    }

    /// A new client connection (retried for up to 10 s while the service starts).
    pub fn client(&self) -> Arc<ClientDriver> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(c) = ClientDriver::connect(&self.socket) {
                return c;
            }
            assert!(Instant::now() < deadline, "hcs-simd did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The service's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `SIGTERM`, then up to 10 s for a clean exit; whether it exited by itself.
    pub fn stop(&mut self) -> bool {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The median (upper middle for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

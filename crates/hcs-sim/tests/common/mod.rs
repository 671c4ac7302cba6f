//! Shared helpers for the driver-level tests: a notification recorder over
//! `hcs::notify::Subscription`.
#![allow(dead_code)]

use hcs::notify::Subscription;
use hcs::{HResult, NotificationKind, NotifyContext};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// One observed notification.
#[derive(Debug, Clone)]
pub struct Seen {
    pub kind: NotificationKind,
    pub status: HResult,
    pub payload: Option<String>,
    pub thread: ThreadId,
    pub thread_name: Option<String>,
}

#[derive(Default)]
struct Log {
    events: Mutex<Vec<Seen>>,
    cv: Condvar,
}

/// Records every notification dispatched to its context.
pub struct Recorder {
    sub: Subscription,
    log: Arc<Log>,
}

impl Recorder {
    pub fn new() -> Self {
        let log = Arc::new(Log::default());
        let l2 = Arc::clone(&log);
        let sub = Subscription::new(move |kind, status, payload| {
            l2.events.lock().unwrap().push(Seen {
                kind,
                status,
                payload: payload.map(str::to_string),
                thread: std::thread::current().id(),
                thread_name: std::thread::current().name().map(str::to_string),
            });
            l2.cv.notify_all();
        });
        Recorder { sub, log }
    }

    pub fn ctx(&self) -> NotifyContext {
        self.sub.context()
    }

    pub fn events(&self) -> Vec<Seen> {
        self.log.events.lock().unwrap().clone()
    }

    pub fn count(&self, kind: NotificationKind) -> usize {
        self.events().iter().filter(|e| e.kind == kind).count()
    }

    /// Waits until at least `n` notifications of `kind` arrived; returns the n-th.
    pub fn wait_nth(&self, kind: NotificationKind, n: usize, timeout: Duration) -> Option<Seen> {
        let deadline = Instant::now() + timeout;
        let mut events = self.log.events.lock().unwrap();
        loop {
            let matching: Vec<&Seen> = events.iter().filter(|e| e.kind == kind).collect();
            if matching.len() >= n {
                return Some(matching[n - 1].clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            events = self.log.cv.wait_timeout(events, deadline - now).unwrap().0;
        }
    }

    pub fn wait(&self, kind: NotificationKind, timeout: Duration) -> Option<Seen> {
        self.wait_nth(kind, 1, timeout)
    }
}

pub const SECOND: Duration = Duration::from_secs(1);
pub const FIVE_SECONDS: Duration = Duration::from_secs(5);

/// A V2-style container configuration.
pub fn container(owner: &str) -> String {
    format!(
        r#"{{"Owner":"{owner}","SchemaVersion":{{"Major":2,"Minor":1}},"Container":{{}},"ShouldTerminateOnLastHandleClosed":true}}"#
    )
}

/// A V2-style VM configuration.
pub fn vm(owner: &str) -> String {
    format!(
        r#"{{"Owner":"{owner}","SchemaVersion":{{"Major":2,"Minor":1}},"VirtualMachine":{{"ComputeTopology":{{"Memory":{{"SizeInMB":1024}}}}}},"ShouldTerminateOnLastHandleClosed":true}}"#
    )
}

/// Process parameters JSON.
pub fn params(command_line: &str, stdin: bool, stdout: bool, stderr: bool) -> String {
    serde_json::json!({
        "CommandLine": command_line,
        "CreateStdInPipe": stdin,
        "CreateStdOutPipe": stdout,
        "CreateStdErrPipe": stderr,
    })
    .to_string()
}

/// Polls `f` until it is true or the timeout passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

//! Helpers shared by the lifecycle tests.
#![allow(dead_code)]

use hcs::{NotificationKind, System, Timeouts};
use hcs_testkit::{Answer, FakeDriver};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

pub const CONFIG: &str = r#"{"SchemaVersion":{"Major":2,"Minor":1},"Owner":"test","Container":{}}"#;
pub const LONG: Duration = Duration::from_secs(10);

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Creates a system on a fresh fake with long timeouts.
pub fn system() -> (Arc<FakeDriver>, System) {
    let fake = FakeDriver::new();
    let s = System::create_with(fake.clone(), "sys", CONFIG, Timeouts::uniform(LONG)).expect("create");
    (fake, s)
}

pub fn pending_then(kind: NotificationKind, status: u32, after: Duration) -> Answer {
    Answer::pending().then_complete(kind, status, None, after)
}

pub fn exit_system(fake: &FakeDriver, status: u32, exit_type: &str) {
    let ctx = fake.last_system_context().expect("registered");
    let payload = format!(r#"{{"Status":{},"ExitType":"{exit_type}"}}"#, status as i32);
    assert!(fake.fire(ctx, NotificationKind::SystemExited, status, Some(&payload)));
}

struct ThreadWaker(std::thread::Thread);
impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A minimal executor: polls `f` to completion on this thread, or gives up after `timeout`.
pub fn block_on<F: Future>(f: F, timeout: Duration) -> Option<F::Output> {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::park_timeout(deadline - now);
    }
}

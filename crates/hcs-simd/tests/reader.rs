//! The client's reader role (design §14): whichever thread holds it reads the connection for
//! everyone, so these check that no reply and no notification is lost or handed to the wrong
//! caller when many threads share one connection while notifications stream, that a
//! notification arriving while no call is in flight still arrives (the watcher), and that a
//! connection lost while calls are in flight fails every one of them and tells every context.
#![cfg(unix)]

mod common;

use common::Daemon;
use hcs::{Driver, Method, System, Timeouts};
use hcs_sim::{FaultPlan, Rule};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(10);

fn config() -> String {
    serde_json::json!({
        "Owner": "reader-tests",
        "SchemaVersion": {"Major": 2, "Minor": 1},
        "Container": {},
    })
    .to_string()
}

#[test]
fn many_threads_on_one_connection_while_notifications_stream_lose_nothing() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 20;
    const QUERIES: usize = 5;
    let daemon = Daemon::start(&["--generation", "v2", "--sync", "--latency-ms", "0"]);
    let client = daemon.client();
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (client, barrier) = (client.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for r in 0..ROUNDS {
                    let id = format!("rr-{t}-{r}");
                    let sys = System::create_with(client.clone(), &id, &config(), Timeouts::uniform(LIMIT))
                        .expect("create");
                    // Start's completion and the exit are notifications, read by whichever
                    // thread holds the role at the time.
                    sys.start().expect("start");
                    let h = client.open_compute_system(&id).expect("open").value;
                    for _ in 0..QUERIES {
                        let p = client
                            .get_compute_system_properties(h, "{}")
                            .expect("properties")
                            .value;
                        assert!(p.contains(&id), "{id} got the answer to another call: {p}");
                        assert!(p.contains("Running"), "{id}: {p}");
                    }
                    client.close_compute_system(h).expect("close the raw handle");
                    sys.terminate().expect("terminate");
                    sys.wait_timeout(LIMIT).expect("the exit notification arrives");
                    sys.close().expect("close");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a calling thread failed");
    }
    let s = client.stats().expect("stats");
    assert_eq!((s.mine_systems, s.mine_processes, s.mine_callbacks), (0, 0, 0));
    assert!(client.is_connected());
}

#[test]
fn a_notification_reaches_an_idle_connection() {
    let daemon = Daemon::start(&["--generation", "v2", "--sync", "--latency-ms", "0"]);
    let idle = daemon.client();
    let other = daemon.client();
    for i in 0..20 {
        let id = format!("idle-{i}");
        let sys = Arc::new(
            System::create_with(idle.clone(), &id, &config(), Timeouts::uniform(LIMIT)).expect("create"),
        );
        sys.start().expect("start");
        let (tx, rx) = mpsc::channel();
        let s2 = sys.clone();
        std::thread::spawn(move || {
            let r = s2.wait_timeout(LIMIT);
            let _ = tx.send((r, Instant::now()));
        });
        std::thread::sleep(Duration::from_millis(5)); // let it block
                                                      // No call is in flight on `idle`: only its watcher reads the exit.
        let stopper = System::open(other.clone(), &id).expect("open from the other connection");
        let stopped = Instant::now();
        stopper.terminate().expect("terminate");
        let (r, at) = rx.recv_timeout(LIMIT).expect("the waiter returns");
        r.expect("the exit arrived on the idle connection");
        let after = at.saturating_duration_since(stopped);
        assert!(after < Duration::from_secs(1), "the exit took {after:?}");
        stopper.close().expect("close");
        sys.close().expect("close");
    }
}

#[test]
fn a_connection_lost_mid_call_fails_every_call_in_flight_and_every_wait() {
    const CALLERS: usize = 6;
    let mut daemon = Daemon::start(&["--generation", "v2", "--sync"]);
    let client = daemon.client();
    let sys = Arc::new(
        System::create_with(client.clone(), "held", &config(), Timeouts::uniform(LIMIT)).expect("create"),
    );
    sys.start().expect("start");
    client
        .set_fault_plan(
            FaultPlan::new()
                .rule(
                    Rule::call(Method::GetComputeSystemProperties)
                        .system("held")
                        .block("held"),
                )
                .to_json(),
        )
        .expect("plan");
    let (tx, rx) = mpsc::channel();
    for _ in 0..CALLERS {
        let (sys, tx) = (sys.clone(), tx.clone());
        std::thread::spawn(move || {
            let r = sys.properties_v3("{}").map(|_| ());
            let _ = tx.send(("call", r, Instant::now()));
        });
    }
    {
        let (sys, tx) = (sys.clone(), tx.clone());
        std::thread::spawn(move || {
            let r = sys.wait();
            let _ = tx.send(("wait", r, Instant::now()));
        });
    }
    drop(tx);
    // Every caller is in flight (one of them holds the reader role, blocked in its read; this
    // thread's own calls are answered through it meanwhile).
    let deadline = Instant::now() + LIMIT;
    while client.blocked_on("held").expect("blocked_on") < CALLERS {
        assert!(Instant::now() < deadline, "the calls never reached the gate");
        std::thread::sleep(Duration::from_millis(2));
    }
    let killed = Instant::now();
    daemon.kill9();
    for _ in 0..=CALLERS {
        let (what, r, at) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("every thread returns");
        let e = r.expect_err("ended by the service's death");
        assert!(
            e.is_service_disconnected(),
            "{what}: service-disconnected, got {e}"
        );
        let after = at.saturating_duration_since(killed);
        assert!(after < Duration::from_secs(1), "{what} returned after {after:?}");
    }
    assert!(!client.is_connected());
    let e = client.enumerate_compute_systems("{}").expect_err("no service");
    assert_eq!(e.code, hcs_simd::server_unavailable());
}

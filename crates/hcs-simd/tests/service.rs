//! The service as a process: `kill -9` with 20 clients waiting, a client killed in the middle
//! of a call, `SIGTERM`, a second daemon and a stale socket, another uid, per-connection
//! handles, and threads that do not grow with clients. Each test runs its own `hcs-simd`.
#![cfg(unix)]

mod common;

use common::{processes_with, wait_gone, wait_processes, Daemon};
use hcs::{Method, System, Timeouts};
use hcs_sim::{FaultPlan, Rule};
use hcs_simd::ClientDriver;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(10);

/// A child process killed (and reaped) when the test ends, panicking or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(terminate_on_last_close: bool) -> String {
    serde_json::json!({
        "Owner": "service-tests",
        "SchemaVersion": {"Major": 2, "Minor": 1},
        "Container": {},
        "ShouldTerminateOnLastHandleClosed": terminate_on_last_close,
    })
    .to_string()
}

fn params(command_line: &str) -> String {
    serde_json::json!({ "CommandLine": command_line }).to_string()
}

/// A `sleep` whose command line carries a marker unique to this test process and `tag`.
fn marked_sleep(tag: u32) -> (String, String) {
    let marker = format!("7{:05}.{tag:03}", std::process::id() % 100_000);
    (format!("sleep {marker}"), marker)
}

#[test]
fn kill_9_of_the_service_fails_every_waiter_within_a_second_and_leaves_no_process() {
    const CLIENTS: usize = 20;
    let mut daemon = Daemon::start(&[]);
    let (cmd, marker) = marked_sleep(1);
    let mut objects = Vec::new();
    for i in 0..CLIENTS {
        let client = daemon.client();
        let sys = System::create_with(
            client.clone(),
            &format!("k9-{i}"),
            &config(false),
            Timeouts::uniform(LIMIT),
        )
        .expect("create");
        sys.start().expect("start");
        let p = sys.create_process(&params(&cmd)).expect("create process");
        objects.push((client, Arc::new(sys), Arc::new(p)));
    }
    // Every process runs.
    wait_processes(&marker, CLIENTS, LIMIT);
    let socket = daemon.socket.display().to_string();
    assert!(
        !processes_with(&socket).is_empty(),
        "the supervisors run (their command line names the socket)"
    );

    let barrier = Arc::new(Barrier::new(2 * CLIENTS + 1));
    let (tx, rx) = mpsc::channel();
    for (_, sys, p) in &objects {
        let (sys, b, tx2) = (sys.clone(), barrier.clone(), tx.clone());
        std::thread::spawn(move || {
            b.wait();
            let r = sys.wait();
            let _ = tx2.send(("system", r, Instant::now()));
        });
        let (p, b, tx2) = (p.clone(), barrier.clone(), tx.clone());
        std::thread::spawn(move || {
            b.wait();
            let r = p.wait();
            let _ = tx2.send(("process", r, Instant::now()));
        });
    }
    drop(tx);
    barrier.wait();
    std::thread::sleep(Duration::from_millis(20)); // let the waiters block
    let killed = Instant::now();
    daemon.kill9();
    for _ in 0..2 * CLIENTS {
        let (what, r, at) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("every waiter returns");
        let e = r.expect_err("a wait ended by the service's death is an error");
        assert!(
            e.is_service_disconnected(),
            "{what} wait: service-disconnected, got {e}"
        );
        let after = at.saturating_duration_since(killed);
        assert!(
            after < Duration::from_secs(1),
            "{what} waiter returned after {after:?}"
        );
    }
    // Calls made afterwards fail the same way, at once.
    let (client, sys, _) = &objects[0];
    assert!(!client.is_connected());
    let e = hcs::Driver::enumerate_compute_systems(&**client, "{}").expect_err("no service");
    assert_eq!(
        e.code,
        hcs_simd::server_unavailable(),
        "a driver call after the death: {e:?}"
    );
    let e = sys.properties_v3("{}").expect_err("no service");
    assert!(
        e.is_service_disconnected(),
        "a lifecycle call after the death: {e}"
    );
    // Nothing the service started survives it: not the processes, not the supervisors.
    if let Err(left) = wait_gone(&marker, Duration::from_secs(5)) {
        panic!("processes started by the service survived it: {left:?}");
    }
    if let Err(left) = wait_gone(&socket, Duration::from_secs(5)) {
        panic!("supervisors survived the service: {left:?}");
    }
}

/// The client of `client_killed_mid_call_releases_its_handles_and_leaves_others_alone`, run as
/// a child process (this test binary re-executed); a no-op when run as a test.
#[test]
fn helper_client_process() {
    let Some(socket) = std::env::var_os("HCS_SIMD_TEST_HELPER_SOCKET") else {
        return;
    };
    let client = ClientDriver::connect(socket).expect("connect");
    let sys = System::create_with(client.clone(), "victim", &config(true), Timeouts::uniform(LIMIT))
        .expect("create");
    sys.start().expect("start");
    let cmd = std::env::var("HCS_SIMD_TEST_HELPER_CMD").expect("a command");
    let _p = sys.create_process(&params(&cmd)).expect("create process");
    // Straight to the pipe (println! may be captured by the test harness).
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "READY").expect("write");
        out.flush().expect("flush");
    }
    // Held at a fault gate in the service until this process is killed.
    let _ = sys.modify(r#"{"ResourcePath":"VirtualMachine/ComputeTopology/Memory/SizeInMB","RequestType":"Update","Settings":256}"#);
    panic!("the blocked call returned");
}

#[test]
fn client_killed_mid_call_releases_its_handles_and_leaves_others_alone() {
    let daemon = Daemon::start(&[]);
    let me = daemon.client();
    let bystander = System::create_with(me.clone(), "bystander", &config(true), Timeouts::uniform(LIMIT))
        .expect("create");
    bystander.start().expect("start");
    let (cmd, marker) = marked_sleep(2);
    let mine = bystander
        .create_process(&params("sleep 30"))
        .expect("create process");
    let baseline = me.stats().expect("stats");
    me.set_fault_plan(
        FaultPlan::new()
            .rule(
                Rule::call(Method::ModifyComputeSystem)
                    .system("victim")
                    .block("victim"),
            )
            .to_json(),
    )
    .expect("plan");

    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "--exact",
                "helper_client_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("HCS_SIMD_TEST_HELPER_SOCKET", &daemon.socket)
            .env("HCS_SIMD_TEST_HELPER_CMD", &cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the helper client"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let ready = BufReader::new(stdout)
            .lines()
            .any(|l| l.is_ok_and(|l| l.ends_with("READY")));
        let _ = ready_tx.send(ready);
    });
    assert_eq!(
        ready_rx.recv_timeout(LIMIT),
        Ok(true),
        "the helper client did not get ready"
    );
    let deadline = Instant::now() + LIMIT;
    while me.blocked_on("victim").expect("blocked_on") == 0 {
        assert!(
            Instant::now() < deadline,
            "the helper's call never reached the gate"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let during = me.stats().expect("stats");
    assert_eq!(during.connections, 2);
    assert_eq!(during.live_systems, 2);
    wait_processes(&marker, 1, LIMIT);

    child.0.kill().expect("kill the helper");
    child.0.wait().expect("reap the helper");

    // Its handles and registrations go; its terminate-on-last-close system ends with them.
    let settled = |s: &hcs_simd::protocol::Stats| {
        s.connections == 1
            && s.systems == baseline.systems
            && s.processes == baseline.processes
            && s.callbacks == baseline.callbacks
            && s.live_systems == 1
            && s.host_processes == 1
            && s.contexts == baseline.contexts
    };
    Daemon::wait_stats(&me, Duration::from_secs(5), settled);
    wait_gone(&marker, Duration::from_secs(5)).expect("the victim's process ended with its system");
    // The held call finishes on a dead connection: nothing comes back, nothing leaks.
    me.release("victim").expect("release");
    let deadline = Instant::now() + LIMIT;
    while me.blocked_on("victim").expect("blocked_on") > 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    }
    let after = Daemon::wait_stats(&me, Duration::from_secs(5), settled);
    assert_eq!(
        (after.mine_systems, after.mine_processes, after.mine_callbacks),
        (
            baseline.mine_systems,
            baseline.mine_processes,
            baseline.mine_callbacks
        )
    );
    // The other client's system and process are untouched.
    let props = bystander.properties_v3("{}").expect("properties");
    assert!(props.contains(r#""State":"Running""#), "{props}");
    assert!(mine.exit().is_none(), "the bystander's process still runs");
    mine.kill().expect("kill");
    mine.wait_timeout(LIMIT).expect("wait");
    mine.close().expect("close");
    bystander.terminate().expect("terminate");
    bystander.wait_timeout(LIMIT).expect("wait");
    bystander.close().expect("close");
    let end = Daemon::wait_stats(&me, Duration::from_secs(3), |s| {
        s.systems == 0
            && s.processes == 0
            && s.callbacks == 0
            && s.live_systems == 0
            && s.host_processes == 0
            && s.contexts == 0
    });
    assert_eq!(end.connections, 1);
    assert!(daemon
        .log_text()
        .contains("released the handles of a closed connection"));
}

#[test]
fn sigterm_terminates_systems_tells_clients_and_removes_the_socket() {
    let mut daemon = Daemon::start(&[]);
    let client = daemon.client();
    let (cmd, marker) = marked_sleep(3);
    let sys = Arc::new(
        System::create_with(client.clone(), "term", &config(false), Timeouts::uniform(LIMIT))
            .expect("create"),
    );
    sys.start().expect("start");
    let _p = sys.create_process(&params(&cmd)).expect("process");
    let (tx, rx) = mpsc::channel();
    {
        let sys = sys.clone();
        std::thread::spawn(move || {
            let _ = tx.send(sys.wait());
        });
    }
    let status = daemon.terminate();
    assert!(status.success(), "hcs-simd exits 0 on SIGTERM: {status:?}");
    let r = rx
        .recv_timeout(Duration::from_secs(2))
        .expect("the waiter is told");
    match r {
        Ok(()) => assert!(sys.exit_status().is_some(), "an exit was recorded"),
        Err(e) => assert!(e.is_service_disconnected(), "{e}"),
    }
    assert!(!client.is_connected(), "the client saw the goodbye");
    assert!(!daemon.socket.exists(), "the socket is removed");
    wait_gone(&marker, Duration::from_secs(5)).expect("the system's processes end");
    let log = daemon.log_text();
    assert!(
        log.contains("shutting down") && log.contains("terminated at shutdown"),
        "{log}"
    );
}

#[test]
fn a_second_daemon_never_steals_a_live_socket_and_a_stale_one_is_replaced() {
    let mut first = Daemon::start(&[]);
    let out = Command::new(common::exe())
        .arg("--socket")
        .arg(&first.socket)
        .stdin(Stdio::null())
        .output()
        .expect("run a second daemon");
    assert_eq!(out.status.code(), Some(1), "the second daemon exits with 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already serving"), "a clear message: {err}");
    assert!(first.client().stats().is_ok(), "the first still serves");

    // kill -9 leaves the socket file behind; the next daemon replaces it.
    first.kill9();
    assert!(first.socket.exists(), "a dead daemon's socket stays");
    let dir = common::temp_dir("stale");
    let second = Daemon::start_at(dir, first.socket.clone(), &[]);
    assert!(second.client().stats().is_ok());
    assert!(
        second.log_text().contains("stale socket"),
        "{}",
        second.log_text()
    );
    drop(second);
}

#[test]
fn the_socket_is_0600_in_a_0700_directory() {
    use std::os::unix::fs::PermissionsExt;
    let daemon = Daemon::start(&[]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&daemon.socket), 0o600);
    assert_eq!(mode(daemon.socket.parent().expect("a directory")), 0o700);
}

#[test]
fn another_uid_is_refused_with_a_log_line() {
    if !rustix::process::getuid().is_root() {
        eprintln!("skipped: needs root to run a client as another uid (nobody)");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let daemon = Daemon::start(&[]);
    // Open the file-system gates so that only the credential check stands in the way.
    let dir = daemon.socket.parent().expect("a directory").to_owned();
    std::fs::set_permissions(&daemon.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let exe = daemon.dir.join("hcs-simd-copy");
    std::fs::copy(common::exe(), &exe).expect("copy the binary where nobody can run it");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = Command::new(&exe)
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("ping")
        .uid(65534)
        .gid(65534)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("run a client as nobody");
    assert_eq!(
        out.status.code(),
        Some(3),
        "refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + LIMIT;
    while !daemon.log_text().contains("refused connection from uid 65534") {
        assert!(Instant::now() < deadline, "no log line: {}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(5));
    }
    // The service's own uid (root) is still served.
    assert_eq!(daemon.client().stats().expect("stats").connections, 1);
}

#[test]
fn handles_are_per_connection() {
    let daemon = Daemon::start(&["--generation", "v2", "--sync"]);
    let a = daemon.client();
    let b = daemon.client();
    let sys =
        System::create_with(a.clone(), "shared", &config(false), Timeouts::uniform(LIMIT)).expect("create");
    sys.start().expect("start");
    let handle = hcs::Driver::open_compute_system(&*a, "shared")
        .expect("open")
        .value;
    // B may not use A's handle ...
    let e = hcs::Driver::get_compute_system_properties(&*b, handle, "{}").expect_err("not B's handle");
    assert_eq!(e.code, hcs::HResult::E_HANDLE);
    let e = hcs::Driver::close_compute_system(&*b, handle).expect_err("not B's handle");
    assert_eq!(e.code, hcs::HResult::E_HANDLE);
    // ... but opens the system by id with a handle of its own.
    let other = System::open(b.clone(), "shared").expect("open from B");
    assert!(other.properties_v3("{}").expect("properties").contains("Running"));
    assert_eq!(b.stats().expect("stats").mine_systems, 1);
    other.close().expect("close B's");
    hcs::Driver::close_compute_system(&*a, handle).expect("close A's raw handle");
    sys.terminate().expect("terminate");
    sys.wait_timeout(LIMIT).expect("wait");
    sys.close().expect("close");
}

#[test]
fn service_threads_do_not_grow_with_clients() {
    let daemon = Daemon::start(&["--generation", "v2", "--sync"]);
    let first = daemon.client();
    let before = first.stats().expect("stats").threads;
    assert!(before > 0, "thread count is readable on Linux");
    let mut held = Vec::new();
    for i in 0..30 {
        let c = daemon.client();
        let s = System::create_with(
            c.clone(),
            &format!("t-{i}"),
            &config(true),
            Timeouts::uniform(LIMIT),
        )
        .expect("create");
        held.push((c, s));
    }
    let during = first.stats().expect("stats");
    assert_eq!(during.connections, 31);
    assert_eq!(
        during.threads, before,
        "threads grew with clients: {before} -> {}",
        during.threads
    );
    drop(held); // the systems go with their last handles (terminate on last close)
    Daemon::wait_stats(&first, Duration::from_secs(5), |s| {
        s.connections == 1 && s.live_systems == 0
    });
}

/// The parent pid of `pid`, from `/proc`.
fn parent_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a PPid line")
}

#[test]
fn the_death_of_a_systems_worker_is_that_systems_unexpected_exit() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    let (cmd, marker) = marked_sleep(4);
    let sys = System::create_with(
        client.clone(),
        "worker-dies",
        &config(false),
        Timeouts::uniform(LIMIT),
    )
    .expect("create");
    sys.start().expect("start");
    let other = System::create_with(
        client.clone(),
        "bystander",
        &config(false),
        Timeouts::uniform(LIMIT),
    )
    .expect("create");
    other.start().expect("start");
    let p = sys.create_process(&params(&cmd)).expect("process");
    let pids = wait_processes(&marker, 1, LIMIT);
    let supervisor = parent_of(pids[0]);
    let cmdline = std::fs::read(format!("/proc/{supervisor}/cmdline")).expect("cmdline");
    assert!(
        String::from_utf8_lossy(&cmdline).contains(hcs_simd::SUPERVISOR_ARG),
        "the process runs under its system's supervisor"
    );
    let pid = rustix::process::Pid::from_raw(supervisor as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill the supervisor");
    sys.wait_timeout(LIMIT).expect("the system exits");
    let exit = sys.exit_status().expect("exit status");
    assert!(
        exit.unexpected,
        "a worker's death is an unexpected exit: {exit:?}"
    );
    if let Err(e) = p.wait_timeout(LIMIT) {
        assert!(!e.is_timeout(), "the process wait ends with its system: {e}");
    }
    wait_gone(&marker, Duration::from_secs(5)).expect("the system's process is gone");
    let props = other.properties_v3("{}").expect("the other system is untouched");
    assert!(props.contains(r#""State":"Running""#), "{props}");
    p.close().expect("close");
    sys.close().expect("close");
    other.terminate().expect("terminate");
    other.wait_timeout(LIMIT).expect("wait");
    other.close().expect("close");
    Daemon::wait_stats(&client, Duration::from_secs(3), |s| {
        s.systems == 0 && s.processes == 0 && s.callbacks == 0 && s.live_systems == 0 && s.host_processes == 0
    });
}

/// A server-side context made for one call must live until that call's bookkeeping is done: a
/// registration slowed down by a fault plan while another call of the same connection finishes
/// (and prunes unused contexts) still forwards the process's exit. Before the fix the other call
/// pruned the fresh context and the exit went nowhere (the conformance check `handle_hygiene`
/// timed out about one run in ten).
#[test]
fn a_context_made_for_a_call_in_flight_is_not_pruned_by_another_call() {
    let daemon = Daemon::start(&["--generation", "v2", "--sync"]);
    let client = daemon.client();
    let driver: Arc<dyn hcs::Driver> = client.clone();
    let sys = System::create_with(driver.clone(), "prune", &config(false), Timeouts::uniform(LIMIT))
        .expect("create");
    sys.start().expect("start");
    let h = driver.open_compute_system("prune").expect("open").value;
    let (ph, _info) = driver
        .create_process(h, &params("sleep 30"))
        .expect("create process")
        .value;
    client
        .set_fault_plan(
            FaultPlan::new()
                .rule(Rule::call(Method::RegisterProcessCallback).delay(Duration::from_millis(300)))
                .to_json(),
        )
        .expect("fault plan");
    let (tx, rx) = mpsc::channel();
    let sub = hcs::notify::Subscription::new(move |kind, _, _| {
        let _ = tx.send(kind);
    });
    let ctx = sub.context();
    let d2 = driver.clone();
    let registering = std::thread::spawn(move || d2.register_process_callback(ph, ctx));
    std::thread::sleep(Duration::from_millis(100));
    // Another call with a context of its own, finishing while the registration is delayed.
    let other = hcs::notify::Subscription::new(|_, _, _| {});
    let _ = driver.pause_compute_system(h, "", other.context());
    let cb = registering.join().expect("join").expect("register");
    client.clear_faults().expect("clear faults");
    driver.terminate_process(ph).expect("terminate the process");
    let got = rx.recv_timeout(LIMIT);
    assert_eq!(
        got,
        Ok(hcs::NotificationKind::ProcessExited),
        "the registration made while another call finished still forwards the exit"
    );
    driver.unregister_process_callback(cb).expect("unregister");
    driver.close_process(ph).expect("close process");
    driver.close_compute_system(h).expect("close");
    let _ = sys.resume();
    sys.terminate().expect("terminate");
    sys.wait_timeout(LIMIT).expect("wait");
    sys.close().expect("close");
}

/// A pending call's completion can reach the client before the call's "pending" reply (the
/// service writes a zero-latency notification from the thread that made it, ahead of the
/// reply). The operation is still over: when the service then goes away, its context (which
/// registered no callback) is not told of a disconnect as if it still waited.
#[test]
fn a_completion_ahead_of_its_pending_reply_leaves_nothing_pending() {
    use hcs::notify::Subscription;
    use hcs::{Driver, NotificationKind};
    use std::sync::Mutex;
    let mut daemon = Daemon::start(&["--latency-ms", "0"]);
    let client = daemon.client();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let sub = Subscription::new(move |kind, _, _| s2.lock().unwrap().push(kind));
    let created = client
        .create_compute_system("ahead", &config(false), sub.context())
        .expect("create");
    assert!(created.pending, "V1 without --sync: create answers pending");
    let deadline = Instant::now() + LIMIT;
    while !seen
        .lock()
        .unwrap()
        .contains(&NotificationKind::SystemCreateCompleted)
    {
        assert!(
            Instant::now() < deadline,
            "no completion: {:?}",
            seen.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    daemon.kill9();
    let deadline = Instant::now() + LIMIT;
    while client.is_connected() {
        assert!(Instant::now() < deadline, "the client did not see the service go");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        *seen.lock().unwrap(),
        vec![NotificationKind::SystemCreateCompleted],
        "a context with nothing pending and no callback hears no disconnect"
    );
}

//! The task state machine against the hcs-testkit fake: every RPC in every state it can be
//! in (errdefs codes), the HCS calls made, the events published, and the fault paths (a failed
//! or never-answered start, an exit that never arrives, a bad bundle).

use crate::service::{Bounds, Platform, ProcState, Publisher, Service, UNKNOWN_EXIT};
use crate::spec::Launch;
use containerd_shim::api;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::ttrpc::Code;
use hcs::NotificationKind;
use hcs_testkit::{Answer, FakeDriver, Gate, Method};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ID: &str = "c1";

#[derive(Default)]
struct Recorder(Mutex<Vec<&'static str>>);

impl Publisher for Recorder {
    fn publish(&self, topic: &'static str, _event: Box<dyn MessageDyn>) {
        self.0.lock().unwrap().push(topic);
    }
}

impl Recorder {
    fn topics(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().clone()
    }
}

struct Fixture {
    fake: Arc<FakeDriver>,
    svc: Arc<Service>,
    events: Arc<Recorder>,
    bundle: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.bundle);
    }
}

fn bundle_with(config: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("shim-hcs-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    dir
}

const CONFIG: &str = r#"{"ociVersion":"1.0.2","process":{"args":["sh","-c","exit 3"],"env":["PATH=/bin"],"cwd":"/"},"root":{"path":"rootfs"}}"#;

fn fixture() -> Fixture {
    fixture_with(CONFIG)
}

fn fixture_with(config: &str) -> Fixture {
    let fake = FakeDriver::new();
    // Every process reports exit code 3 when asked after its exit.
    fake.set_default(
        Method::GetProcessProperties,
        Answer::ok_with(r#"{"Exited":true,"ExitCode":3}"#),
    );
    let events = Arc::new(Recorder::default());
    let platform = Platform {
        driver: fake.clone(),
        launch: Arc::new(|_| Launch::Direct),
        bounds: Bounds {
            call: Duration::from_millis(500),
            stop: Duration::from_millis(200),
            exit: Duration::from_millis(300),
            drain: Duration::from_millis(200),
        },
    };
    let svc = Service::new(platform, events.clone());
    Fixture {
        fake,
        svc,
        events,
        bundle: bundle_with(config),
    }
}

impl Fixture {
    fn create(&self) -> Result<api::CreateTaskResponse, crate::service::ShimError> {
        self.svc.create(&api::CreateTaskRequest {
            id: ID.into(),
            bundle: self.bundle.to_string_lossy().into_owned(),
            ..Default::default()
        })
    }
    fn start(&self, exec_id: &str) -> Result<api::StartResponse, crate::service::ShimError> {
        self.svc.start(&api::StartRequest {
            id: ID.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        })
    }
    fn state(&self, exec_id: &str) -> Result<api::StateResponse, crate::service::ShimError> {
        self.svc.state(&api::StateRequest {
            id: ID.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        })
    }
    fn status(&self, exec_id: &str) -> api::Status {
        self.state(exec_id).unwrap().status.enum_value_or_default()
    }
    fn delete(&self, exec_id: &str) -> Result<api::DeleteResponse, crate::service::ShimError> {
        self.svc.delete(&api::DeleteRequest {
            id: ID.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        })
    }
    fn kill(&self, exec_id: &str, signal: u32, all: bool) -> Result<(), crate::service::ShimError> {
        self.svc.kill(&api::KillRequest {
            id: ID.into(),
            exec_id: exec_id.into(),
            signal,
            all,
            ..Default::default()
        })
    }
    fn wait(&self, exec_id: &str) -> Result<api::WaitResponse, crate::service::ShimError> {
        self.svc.wait(&api::WaitRequest {
            id: ID.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        })
    }
    fn pause(&self) -> Result<(), crate::service::ShimError> {
        self.svc.pause(&api::PauseRequest {
            id: ID.into(),
            ..Default::default()
        })
    }
    fn resume(&self) -> Result<(), crate::service::ShimError> {
        self.svc.resume(&api::ResumeRequest {
            id: ID.into(),
            ..Default::default()
        })
    }
    fn exec(&self, exec_id: &str) -> Result<(), crate::service::ShimError> {
        let spec = Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: br#"{"args":["echo","hi"],"cwd":"/"}"#.to_vec(),
            ..Default::default()
        };
        self.svc.exec_process(&api::ExecProcessRequest {
            id: ID.into(),
            exec_id: exec_id.into(),
            spec: Some(spec).into(),
            ..Default::default()
        })
    }
    /// Delivers `ProcessExited` to the most recently created process.
    fn exit_last_process(&self) {
        let ctx = self.fake.last_process_context().expect("a process was created");
        self.fake.fire(ctx, NotificationKind::ProcessExited, 0u32, None);
    }
    fn wait_for_state(&self, exec_id: &str, want: api::Status) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.status(exec_id) != want {
            assert!(Instant::now() < deadline, "{exec_id:?} never reached {want:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, crate::service::ShimError>) -> Code {
    r.expect_err("expected an error").code
}

#[test]
fn a_task_runs_through_create_start_exit_wait_delete_with_its_hcs_calls_and_events() {
    let f = fixture();
    f.create().unwrap();
    assert_eq!(f.fake.count(Method::CreateComputeSystem), 1);
    assert_eq!(f.status(""), api::Status::CREATED);
    let pid = f.start("").unwrap().pid;
    assert!(pid > 0);
    assert_eq!(f.fake.count(Method::StartComputeSystem), 1);
    assert_eq!(f.fake.count(Method::CreateProcess), 1);
    assert_eq!(f.status(""), api::Status::RUNNING);
    assert_eq!(f.state("").unwrap().exit_status, UNKNOWN_EXIT, "not stopped yet");
    f.exit_last_process();
    let w = f.wait("").unwrap();
    assert_eq!(w.exit_status, 3);
    assert_eq!(f.status(""), api::Status::STOPPED);
    // The init's exit tore the system down before it was reported.
    assert_eq!(f.fake.count(Method::ShutdownComputeSystem), 1);
    assert_eq!(f.fake.count(Method::CloseComputeSystem), 1);
    let d = f.delete("").unwrap();
    assert_eq!((d.pid, d.exit_status), (pid, 3));
    assert_eq!(code(f.state("")), Code::NOT_FOUND, "deleted");
    assert_eq!(
        f.events.topics(),
        ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
    );
    f.fake.assert_no_leaks();
}

#[test]
fn every_rpc_before_create_is_not_found() {
    let f = fixture();
    assert_eq!(code(f.state("")), Code::NOT_FOUND);
    assert_eq!(code(f.start("")), Code::NOT_FOUND);
    assert_eq!(code(f.delete("")), Code::NOT_FOUND);
    assert_eq!(code(f.kill("", 15, false)), Code::NOT_FOUND);
    assert_eq!(code(f.wait("")), Code::NOT_FOUND);
    assert_eq!(code(f.pause()), Code::NOT_FOUND);
    assert_eq!(code(f.resume()), Code::NOT_FOUND);
    assert_eq!(code(f.exec("e1")), Code::NOT_FOUND);
    let pids = f.svc.pids(&api::PidsRequest {
        id: ID.into(),
        ..Default::default()
    });
    assert_eq!(code(pids), Code::NOT_FOUND);
    let stats = f.svc.stats(&api::StatsRequest {
        id: ID.into(),
        ..Default::default()
    });
    assert_eq!(code(stats), Code::NOT_FOUND);
    assert_eq!(f.fake.calls().len(), 0, "no HCS call without a task");
}

#[test]
fn in_created_a_second_create_is_already_exists_and_pause_resume_stats_exec_start_are_preconditions() {
    let f = fixture();
    f.create().unwrap();
    assert_eq!(code(f.create()), Code::ALREADY_EXISTS);
    assert_eq!(code(f.pause()), Code::FAILED_PRECONDITION);
    assert_eq!(code(f.resume()), Code::FAILED_PRECONDITION);
    let stats = f.svc.stats(&api::StatsRequest {
        id: ID.into(),
        ..Default::default()
    });
    assert_eq!(code(stats), Code::FAILED_PRECONDITION);
    f.exec("e1").unwrap();
    assert_eq!(code(f.start("e1")), Code::FAILED_PRECONDITION, "init not running");
    assert_eq!(code(f.start("nope")), Code::FAILED_PRECONDITION);
    // Delete in created tears the (never started) system down.
    f.delete("").unwrap();
    assert_eq!(f.fake.count(Method::CloseComputeSystem), 1);
    f.fake.assert_no_leaks();
}

#[test]
fn in_running_start_delete_and_resume_are_preconditions_and_a_duplicate_exec_already_exists() {
    let f = fixture();
    f.create().unwrap();
    f.start("").unwrap();
    assert_eq!(code(f.start("")), Code::FAILED_PRECONDITION);
    assert_eq!(code(f.delete("")), Code::FAILED_PRECONDITION);
    assert_eq!(code(f.resume()), Code::FAILED_PRECONDITION);
    f.exec("e1").unwrap();
    assert_eq!(code(f.exec("e1")), Code::ALREADY_EXISTS);
    assert_eq!(code(f.state("e2")), Code::NOT_FOUND);
    assert_eq!(f.status("e1"), api::Status::CREATED);
    f.start("e1").unwrap();
    assert_eq!(f.status("e1"), api::Status::RUNNING);
    assert_eq!(code(f.delete("e1")), Code::FAILED_PRECONDITION, "exec running");
    f.exit_last_process();
    assert_eq!(f.wait("e1").unwrap().exit_status, 3);
    f.delete("e1").unwrap();
    assert_eq!(code(f.state("e1")), Code::NOT_FOUND);
    assert_eq!(f.status(""), api::Status::RUNNING, "the init is unaffected");
    let pids = f
        .svc
        .pids(&api::PidsRequest {
            id: ID.into(),
            ..Default::default()
        })
        .unwrap();
    assert!(f.fake.count(Method::GetComputeSystemProperties) >= 1);
    let _ = pids;
    f.kill("", 9, false).unwrap();
    assert_eq!(f.fake.count(Method::TerminateProcess), 1, "SIGKILL terminates");
    f.exit_last_process_of_init();
    assert_eq!(f.wait("").unwrap().exit_status, 3);
    f.delete("").unwrap();
    assert_eq!(
        f.events.topics(),
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/exit",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
}

impl Fixture {
    /// Delivers `ProcessExited` to the first process created (the init).
    fn exit_last_process_of_init(&self) {
        let calls = self.fake.calls_of(Method::RegisterProcessCallback);
        let ctx = calls.first().and_then(|c| c.ctx).expect("init registered");
        self.fake.fire(ctx, NotificationKind::ProcessExited, 0u32, None);
    }
}

#[test]
fn pause_and_resume_call_hcs_publish_events_and_report_paused() {
    let f = fixture();
    f.create().unwrap();
    f.start("").unwrap();
    f.pause().unwrap();
    assert_eq!(f.fake.count(Method::PauseComputeSystem), 1);
    assert_eq!(f.status(""), api::Status::PAUSED);
    assert_eq!(code(f.pause()), Code::FAILED_PRECONDITION);
    assert_eq!(code(f.delete("")), Code::FAILED_PRECONDITION);
    f.resume().unwrap();
    assert_eq!(f.fake.count(Method::ResumeComputeSystem), 1);
    assert_eq!(f.status(""), api::Status::RUNNING);
    let t = f.events.topics();
    assert_eq!(&t[2..], ["/tasks/paused", "/tasks/resumed"]);
}

#[test]
fn in_stopped_kill_is_not_found_and_start_pause_exec_are_preconditions() {
    let f = fixture();
    f.create().unwrap();
    f.start("").unwrap();
    f.exit_last_process();
    f.wait("").unwrap();
    assert_eq!(code(f.kill("", 15, false)), Code::NOT_FOUND);
    assert_eq!(code(f.start("")), Code::FAILED_PRECONDITION);
    assert_eq!(code(f.pause()), Code::FAILED_PRECONDITION);
    assert_eq!(code(f.exec("e1")), Code::FAILED_PRECONDITION);
    // Wait repeats the same status.
    assert_eq!(f.wait("").unwrap().exit_status, 3);
    f.delete("").unwrap();
}

#[test]
fn kill_in_created_stops_with_status_1_without_a_process_call() {
    let f = fixture();
    f.create().unwrap();
    f.kill("", 15, false).unwrap();
    assert_eq!(f.status(""), api::Status::STOPPED);
    assert_eq!(f.wait("").unwrap().exit_status, 1);
    assert_eq!(f.fake.count(Method::SignalProcess), 0);
    assert_eq!(f.events.topics(), ["/tasks/create", "/tasks/exit"]);
    f.delete("").unwrap();
    f.fake.assert_no_leaks();
}

#[test]
fn kill_all_signals_the_init_and_every_running_exec() {
    let f = fixture();
    f.create().unwrap();
    f.start("").unwrap();
    f.exec("e1").unwrap();
    f.start("e1").unwrap();
    f.kill("", 15, true).unwrap();
    assert_eq!(f.fake.count(Method::SignalProcess), 2);
}

#[test]
fn a_failed_system_start_ends_stopped_with_a_reason_and_the_system_torn_down() {
    let f = fixture();
    f.fake
        .script(Method::StartComputeSystem, Answer::fail(hcs::HResult::E_FAIL));
    f.create().unwrap();
    let e = f.start("").unwrap_err();
    assert_eq!(e.code, Code::INTERNAL);
    assert_eq!(f.status(""), api::Status::STOPPED);
    assert_eq!(f.wait("").unwrap().exit_status, UNKNOWN_EXIT);
    assert!(f.svc.reason(ID, "").unwrap().contains("start failed"));
    assert_eq!(f.fake.count(Method::CloseComputeSystem), 1);
    f.delete("").unwrap();
    f.fake.assert_no_leaks();
}

#[test]
fn a_start_that_never_answers_is_deadline_exceeded_within_the_bound() {
    let f = fixture();
    let gate = Gate::new();
    f.fake
        .script(Method::StartComputeSystem, Answer::ok().blocking(gate.clone()));
    f.create().unwrap();
    let t = Instant::now();
    let e = f.start("").unwrap_err();
    assert_eq!(e.code, Code::DEADLINE_EXCEEDED);
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    assert_eq!(f.status(""), api::Status::STOPPED, "a terminal state, not wedged");
    gate.open();
}

#[test]
fn a_failed_process_creation_ends_stopped_with_a_reason() {
    let f = fixture();
    f.fake
        .script(Method::CreateProcess, Answer::fail(hcs::HResult(0x8007_0002)));
    f.create().unwrap();
    assert!(f.start("").is_err());
    assert!(f.svc.reason(ID, "").is_some());
    assert_eq!(f.wait("").unwrap().exit_status, UNKNOWN_EXIT);
    f.delete("").unwrap();
}

#[test]
fn an_exit_that_never_arrives_after_sigkill_is_forced_to_stopped_with_a_reason() {
    let f = fixture();
    f.create().unwrap();
    f.start("").unwrap();
    f.kill("", 9, false).unwrap();
    // No ProcessExited is ever delivered.
    f.wait_for_state("", api::Status::STOPPED);
    assert_eq!(f.wait("").unwrap().exit_status, 137);
    assert!(f.svc.reason(ID, "").unwrap().contains("did not arrive"));
    f.delete("").unwrap();
}

#[test]
fn a_failed_create_leaves_no_task_and_a_bad_bundle_is_invalid_argument_without_hcs_calls() {
    let f = fixture();
    f.fake
        .script(Method::CreateComputeSystem, Answer::fail(hcs::HResult::E_FAIL));
    assert!(f.create().is_err());
    assert_eq!(code(f.state("")), Code::NOT_FOUND);
    f.create().unwrap();

    let bad = fixture_with(r#"{"process":{"args":[]}}"#);
    assert_eq!(code(bad.create()), Code::INVALID_ARGUMENT);
    assert_eq!(bad.fake.count(Method::CreateComputeSystem), 0);
    let missing = fixture();
    std::fs::remove_file(missing.bundle.join("config.json")).unwrap();
    assert_eq!(code(missing.create()), Code::INVALID_ARGUMENT);
}

#[test]
fn stats_query_hcs_and_encode_cgroups_metrics() {
    let f = fixture();
    f.create().unwrap();
    f.start("").unwrap();
    let s = f
        .svc
        .stats(&api::StatsRequest {
            id: ID.into(),
            ..Default::default()
        })
        .unwrap();
    let any = s.stats.into_option().unwrap();
    assert!(any.type_url.ends_with("Metrics") || any.type_url.ends_with("Statistics"));
}

#[test]
fn process_state_names_are_stable() {
    assert_ne!(ProcState::Created, ProcState::Running);
}

fn update_req(type_url: &str, value: &str) -> api::UpdateTaskRequest {
    api::UpdateTaskRequest {
        id: ID.into(),
        resources: Some(Any {
            type_url: type_url.into(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

const LINUX_RESOURCES: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

#[test]
fn update_changes_what_hcs_allows_on_a_running_task_and_names_what_it_refuses() {
    let f = fixture();
    let memory = update_req(LINUX_RESOURCES, r#"{"memory":{"limit":134217728}}"#);
    assert_eq!(code(f.svc.update(&memory)), Code::NOT_FOUND);
    f.create().unwrap();
    let e = f.svc.update(&memory).unwrap_err();
    assert_eq!(e.code, Code::FAILED_PRECONDITION);
    assert!(e.message.contains("not running"), "{}", e.message);
    f.start("").unwrap();
    // Memory and CPU limit: one HcsModifyComputeSystem each.
    f.svc
        .update(&update_req(
            LINUX_RESOURCES,
            r#"{"memory":{"limit":134217728},"cpu":{"quota":100000,"period":100000}}"#,
        ))
        .unwrap();
    let calls: Vec<String> = f
        .fake
        .calls_of(Method::ModifyComputeSystem)
        .into_iter()
        .map(|c| c.arg)
        .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[0].contains(r#""ResourcePath":"Container/Memory/SizeInMB""#)
            && calls[0].contains(r#""Settings":128"#)
    );
    assert!(calls[1].contains(r#""ResourcePath":"Container/Processor""#) && calls[1].contains("Limit"));
    // Anything else: Unimplemented naming the field, and no HCS call at all.
    let e = f
        .svc
        .update(&update_req(
            LINUX_RESOURCES,
            r#"{"memory":{"limit":134217728},"pids":{"limit":5}}"#,
        ))
        .unwrap_err();
    assert_eq!(e.code, Code::UNIMPLEMENTED);
    assert!(
        e.message.contains("pids") && e.message.contains("nothing was changed"),
        "{}",
        e.message
    );
    let e = f.svc.update(&update_req("example.com/Other", "{}")).unwrap_err();
    assert_eq!(e.code, Code::INVALID_ARGUMENT);
    assert!(e.message.contains("example.com/Other"), "{}", e.message);
    assert_eq!(f.fake.count(Method::ModifyComputeSystem), 2);
    // Paused: FailedPrecondition.
    f.pause().unwrap();
    assert_eq!(code(f.svc.update(&memory)), Code::FAILED_PRECONDITION);
    f.resume().unwrap();
    // An HCS failure is returned with HCS's code mapped.
    f.fake
        .script(Method::ModifyComputeSystem, Answer::fail(hcs::HResult::E_FAIL));
    assert_eq!(code(f.svc.update(&memory)), Code::INTERNAL);
    f.kill("", 9, false).unwrap();
    f.exit_last_process();
    f.wait("").unwrap();
    assert_eq!(code(f.svc.update(&memory)), Code::FAILED_PRECONDITION);
}

#[test]
fn checkpoint_is_unimplemented_with_a_clear_message() {
    let f = fixture();
    let req = api::CheckpointTaskRequest {
        id: ID.into(),
        ..Default::default()
    };
    assert_eq!(code(f.svc.checkpoint(&req)), Code::NOT_FOUND);
    f.create().unwrap();
    let e = f.svc.checkpoint(&req).unwrap_err();
    assert_eq!(e.code, Code::UNIMPLEMENTED);
    assert!(
        e.message.contains("Checkpoint") && e.message.contains("HCS cannot"),
        "{}",
        e.message
    );
}

//! Property test: random sequences of lifecycle operations and notifications against the
//! scripted fake never hang (every wait is bounded), never leak a handle or registration, and
//! never panic; after close, every wait ends promptly with a non-timeout outcome.

mod common;
use common::*;
use hcs::{CallOptions, NotificationKind, Process, System, Timeouts};
use hcs_testkit::{Answer, FakeDriver, Method};
use proptest::prelude::*;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
enum Reply {
    Ok,
    PendingCompleted(u32),
    PendingNever,
    Fail(u32),
}

#[derive(Debug, Clone)]
enum Step {
    Start(Reply),
    Pause(Reply),
    Resume(Reply),
    Shutdown(Reply),
    Terminate(Reply),
    Properties,
    FireSystemExit(u32),
    FireDisconnect,
    FireStaleCompletion,
    FireUnknown(u32),
    CreateProcess,
    FireProcessExit(u8),
    Signal(Reply),
    Kill,
    CloseProcess,
    WaitShort,
    CloseSystem,
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        Just(Reply::Ok),
        prop_oneof![Just(0u32), Just(0x8000_4005)].prop_map(Reply::PendingCompleted),
        Just(Reply::PendingNever),
        prop_oneof![
            Just(0xC037_0110u32),
            Just(0x8037_0105),
            Just(0x8007_0005),
            Just(0x7F),
            Just(0x8037_011F)
        ]
        .prop_map(Reply::Fail),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        reply().prop_map(Step::Start),
        reply().prop_map(Step::Pause),
        reply().prop_map(Step::Resume),
        reply().prop_map(Step::Shutdown),
        reply().prop_map(Step::Terminate),
        Just(Step::Properties),
        prop_oneof![Just(0u32), Just(0xC037_0106), Just(0x8037_0107)].prop_map(Step::FireSystemExit),
        Just(Step::FireDisconnect),
        Just(Step::FireStaleCompletion),
        any::<u32>().prop_map(Step::FireUnknown),
        Just(Step::CreateProcess),
        any::<u8>().prop_map(Step::FireProcessExit),
        reply().prop_map(Step::Signal),
        Just(Step::Kill),
        Just(Step::CloseProcess),
        Just(Step::WaitShort),
        Just(Step::CloseSystem),
    ]
}

fn answer(r: &Reply, kind: NotificationKind) -> Answer {
    match r {
        Reply::Ok => Answer::ok(),
        Reply::PendingCompleted(st) => Answer::pending().then_complete(kind, *st, None, ms(1)),
        Reply::PendingNever => Answer::pending(),
        Reply::Fail(c) => Answer::fail(*c),
    }
}

const OP_TIMEOUT: Duration = Duration::from_millis(15);

fn run(steps: &[Step]) {
    let fake = FakeDriver::new();
    let s = System::create_with(fake.clone(), "prop", CONFIG, Timeouts::uniform(OP_TIMEOUT)).expect("create");
    let opts = CallOptions::timeout(OP_TIMEOUT);
    let mut procs: Vec<(Process, hcs::NotifyContext)> = Vec::new();
    let sys_ctx = fake.last_system_context().unwrap();
    for st in steps {
        let t = Instant::now();
        match st {
            Step::Start(r) => {
                fake.script(
                    Method::StartComputeSystem,
                    answer(r, NotificationKind::SystemStartCompleted),
                );
                let _ = s.start_with(&opts);
            }
            Step::Pause(r) => {
                fake.script(
                    Method::PauseComputeSystem,
                    answer(r, NotificationKind::SystemPauseCompleted),
                );
                let _ = s.pause_with(&opts);
            }
            Step::Resume(r) => {
                fake.script(
                    Method::ResumeComputeSystem,
                    answer(r, NotificationKind::SystemResumeCompleted),
                );
                let _ = s.resume_with(&opts);
            }
            Step::Shutdown(r) => {
                fake.script(
                    Method::ShutdownComputeSystem,
                    answer(r, NotificationKind::SystemExited),
                );
                let _ = s.shutdown();
            }
            Step::Terminate(r) => {
                fake.script(
                    Method::TerminateComputeSystem,
                    answer(r, NotificationKind::SystemExited),
                );
                let _ = s.terminate();
            }
            Step::Properties => {
                let _ = s.properties(&[]);
            }
            Step::FireSystemExit(status) => {
                fake.fire(sys_ctx, NotificationKind::SystemExited, *status, None);
            }
            Step::FireDisconnect => {
                fake.fire(sys_ctx, NotificationKind::ServiceDisconnect, 0u32, None);
                for (_, c) in &procs {
                    fake.fire(*c, NotificationKind::ServiceDisconnect, 0u32, None);
                }
            }
            Step::FireStaleCompletion => {
                fake.fire(sys_ctx, NotificationKind::SystemStartCompleted, 0u32, None);
            }
            Step::FireUnknown(raw) => {
                fake.fire(
                    sys_ctx,
                    NotificationKind::from_v1(*raw),
                    *raw,
                    Some("{\u{0}garbage"),
                );
            }
            Step::CreateProcess => {
                if let Ok(p) = s.create_process(r#"{"CommandLine":"x"}"#) {
                    let c = fake.last_process_context().expect("registered");
                    procs.push((p, c));
                }
            }
            Step::FireProcessExit(code) => {
                if let Some((_, c)) = procs.last() {
                    fake.set_default(
                        Method::GetProcessProperties,
                        Answer::ok_with(format!(r#"{{"ExitCode":{code}}}"#)),
                    );
                    fake.fire(*c, NotificationKind::ProcessExited, 0u32, None);
                }
            }
            Step::Signal(r) => {
                if let Some((p, _)) = procs.last() {
                    fake.script(Method::SignalProcess, answer(r, NotificationKind::ProcessExited));
                    let _ = p.signal(r#"{"Signal":15}"#);
                }
            }
            Step::Kill => {
                if let Some((p, _)) = procs.last() {
                    let _ = p.kill();
                }
            }
            Step::CloseProcess => {
                if let Some((p, _)) = procs.pop() {
                    p.close().expect("process close");
                    assert!(!p
                        .wait_timeout(Duration::from_secs(2))
                        .is_err_and(|e| e.is_timeout()));
                }
            }
            Step::WaitShort => {
                let _ = s.wait_timeout(ms(2));
                for (p, _) in &procs {
                    let _ = p.wait_timeout(ms(1));
                }
            }
            Step::CloseSystem => {
                s.close().expect("system close");
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "step {st:?} took {:?}",
            t.elapsed()
        );
    }
    for (p, _) in procs.drain(..) {
        p.close().expect("process close");
        let r = p.wait_timeout(Duration::from_secs(2));
        assert!(!r.is_err_and(|e| e.is_timeout()), "process wait hung after close");
    }
    s.close().expect("system close");
    let r = s.wait_timeout(Duration::from_secs(2));
    assert!(!r.is_err_and(|e| e.is_timeout()), "system wait hung after close");
    assert!(
        !fake.fire(sys_ctx, NotificationKind::SystemExited, 0u32, None),
        "registration outlived close"
    );
    assert!(fake.wait_for_deliveries(Duration::from_secs(2)));
    fake.assert_no_leaks();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_operation_sequences_never_hang_leak_or_panic(steps in proptest::collection::vec(step(), 1..24)) {
        run(&steps);
    }
}

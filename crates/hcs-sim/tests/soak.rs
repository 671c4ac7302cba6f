//! Fault soak: seeded random fault plans × random lifecycle sequences through `hcs::System` /
//! `hcs::Process` over the simulator (scripted backend), checking in every scenario that
//!
//! * every call returns within its bound (short `Timeouts::uniform`; a watchdog aborts a hung
//!   scenario and prints how to replay it),
//! * nothing panics,
//! * after closing everything (a close that failed is retried) no object keeps a notify
//!   context, the simulator counts zero handles and registrations, and no host process runs,
//! * an exit code the lifecycle reports as known is the one the process really exited with
//!   (never a clean 0 for a killed, crashed or unreadable exit), and a system's exit is
//!   classified unexpected exactly when it crashed.
//!
//! Faults: failures in both encodings (with and without `performed`), pending completions late
//! or never, crashes, disconnects (then a restart, keeping or invalidating handles), delayed,
//! duplicated, dropped and rewritten notifications, extra notifications of untracked kinds,
//! late callbacks, held signals, closes and unregisters that fail once.
//!
//! # Running it
//!
//! ```text
//! cargo test -p hcs-sim --test soak                                        # ≈ 2,000 scenarios
//! HCS_SOAK_SCENARIOS=10000  cargo test -p hcs-sim --test soak --release    # 10^4
//! HCS_SOAK_SCENARIOS=100000 cargo test -p hcs-sim --test soak --release -- --nocapture  # 10^5
//! HCS_SOAK_SEED=1234 HCS_SOAK_ONLY=17 cargo test -p hcs-sim --test soak -- --nocapture  # replay one
//! ```
//!
//! `HCS_SOAK_SEED` fixes the seed (default: from the clock; printed at the start and with any
//! failure, together with the command that replays the failing scenario alone).
//! `HCS_SOAK_ONLY=n` runs scenario `n` of that seed only, printing its plan, steps and the
//! simulator's record. `HCS_SOAK_THREADS` (default 4) runs scenarios on that many threads; each
//! scenario has its own simulator and is generated from its own seed, so the threads only
//! overlap waiting.

use hcs::{ApiGeneration, Driver, ExitCode, HResult, Method, NotificationKind, Process, System, Timeouts};
use hcs_schema::ExitType;
use hcs_sim::{FaultPlan, NotifyTarget, PayloadEdit, Rule, Script, ScriptedProcess, SimConfig, Simulator};
use serde_json::json;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"{"Owner":"soak","SchemaVersion":{"Major":2,"Minor":1},"Container":{}}"#;
/// Completion-wait timeout of every operation.
const TIMEOUT: Duration = Duration::from_millis(40);
/// The bound on any one lifecycle call (timeouts, injected delays and kill's temporary handles
/// included).
const CALL_BOUND: Duration = Duration::from_secs(3);
/// The watchdog's bound on one scenario.
const SCENARIO_BOUND: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ PRNG (splitmix64)

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }
    fn ms(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.below(max + 1))
    }
}

fn scenario_seed(seed: u64, index: u64) -> u64 {
    Rng(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03)).next()
}

// ------------------------------------------------------------------ scenario generation

/// The scripted command lines and the exit code each exits with on its own.
const COMMANDS: [(&str, Option<u32>); 5] = [
    ("exit0", Some(0)),
    ("exit0-late", Some(0)),
    ("exit7", Some(7)),
    ("forever", None),
    ("stubborn", None),
];

fn script() -> Script {
    Script::new()
        .on("exit0", ScriptedProcess::exits(0))
        .on(
            "exit0-late",
            ScriptedProcess::exits(0).runtime(Duration::from_millis(15)),
        )
        .on(
            "exit7",
            ScriptedProcess::exits(7).runtime(Duration::from_millis(5)),
        )
        .on("forever", ScriptedProcess::forever())
        .on("stubborn", ScriptedProcess::forever().ignoring_signals())
}

/// Failure codes in both encodings, Win32 codes with and without FACILITY_WIN32, and the
/// "gone" family the lifecycle treats specially.
const CODES: [HResult; 14] = [
    HResult::ERROR_VMCOMPUTE_INVALID_STATE,
    HResult::HCS_E_INVALID_STATE,
    HResult::ERROR_VMCOMPUTE_SYSTEM_ALREADY_STOPPED,
    HResult::HCS_E_SYSTEM_ALREADY_STOPPED,
    HResult::ERROR_VMCOMPUTE_SYSTEM_NOT_FOUND,
    HResult::HCS_E_SYSTEM_NOT_FOUND,
    HResult::ERROR_VMCOMPUTE_UNEXPECTED_EXIT,
    HResult::HCS_E_UNEXPECTED_EXIT,
    HResult::HCS_E_PROCESS_ALREADY_STOPPED,
    HResult::E_ACCESSDENIED,
    HResult::ERROR_ACCESS_DENIED,
    HResult::E_FAIL,
    HResult::E_HANDLE,
    HResult::ERROR_PROC_NOT_FOUND,
];

const LIFECYCLE_CALLS: [Method; 16] = [
    Method::CreateComputeSystem,
    Method::StartComputeSystem,
    Method::ShutdownComputeSystem,
    Method::TerminateComputeSystem,
    Method::PauseComputeSystem,
    Method::ResumeComputeSystem,
    Method::GetComputeSystemProperties,
    Method::RegisterComputeSystemCallback,
    Method::CreateProcess,
    Method::OpenProcess,
    Method::OpenComputeSystem,
    Method::TerminateProcess,
    Method::SignalProcess,
    Method::GetProcessProperties,
    Method::RegisterProcessCallback,
    Method::ModifyProcess,
];

const CLOSES: [Method; 4] = [
    Method::CloseComputeSystem,
    Method::CloseProcess,
    Method::UnregisterComputeSystemCallback,
    Method::UnregisterProcessCallback,
];

const PENDABLE: [Method; 4] = [
    Method::CreateComputeSystem,
    Method::StartComputeSystem,
    Method::PauseComputeSystem,
    Method::ResumeComputeSystem,
];

const TRACKED: [NotificationKind; 6] = [
    NotificationKind::SystemExited,
    NotificationKind::ProcessExited,
    NotificationKind::SystemCreateCompleted,
    NotificationKind::SystemStartCompleted,
    NotificationKind::SystemPauseCompleted,
    NotificationKind::SystemResumeCompleted,
];

fn random_rule(rng: &mut Rng) -> Rule {
    let nth = 1 + rng.below(3) as u32;
    match rng.below(14) {
        0 | 1 => {
            let rule = Rule::call(rng.pick(&LIFECYCLE_CALLS));
            let rule = if rng.chance(60) { rule.nth(nth) } else { rule };
            rule.fail(rng.pick(&CODES))
        }
        2 => Rule::call(rng.pick(&LIFECYCLE_CALLS))
            .nth(nth)
            .fail_performed(rng.pick(&CODES)),
        // Closes and unregisters fail once (a retry must succeed). `E_HANDLE` there means the
        // handle is already gone (the library then counts it released), so it is injected only
        // as "performed": closed, yet reported invalid.
        3 => {
            let rule = Rule::call(rng.pick(&CLOSES)).nth(nth);
            match rng.pick(&CODES) {
                HResult::E_HANDLE => rule.fail_performed(HResult::E_HANDLE),
                code => rule.fail(code),
            }
        }
        4 => {
            let rule = Rule::call(rng.pick(&PENDABLE));
            let rule = if rng.chance(50) { rule.nth(nth) } else { rule };
            if rng.chance(50) {
                rule.never_complete()
            } else {
                rule.complete_late(rng.ms(60))
            }
        }
        5 => Rule::call(rng.pick(&LIFECYCLE_CALLS[1..9]))
            .nth(nth)
            .crash(rng.ms(20)),
        6 => Rule::call(rng.pick(&LIFECYCLE_CALLS[1..]))
            .nth(nth)
            .disconnect_after(rng.ms(20)),
        7 => {
            let rule = Rule::notification(rng.pick(&TRACKED));
            match rng.below(3) {
                0 => rule.delay(rng.ms(40)),
                1 => rule.duplicate(1 + rng.below(2) as u32),
                _ => rule.nth(nth).drop_it(),
            }
        }
        8 => Rule::call(rng.pick(&[
            Method::UnregisterComputeSystemCallback,
            Method::UnregisterProcessCallback,
        ]))
        .late_callback(rng.pick(&TRACKED), rng.ms(10)),
        9 => Rule::notification(NotificationKind::ProcessExited).rewrite(
            None,
            match rng.below(4) {
                0 => PayloadEdit::Merge(json!({"LastWaitResult": 5}).as_object().unwrap().clone()),
                1 => PayloadEdit::Merge(json!({"Exited": false}).as_object().unwrap().clone()),
                2 => PayloadEdit::Remove,
                _ => PayloadEdit::Replace("not json".into()),
            },
        ),
        10 => Rule::notification(NotificationKind::SystemExited).rewrite(
            Some(HResult::S_OK),
            PayloadEdit::Replace(
                json!({"Status": HResult::HCS_E_UNEXPECTED_EXIT.as_i32(), "ExitType": "UnexpectedExit"})
                    .to_string(),
            ),
        ),
        11 => Rule::call(rng.pick(&LIFECYCLE_CALLS[1..9])).notify_with(
            rng.pick(&[
                NotificationKind::Other(0x6),
                NotificationKind::Other(0xE),
                NotificationKind::Other(0x77),
                NotificationKind::LiveMigration,
            ]),
            rng.ms(10),
            0u32,
            rng.chance(50).then(|| "{\"x\":1}".to_string()),
            NotifyTarget::Auto,
        ),
        12 => {
            let rule = Rule::call(rng.pick(&[Method::SignalProcess, Method::TerminateProcess])).nth(nth);
            rule.hold_signal(rng.ms(30))
        }
        _ => Rule::call(rng.pick(&LIFECYCLE_CALLS)).delay(rng.ms(5)),
    }
}

#[derive(Debug, Clone)]
enum Step {
    CreateProcess(&'static str),
    Signal(usize, i64),
    Kill(usize),
    TerminateProcess(usize),
    WaitProcess(usize, Duration),
    CloseProcess(usize),
    OpenProcessAgain(usize),
    Pause,
    Resume,
    Shutdown,
    Terminate,
    WaitSystem(Duration),
    Properties,
    Crash,
    Disconnect,
    RestartService,
    RestartInvalidatingHandles,
}

fn random_step(rng: &mut Rng) -> Step {
    let i = rng.below(4) as usize;
    match rng.below(20) {
        0..=3 => Step::CreateProcess(rng.pick(&COMMANDS).0),
        4 | 5 => Step::Signal(i, rng.pick(&[0, 1, 2, 9, 10, 15, 17])),
        6 => Step::Kill(i),
        7 => Step::TerminateProcess(i),
        8 | 9 => Step::WaitProcess(i, rng.ms(30)),
        10 => Step::CloseProcess(i),
        11 => Step::OpenProcessAgain(i),
        12 => Step::Pause,
        13 => Step::Resume,
        14 => {
            if rng.chance(50) {
                Step::Shutdown
            } else {
                Step::Terminate
            }
        }
        15 => Step::WaitSystem(rng.ms(30)),
        16 => Step::Properties,
        17 => Step::Crash,
        18 => {
            if rng.chance(50) {
                Step::Disconnect
            } else {
                Step::RestartService
            }
        }
        _ => Step::RestartInvalidatingHandles,
    }
}

struct Scenario {
    generation: ApiGeneration,
    all_sync: bool,
    latency: Duration,
    plan: FaultPlan,
    steps: Vec<Step>,
}

fn scenario(seed: u64) -> Scenario {
    let mut rng = Rng(seed);
    let generation = if rng.chance(50) {
        ApiGeneration::V1
    } else {
        ApiGeneration::V2
    };
    let all_sync = rng.chance(30);
    let latency = rng.ms(2);
    let mut plan = FaultPlan::new();
    for _ in 0..rng.below(4) {
        plan = plan.rule(random_rule(&mut rng));
    }
    let steps = (0..3 + rng.below(10)).map(|_| random_step(&mut rng)).collect();
    Scenario {
        generation,
        all_sync,
        latency,
        plan,
        steps,
    }
}

// ------------------------------------------------------------------ running one scenario

struct Proc {
    object: Process,
    command: &'static str,
}

/// Runs `f`, failing the scenario if it takes longer than `CALL_BOUND`.
fn bounded<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let began = Instant::now();
    let out = f();
    let took = began.elapsed();
    assert!(took <= CALL_BOUND, "{what} took {took:?} (bound {CALL_BOUND:?})");
    out
}

/// Closes with a few tries (each close-failure rule fires once); a disconnect that a rule
/// scheduled is answered by a service restart, as the owner of a real host would wait for one.
fn close_retrying(sim: &Simulator, what: &str, mut close: impl FnMut() -> hcs::Result<()>) {
    let mut last = None;
    for _ in 0..6 {
        match bounded(what, &mut close) {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
        if !sim.is_connected() {
            sim.restart_service();
        }
    }
    panic!(
        "{what}: close still fails after retries: {:?}",
        last.map(|e| e.to_string())
    );
}

fn run(s: &Scenario, log: &mut Vec<String>, verbose: bool) {
    let mut config = SimConfig::default()
        .scripted(script())
        .generation(s.generation)
        .latency(s.latency)
        .shutdown_grace(Duration::from_millis(20))
        .faults(s.plan.clone());
    if s.all_sync {
        config = config.all_sync();
    }
    let sim = Simulator::new(config);
    // Always on: the leak check reads it (cheap at this size).
    sim.start_recording(if verbose { 100_000 } else { 20_000 });
    let result = catch_unwind(AssertUnwindSafe(|| run_on(&sim, s, log)));
    if verbose {
        for e in sim.take_record().entries {
            log.push(format!("record: {e:?}"));
        }
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn run_on(sim: &Arc<Simulator>, s: &Scenario, log: &mut Vec<String>) {
    let driver: Arc<dyn Driver> = sim.clone();
    let timeouts = Timeouts::uniform(TIMEOUT);
    let id = "soak";
    let mut systems: Vec<System> = Vec::new();
    let mut procs: Vec<Proc> = Vec::new();
    let created = bounded("create", || {
        System::create_with(driver.clone(), id, CONFIG, timeouts)
    });
    log.push(format!(
        "create -> {:?}",
        created.as_ref().map(|_| ()).map_err(|e| e.to_string())
    ));
    if let Ok(sys) = created {
        let r = bounded("start", || sys.start());
        log.push(format!("start -> {:?}", r.map_err(|e| e.to_string())));
        systems.push(sys);
    }
    for step in &s.steps {
        let sys = systems.last();
        let proc_at = |i: usize| procs.get(i % procs.len().max(1));
        let outcome: String = match step {
            Step::CreateProcess(cmd) => match sys {
                Some(sys) => {
                    let params = json!({ "CommandLine": cmd }).to_string();
                    match bounded("create_process", || sys.create_process(&params)) {
                        Ok(p) => {
                            procs.push(Proc {
                                object: p,
                                command: cmd,
                            });
                            "ok".into()
                        }
                        Err(e) => e.to_string(),
                    }
                }
                None => "no system".into(),
            },
            Step::Signal(i, sig) => match proc_at(*i) {
                Some(p) => format!(
                    "{:?}",
                    bounded("signal", || p
                        .object
                        .signal(&json!({ "Signal": sig }).to_string()))
                    .map_err(|e| e.to_string())
                ),
                None => "no process".into(),
            },
            Step::Kill(i) => match proc_at(*i) {
                Some(p) => format!(
                    "{:?}",
                    bounded("kill", || p.object.kill()).map_err(|e| e.to_string())
                ),
                None => "no process".into(),
            },
            Step::TerminateProcess(i) => match proc_at(*i) {
                Some(p) => format!(
                    "{:?}",
                    bounded("terminate process", || p.object.terminate()).map_err(|e| e.to_string())
                ),
                None => "no process".into(),
            },
            Step::WaitProcess(i, t) => match proc_at(*i) {
                Some(p) => format!(
                    "{:?}",
                    bounded("process wait", || p.object.wait_timeout(*t)).map_err(|e| e.to_string())
                ),
                None => "no process".into(),
            },
            Step::CloseProcess(i) => match proc_at(*i) {
                Some(p) => format!(
                    "{:?}",
                    bounded("process close", || p.object.close()).map_err(|e| e.to_string())
                ),
                None => "no process".into(),
            },
            Step::OpenProcessAgain(i) => match (sys, proc_at(*i)) {
                (Some(sys), Some(p)) => {
                    let pid = p.object.pid();
                    let command = p.command;
                    match bounded("open_process", || sys.open_process(pid)) {
                        Ok(object) => {
                            procs.push(Proc { object, command });
                            "ok".into()
                        }
                        Err(e) => e.to_string(),
                    }
                }
                _ => "nothing to open".into(),
            },
            Step::Pause => sys.map_or("no system".into(), |s| {
                format!("{:?}", bounded("pause", || s.pause()).map_err(|e| e.to_string()))
            }),
            Step::Resume => sys.map_or("no system".into(), |s| {
                format!(
                    "{:?}",
                    bounded("resume", || s.resume()).map_err(|e| e.to_string())
                )
            }),
            Step::Shutdown => sys.map_or("no system".into(), |s| {
                format!(
                    "{:?}",
                    bounded("shutdown", || s.shutdown()).map_err(|e| e.to_string())
                )
            }),
            Step::Terminate => sys.map_or("no system".into(), |s| {
                format!(
                    "{:?}",
                    bounded("terminate", || s.terminate()).map_err(|e| e.to_string())
                )
            }),
            Step::WaitSystem(t) => sys.map_or("no system".into(), |s| {
                format!(
                    "{:?}",
                    bounded("system wait", || s.wait_timeout(*t)).map_err(|e| e.to_string())
                )
            }),
            Step::Properties => sys.map_or("no system".into(), |s| {
                format!(
                    "{:?}",
                    bounded("properties", || s.properties(&[]))
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                )
            }),
            Step::Crash => format!("{:?}", sim.crash(id)),
            Step::Disconnect => {
                sim.disconnect();
                "disconnected".into()
            }
            Step::RestartService => {
                sim.restart_service();
                "restarted".into()
            }
            Step::RestartInvalidatingHandles => {
                sim.restart_service_invalidating_handles();
                // The owner reopens the system by id, as a shim would after a service restart.
                match bounded("reopen", || System::open_with(driver.clone(), id, timeouts)) {
                    Ok(s) => {
                        systems.push(s);
                        "restarted; reopened".into()
                    }
                    Err(e) => format!("restarted; reopen: {e}"),
                }
            }
        };
        log.push(format!("{step:?} -> {outcome}"));
    }

    // What the objects report, read *before* the ground truth: the model records an exit
    // before it sends the notification, so an exit reported by then is in the truth taken
    // after it. (Read the other way round, a process exiting between the two reads showed as
    // "reports exit code 0 but is still running".)
    let reported: Vec<_> = procs.iter().map(|p| p.object.exit()).collect();
    // Ground truth before anything is closed (the model forgets what nobody can reach).
    let truth_system = sim.system_info(id);
    let system_rewritten = s.plan.rules.iter().any(|r| {
        matches!(
            r.trigger,
            hcs_sim::Trigger::Notification(NotificationKind::SystemExited)
        ) && matches!(r.action, hcs_sim::Action::Rewrite { .. })
    });
    let process_truth = |pid: u32| -> Option<Option<u32>> {
        truth_system
            .as_ref()
            .and_then(|info| info.processes.iter().rev().find(|p| p.pid == pid))
            .map(|p| p.exit_code)
    };

    // Exit codes: a known code is the real one, never a clean 0 for an unclean exit.
    for (p, exit) in procs.iter().zip(reported) {
        if let Some(ExitCode::Code(code)) = exit {
            let scripted = COMMANDS
                .iter()
                .find(|(c, _)| *c == p.command)
                .and_then(|(_, c)| *c);
            match process_truth(p.object.pid()) {
                Some(Some(real)) => assert_eq!(
                    code,
                    real,
                    "process {} ({}) reports exit code {code}, but it exited with {real}",
                    p.object.pid(),
                    p.command
                ),
                Some(None) => panic!(
                    "process {} ({}) reports exit code {code} but is still running",
                    p.object.pid(),
                    p.command
                ),
                // Forgotten by the model (a restart dropped its handles): the code must be its
                // scripted one or a signal's.
                None => assert!(
                    Some(code) == scripted || (129..=192).contains(&code),
                    "process {} ({}) reports exit code {code}",
                    p.object.pid(),
                    p.command
                ),
            }
        }
    }
    // System exits: unexpected exactly when it crashed (unless the plan rewrote the exit).
    if let (Some(info), false) = (&truth_system, system_rewritten) {
        for sys in &systems {
            if let (Some(exit), Some(real)) = (sys.exit_status(), info.exit_type) {
                assert_eq!(
                    exit.unexpected,
                    real == ExitType::UnexpectedExit,
                    "system exit classified {exit:?}, but it exited with {real:?}"
                );
            }
        }
    }

    // Cleanup: bring the service back, stop the system through a fresh handle, close
    // everything (retrying a close that failed once).
    sim.clear_faults();
    if s.plan
        .rules
        .iter()
        .any(|r| matches!(r.action, hcs_sim::Action::Disconnect { .. }))
    {
        // Let a disconnect a rule scheduled (at most 20 ms after its call) happen first.
        std::thread::sleep(Duration::from_millis(25));
    }
    if !sim.is_connected() {
        sim.restart_service();
    }
    if sim.system_info(id).is_some() {
        let cleaner = bounded("cleanup open", || System::open_with(driver.clone(), id, timeouts))
            .expect("the system can be opened for cleanup");
        bounded("cleanup terminate", || cleaner.terminate()).expect("cleanup terminate");
        bounded("cleanup wait", || cleaner.wait_timeout(CALL_BOUND)).ok();
        close_retrying(sim, "cleanup close", || cleaner.close());
        assert!(cleaner.notify_context().is_none());
    }
    for p in &procs {
        close_retrying(sim, "process close", || p.object.close());
        assert!(
            p.object.notify_context().is_none(),
            "a closed process keeps its notify context"
        );
        // I4: a wait after close ends at once (exit outcome or already-closed), never a timeout.
        let r = bounded("process wait after close", || {
            p.object.wait_timeout(Duration::from_millis(500))
        });
        assert!(
            !r.is_err_and(|e| e.is_timeout()),
            "a wait on a closed process timed out"
        );
    }
    for sys in &systems {
        close_retrying(sim, "system close", || sys.close());
        assert!(
            sys.notify_context().is_none(),
            "a closed system keeps its notify context"
        );
        let r = bounded("system wait after close", || {
            sys.wait_timeout(Duration::from_millis(500))
        });
        assert!(
            !r.is_err_and(|e| e.is_timeout()),
            "a wait on a closed system timed out"
        );
    }
    drop(procs);
    drop(systems);
    // Zero handles and registrations, except one kind the design accepts: a library-owned
    // object (a half-built System, Kill's temporaries, a dropped object) whose release failed
    // while the service was disconnected is released "with bounded retries, then forgotten
    // with a log line" (hcs commit d8e0f16). Each such leftover must be a handle whose last
    // close/unregister failed with RPC_S_SERVER_UNAVAILABLE (or, for a handle, whose
    // registration's unregister did: close unregisters first and stops there); any other
    // leftover is a leak.
    let record = sim.record();
    let unavailable = HResult(0x8007_0000 | HResult::RPC_S_SERVER_UNAVAILABLE.0);
    let gave_up_while_down = |h: u64| {
        record
            .calls()
            .filter(|c| c.handle == Some(h) && CLOSES.contains(&c.method))
            .last()
            .is_some_and(|c| c.result.code() == Some(unavailable))
    };
    let open = sim.open_handles();
    for &h in &open {
        let via_registration = record.calls().any(|c| {
            matches!(
                c.method,
                Method::RegisterComputeSystemCallback | Method::RegisterProcessCallback
            ) && c.handle == Some(h)
                && c.new_handle
                    .is_some_and(|r| open.contains(&r) && gave_up_while_down(r))
        });
        assert!(
            record.dropped == 0 && (gave_up_while_down(h) || via_registration),
            "leaked handle or registration {h:#x}; leaks: {:?}",
            sim.leaks()
        );
    }
    assert_eq!(sim.running_host_processes(), 0);
}

fn describe(s: &Scenario) -> String {
    format!(
        "generation {:?}, all_sync {}, latency {:?}\nplan: {}\nsteps: {:?}",
        s.generation,
        s.all_sync,
        s.latency,
        s.plan.to_json(),
        s.steps
    )
}

/// Per worker: the scenario it runs (`u64::MAX`: none) and when it started (ms since `epoch`).
struct Slot {
    current: AtomicU64,
    started_ms: AtomicU64,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn fault_soak() {
    let seed = env_u64("HCS_SOAK_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let count = env_u64("HCS_SOAK_SCENARIOS").unwrap_or(2000);
    let only = env_u64("HCS_SOAK_ONLY");
    // Scenarios mostly wait (timeouts, latencies), so a few workers overlap them well.
    let threads = env_u64("HCS_SOAK_THREADS").unwrap_or(4).clamp(1, 64) as usize;
    let replay = move |i: u64| {
        format!("HCS_SOAK_SEED={seed} HCS_SOAK_ONLY={i} cargo test -p hcs-sim --test soak -- --nocapture")
    };
    eprintln!(
        "fault soak: seed {seed}, {count} scenarios on {threads} threads (replay: HCS_SOAK_SEED={seed} HCS_SOAK_SCENARIOS={count} cargo test -p hcs-sim --test soak)"
    );

    let epoch = Instant::now();
    let slots: Arc<Vec<Slot>> = Arc::new(
        (0..threads)
            .map(|_| Slot {
                current: AtomicU64::new(u64::MAX),
                started_ms: AtomicU64::new(0),
            })
            .collect(),
    );
    // Watchdog: a scenario that hangs aborts the run with its replay command.
    {
        let slots = Arc::clone(&slots);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            for slot in slots.iter() {
                let i = slot.current.load(Ordering::Acquire);
                if i == u64::MAX {
                    continue;
                }
                let since = (epoch.elapsed().as_millis() as u64)
                    .saturating_sub(slot.started_ms.load(Ordering::Acquire));
                if since > SCENARIO_BOUND.as_millis() as u64 && slot.current.load(Ordering::Acquire) == i {
                    eprintln!(
                        "fault soak: scenario {i} of seed {seed} hangs (> {SCENARIO_BOUND:?}):\n{}\nreplay: {}",
                        describe(&scenario(scenario_seed(seed, i))),
                        replay(i)
                    );
                    std::process::abort();
                }
            }
        });
    }

    let began = Instant::now();
    let (first, end) = match only {
        Some(i) => (i, i + 1),
        None => (0, count),
    };
    let next = Arc::new(AtomicU64::new(first));
    let failed: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let workers: Vec<_> = (0..if only.is_some() { 1 } else { threads })
        .map(|w| {
            let (slots, next, failed) = (Arc::clone(&slots), Arc::clone(&next), Arc::clone(&failed));
            std::thread::spawn(move || {
                let mut ran = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::AcqRel);
                    if i >= end || failed.lock().unwrap().is_some() {
                        return ran;
                    }
                    let s = scenario(scenario_seed(seed, i));
                    if only.is_some() {
                        eprintln!("scenario {i}: {}", describe(&s));
                    }
                    slots[w].started_ms.store(epoch.elapsed().as_millis() as u64, Ordering::Release);
                    slots[w].current.store(i, Ordering::Release);
                    let mut log = Vec::new();
                    let result = catch_unwind(AssertUnwindSafe(|| run(&s, &mut log, only.is_some())));
                    slots[w].current.store(u64::MAX, Ordering::Release);
                    if only.is_some() {
                        eprintln!("log:\n  {}", log.join("\n  "));
                    }
                    if let Err(panic) = result {
                        let message = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        failed.lock().unwrap().get_or_insert(format!(
                            "fault soak: scenario {i} of seed {seed} failed: {message}\n{}\nlog:\n  {}\nreplay: {}",
                            describe(&s),
                            log.join("\n  "),
                            replay(i)
                        ));
                        return ran;
                    }
                    ran += 1;
                }
            })
        })
        .collect();
    let ran: u64 = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    if let Some(report) = failed.lock().unwrap().take() {
        panic!("{report}");
    }
    eprintln!(
        "fault soak: {ran} scenarios passed in {:.1?} (seed {seed})",
        began.elapsed()
    );
}

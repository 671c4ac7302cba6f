//! Windows-target integration tests of the v1 driver against the fake `vmcompute.dll`
//! (`crates/fake-vmcompute`, built next to this test executable by cargo because it is a
//! `cfg(windows)` dev-dependency), run under Wine by `scripts/test-windows.sh`.
//!
//! The DLL is loaded through the real loader (`VmComputeTable::load_from` with
//! [`DllSource::DefaultSearchOrder`]: LoadLibraryW + GetProcAddress of every export), and the
//! scenarios go through `hcs::System`/`hcs::Process`: pending operations completed from the
//! DLL's own threads, exit codes, real pipe HANDLEs for stdio, kill, shutdown, close. After each
//! scenario the DLL's counters (outstanding result strings, simulator handles and
//! registrations) must be back to zero.
//!
//! Every string the driver frees is first reported to the DLL (`FakeHcsNoteStringFreed`), then
//! freed with the routine the loaded table chose (``CoTaskMemFree``), so the DLL knows exactly
//! which of its allocations are still outstanding.
#![cfg(windows)]
#![allow(unsafe_code)]

use hcs::{Driver, System};
use hcs_testkit::conformance;
use hcs_vmcompute::ffi::FreeStringFn;
use hcs_vmcompute::{DllSource, VmComputeDriver, VmComputeTable};
use std::ffi::c_void;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

type NoteFn = unsafe extern "system" fn(*mut c_void) -> i32;
type CountFn = unsafe extern "system" fn() -> i64;
type HandleCountsFn = unsafe extern "system" fn(*mut u64, *mut u64, *mut u64);
type StdinFn = unsafe extern "system" fn(*const u16, u32, *mut u8, usize) -> i64;

static REAL_FREE: OnceLock<FreeStringFn> = OnceLock::new();
static NOTE: OnceLock<NoteFn> = OnceLock::new();
static FREES: AtomicUsize = AtomicUsize::new(0);
static FOREIGN_FREES: AtomicUsize = AtomicUsize::new(0);

/// The table's free routine, with the free reported to the DLL first.
unsafe extern "system" fn counting_free(p: *mut c_void) {
    FREES.fetch_add(1, Ordering::SeqCst);
    if let Some(note) = NOTE.get() {
        // SAFETY: `note` is the DLL's FakeHcsNoteStringFreed export; it only looks `p` up.
        if unsafe { note(p) } == 0 {
            FOREIGN_FREES.fetch_add(1, Ordering::SeqCst);
        }
    }
    if let Some(free) = REAL_FREE.get() {
        // SAFETY: `p` is a string the DLL allocated for the driver, freed exactly once here.
        unsafe { free(p) }
    }
}

struct Dll {
    driver: Arc<VmComputeDriver>,
    outstanding: CountFn,
    subscriptions: CountFn,

    handle_counts: HandleCountsFn,
    scripted_stdin: StdinFn,
}

fn sym<T: Copy>(table: &VmComputeTable, name: &str) -> T {
    let lib = table.library.as_ref().expect("a loaded table owns its library");
    let p = lib
        .symbol(name)
        .unwrap_or_else(|| panic!("the fake DLL exports {name}"));
    assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: `T` is the documented signature of the fake DLL's test export `name`, and the
    // table (kept in the driver for the whole process) keeps the DLL loaded.
    unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p.as_ptr()) }
}

fn dll() -> &'static Dll {
    static DLL: OnceLock<Dll> = OnceLock::new();
    DLL.get_or_init(|| {
        let mut table = VmComputeTable::load_from(&DllSource::DefaultSearchOrder)
            .expect("the fake vmcompute.dll next to the test executable loads");
        let _ = REAL_FREE.set(table.free_string);
        let _ = NOTE.set(sym::<NoteFn>(&table, "FakeHcsNoteStringFreed"));
        table.free_string = counting_free;
        Dll {
            outstanding: sym(&table, "FakeHcsOutstandingStrings"),
            subscriptions: sym(&table, "FakeHcsLiveSubscriptions"),

            handle_counts: sym(&table, "FakeHcsHandleCounts"),
            scripted_stdin: sym(&table, "FakeHcsScriptedStdin"),
            driver: VmComputeDriver::new(table),
        }
    })
}

/// The DLL (and its simulator) is process-global: scenarios run one at a time so the counters
/// are exact.
fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|p| p.into_inner())
}

fn driver() -> Arc<dyn Driver> {
    dll().driver.clone()
}

#[derive(Debug, PartialEq, Eq)]
struct Counters {
    strings: i64,
    subscriptions: i64,
    operations: i64,
    systems: u64,
    processes: u64,
    callbacks: u64,
}

fn counters() -> Counters {
    let d = dll();
    let (mut systems, mut processes, mut callbacks) = (0u64, 0u64, 0u64);
    // SAFETY: the DLL's test exports, called with valid out-slots.
    unsafe {
        (d.handle_counts)(&mut systems, &mut processes, &mut callbacks);
        Counters {
            strings: (d.outstanding)(),
            subscriptions: (d.subscriptions)(),
            operations: 0,
            systems,
            processes,
            callbacks,
        }
    }
}

const ZERO: Counters = Counters {
    strings: 0,
    subscriptions: 0,
    operations: 0,
    systems: 0,
    processes: 0,
    callbacks: 0,
};

/// Waits (briefly) for every counter to return to zero: completions close their operations on
/// the DLL's thread just after the lifecycle saw them.
fn assert_quiescent() {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = counters();
        if c == ZERO {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fake DLL still holds resources: {c:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        FOREIGN_FREES.load(Ordering::SeqCst),
        0,
        "a string not allocated by the DLL was freed"
    );
}

fn config() -> String {
    r#"{"Owner":"fake-dll-test","SchemaVersion":{"Major":2,"Minor":1},"Container":{}}"#.to_string()
}

fn params(command_line: &str, stdin: bool, stdout: bool) -> String {
    serde_json_lite(command_line, stdin, stdout)
}

/// Builds the process-parameters document without a JSON dependency (the command lines used
/// here contain no characters that need escaping).
fn serde_json_lite(command_line: &str, stdin: bool, stdout: bool) -> String {
    assert!(!command_line.contains(['"', '\\']));
    format!(
        r#"{{"CommandLine":"{command_line}","CreateStdInPipe":{stdin},"CreateStdOutPipe":{stdout},"CreateStdErrPipe":false}}"#
    )
}

fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("v1-{tag}-{}", N.fetch_add(1, Ordering::Relaxed))
}

fn started(tag: &str) -> System {
    let sys = System::create(driver(), &unique(tag), &config()).expect("create");
    sys.start().expect("start (pending, completed from a DLL thread)");
    sys
}

#[test]
fn lifecycle_create_start_exit_code_shutdown_wait_close() {
    let _g = serial();
    let sys = started("life");
    let p = sys
        .create_process(&params("exit 3", false, false))
        .expect("create_process");
    assert!(p.pid() > 0);
    p.wait_timeout(Duration::from_secs(10)).expect("process exits");
    assert_eq!(p.exit_code().expect("exit code"), 3);
    p.close().expect("close process");
    sys.shutdown().expect("shutdown");
    sys.wait_timeout(Duration::from_secs(10)).expect("system exits");
    let exit = sys.exit_status().expect("exit status latched");
    assert!(!exit.unexpected, "{exit:?}");
    sys.close().expect("close system");
    assert_quiescent();
}

#[test]
fn stdout_of_echo_arrives_through_a_real_pipe_handle() {
    let _g = serial();
    let sys = started("echo");
    let p = sys
        .create_process(&params("echo hello from the fake dll", false, true))
        .expect("create_process");
    let mut out = p.take_stdout().expect("stdout pipe");
    let mut s = String::new();
    out.read_to_string(&mut s).expect("read stdout to EOF");
    assert_eq!(s, "hello from the fake dll\n");
    p.wait_timeout(Duration::from_secs(10)).expect("exit");
    assert_eq!(p.exit_code().unwrap(), 0);
    drop(out);
    p.close().unwrap();
    sys.terminate().expect("terminate");
    sys.wait_timeout(Duration::from_secs(10)).expect("system exits");
    sys.close().unwrap();
    assert_quiescent();
}

#[test]
fn stdin_reaches_the_simulator_and_cat_echoes_it_then_kill_ends_it() {
    let _g = serial();
    let sys = started("cat");
    let p = sys
        .create_process(&params("cat", true, true))
        .expect("create_process");
    let mut input = p.take_stdin().expect("stdin pipe");
    let mut out = p.take_stdout().expect("stdout pipe");
    input.write_all(b"ping\npong\n").unwrap();
    input.flush().unwrap();
    drop(input); // EOF for the DLL's relay
    let mut s = String::new();
    out.read_to_string(&mut s).expect("stdout ends at stdin's end");
    assert_eq!(s, "ping\npong\n");
    let id: Vec<u16> = sys.id().encode_utf16().chain([0]).collect();
    let mut buf = [0u8; 64];
    // SAFETY: the DLL's test export with a valid string and a 64-byte buffer.
    let n = unsafe { (dll().scripted_stdin)(id.as_ptr(), p.pid(), buf.as_mut_ptr(), buf.len()) };
    assert_eq!(
        &buf[..n as usize],
        b"ping\npong\n",
        "the simulator's process received stdin"
    );
    assert!(p.kill().expect("kill"), "kill of a running process is delivered");
    p.wait_timeout(Duration::from_secs(10)).expect("exit after kill");
    assert_eq!(p.exit_code().unwrap(), 137, "SIGKILL is 128 + 9 in the simulator");
    p.close().unwrap();
    sys.shutdown().unwrap();
    sys.wait_timeout(Duration::from_secs(10)).unwrap();
    sys.close().unwrap();
    assert_quiescent();
}

#[test]
fn terminating_the_system_ends_its_running_process() {
    let _g = serial();
    let sys = started("term");
    let p = sys
        .create_process(&params("sleep", false, false))
        .expect("create_process");
    assert!(
        p.wait_timeout(Duration::from_millis(50)).is_err(),
        "sleep runs until killed"
    );
    sys.terminate().expect("terminate");
    sys.wait_timeout(Duration::from_secs(10)).expect("system exits");
    p.wait_timeout(Duration::from_secs(10))
        .expect("its process exits too");
    p.close().unwrap();
    sys.close().unwrap();
    assert_quiescent();
}

#[test]
fn pause_resume_and_properties_round_trip_through_the_dll() {
    let _g = serial();
    let sys = started("pause");
    sys.pause().expect("pause (pending, completed by the DLL)");
    assert!(sys.properties_v3("").expect("properties").contains("Paused"));
    sys.resume().expect("resume");
    assert!(sys.properties_v3("").expect("properties").contains("Running"));
    sys.terminate().unwrap();
    sys.wait_timeout(Duration::from_secs(10)).unwrap();
    sys.close().unwrap();
    assert_quiescent();
}

#[test]
fn failures_carry_the_dll_result_document_and_every_string_is_freed() {
    let _g = serial();
    let frees_before = FREES.load(Ordering::SeqCst);
    let sys = started("fail");
    let e = sys
        .create_process(&params("no-such-program", false, false))
        .expect_err("unknown command");
    // ERROR_FILE_NOT_FOUND, in HRESULT form or converted to its Win32 code by the lifecycle.
    assert!(matches!(e.hresult().map(|h| h.0), Some(2 | 0x8007_0002)), "{e}");
    assert!(
        e.to_string().contains("no-such-program") || format!("{e:?}").contains("no-such-program"),
        "{e:?}"
    );
    let e = System::open(driver(), &unique("missing")).expect_err("unknown id");
    assert!(e.is_not_found(), "{e}");
    let dup = System::create(driver(), sys.id(), &config()).expect_err("duplicate id");
    assert!(dup.hresult().is_some(), "{dup}");
    sys.terminate().unwrap();
    sys.wait_timeout(Duration::from_secs(10)).unwrap();
    sys.close().unwrap();
    assert!(
        FREES.load(Ordering::SeqCst) > frees_before,
        "result documents were returned and freed"
    );
    assert_quiescent();
}

#[test]
fn open_existing_system_and_process_by_id_and_pid() {
    let _g = serial();
    let sys = started("open");
    let p = sys.create_process(&params("sleep", false, false)).unwrap();
    let other = System::open(driver(), sys.id()).expect("open by id");
    let p2 = other.open_process(p.pid()).expect("open by pid");
    assert_eq!(p2.pid(), p.pid());
    assert!(p2.kill().unwrap());
    p.wait_timeout(Duration::from_secs(10))
        .expect("first handle sees the exit");
    p2.wait_timeout(Duration::from_secs(10))
        .expect("second handle sees the exit");
    p2.close().unwrap();
    p.close().unwrap();
    other.close().unwrap();
    sys.terminate().unwrap();
    sys.wait_timeout(Duration::from_secs(10)).unwrap();
    sys.close().unwrap();
    assert_quiescent();
}

#[test]
fn enumerate_lists_a_live_system() {
    let _g = serial();
    let sys = started("enum");
    let list = driver().enumerate_compute_systems("{}").expect("enumerate").value;
    assert!(list.contains(sys.id()), "{list}");
    sys.terminate().unwrap();
    sys.wait_timeout(Duration::from_secs(10)).unwrap();
    sys.close().unwrap();
    assert_quiescent();
}

// ------------------------------------------------------------------------------------------
// The driver conformance suite (hcs-testkit), one test per check, over the fake DLL.

struct FakeDllHarness;

impl conformance::Harness for FakeDllHarness {
    fn driver(&self) -> Arc<dyn Driver> {
        driver()
    }
    fn system_config(&self) -> String {
        config()
    }
    fn process_exiting_with(&self, code: u32) -> String {
        params(&format!("exit {code}"), false, false)
    }
    fn process_printing(&self, text: &str) -> String {
        // `echo TEXT` prints `TEXT\n` (the fake DLL produces the text).
        params(&format!("echo {}", text.trim_end_matches('\n')), false, true)
    }
    fn process_echoing_stdin(&self) -> Option<String> {
        None // the fake's `cat` echoes but cannot exit at EOF (scripted backend)
    }
    fn process_running_until_killed(&self) -> String {
        params("sleep", false, false)
    }
    fn max_exit_code(&self) -> u32 {
        255 // the fake's script has `exit 0` ... `exit 255`
    }
    fn terminating_signal(&self) -> Option<String> {
        Some(r#"{"Signal":15}"#.to_string())
    }
    fn open_handles(&self) -> Option<hcs_testkit::HandleCounts> {
        // Exact: the tests of this binary run one at a time (`serial`).
        let c = counters();
        Some(hcs_testkit::HandleCounts {
            systems: c.systems as usize,
            processes: c.processes as usize,
            callbacks: c.callbacks as usize,
        })
    }
    fn wait_limit(&self) -> Duration {
        Duration::from_secs(15)
    }
}

macro_rules! conformance_tests {
    ($($(#[$m:meta])* $check:ident),* $(,)?) => {
        mod conformance_over_the_fake_dll {
            use super::*;
            $(
                #[test]
                $(#[$m])*
                fn $check() {
                    let _g = serial();
                    conformance::$check(&FakeDllHarness);
                    assert_quiescent();
                }
            )*

            #[test]
            fn every_check_has_a_test() {
                let names = [$(stringify!($check)),*];
                for (name, _) in conformance::CHECKS {
                    assert!(names.contains(name), "check {name} has no test here");
                }
            }
        }
    };
}

conformance_tests!(
    lifecycle_transitions,
    terminate_forces_exit,
    invalid_transitions_are_invalid_state,
    open_unknown_is_not_found,
    stop_is_idempotent,
    process_exit_codes,
    stdio_round_trip,
    signal_and_kill,
    many_waiters_released_by_one_exit,
    wait_after_close_is_already_closed,
    unregister_drains_callbacks,
    late_callbacks_after_close_are_noops,
    handle_hygiene,
);

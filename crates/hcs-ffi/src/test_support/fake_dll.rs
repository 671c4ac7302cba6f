//! The scenario suite both drivers run against their fake DLL (`crates/fake-vmcompute`,
//! `crates/fake-computecore`) under Wine, and the `hcs-testkit` conformance suite over it.
//!
//! A driver's `tests/fake_dll.rs` loads its table through the real loader, lets
//! [`FakeDll::resolve`] wrap the table's free routine and find the DLL's test exports, builds
//! its driver and hands the result to [`crate::fake_dll_tests`], which generates one `#[test]`
//! per scenario and per conformance check. After each test the DLL's counters (outstanding
//! result strings, open operations, simulator handles and registrations) must be back to zero.
//!
//! Every string the driver frees is first reported to the DLL (`FakeHcsNoteStringFreed`), then
//! freed with the routine the loaded table chose, so the DLL knows exactly which of its
//! allocations are still outstanding.

use crate::{FreeStringFn, Library};
use hcs::{Driver, System};
pub use hcs_testkit::{conformance, conformance_tests};
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

/// The address of `name` in `lib` as a `T` (`None` when not exported).
fn sym<T: Copy>(lib: &Library, name: &str) -> Option<T> {
    assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
    let p = lib.symbol(name)?;
    // SAFETY: `T` is the documented signature of the fake DLL's test export `name`, and the
    // table (kept in the driver for the whole process) keeps the DLL loaded.
    Some(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p.as_ptr()) })
}

fn required<T: Copy>(lib: &Library, name: &str) -> T {
    sym(lib, name).unwrap_or_else(|| panic!("the fake DLL exports {name}"))
}

/// The test exports of a loaded fake DLL.
#[derive(Clone, Copy)]
pub struct Exports {
    outstanding: CountFn,
    subscriptions: CountFn,
    operations: Option<CountFn>,
    violations: Option<CountFn>,
    handle_counts: HandleCountsFn,
    scripted_stdin: StdinFn,
}

/// A fake DLL, its test exports and the driver loaded over it.
pub struct FakeDll {
    driver: Arc<dyn Driver>,
    exports: Exports,
    /// Prefix of the system ids this binary creates.
    tag: &'static str,
}

impl FakeDll {
    /// Finds the test exports of the fake DLL `library` and replaces `*free_string` (the
    /// loaded table's free routine) by one that reports every free to the DLL before calling
    /// the original. Call once per process, before the driver is built from the table.
    pub fn resolve(library: &Library, free_string: &mut FreeStringFn) -> Exports {
        let _ = REAL_FREE.set(*free_string);
        let _ = NOTE.set(required::<NoteFn>(library, "FakeHcsNoteStringFreed"));
        *free_string = counting_free;
        Exports {
            outstanding: required(library, "FakeHcsOutstandingStrings"),
            subscriptions: required(library, "FakeHcsLiveSubscriptions"),
            operations: sym(library, "FakeHcsOpenOperations"),
            violations: sym(library, "FakeHcsViolations"),
            handle_counts: required(library, "FakeHcsHandleCounts"),
            scripted_stdin: required(library, "FakeHcsScriptedStdin"),
        }
    }

    /// The fake DLL with `driver` (built from the table [`FakeDll::resolve`] prepared); system
    /// ids are prefixed with `tag`.
    pub fn new(exports: Exports, driver: Arc<dyn Driver>, tag: &'static str) -> Self {
        FakeDll { driver, exports, tag }
    }

    /// The driver.
    pub fn driver(&self) -> Arc<dyn Driver> {
        self.driver.clone()
    }

    /// The DLL's counters now.
    pub fn counters(&self) -> Counters {
        let e = &self.exports;
        let (mut systems, mut processes, mut callbacks) = (0u64, 0u64, 0u64);
        // SAFETY: the DLL's test exports, called with valid out-slots.
        unsafe {
            (e.handle_counts)(&mut systems, &mut processes, &mut callbacks);
            Counters {
                strings: (e.outstanding)(),
                subscriptions: (e.subscriptions)(),
                operations: e.operations.map_or(0, |f| f()),
                violations: e.violations.map_or(0, |f| f()),
                systems,
                processes,
                callbacks,
            }
        }
    }

    /// Waits (briefly) for every counter to return to zero: completions close their operations
    /// on the DLL's thread just after the lifecycle saw them.
    pub fn assert_quiescent(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let c = self.counters();
            if c == Counters::default() {
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

    fn unique(&self, tag: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        format!("{}-{tag}-{}", self.tag, N.fetch_add(1, Ordering::Relaxed))
    }

    fn started(&self, tag: &str) -> System {
        let sys = System::create(self.driver(), &self.unique(tag), &config()).expect("create");
        sys.start().expect("start (pending, completed from a DLL thread)");
        sys
    }
}

/// The fake DLL's resource counters.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Result strings handed out and not reported freed.
    pub strings: i64,
    /// Callback registrations the DLL still holds.
    pub subscriptions: i64,
    /// Open operations (V2; 0 for V1).
    pub operations: i64,
    /// Rule violations the DLL saw (V2: an operation closed while its completion callback ran
    /// on another thread, an input string freed before its operation completed; 0 for V1).
    pub violations: i64,
    /// Open system handles in the simulator.
    pub systems: u64,
    /// Open process handles in the simulator.
    pub processes: u64,
    /// Callback registrations in the simulator.
    pub callbacks: u64,
}

/// The DLL (and its simulator) is process-global: tests run one at a time so the counters are
/// exact.
fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `scenario` alone, then checks that the DLL holds nothing any more.
pub fn run(dll: &FakeDll, scenario: fn(&FakeDll)) {
    let _g = serial();
    scenario(dll);
    dll.assert_quiescent();
}

/// Runs the conformance `check` alone over the fake DLL, then checks it holds nothing.
pub fn run_check(dll: &'static FakeDll, check: fn(&dyn conformance::Harness)) {
    let _g = serial();
    check(&Harness(dll));
    dll.assert_quiescent();
}

fn config() -> String {
    r#"{"Owner":"fake-dll-test","SchemaVersion":{"Major":2,"Minor":1},"Container":{}}"#.to_string()
}

/// The process-parameters document, built without a JSON dependency (the command lines used
/// here contain no characters that need escaping).
fn params(command_line: &str, stdin: bool, stdout: bool) -> String {
    assert!(!command_line.contains(['"', '\\']));
    format!(
        r#"{{"CommandLine":"{command_line}","CreateStdInPipe":{stdin},"CreateStdOutPipe":{stdout},"CreateStdErrPipe":false}}"#
    )
}

/// The scenarios, each a test of its own (see [`crate::fake_dll_tests`]): pending operations
/// completed from the DLL's own threads, exit codes, real pipe HANDLEs for stdio, kill,
/// shutdown, close, all through `hcs::System`/`hcs::Process`.
pub mod scenarios {
    use super::*;

    /// Create, start, a process's exit code, shutdown, wait, close.
    pub fn lifecycle_create_start_exit_code_shutdown_wait_close(dll: &FakeDll) {
        let sys = dll.started("life");
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
    }

    /// `echo`'s output arrives through a real pipe handle.
    pub fn stdout_of_echo_arrives_through_a_real_pipe_handle(dll: &FakeDll) {
        let sys = dll.started("echo");
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
    }

    /// Stdin reaches the simulator, `cat` echoes it, kill ends it.
    pub fn stdin_reaches_the_simulator_and_cat_echoes_it_then_kill_ends_it(dll: &FakeDll) {
        let sys = dll.started("cat");
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
        let n = unsafe { (dll.exports.scripted_stdin)(id.as_ptr(), p.pid(), buf.as_mut_ptr(), buf.len()) };
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
    }

    /// Terminating the system ends its running process.
    pub fn terminating_the_system_ends_its_running_process(dll: &FakeDll) {
        let sys = dll.started("term");
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
    }

    /// Pause, resume and properties round-trip through the DLL.
    pub fn pause_resume_and_properties_round_trip_through_the_dll(dll: &FakeDll) {
        let sys = dll.started("pause");
        sys.pause().expect("pause (pending, completed by the DLL)");
        assert!(sys.properties_v3("").expect("properties").contains("Paused"));
        sys.resume().expect("resume");
        assert!(sys.properties_v3("").expect("properties").contains("Running"));
        sys.terminate().unwrap();
        sys.wait_timeout(Duration::from_secs(10)).unwrap();
        sys.close().unwrap();
    }

    /// Failures carry the DLL's result document, and every string is freed.
    pub fn failures_carry_the_dll_result_document_and_every_string_is_freed(dll: &FakeDll) {
        let frees_before = FREES.load(Ordering::SeqCst);
        let sys = dll.started("fail");
        let e = sys
            .create_process(&params("no-such-program", false, false))
            .expect_err("unknown command");
        // ERROR_FILE_NOT_FOUND, in HRESULT form or converted to its Win32 code by the lifecycle.
        assert!(matches!(e.hresult().map(|h| h.0), Some(2 | 0x8007_0002)), "{e}");
        assert!(
            e.to_string().contains("no-such-program") || format!("{e:?}").contains("no-such-program"),
            "{e:?}"
        );
        let e = System::open(dll.driver(), &dll.unique("missing")).expect_err("unknown id");
        assert!(e.is_not_found(), "{e}");
        let dup = System::create(dll.driver(), sys.id(), &config()).expect_err("duplicate id");
        assert!(dup.hresult().is_some(), "{dup}");
        sys.terminate().unwrap();
        sys.wait_timeout(Duration::from_secs(10)).unwrap();
        sys.close().unwrap();
        assert!(
            FREES.load(Ordering::SeqCst) > frees_before,
            "result documents were returned and freed"
        );
    }

    /// An existing system and process are opened by id and pid.
    pub fn open_existing_system_and_process_by_id_and_pid(dll: &FakeDll) {
        let sys = dll.started("open");
        let p = sys.create_process(&params("sleep", false, false)).unwrap();
        let other = System::open(dll.driver(), sys.id()).expect("open by id");
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
    }

    /// Enumerate lists a live system.
    pub fn enumerate_lists_a_live_system(dll: &FakeDll) {
        let sys = dll.started("enum");
        let list = dll
            .driver()
            .enumerate_compute_systems("{}")
            .expect("enumerate")
            .value;
        assert!(list.contains(sys.id()), "{list}");
        sys.terminate().unwrap();
        sys.wait_timeout(Duration::from_secs(10)).unwrap();
        sys.close().unwrap();
    }
}

/// The conformance harness over a fake DLL.
struct Harness(&'static FakeDll);

impl conformance::Harness for Harness {
    fn driver(&self) -> Arc<dyn Driver> {
        self.0.driver()
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
        // Exact: the tests of a binary run one at a time (`serial`).
        let c = self.0.counters();
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

/// Generates the fake-DLL tests of a driver: one `#[test]` per scenario of
/// [`test_support::fake_dll::scenarios`](crate::test_support::fake_dll::scenarios) and, in
/// `mod conformance_over_the_fake_dll`, one per `hcs-testkit` conformance check, generated by
/// [`hcs_testkit::conformance_tests!`] from the suite's own list (so a new check reaches every
/// driver with no edit here). `$dll` names a `fn() -> &'static FakeDll` of the invoking module.
#[macro_export]
macro_rules! fake_dll_tests {
    ($dll:ident) => {
        $crate::fake_dll_tests!(@generate $dll;
            lifecycle_create_start_exit_code_shutdown_wait_close,
            stdout_of_echo_arrives_through_a_real_pipe_handle,
            stdin_reaches_the_simulator_and_cat_echoes_it_then_kill_ends_it,
            terminating_the_system_ends_its_running_process,
            pause_resume_and_properties_round_trip_through_the_dll,
            failures_carry_the_dll_result_document_and_every_string_is_freed,
            open_existing_system_and_process_by_id_and_pid,
            enumerate_lists_a_live_system
        );
    };
    (@generate $dll:ident; $($scenario:ident),*) => {
        $(
            #[test]
            fn $scenario() {
                $crate::test_support::fake_dll::run(
                    $dll(),
                    $crate::test_support::fake_dll::scenarios::$scenario,
                );
            }
        )*

        $crate::test_support::fake_dll::conformance_tests!(
            /// The `hcs-testkit` conformance suite over the fake DLL, one check at a time.
            conformance_over_the_fake_dll,
            run = |check| $crate::test_support::fake_dll::run_check($dll(), check)
        );
    };
}

//! What a driver's test supplies to run the suite: the [`Harness`] trait, the [`Check`] type,
//! and the constants the checks and harnesses agree on (the greeting a printing process
//! prints, the exit codes, the stop-swallow codes).

use hcs::hresult::sets;
use hcs::{Driver, HResult, HandleCounts, Timeouts};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The text the suite asks [`Harness::process_printing`] to print (drivers with scripted
/// processes can script exactly this string).
pub const GREETING: &str = "hello from the hcs conformance suite\n";

/// The text the suite writes to [`Harness::process_echoing_stdin`] and expects back.
pub const ECHO_INPUT: &str = "ping\npong\n";

/// Exit codes the [`process_exit_codes`] check always uses (each must be at most
/// [`Harness::max_exit_code`]).
///
/// [`process_exit_codes`]: super::process_exit_codes
pub const BASIC_EXIT_CODES: [u32; 3] = [0, 3, 255];

/// A Windows-style large exit code (`STATUS_CONTROL_C_EXIT`), checked when
/// [`Harness::max_exit_code`] allows it.
pub const LARGE_EXIT_CODE: u32 = 0xC000_013A;

/// Results of stop calls the lifecycle treats as success (design C7/I11): already
/// stopped, not found and pending, each in the V1 and V2 encodings (the lifecycle's own
/// [`sets::STOP_SWALLOW`]). A driver's stop call on an exited system must succeed or fail with
/// one of these, or `System::shutdown`/`terminate` would not be idempotent on that driver.
pub const STOP_SWALLOW_CODES: &[HResult] = sets::STOP_SWALLOW;

/// What a driver's test supplies to run the suite.
pub trait Harness: Send + Sync {
    /// The driver under test. Called once per check; return the same instance every time or
    /// a fresh one, as long as [`Harness::open_handles`] counts the returned driver's handles.
    fn driver(&self) -> Arc<dyn Driver>;
    /// A valid compute-system configuration document (passed verbatim to create).
    fn system_config(&self) -> String;
    /// Process parameters for a process that exits at once with `code` (no stdio pipes needed).
    fn process_exiting_with(&self, code: u32) -> String;
    /// Process parameters for a process that writes `text` (always [`GREETING`]) to stdout and
    /// exits with 0; the stdout pipe must be requested.
    fn process_printing(&self, text: &str) -> String;
    /// Process parameters for a `cat`-like process: copies stdin to stdout until EOF, then exits
    /// with 0 (stdin and stdout pipes requested). `None` when the driver cannot run one (e.g. a
    /// scripted backend); the echo parts of [`stdio_round_trip`] are then skipped.
    ///
    /// [`stdio_round_trip`]: super::stdio_round_trip
    fn process_echoing_stdin(&self) -> Option<String>;
    /// Process parameters for a process that runs until it is signalled or killed.
    fn process_running_until_killed(&self) -> String;
    /// The largest exit code the driver's processes can report (255 on a POSIX host, `u32::MAX`
    /// on Windows and for scripted processes).
    fn max_exit_code(&self) -> u32;
    /// `SignalProcessOptions` that end [`Harness::process_running_until_killed`] (e.g.
    /// `{"Signal":15}`), or `None` to skip the signal part of [`signal_and_kill`].
    ///
    /// [`signal_and_kill`]: super::signal_and_kill
    fn terminating_signal(&self) -> Option<String> {
        None
    }
    /// Open handles and registrations of the driver, or `None` when the driver cannot count.
    fn open_handles(&self) -> Option<HandleCounts> {
        None
    }
    /// Completion-wait timeouts for the systems the checks create: short but safe.
    fn timeouts(&self) -> Timeouts {
        Timeouts::uniform(Duration::from_secs(30))
    }
    /// How long a check waits for an exit, an EOF or a notification before it fails.
    fn wait_limit(&self) -> Duration {
        Duration::from_secs(30)
    }
    /// How long a check waits to be confident that something does *not* happen (a callback
    /// after unregistration, ...).
    fn quiet_period(&self) -> Duration {
        Duration::from_millis(100)
    }
    /// A compute-system id no other check (or test) uses.
    fn unique_id(&self, tag: &str) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        format!(
            "conformance-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }
    /// Extra leak checks at the end of every check (the simulator asserts it has no handles,
    /// registrations, systems or host processes left). Defaults to nothing.
    fn assert_no_leaks(&self) {}
}

/// A conformance check: panics when the harness's driver breaks the rule it documents.
pub type Check = fn(&dyn Harness);

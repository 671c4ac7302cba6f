//! Exit codes of `hcsctl` and the error type that carries one.
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0–255 | `run`: the command's own exit code (see below for codes outside 0–255) |
//! | 2   | usage error (bad option, unknown driver, missing command) — from the argument parser |
//! | 1   | `run`: writing our own stdout or stderr failed (other than `EPIPE`, which ends as 141); `wait`: the system exited unexpectedly |
//! | 3   | no such compute system or process (`start`, `exec`, `inspect`, `kill`, `stop`, `rm`, …) |
//! | 4   | the system is in the wrong state for the request (start of a running system, `rm` of a running system without `-f`, signal to an exited process) |
//! | 65  | `EX_DATAERR`: the configuration is not JSON, not a valid compute-system document, not UTF-8 or over 1 MiB, or the fault plan is invalid |
//! | 66  | `EX_NOINPUT`: a configuration or fault-plan file cannot be read or is not a regular file |
//! | 69  | `EX_UNAVAILABLE`: the requested driver is unavailable on this platform, or the `hcs-simd` service is unreachable or went away |
//! | 124 | `run --timeout` / `exec --timeout`: the command did not finish in time and was killed (as coreutils `timeout`); `wait --timeout` expired |
//! | 125 | an HCS operation failed (create, start, create process, …): the error is with HCS or `hcsctl`, not the command (as `docker run`) |
//! | 126 | the command was found but could not be started (permission denied) |
//! | 127 | the command was not found (as shells) |
//! | 130 | interrupted (Ctrl-C) before the command started, or the command's exit code is unknown after an interrupt (143 after `SIGTERM`, 129 after `SIGHUP`) |
//!
//! A command exit code above 255 (Windows codes such as `0xC000013A`) is reduced to its low 8
//! bits on Unix, except that a non-zero code whose low 8 bits are 0 becomes 1, so a failure never
//! reads as success; on Windows the full 32-bit code is the process exit code. An exit code HCS
//! could not report (unknown) becomes 255. `--json` always shows the full code (`null` when
//! unknown).

use std::fmt;

/// No such compute system or process.
pub const NO_SUCH: i32 = 3;
/// The compute system is in the wrong state for the request.
pub const WRONG_STATE: i32 = 4;
/// `EX_DATAERR`: invalid configuration or fault plan.
pub const DATA_ERR: i32 = 65;
/// `EX_NOINPUT`: an input file cannot be read.
pub const NO_INPUT: i32 = 66;
/// `EX_UNAVAILABLE`: the requested driver is unavailable.
pub const UNAVAILABLE: i32 = 69;
/// The command timed out and was killed.
pub const TIMED_OUT: i32 = 124;
/// An HCS operation failed.
pub const HCS_FAILED: i32 = 125;
/// The command could not be started.
pub const CANNOT_EXECUTE: i32 = 126;
/// The command was not found.
pub const NOT_FOUND: i32 = 127;
/// Interrupted by Ctrl-C (128 + SIGINT).
pub const INTERRUPTED: i32 = 130;
/// The command's exit code is unknown.
pub const UNKNOWN_EXIT: i32 = 255;

/// The help text section listing the exit codes (shown after `hcsctl --help`).
pub const HELP: &str = "\
Exit codes:
  0-255  run: the command's exit code (codes > 255 use the low 8 bits on Unix; a non-zero code
         whose low 8 bits are 0 becomes 1; an unknown code becomes 255)
  2      usage error (bad option, unknown driver, missing command)
  1      run: our standard output or error failed (e.g. disk full); the command's own code
         otherwise, or 141 when our reader went away (EPIPE), as for a command killed by SIGPIPE;
         wait: the system exited unexpectedly
  3      no such compute system or process
  4      the compute system is in the wrong state for the request (e.g. rm of a running system)
  65     configuration not JSON / not a valid compute-system document / not UTF-8 / over 1 MiB,
         or invalid fault plan
  66     configuration or fault-plan file cannot be read (or is not a regular file)
  69     driver unavailable on this platform, or the hcs-simd service unreachable or gone
  124    run/exec --timeout expired (the command was killed), or wait --timeout expired
  125    an HCS operation failed (create, start, create process, ...)
  126    command found but not executable
  127    command not found
  130    interrupted (Ctrl-C) before the command ran, or exit code unknown after an interrupt
         (143 after SIGTERM, 129 after SIGHUP)";

/// An error that ends `hcsctl` with a message on stderr and a specific exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// The process exit code.
    pub code: i32,
    /// The message (printed as `hcsctl: <message>`).
    pub message: String,
    /// Secondary problems met on the way out (teardown, leaks), printed after the message.
    pub notes: Vec<String>,
}

impl CliError {
    /// An error with an exit code and message.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
            notes: Vec::new(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Maps a command's exit code to `hcsctl`'s process exit code (see the module docs).
pub fn process_exit_code(code: Option<u32>) -> i32 {
    match code {
        None => UNKNOWN_EXIT,
        Some(c) if cfg!(windows) => c as i32,
        Some(c) if c <= 255 => c as i32,
        Some(c) if c & 0xFF == 0 => 1,
        Some(c) => (c & 0xFF) as i32,
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_above_255_keep_low_bits_but_never_become_success() {
        assert_eq!(process_exit_code(Some(0)), 0);
        assert_eq!(process_exit_code(Some(3)), 3);
        assert_eq!(process_exit_code(Some(255)), 255);
        assert_eq!(process_exit_code(Some(0xC000_013A)), 0x3A);
        assert_eq!(process_exit_code(Some(256)), 1);
        assert_eq!(process_exit_code(None), UNKNOWN_EXIT);
    }
}

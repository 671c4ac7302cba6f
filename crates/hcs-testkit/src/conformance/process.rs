//! Process checks: exact exit codes, standard streams (print, echo, EOF on `close_stdin`) and
//! signal/kill semantics.

use super::harness::{Harness, BASIC_EXIT_CODES, ECHO_INPUT, GREETING, LARGE_EXIT_CODE};
use super::session::{finish_read, ok, read_all, spawn_read, Session};
use hcs::ExitCode;
use std::io::Write;

/// Process exit codes are reported exactly (0, 3, 255, and `0xC000013A` when the driver can
/// report it), through `exit_code()` and `exit()`, and survive `close`.
pub fn process_exit_codes(h: &dyn Harness) {
    let s = Session::new(h);
    let sys = s.create_started("exit-codes");
    let mut codes: Vec<u32> = BASIC_EXIT_CODES
        .iter()
        .copied()
        .filter(|c| *c <= h.max_exit_code())
        .collect();
    if h.max_exit_code() >= LARGE_EXIT_CODE {
        codes.push(LARGE_EXIT_CODE);
    }
    for code in codes {
        let p = ok(
            "create process",
            sys.create_process(&h.process_exiting_with(code)),
        );
        ok("wait for the process", p.wait_timeout(h.wait_limit()));
        assert_eq!(
            p.exit_code().ok(),
            Some(i64::from(code)),
            "exit_code() of a process exiting with {code:#x}"
        );
        assert_eq!(
            p.exit(),
            Some(ExitCode::Code(code)),
            "exit() of a process exiting with {code:#x}"
        );
        ok("close the process", p.close());
        assert_eq!(
            p.exit_code().ok(),
            Some(i64::from(code)),
            "the exit code ({code:#x}) must survive close"
        );
        ok("wait after close of an exited process keeps the exit", p.wait());
    }
    s.stop_and_close(sys);
    s.finish();
}

/// Standard streams: a printing process's stdout reads back exactly and ends with EOF; an
/// echoing process round-trips stdin; `close_stdin()` alone gives the process EOF; closing the
/// streams of a running or exited process is harmless.
pub fn stdio_round_trip(h: &dyn Harness) {
    let s = Session::new(h);
    let sys = s.create_started("stdio");
    let limit = h.wait_limit();

    let p = ok(
        "create a printing process",
        sys.create_process(&h.process_printing(GREETING)),
    );
    let stdio = ok("stdio of the printing process", p.stdio());
    let out = stdio
        .stdout
        .expect("the printing process must have a stdout pipe");
    assert_eq!(
        read_all(out, limit, "stdout of the printing process"),
        GREETING,
        "printed text"
    );
    ok("wait for the printing process", p.wait_timeout(limit));
    assert_eq!(p.exit_code().ok(), Some(0), "the printing process exits with 0");
    ok("close_stdin after the exit", p.close_stdin());
    ok("close the printing process", p.close());
    drop(p);

    if let Some(params) = h.process_echoing_stdin() {
        let p = ok("create an echoing process", sys.create_process(&params));
        let stdio = ok("stdio of the echoing process", p.stdio());
        let mut stdin = stdio.stdin.expect("the echoing process must have a stdin pipe");
        let out = stdio.stdout.expect("the echoing process must have a stdout pipe");
        let reader = spawn_read(out);
        stdin.write_all(ECHO_INPUT.as_bytes()).expect("write to stdin");
        stdin.flush().expect("flush stdin");
        drop(stdin);
        ok("close_stdin of the echoing process", p.close_stdin());
        assert_eq!(
            finish_read(reader, limit, "stdout of the echoing process"),
            ECHO_INPUT,
            "echoed text"
        );
        ok("wait for the echoing process", p.wait_timeout(limit));
        assert_eq!(
            p.exit_code().ok(),
            Some(0),
            "the echoing process exits with 0 at EOF"
        );
        ok("close the echoing process", p.close());
        drop(p);

        // close_stdin alone (the writer still cached in the Process) gives EOF.
        let p = ok("create a second echoing process", sys.create_process(&params));
        let out = p
            .take_stdout()
            .expect("the echoing process must have a stdout pipe");
        ok("close_stdin with the writer still cached", p.close_stdin());
        ok("close_stdin again", p.close_stdin());
        assert_eq!(
            finish_read(spawn_read(out), limit, "stdout after close_stdin"),
            "",
            "no input, no output"
        );
        ok("the process ends at EOF", p.wait_timeout(limit));
        assert_eq!(
            p.exit_code().ok(),
            Some(0),
            "the echoing process exits with 0 at EOF"
        );
        ok("close", p.close());
        drop(p);
    }

    let p = ok(
        "create a long-running process",
        sys.create_process(&h.process_running_until_killed()),
    );
    ok("close_stdin of a running process", p.close_stdin());
    ok("close_stdout", p.close_stdout());
    ok("close_stderr", p.close_stderr());
    assert!(ok("kill", p.kill()), "kill of a running process is delivered");
    ok("wait after kill", p.wait_timeout(limit));
    ok("close", p.close());
    ok("close_stdout after close", p.close_stdout());
    drop(p);
    s.stop_and_close(sys);
    s.finish();
}

/// Signal and kill (design §5.5, §5.6): a terminating signal is delivered and ends
/// the process, a signal to a gone process reports "not delivered" without error; kill is
/// delivered, the wait completes, a repeated kill is `Ok(true)` or an already-stopped error,
/// never another error; on a closed process both fail with already-closed.
pub fn signal_and_kill(h: &dyn Harness) {
    let s = Session::new(h);
    let sys = s.create_started("signal-kill");
    let limit = h.wait_limit();
    if let Some(sig) = h.terminating_signal() {
        let p = ok(
            "create a long-running process",
            sys.create_process(&h.process_running_until_killed()),
        );
        assert!(
            ok("signal a running process", p.signal(&sig)),
            "a signal to a running process is delivered"
        );
        ok("wait after the signal", p.wait_timeout(limit));
        assert!(
            matches!(p.exit(), Some(ExitCode::Code(_))),
            "a signalled process reports an exit code, got {:?}",
            p.exit()
        );
        assert!(
            !ok("signal an exited process", p.signal(&sig)),
            "a signal to an exited process is not delivered"
        );
        ok("close", p.close());
        let e = p.signal(&sig).expect_err("signal after close must fail");
        assert!(
            e.is_already_closed(),
            "signal after close must be already-closed, got {e}"
        );
        drop(p);
    }
    let p = ok(
        "create a long-running process",
        sys.create_process(&h.process_running_until_killed()),
    );
    assert!(
        ok("kill a running process", p.kill()),
        "kill of a running process is delivered"
    );
    let repeat = |what: &str| match p.kill() {
        Ok(true) => {}
        Ok(false) => panic!("{what}: a repeated kill must not report `not delivered`"),
        Err(e) => assert!(
            e.is_already_stopped(),
            "{what}: a repeated kill fails only with already-stopped, got {e}"
        ),
    };
    repeat("kill again at once");
    ok("wait after kill", p.wait_timeout(limit));
    assert!(p.exit().is_some(), "a killed process reports an exit");
    repeat("kill after the exit");
    ok("close", p.close());
    let e = p.kill().expect_err("kill after close must fail");
    assert!(
        e.is_already_closed(),
        "kill after close must be already-closed, got {e}"
    );
    drop(p);
    s.stop_and_close(sys);
    s.finish();
}

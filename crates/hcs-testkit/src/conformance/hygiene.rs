//! Handle hygiene over a busy workload: every handle and registration a mixed workload opens is
//! released again.

use super::harness::{Harness, GREETING};
use super::session::{ok, read_all, Session};
use hcs::System;

/// Handle hygiene over a busy workload (two handles to one system, processes that exit, print,
/// are opened twice and killed through a second handle, failed create and open): afterwards
/// every callback context is gone and the driver's handle counts are back where they started.
pub fn handle_hygiene(h: &dyn Harness) {
    let s = Session::new(h);
    let limit = h.wait_limit();
    let sys = s.create_started("hygiene");
    let dup = System::create_with(s.driver(), sys.id(), &h.system_config(), h.timeouts());
    assert!(
        dup.is_err(),
        "creating a second system with the same id must fail"
    );
    drop(dup);
    let unknown = h.unique_id("hygiene-unknown");
    assert!(
        System::open(s.driver(), &unknown).is_err(),
        "open of an unknown id must fail"
    );
    let second = ok("open a second handle", System::open(s.driver(), sys.id()));

    let exits = ok("create process", sys.create_process(&h.process_exiting_with(0)));
    let printer = ok(
        "create printing process",
        second.create_process(&h.process_printing(GREETING)),
    );
    let out = ok("stdio", printer.stdio()).stdout.expect("stdout pipe");
    assert_eq!(read_all(out, limit, "stdout"), GREETING);
    let runner = ok(
        "create long-running process",
        sys.create_process(&h.process_running_until_killed()),
    );
    let reopened = ok(
        "open the running process by pid",
        second.open_process(runner.pid()),
    );
    assert_eq!(reopened.pid(), runner.pid());
    assert!(
        ok("kill through the reopened process", reopened.kill()),
        "kill is delivered"
    );
    for (what, p) in [
        ("exiting", &exits),
        ("printing", &printer),
        ("killed", &runner),
        ("reopened", &reopened),
    ] {
        ok(what, p.wait_timeout(limit));
    }
    for p in [&exits, &printer, &runner, &reopened] {
        ok("close process", p.close());
    }
    drop((exits, printer, runner, reopened));
    ok("close the second handle", second.close());
    drop(second);
    s.stop_and_close(sys);
    s.finish();
}

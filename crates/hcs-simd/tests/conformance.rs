//! The `hcs-testkit` conformance suite over [`hcs_simd::ClientDriver`] against a real `hcs-simd`
//! process: host backend V1 with pending operations, and V2 with every call synchronous (the
//! `hcsctl` shape). Each check gets its own service, so the accounting is exact.
#![cfg(unix)]

mod common;

use common::Daemon;
use hcs::{Driver, HandleCounts};
use hcs_simd::ClientDriver;
use hcs_testkit::conformance::{Harness, GREETING};
use std::sync::Arc;
use std::time::Duration;

const CONFIG: &str = r#"{"Owner":"conformance","SchemaVersion":{"Major":2,"Minor":1},"Container":{}}"#;

fn params(command_line: &str, stdin: bool, stdout: bool) -> String {
    serde_json::json!({
        "CommandLine": command_line,
        "CreateStdInPipe": stdin,
        "CreateStdOutPipe": stdout,
        "CreateStdErrPipe": false,
    })
    .to_string()
}

struct ServiceHarness {
    driver: Arc<ClientDriver>,
    _daemon: Daemon,
}

impl ServiceHarness {
    fn new(args: &[&str]) -> Self {
        let daemon = Daemon::start(args);
        ServiceHarness {
            driver: daemon.client(),
            _daemon: daemon,
        }
    }
}

impl Harness for ServiceHarness {
    fn driver(&self) -> Arc<dyn Driver> {
        self.driver.clone()
    }
    fn system_config(&self) -> String {
        CONFIG.to_owned()
    }
    fn process_exiting_with(&self, code: u32) -> String {
        params(&format!(r#"sh -c "exit {code}""#), false, false)
    }
    fn process_printing(&self, text: &str) -> String {
        assert_eq!(text, GREETING);
        params(
            r#"sh -c "echo hello from the hcs conformance suite""#,
            false,
            true,
        )
    }
    fn process_echoing_stdin(&self) -> Option<String> {
        // A bare `cat`: it exits at the EOF the suite causes, and the suite's `close_stdin`
        // then races its `ProcessExited` over the socket; the lifecycle treats HCS's "process
        // gone" answer to that call as done (design §5.4), so the check holds either way.
        Some(params("cat", true, true))
    }
    fn process_running_until_killed(&self) -> String {
        params("sleep 30", false, false)
    }
    fn max_exit_code(&self) -> u32 {
        255
    }
    fn terminating_signal(&self) -> Option<String> {
        Some(r#"{"Signal":15}"#.to_owned())
    }
    fn open_handles(&self) -> Option<HandleCounts> {
        let s = self.driver.stats().expect("stats");
        Some(HandleCounts {
            systems: s.mine_systems,
            processes: s.mine_processes,
            callbacks: s.mine_callbacks,
        })
    }
    fn timeouts(&self) -> hcs::Timeouts {
        hcs::Timeouts::uniform(Duration::from_secs(10))
    }
    fn wait_limit(&self) -> Duration {
        Duration::from_secs(10)
    }
    fn quiet_period(&self) -> Duration {
        Duration::from_millis(50)
    }
    fn assert_no_leaks(&self) {
        let s = Daemon::wait_stats(&self.driver, Duration::from_secs(2), |s| {
            s.systems == 0
                && s.processes == 0
                && s.callbacks == 0
                && s.live_systems == 0
                && s.host_processes == 0
        });
        assert_eq!((s.mine_systems, s.mine_processes, s.mine_callbacks), (0, 0, 0));
        assert_eq!(s.contexts, 0, "server-side notification contexts left: {s:?}");
    }
}

hcs_testkit::conformance_tests!(service_v1, ServiceHarness::new(&[]));
hcs_testkit::conformance_tests!(
    service_v2_sync,
    ServiceHarness::new(&["--generation", "v2", "--sync"])
);

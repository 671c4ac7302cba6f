//! The `hcs-testkit` driver conformance suite, run against the simulator in four
//! configurations: host backend V1, host backend V2, scripted backend V1, and host backend with
//! every pending-capable call answering synchronously. One `#[test]` per check per
//! configuration; each test gets its own simulator, so handle counts and leak checks are exact.
#![cfg(unix)]

use hcs::{ApiGeneration, Driver};
use hcs_sim::{Script, ScriptedProcess, SimConfig, Simulator};
use hcs_testkit::conformance::{self, Harness, GREETING};
use hcs_testkit::HandleCounts;
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

/// The simulator as a conformance harness. `host` selects real commands (`sh`, `cat`, `sleep`)
/// or scripted command lines.
struct SimHarness {
    sim: Arc<Simulator>,
    host: bool,
}

impl SimHarness {
    fn host(config: SimConfig) -> Self {
        SimHarness {
            sim: Simulator::new(config),
            host: true,
        }
    }
    fn scripted(config: SimConfig) -> Self {
        let script = Script::new()
            .on("print", ScriptedProcess::exits(0).stdout(GREETING))
            .on("forever", ScriptedProcess::forever());
        let script = (0..=255u32)
            .chain([conformance::LARGE_EXIT_CODE])
            .fold(script, |s, c| {
                s.on(format!("exit {c}"), ScriptedProcess::exits(c))
            });
        SimHarness {
            sim: Simulator::new(config.scripted(script)),
            host: false,
        }
    }
}

impl Harness for SimHarness {
    fn driver(&self) -> Arc<dyn Driver> {
        self.sim.clone()
    }
    fn system_config(&self) -> String {
        CONFIG.to_owned()
    }
    fn process_exiting_with(&self, code: u32) -> String {
        if self.host {
            params(&format!(r#"sh -c "exit {code}""#), false, false)
        } else {
            params(&format!("exit {code}"), false, false)
        }
    }
    fn process_printing(&self, text: &str) -> String {
        assert_eq!(text, GREETING, "the scripted backend only knows GREETING");
        if self.host {
            params(
                r#"sh -c "echo hello from the hcs conformance suite""#,
                false,
                true,
            )
        } else {
            params("print", false, true)
        }
    }
    fn process_echoing_stdin(&self) -> Option<String> {
        self.host.then(|| params("cat", true, true))
    }
    fn process_running_until_killed(&self) -> String {
        if self.host {
            params("sleep 30", false, false)
        } else {
            params("forever", false, false)
        }
    }
    fn max_exit_code(&self) -> u32 {
        if self.host {
            255
        } else {
            u32::MAX
        }
    }
    fn terminating_signal(&self) -> Option<String> {
        Some(r#"{"Signal":15}"#.to_owned())
    }
    fn open_handles(&self) -> Option<HandleCounts> {
        let c = self.sim.handle_counts();
        Some(HandleCounts {
            systems: c.systems,
            processes: c.processes,
            callbacks: c.callbacks,
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
        self.sim.assert_no_leaks();
        assert_eq!(
            self.sim.running_host_processes(),
            0,
            "host processes left running"
        );
    }
}

macro_rules! conformance_tests {
    ($module:ident, $harness:expr) => {
        mod $module {
            use super::*;
            conformance_tests!(@checks $harness;
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

            /// Every entry of `CHECKS` has a test above.
            #[test]
            fn every_check_has_a_test() {
                assert_eq!(conformance::CHECKS.len(), 13, "a check was added to CHECKS: add it to this macro");
            }
        }
    };
    (@checks $harness:expr; $($check:ident,)*) => {
        $(
            #[test]
            fn $check() {
                let h: SimHarness = $harness;
                conformance::$check(&h);
            }
        )*
    };
}

conformance_tests!(host_v1, SimHarness::host(SimConfig::default()));
conformance_tests!(
    host_v2,
    SimHarness::host(SimConfig::default().generation(ApiGeneration::V2))
);
conformance_tests!(scripted_v1, SimHarness::scripted(SimConfig::default()));
conformance_tests!(host_sync_ops, SimHarness::host(SimConfig::default().all_sync()));

/// `run_all` runs the whole table against one harness (here the scripted backend, fastest).
#[test]
fn run_all_passes_on_one_scripted_simulator() {
    conformance::run_all(&SimHarness::scripted(
        SimConfig::default().generation(ApiGeneration::V2),
    ));
}

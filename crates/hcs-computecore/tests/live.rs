//! Against the real `computecore.dll` on a Windows host with HCS (Containers or Hyper-V
//! feature, elevated process). Opt-in:
//! `HCS_LIVE_TESTS=1 cargo test -p hcs-computecore --test live -- --ignored`.
//! Read-only: it enumerates compute systems and queries the service; it creates nothing.
#![cfg(windows)]

use hcs::Driver;
use hcs_computecore::ComputeCoreDriver;

fn require_opt_in() {
    assert_eq!(
        std::env::var("HCS_LIVE_TESTS").as_deref(),
        Ok("1"),
        "live HCS tests run only with HCS_LIVE_TESTS=1 (on a Windows host with HCS, elevated)"
    );
}

#[test]
#[ignore = "needs HCS"]
fn real_computecore_enumerates_compute_systems_and_reports_service_properties() {
    require_opt_in();
    let driver = ComputeCoreDriver::load().expect("computecore.dll loads from System32");
    let reply = driver
        .enumerate_compute_systems("")
        .expect("HcsEnumerateComputeSystems");
    assert!(
        reply.value.trim_start().starts_with('['),
        "a JSON array: {}",
        reply.value
    );
    let props = driver
        .get_service_properties(r#"{"PropertyTypes":["Basic"]}"#)
        .expect("HcsGetServiceProperties");
    assert!(props.value.contains('{'), "{}", props.value);
    assert_eq!(hcs_computecore::pending_operations(), 0);
}

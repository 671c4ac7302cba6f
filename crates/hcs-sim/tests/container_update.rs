//! What `HcsModifyComputeSystem` can change on a running process-isolated container (what
//! containerd-shim-hcs-v1's Update sends): the memory limit (`Container/Memory/SizeInMB`) and the
//! processor limit / weight (`Container/Processor`); bad settings are `E_INVALIDARG`.

mod common;

use common::*;
use hcs::{Driver, HResult};
use hcs_sim::{SimConfig, Simulator};

#[test]
fn a_running_container_takes_memory_and_processor_updates_and_refuses_bad_ones() {
    let sim = Simulator::new(SimConfig::default().all_sync());
    let rec = Recorder::new();
    let c = sim
        .create_compute_system("upd", &container("o"), rec.ctx())
        .unwrap()
        .value;
    sim.start_compute_system(c, "", rec.ctx()).unwrap();
    sim.modify_compute_system(
        c,
        r#"{"ResourcePath":"Container/Memory/SizeInMB","RequestType":"Update","Settings":256}"#,
    )
    .unwrap();
    assert_eq!(sim.system_info("upd").unwrap().memory_mb, Some(256));
    let props: serde_json::Value = serde_json::from_str(
        &sim.get_compute_system_properties(c, r#"{"PropertyTypes":["Memory"]}"#)
            .unwrap()
            .value,
    )
    .unwrap();
    assert_eq!(props["Memory"]["SizeInMB"], 256);
    for ok in [
        r#"{"ResourcePath":"Container/Processor","RequestType":"Update","Settings":{"Limit":2500}}"#,
        r#"{"ResourcePath":"Container/Processor","RequestType":"Update","Settings":{"Limit":10000,"Weight":1}}"#,
    ] {
        sim.modify_compute_system(c, ok).unwrap();
    }
    for bad in [
        r#"{"ResourcePath":"Container/Memory/SizeInMB","RequestType":"Update","Settings":0}"#,
        r#"{"ResourcePath":"Container/Memory/SizeInMB","RequestType":"Update","Settings":"1"}"#,
        r#"{"ResourcePath":"Container/Processor","RequestType":"Update","Settings":{"Limit":0}}"#,
        r#"{"ResourcePath":"Container/Processor","RequestType":"Update","Settings":{"Limit":10001}}"#,
        r#"{"ResourcePath":"Container/Processor","RequestType":"Update","Settings":{"Count":2}}"#,
        r#"{"ResourcePath":"Container/Processor","RequestType":"Update","Settings":{}}"#,
        r#"{"ResourcePath":"Container/Processor","RequestType":"Update","Settings":5}"#,
        r#"{"ResourcePath":"Container/Processor","RequestType":"Add","Settings":{"Limit":1}}"#,
        r#"{"ResourcePath":"VirtualMachine/ComputeTopology/Memory/SizeInMB","RequestType":"Update","Settings":64}"#,
    ] {
        let e = sim.modify_compute_system(c, bad).unwrap_err();
        assert_eq!(e.code, HResult::E_INVALIDARG, "{bad}");
    }
    assert_eq!(
        sim.system_info("upd").unwrap().memory_mb,
        Some(256),
        "unchanged by the refusals"
    );
    sim.terminate_compute_system(c, "").unwrap();
    sim.close_compute_system(c).unwrap();
}

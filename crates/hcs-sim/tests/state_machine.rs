//! The system state machine, its HRESULTs in both encodings, ids, enumerate, properties and
//! modify — driver-level.

mod common;

use common::*;
use hcs::{ApiGeneration, Driver, HResult, NotificationKind, SystemHandle};
use hcs_sim::{SimConfig, Simulator, SystemState};
use serde_json::Value;
use std::sync::Arc;

fn sim(generation: ApiGeneration) -> Arc<Simulator> {
    Simulator::new(SimConfig::default().generation(generation).all_sync())
}

fn create(sim: &Simulator, id: &str, config: &str, rec: &Recorder) -> SystemHandle {
    sim.create_compute_system(id, config, rec.ctx())
        .expect("create")
        .value
}

fn code<T: std::fmt::Debug>(r: Result<T, hcs::Failure>) -> HResult {
    r.expect_err("expected a failure").code
}

#[test]
fn invalid_transitions_fail_with_v1_invalid_state_and_stop_on_stopped_is_already_stopped() {
    let sim = sim(ApiGeneration::V1);
    let rec = Recorder::new();
    let h = create(&sim, "a", &container("o"), &rec);
    // created: pause/resume/save/create_process invalid
    assert_eq!(
        code(sim.pause_compute_system(h, "", rec.ctx())),
        HResult(0xC037_0105)
    );
    assert_eq!(
        code(sim.resume_compute_system(h, "", rec.ctx())),
        HResult(0xC037_0105)
    );
    assert_eq!(
        code(sim.save_compute_system(h, "", rec.ctx())),
        HResult(0xC037_0105)
    );
    assert_eq!(
        code(sim.create_process(h, &params("true", false, false, false))),
        HResult(0xC037_0105)
    );
    sim.start_compute_system(h, "", rec.ctx()).unwrap();
    assert_eq!(
        code(sim.start_compute_system(h, "", rec.ctx())),
        HResult(0xC037_0105)
    );
    assert_eq!(
        code(sim.resume_compute_system(h, "", rec.ctx())),
        HResult(0xC037_0105)
    );
    sim.pause_compute_system(h, "", rec.ctx()).unwrap();
    assert_eq!(
        code(sim.pause_compute_system(h, "", rec.ctx())),
        HResult(0xC037_0105)
    );
    sim.resume_compute_system(h, "", rec.ctx()).unwrap();
    sim.terminate_compute_system(h, "").unwrap();
    assert_eq!(sim.system_info("a").unwrap().state, SystemState::Stopped);
    assert_eq!(code(sim.shutdown_compute_system(h, "")), HResult(0xC037_0110));
    assert_eq!(code(sim.terminate_compute_system(h, "")), HResult(0xC037_0110));
    assert_eq!(
        code(sim.start_compute_system(h, "", rec.ctx())),
        HResult(0xC037_0105)
    );
    // properties still answer on a stopped system
    let props: Value =
        serde_json::from_str(&sim.get_compute_system_properties(h, "{}").unwrap().value).unwrap();
    assert_eq!(props["State"], "Stopped");
    assert_eq!(props["Stopped"], true);
    assert_eq!(props["ExitType"], "ForcedExit");
    sim.close_compute_system(h).unwrap();
    sim.assert_no_leaks();
}

#[test]
fn v2_generation_uses_hresult_encodings() {
    let sim = sim(ApiGeneration::V2);
    let rec = Recorder::new();
    let h = create(&sim, "a", &container("o"), &rec);
    assert_eq!(
        code(sim.pause_compute_system(h, "", rec.ctx())),
        HResult::HCS_E_INVALID_STATE
    );
    assert_eq!(
        code(sim.open_compute_system("nope")),
        HResult::HCS_E_SYSTEM_NOT_FOUND
    );
    assert_eq!(
        code(sim.create_compute_system("a", &container("o"), rec.ctx())),
        HResult::HCS_E_SYSTEM_ALREADY_EXISTS
    );
    assert_eq!(
        code(sim.create_compute_system("b", "{not json", rec.ctx())),
        HResult::HCS_E_INVALID_JSON
    );
    sim.shutdown_compute_system(h, "").unwrap();
    assert!(eventually(FIVE_SECONDS, || sim.system_info("a").unwrap().state
        == SystemState::Stopped));
    assert_eq!(
        code(sim.shutdown_compute_system(h, "")),
        HResult::HCS_E_SYSTEM_ALREADY_STOPPED
    );
    sim.close_compute_system(h).unwrap();
    sim.assert_no_leaks();
}

#[test]
fn unknown_duplicate_and_malformed_ids_use_v1_codes_with_result_documents() {
    let sim = sim(ApiGeneration::V1);
    let rec = Recorder::new();
    assert_eq!(code(sim.open_compute_system("ghost")), HResult(0xC037_010E));
    let h = create(&sim, "x", &container("o"), &rec);
    let dup = sim
        .create_compute_system("x", &container("o"), rec.ctx())
        .unwrap_err();
    assert_eq!(dup.code, HResult(0xC037_010F));
    let bad = sim
        .create_compute_system("y", r#"{"Owner": "#, rec.ctx())
        .unwrap_err();
    assert_eq!(bad.code, HResult(0xC037_010D));
    let doc = hcs_schema::ResultDocument::parse(bad.document.as_deref().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(doc.error as u32, 0xC037_010D);
    assert!(!doc.error_message.is_empty());
    assert!(!doc.error_events[0].message.is_empty());
    // a stale or wrong-kind handle is E_HANDLE
    sim.close_compute_system(h).unwrap();
    assert_eq!(
        code(sim.start_compute_system(h, "", rec.ctx())),
        HResult::E_HANDLE
    );
    assert_eq!(code(sim.close_compute_system(h)), HResult::E_HANDLE);
    sim.assert_no_leaks();
}

#[test]
fn create_generates_unique_handles_and_open_gives_a_new_handle_to_the_same_system() {
    let sim = sim(ApiGeneration::V1);
    let rec = Recorder::new();
    let a = create(&sim, "a", &container("o"), &rec);
    let b = create(&sim, "b", &container("o"), &rec);
    assert_ne!(a, b);
    let a2 = sim.open_compute_system("a").unwrap().value;
    assert_ne!(a, a2);
    sim.start_compute_system(a2, "", rec.ctx()).unwrap();
    let props: Value =
        serde_json::from_str(&sim.get_compute_system_properties(a, "").unwrap().value).unwrap();
    assert_eq!(props["State"], "Running");
    assert_eq!(sim.handle_counts().systems, 3);
    // closing one of two handles keeps the system (ShouldTerminateOnLastHandleClosed)
    sim.close_compute_system(a).unwrap();
    assert_eq!(sim.system_info("a").unwrap().state, SystemState::Running);
    sim.close_compute_system(a2).unwrap();
    assert!(eventually(FIVE_SECONDS, || sim.system_info("a").is_none()));
    sim.close_compute_system(b).unwrap();
    sim.assert_no_leaks();
}

#[test]
fn last_handle_close_terminates_only_when_configured() {
    let sim = sim(ApiGeneration::V1);
    let rec = Recorder::new();
    let h = create(&sim, "keep", r#"{"Container":{}}"#, &rec);
    sim.start_compute_system(h, "", rec.ctx()).unwrap();
    sim.close_compute_system(h).unwrap();
    assert_eq!(sim.live_systems(), ["keep"]);
    let leaks = sim.leaks();
    assert!(
        leaks.iter().any(|l| l.contains("system `keep` still exists")),
        "{leaks:?}"
    );
    // reopen and terminate to clean up
    let h = sim.open_compute_system("keep").unwrap().value;
    sim.terminate_compute_system(h, "").unwrap();
    sim.close_compute_system(h).unwrap();
    sim.assert_no_leaks();
}

#[test]
fn properties_report_type_owner_and_state_from_configuration() {
    let sim = sim(ApiGeneration::V1);
    let rec = Recorder::new();
    let c = create(&sim, "c", &container("alice"), &rec);
    let v = create(&sim, "v", &vm("bob"), &rec);
    let pc: Value = serde_json::from_str(&sim.get_compute_system_properties(c, "{}").unwrap().value).unwrap();
    assert_eq!(pc["Id"], "c");
    assert_eq!(pc["SystemType"], "Container");
    assert_eq!(pc["Owner"], "alice");
    assert_eq!(pc["State"], "Created");
    assert_eq!(pc["RuntimeOsType"], "windows");
    assert_eq!(pc["Stopped"], false);
    let pv: Value = serde_json::from_str(
        &sim.get_compute_system_properties(v, r#"{"PropertyTypes":["Memory"]}"#)
            .unwrap()
            .value,
    )
    .unwrap();
    assert_eq!(pv["SystemType"], "VirtualMachine");
    assert_eq!(pv["Memory"]["SizeInMB"], 1024);
    // unsupported property type and malformed query
    assert_eq!(
        code(sim.get_compute_system_properties(c, r#"{"PropertyTypes":["GuestConnection"]}"#)),
        HResult::E_INVALIDARG
    );
    assert_eq!(
        code(sim.get_compute_system_properties(c, "{")),
        HResult(0xC037_010D)
    );
    for h in [c, v] {
        sim.close_compute_system(h).unwrap();
    }
    sim.assert_no_leaks();
}

#[test]
fn enumerate_filters_by_ids_types_names_and_owners() {
    let sim = sim(ApiGeneration::V1);
    let rec = Recorder::new();
    let hs = [
        create(&sim, "c1", &container("alice"), &rec),
        create(&sim, "c2", &container("bob"), &rec),
        create(&sim, "v1", &vm("alice"), &rec),
        create(
            &sim,
            "n1",
            r#"{"Name":"named","Owner":"carol","SystemType":"Container","ShouldTerminateOnLastHandleClosed":true}"#,
            &rec,
        ),
    ];
    let ids = |q: &str| -> Vec<String> {
        let v: Value = serde_json::from_str(&sim.enumerate_compute_systems(q).unwrap().value).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["Id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(""), ["c1", "c2", "v1", "n1"]);
    assert_eq!(ids(r#"{"Ids":["c2","v1"]}"#), ["c2", "v1"]);
    assert_eq!(ids(r#"{"Types":["VirtualMachine"]}"#), ["v1"]);
    assert_eq!(ids(r#"{"Owners":["alice"]}"#), ["c1", "v1"]);
    assert_eq!(ids(r#"{"Names":["named"]}"#), ["n1"]);
    assert_eq!(ids(r#"{"Owners":["alice"],"Types":["Container"]}"#), ["c1"]);
    let full: Value =
        serde_json::from_str(&sim.enumerate_compute_systems(r#"{"Ids":["c1"]}"#).unwrap().value).unwrap();
    let props: hcs_schema::ContainerProperties = serde_json::from_value(full[0].clone()).unwrap();
    assert_eq!(props.owner, "alice");
    assert_eq!(props.state, "Created");
    assert_eq!(code(sim.enumerate_compute_systems("[")), HResult(0xC037_010D));
    for h in hs {
        sim.close_compute_system(h).unwrap();
    }
    sim.assert_no_leaks();
}

#[test]
fn modify_applies_memory_and_mapped_directories_and_rejects_the_rest() {
    let sim = sim(ApiGeneration::V1);
    let rec = Recorder::new();
    let v = create(&sim, "v", &vm("o"), &rec);
    let c = create(&sim, "c", &container("o"), &rec);
    sim.start_compute_system(v, "", rec.ctx()).unwrap();
    sim.start_compute_system(c, "", rec.ctx()).unwrap();
    sim.modify_compute_system(
        v,
        r#"{"ResourcePath":"VirtualMachine/ComputeTopology/Memory/SizeInMB","RequestType":"Update","Settings":2048}"#,
    )
    .unwrap();
    assert_eq!(sim.system_info("v").unwrap().memory_mb, Some(2048));
    let add = r#"{"ResourcePath":"Container/MappedDirectories","RequestType":"Add","Settings":{"HostPath":"/tmp","ContainerPath":"C:\\data","ReadOnly":true}}"#;
    sim.modify_compute_system(c, add).unwrap();
    let dirs = sim.system_info("c").unwrap().mapped_directories;
    assert_eq!(dirs.len(), 1);
    assert_eq!(dirs[0].container_path, r"C:\data");
    assert!(dirs[0].read_only);
    assert_eq!(code(sim.modify_compute_system(c, add)), HResult::E_INVALIDARG);
    sim.modify_compute_system(
        c,
        r#"{"ResourcePath":"Container/MappedDirectories","RequestType":"Remove","Settings":{"ContainerPath":"C:\\data"}}"#,
    )
    .unwrap();
    assert!(sim.system_info("c").unwrap().mapped_directories.is_empty());
    // unsupported resource, wrong system type, malformed JSON
    assert_eq!(
        code(sim.modify_compute_system(
            c,
            r#"{"ResourcePath":"VirtualMachine/Devices/Scsi/0","RequestType":"Add"}"#
        )),
        HResult::E_INVALIDARG
    );
    assert_eq!(
        code(sim.modify_compute_system(
            c,
            r#"{"ResourcePath":"VirtualMachine/ComputeTopology/Memory/SizeInMB","RequestType":"Update","Settings":1}"#
        )),
        HResult::E_INVALIDARG
    );
    assert_eq!(code(sim.modify_compute_system(c, "{{")), HResult(0xC037_010D));
    for h in [v, c] {
        sim.terminate_compute_system(h, "").unwrap();
        sim.close_compute_system(h).unwrap();
    }
    sim.assert_no_leaks();
}

#[test]
fn save_moves_running_to_saved_where_only_stop_is_valid() {
    let sim = sim(ApiGeneration::V1);
    let rec = Recorder::new();
    let h = create(&sim, "s", &vm("o"), &rec);
    let cb = sim.register_compute_system_callback(h, rec.ctx()).unwrap();
    sim.start_compute_system(h, "", rec.ctx()).unwrap();
    sim.save_compute_system(h, r#"{"SaveType":"ToFile"}"#, rec.ctx())
        .unwrap();
    assert_eq!(sim.system_info("s").unwrap().state, SystemState::Saved);
    assert_eq!(
        code(sim.resume_compute_system(h, "", rec.ctx())),
        HResult(0xC037_0105)
    );
    sim.shutdown_compute_system(h, "").unwrap();
    assert!(rec.wait(NotificationKind::SystemExited, FIVE_SECONDS).is_some());
    sim.unregister_compute_system_callback(cb).unwrap();
    sim.close_compute_system(h).unwrap();
    sim.assert_no_leaks();
}

//! The Update RPC's resources → HCS modify requests. HCS can change two resources of a running
//! process-isolated container (a silo), as hcsshim's runhcs does for one: its memory limit
//! (`Container/Memory/SizeInMB`) and its processor limit and weight (`Container/Processor`,
//! `Limit` and `Weight` in 1–10000). Everything else in the request (Linux pids, block I/O,
//! devices, swap, cpusets, realtime, huge pages, network, unified; a Windows CPU count or
//! storage limits; annotations) is refused as a whole, before any HCS call, with
//! `Unimplemented` naming each field, so that nothing is half-applied.

use serde_json::{json, Value};

/// The type URL suffixes of the resources containerd sends (JSON-encoded OCI structs).
const LINUX: &str = "opencontainers/runtime-spec/1/LinuxResources";
const WINDOWS: &str = "opencontainers/runtime-spec/1/WindowsResources";

/// Why a request cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    /// The resources cannot be decoded (InvalidArgument).
    Invalid(String),
    /// They ask for something HCS cannot change (Unimplemented); the message names it.
    Unsupported(String),
}

/// The `HcsModifyComputeSystem` documents that apply `resources` (type URL, JSON bytes) and
/// `annotations`, in order. An empty list: nothing to change. `cpus`: the host's processor
/// count, to turn a Linux CPU quota into an HCS processor limit (a share of all processors).
pub fn modify_requests(
    type_url: &str,
    value: &[u8],
    annotations: &[String],
    cpus: u64,
) -> Result<Vec<String>, UpdateError> {
    let mut unsupported: Vec<String> = annotations.iter().map(|k| format!("annotation {k:?}")).collect();
    if type_url.is_empty() && value.is_empty() {
        return finish(unsupported, None, None, None);
    }
    let windows = if type_url.ends_with(LINUX) {
        false
    } else if type_url.ends_with(WINDOWS) {
        true
    } else {
        return Err(UpdateError::Invalid(format!(
            "Update resources of type {type_url:?}: expected LinuxResources or WindowsResources"
        )));
    };
    let v: Value = serde_json::from_slice(value)
        .map_err(|e| UpdateError::Invalid(format!("Update resources are not valid JSON: {e}")))?;
    let Value::Object(top) = v else {
        return Err(UpdateError::Invalid(
            "Update resources must be a JSON object".into(),
        ));
    };
    let (mut memory, mut limit, mut weight) = (None, None, None);
    let (mut quota, mut period) = (None, None);
    for (key, val) in &top {
        match (key.as_str(), val) {
            (_, v) if is_unset(v) => {}
            ("memory" | "cpu", Value::Object(fields)) => {
                for (field, fv) in fields {
                    if is_unset(fv) {
                        continue;
                    }
                    let n = fv.as_i64();
                    match (windows, key.as_str(), field.as_str(), n) {
                        (_, "memory", "limit", Some(n)) if n > 0 => memory = Some(n as u64),
                        (false, "cpu", "quota", Some(n)) => quota = Some(n),
                        (false, "cpu", "period", Some(n)) if n > 0 => period = Some(n as u64),
                        (true, "cpu", "maximum", Some(n)) if (1..=10_000).contains(&n) => {
                            limit = Some(n as u64)
                        }
                        (true, "cpu", "shares", Some(n)) if (1..=10_000).contains(&n) => {
                            weight = Some(n as u64)
                        }
                        _ => unsupported.push(format!("{key}.{field} = {fv}")),
                    }
                }
            }
            (_, v) => unsupported.push(format!("{key} = {v}")),
        }
    }
    if let Some(q) = quota {
        // A quota of `q` µs per `period` is q/period processors; HCS's limit is a share of all
        // of them in 1/10000ths. A negative quota is "no limit".
        let period = period.unwrap_or(100_000);
        limit = Some(match u64::try_from(q) {
            Ok(q) => {
                let all = u128::from(period) * u128::from(cpus.max(1));
                (u128::from(q) * 10_000).div_ceil(all).clamp(1, 10_000) as u64
            }
            Err(_) => 10_000,
        });
    } else if period.is_some() {
        unsupported.push("cpu.period without cpu.quota".into());
    }
    finish(unsupported, memory, limit, weight)
}

fn finish(
    unsupported: Vec<String>,
    memory: Option<u64>,
    limit: Option<u64>,
    weight: Option<u64>,
) -> Result<Vec<String>, UpdateError> {
    if !unsupported.is_empty() {
        return Err(UpdateError::Unsupported(format!(
            "Update of {} is not supported by containerd-shim-hcs-v1: HCS can change only a \
             container's memory limit and processor limit/weight (nothing was changed)",
            unsupported.join(", ")
        )));
    }
    let mut out = Vec::new();
    if let Some(bytes) = memory {
        let mb = bytes.div_ceil(1024 * 1024).max(1);
        out.push(
            json!({"ResourcePath": "Container/Memory/SizeInMB", "RequestType": "Update", "Settings": mb})
                .to_string(),
        );
    }
    if limit.is_some() || weight.is_some() {
        let mut settings = serde_json::Map::new();
        if let Some(l) = limit {
            settings.insert("Limit".into(), l.into());
        }
        if let Some(w) = weight {
            settings.insert("Weight".into(), w.into());
        }
        out.push(
            json!({"ResourcePath": "Container/Processor", "RequestType": "Update", "Settings": settings})
                .to_string(),
        );
    }
    Ok(out)
}

/// Absent in effect: null, zero, `false`, an empty string, list or object.
fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_unset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
    const W: &str = "types.containerd.io/opencontainers/runtime-spec/1/WindowsResources";

    #[test]
    fn memory_and_cpu_become_hcs_modify_requests() {
        let r = modify_requests(
            L,
            br#"{"memory":{"limit":67108864},"cpu":{"quota":50000,"period":100000}}"#,
            &[],
            2,
        )
        .unwrap();
        assert_eq!(
            r,
            vec![
                r#"{"RequestType":"Update","ResourcePath":"Container/Memory/SizeInMB","Settings":64}"#
                    .to_string(),
                r#"{"RequestType":"Update","ResourcePath":"Container/Processor","Settings":{"Limit":2500}}"#
                    .to_string(),
            ]
        );
        // Rounded up to whole MB; an unlimited quota is the full limit.
        let r = modify_requests(L, br#"{"memory":{"limit":1},"cpu":{"quota":-1}}"#, &[], 4).unwrap();
        assert!(
            r[0].contains(r#""Settings":1"#) && r[1].contains(r#""Limit":10000"#),
            "{r:?}"
        );
        let r = modify_requests(W, br#"{"cpu":{"maximum":5000,"shares":200}}"#, &[], 4).unwrap();
        assert_eq!(
            r,
            vec![r#"{"RequestType":"Update","ResourcePath":"Container/Processor","Settings":{"Limit":5000,"Weight":200}}"#.to_string()]
        );
        // Unset members (what ctr sends for flags not given) change nothing.
        assert_eq!(
            modify_requests(
                L,
                br#"{"devices":[],"memory":{"limit":0},"cpu":{"cpus":""}}"#,
                &[],
                2
            )
            .unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(modify_requests("", b"", &[], 2).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn anything_else_is_refused_as_a_whole_naming_each_field() {
        let e = modify_requests(
            L,
            br#"{"memory":{"limit":67108864,"swap":100},"pids":{"limit":10}}"#,
            &[],
            2,
        )
        .unwrap_err();
        let UpdateError::Unsupported(m) = e else {
            panic!("{e:?}")
        };
        assert!(
            m.contains("memory.swap = 100") && m.contains(r#"pids = {"limit":10}"#),
            "{m}"
        );
        assert!(m.contains("nothing was changed"), "{m}");
        let e = modify_requests(W, br#"{"cpu":{"count":2}}"#, &[], 2).unwrap_err();
        assert!(
            matches!(&e, UpdateError::Unsupported(m) if m.contains("cpu.count = 2")),
            "{e:?}"
        );
        let e = modify_requests(L, br#"{"cpu":{"shares":512}}"#, &[], 2).unwrap_err();
        assert!(
            matches!(&e, UpdateError::Unsupported(m) if m.contains("cpu.shares = 512")),
            "{e:?}"
        );
        let e = modify_requests(L, br#"{"cpu":{"period":1000}}"#, &[], 2).unwrap_err();
        assert!(
            matches!(&e, UpdateError::Unsupported(m) if m.contains("cpu.period without cpu.quota")),
            "{e:?}"
        );
        let e = modify_requests("", b"", &["io.x/y".to_string()], 2).unwrap_err();
        assert!(
            matches!(&e, UpdateError::Unsupported(m) if m.contains("annotation \"io.x/y\"")),
            "{e:?}"
        );
        // Bad input is InvalidArgument, never a panic.
        for (t, v) in [
            (L, &b"{"[..]),
            (L, b"[]"),
            (L, b"\xff"),
            ("x/Other", b"{}"),
            (W, br#"{"cpu":{"maximum":1e99}}"#),
        ] {
            assert!(modify_requests(t, v, &[], 2).is_err(), "{t} {v:?}");
        }
    }
}

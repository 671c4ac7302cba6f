//! The HCS JSON documents the simulator reads and writes: the argument documents of the calls
//! (compute system configuration, process parameters, any JSON argument) and the answer
//! documents built from the model (basic properties, timestamps and durations in HCS units).

use crate::codes::{self, ForGeneration};
use crate::host::Params;
use crate::model::{SystemRec, SystemState};
use hcs::{ApiGeneration, Failure};
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// Parses a JSON document argument; blank text is `{}`. Text that does not parse fails with
/// the generation's invalid-JSON code, naming `what` the document is (formatted only then).
pub(crate) fn parse_json(
    text: &str,
    generation: ApiGeneration,
    what: impl std::fmt::Display,
) -> Result<Value, Failure> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(text).map_err(|e| {
        codes::failure(
            codes::INVALID_JSON.of(generation),
            format!("the {what} is not valid JSON: {e}"),
        )
    })
}

/// What the simulator keeps of a compute system configuration document.
pub(crate) struct SystemConfig {
    pub(crate) system_type: String,
    pub(crate) name: String,
    pub(crate) owner: String,
    pub(crate) os: String,
    pub(crate) terminate_on_last_close: bool,
    pub(crate) memory_mb: Option<u64>,
}

/// Reads the type (`Container` or `VirtualMachine`), name, owner, OS, memory size and
/// `ShouldTerminateOnLastHandleClosed` of a compute system configuration (V1 or V2 schema).
pub(crate) fn parse_system_config(v: &Value) -> SystemConfig {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let system_type = if v.get("VirtualMachine").is_some_and(|x| !x.is_null()) {
        "VirtualMachine".to_string()
    } else if v.get("Container").is_some_and(|x| !x.is_null()) {
        "Container".to_string()
    } else {
        match s("SystemType") {
            t if t.eq_ignore_ascii_case("virtualmachine") => "VirtualMachine".to_string(),
            _ => "Container".to_string(),
        }
    };
    let memory_mb = v
        .pointer("/VirtualMachine/ComputeTopology/Memory/SizeInMB")
        .or_else(|| v.pointer("/Container/Memory/SizeInMB"))
        .or_else(|| v.get("MemoryMaximumInMB"))
        .and_then(Value::as_u64);
    let os = match s("RuntimeOsType") {
        os if !os.is_empty() => os,
        _ => "windows".to_string(),
    };
    SystemConfig {
        system_type,
        name: s("Name"),
        owner: s("Owner"),
        os,
        terminate_on_last_close: v
            .get("ShouldTerminateOnLastHandleClosed")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        memory_mb,
    }
}

/// Reads a `ProcessParameters` document: command line (or `CommandArgs`), working directory,
/// environment and which standard streams to create.
pub(crate) fn parse_params(text: &str, generation: ApiGeneration) -> Result<Params, Failure> {
    let v = parse_json(text, generation, "process parameters document")?;
    let Some(obj) = v.as_object() else {
        return Err(codes::failure(
            codes::INVALID_ARG,
            "process parameters must be a JSON object",
        ));
    };
    let command_line = obj
        .get("CommandLine")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let args: Vec<String> = match obj.get("CommandArgs") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| codes::failure(codes::INVALID_ARG, "CommandArgs must be an array of strings"))?,
        _ => Vec::new(),
    };
    let argv = if args.is_empty() {
        crate::cmdline::split_command_line(&command_line)
    } else {
        args
    };
    if argv.is_empty() {
        return Err(codes::failure(
            codes::INVALID_ARG,
            "the process parameters have no CommandLine",
        ));
    }
    let mut environment = Vec::new();
    match obj.get("Environment") {
        None | Some(Value::Null) => {}
        Some(Value::Object(env)) => {
            for (k, val) in env {
                let val = val.as_str().ok_or_else(|| {
                    codes::failure(
                        codes::INVALID_ARG,
                        format!("Environment value of `{k}` is not a string"),
                    )
                })?;
                environment.push((k.clone(), val.to_string()));
            }
        }
        Some(_) => {
            return Err(codes::failure(
                codes::INVALID_ARG,
                "Environment must be an object",
            ))
        }
    }
    let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
    let console_size = match obj.get("ConsoleSize") {
        None | Some(Value::Null) => None,
        Some(v) => Some(serde_json::from_value::<[u16; 2]>(v.clone()).map_err(|_| {
            codes::failure(
                codes::INVALID_ARG,
                format!("ConsoleSize must be [height, width] (two integers 0-65535), not {v}"),
            )
        })?),
    };
    Ok(Params {
        command_line: if command_line.is_empty() {
            argv.join(" ")
        } else {
            command_line
        },
        working_directory: obj
            .get("WorkingDirectory")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
            .map(str::to_string),
        environment,
        stdin: flag("CreateStdInPipe"),
        stdout: flag("CreateStdOutPipe"),
        stderr: flag("CreateStdErrPipe"),
        emulate_console: flag("EmulateConsole"),
        console_size,
        argv,
    })
}

/// The image name of a program path (its last `/` or `\` component).
pub(crate) fn image_name(argv0: &str) -> String {
    argv0.rsplit(['/', '\\']).next().unwrap_or(argv0).to_string()
}

/// The basic properties document of a system (`ContainerProperties`).
pub(crate) fn basic_properties(s: &SystemRec) -> Value {
    serde_json::to_value(basic_container_properties(s)).unwrap_or(Value::Null)
}

/// The basic properties of a system, typed: an enumeration serialises these directly (no
/// intermediate [`Value`] maps: a list of 10,000 systems is one call, see
/// `docs/performance.md`).
pub(crate) fn basic_container_properties(s: &SystemRec) -> hcs_schema::ContainerProperties {
    hcs_schema::ContainerProperties {
        id: s.id.clone(),
        state: s.state.as_str().to_string(),
        name: s.name.clone(),
        system_type: s.system_type.clone(),
        runtime_os_type: s.os.clone(),
        owner: s.owner.clone(),
        stopped: s.state == SystemState::Stopped,
        exit_type: s
            .exit
            .map(|k| k.exit_type().as_str().to_string())
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// `t` as an RFC 3339 UTC timestamp with 100 ns precision, as HCS writes them.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:07}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_nanos() / 100
    )
}

/// A duration in HCS's 100 ns units.
pub(crate) fn to_100ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos() / 100).unwrap_or(u64::MAX)
}

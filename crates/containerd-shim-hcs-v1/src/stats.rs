//! HCS `Statistics` → the metrics message `ctr task metrics` prints.
//!
//! On Windows hcsshim's Windows statistics message (`containerd.runhcs.stats.v1.Statistics`,
//! as runhcs sends it). A Linux containerd does not know that type (`ctr` registers it only on
//! Windows), so on Linux the same counters go into cgroups v1 `Metrics`
//! (`io.containerd.cgroups.v1.Metrics`): CPU total/user/kernel time, memory usage (the private
//! working set) and its peak (the commit peak). HCS counts time in 100 ns units; both messages in
//! ns.

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{Message, MessageFull};
use containerd_shim::protos::windows::stats;

fn timestamp(rfc3339: Option<&str>) -> Option<Timestamp> {
    let text = rfc3339?;
    let t = humantime::parse_rfc3339_weak(text).ok()?;
    let d = t.duration_since(std::time::SystemTime::UNIX_EPOCH).ok()?;
    let mut out = Timestamp::new();
    out.seconds = d.as_secs() as i64;
    out.nanos = d.subsec_nanos() as i32;
    Some(out)
}

fn parse(raw: Option<&serde_json::Value>) -> hcs_schema::Statistics {
    raw.and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// The statistics message for this platform (see the module docs).
pub fn to_proto(raw: Option<&serde_json::Value>) -> Result<Any, String> {
    if cfg!(windows) {
        to_windows(raw)
    } else {
        to_cgroups_v1(raw)
    }
}

/// Encodes the `Statistics` property as cgroups v1 `Metrics` (see the module docs).
pub fn to_cgroups_v1(raw: Option<&serde_json::Value>) -> Result<Any, String> {
    use containerd_shim::protos::cgroups::metrics as m;
    let s = parse(raw);
    let mut out = m::Metrics::new();
    let mut cpu = m::CPUStat::new();
    let mut usage = m::CPUUsage::new();
    if let Some(p) = &s.processor {
        usage.total = p.total_runtime_100ns.saturating_mul(100);
        usage.user = p.runtime_user_100ns.saturating_mul(100);
        usage.kernel = p.runtime_kernel_100ns.saturating_mul(100);
    }
    cpu.usage = Some(usage).into();
    out.cpu = Some(cpu).into();
    let mut mem = m::MemoryStat::new();
    let mut entry = m::MemoryEntry::new();
    if let Some(mm) = &s.memory {
        entry.usage = mm.memory_usage_private_working_set_bytes;
        entry.max = mm.memory_usage_commit_peak_bytes;
        mem.rss = mm.memory_usage_private_working_set_bytes;
    }
    mem.usage = Some(entry).into();
    out.memory = Some(mem).into();
    let mut any = Any::new();
    any.type_url = m::Metrics::descriptor().full_name().to_owned();
    any.value = out.write_to_bytes().map_err(|e| e.to_string())?;
    Ok(any)
}

/// Encodes the `Statistics` property (absent or malformed: all counters zero) as an `Any`
/// whose type URL is the message's full name, as containerd's shims send it.
pub fn to_windows(raw: Option<&serde_json::Value>) -> Result<Any, String> {
    let s = parse(raw);
    let mut w = stats::WindowsContainerStatistics::new();
    if let Some(t) = timestamp(s.timestamp.as_deref()) {
        w.timestamp = Some(t).into();
    }
    if let Some(t) = timestamp(s.container_start_time.as_deref()) {
        w.container_start_time = Some(t).into();
    }
    w.uptime_ns = s.uptime_100ns.saturating_mul(100);
    if let Some(p) = &s.processor {
        let mut out = stats::WindowsContainerProcessorStatistics::new();
        out.total_runtime_ns = p.total_runtime_100ns.saturating_mul(100);
        out.runtime_user_ns = p.runtime_user_100ns.saturating_mul(100);
        out.runtime_kernel_ns = p.runtime_kernel_100ns.saturating_mul(100);
        w.processor = Some(out).into();
    }
    if let Some(m) = &s.memory {
        let mut out = stats::WindowsContainerMemoryStatistics::new();
        out.memory_usage_commit_bytes = m.memory_usage_commit_bytes;
        out.memory_usage_commit_peak_bytes = m.memory_usage_commit_peak_bytes;
        out.memory_usage_private_working_set_bytes = m.memory_usage_private_working_set_bytes;
        w.memory = Some(out).into();
    }
    if let Some(st) = &s.storage {
        let mut out = stats::WindowsContainerStorageStatistics::new();
        out.read_count_normalized = st.read_count_normalized;
        out.read_size_bytes = st.read_size_bytes;
        out.write_count_normalized = st.write_count_normalized;
        out.write_size_bytes = st.write_size_bytes;
        w.storage = Some(out).into();
    }
    let mut msg = stats::Statistics::new();
    msg.set_windows(w);
    let mut any = Any::new();
    any.type_url = stats::Statistics::descriptor().full_name().to_owned();
    any.value = msg.write_to_bytes().map_err(|e| e.to_string())?;
    Ok(any)
}

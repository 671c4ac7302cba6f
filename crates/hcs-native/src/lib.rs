//! `hcs-native`: the native HCS driver for this host, chosen the way a container runtime wants
//! it, so a downstream program does not copy the choice from `hcsctl`.
//!
//! [`driver`] returns the V2 driver over `computecore.dll` when that DLL loads with every
//! required export (Windows 10 1809 / Server 2019 and later), else the V1 driver over
//! `vmcompute.dll`, else an [`Unavailable`] error carrying both loaders' reasons (on a host
//! without HCS, including every non-Windows host). The `hcs` crate itself stays free of the
//! driver crates; this small facade is the only place that names both.
//!
//! ```no_run
//! let driver = hcs_native::driver()?;
//! let system = hcs::System::create(driver, "demo", r#"{"SchemaVersion":{"Major":2,"Minor":1}}"#)?;
//! system.start()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! On Linux and macOS, test against the simulator (`hcs-sim`) or the scripted fake
//! (`hcs-testkit`) instead; [`driver`] reports them unavailable there.

use hcs::{ApiGeneration, Driver};
use std::fmt;
use std::sync::Arc;

/// Neither HCS DLL could be loaded on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// Why the V2 driver (`computecore.dll`) could not be loaded.
    pub computecore: String,
    /// Why the V1 driver (`vmcompute.dll`) could not be loaded.
    pub vmcompute: String,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no native HCS driver on this host (computecore: {}; vmcompute: {})",
            self.computecore, self.vmcompute
        )
    }
}

impl std::error::Error for Unavailable {}

/// Which generation [`driver`] would pick, and why not the other: `Ok(V2)` / `Ok(V1)`.
pub fn generation() -> Result<ApiGeneration, Unavailable> {
    driver().map(|d| d.generation())
}

/// The native driver: V2 where `computecore.dll` loads with its required exports, else V1.
pub fn driver() -> Result<Arc<dyn Driver>, Unavailable> {
    let computecore = match hcs_computecore::ComputeCoreDriver::load() {
        Ok(d) => {
            tracing::debug!(driver = "computecore", "native driver selected");
            return Ok(d);
        }
        Err(e) => e.to_string(),
    };
    match hcs_vmcompute::VmComputeDriver::load() {
        Ok(d) => {
            tracing::debug!(driver = "vmcompute", %computecore, "native driver selected (V2 unavailable)");
            Ok(d)
        }
        Err(e) => Err(Unavailable {
            computecore,
            vmcompute: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Off Windows neither DLL exists: the error names both reasons and nothing panics.
    #[cfg(not(windows))]
    #[test]
    fn off_windows_both_drivers_are_unavailable_with_reasons() {
        let e = driver().err().expect("no HCS here");
        assert!(e.computecore.contains("computecore"), "{e}");
        assert!(e.vmcompute.contains("vmcompute"), "{e}");
        assert!(e.to_string().starts_with("no native HCS driver on this host"));
        assert_eq!(generation(), Err(e));
    }
}

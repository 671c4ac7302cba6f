//! Windows-target integration tests of the v1 driver against the fake `vmcompute.dll`
//! (`crates/fake-vmcompute`, built next to this test executable by cargo because it is a
//! `cfg(windows)` dev-dependency), run under Wine by `scripts/test-windows.sh`.
//!
//! The DLL is loaded through the real loader (`VmComputeTable::load_from` with
//! [`DllSource::DefaultSearchOrder`]: LoadLibraryW + GetProcAddress of every export); the
//! scenarios and the conformance checks are the shared suite of
//! `hcs_ffi::test_support::fake_dll` (strings are freed with ``CoTaskMemFree`` after being
//! reported to the DLL).
#![cfg(windows)]

use hcs_ffi::test_support::fake_dll::FakeDll;
use hcs_vmcompute::{DllSource, VmComputeDriver, VmComputeTable};
use std::sync::OnceLock;

fn dll() -> &'static FakeDll {
    static DLL: OnceLock<FakeDll> = OnceLock::new();
    DLL.get_or_init(|| {
        let mut table = VmComputeTable::load_from(&DllSource::DefaultSearchOrder)
            .expect("the fake vmcompute.dll next to the test executable loads");
        let library = table.library.as_ref().expect("a loaded table owns its library");
        let exports = FakeDll::resolve(library, &mut table.free_string);
        FakeDll::new(exports, VmComputeDriver::new(table), "v1")
    })
}

hcs_ffi::fake_dll_tests!(dll);

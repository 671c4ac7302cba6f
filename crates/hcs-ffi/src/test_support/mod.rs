//! Helpers shared by the tests of the two FFI drivers (`hcs-vmcompute` and `hcs-computecore`),
//! behind the `test-support` feature, which only their dev-dependencies enable (so `hcs-testkit`
//! never enters a driver's normal dependency graph).
//!
//! * [`fake_table`]: building blocks of the in-process fake tables (`tests/fake_table.rs`):
//!   counted result strings, handle and call bookkeeping, a serialised process-global state, a
//!   notification collector and a fake stdio mapper. Runs on every platform.
//! * `fake_dll` (Windows): the scenario suite and the `hcs-testkit` conformance wiring run
//!   against the fake DLLs (`tests/fake_dll.rs`, see the `fake_dll_tests!` macro).

pub mod fake_table;

#[cfg(windows)]
pub mod fake_dll;

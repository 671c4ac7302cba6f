//! libFuzzer entry point of `hcs_fuzz::simd_frames` (the body and what it checks are documented there).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hcs_fuzz::simd_frames(data));

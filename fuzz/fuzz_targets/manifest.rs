#![no_main]

// The body is shared with the stable replay of fuzz/regressions (tests/tests/fuzz_regressions.rs).
#[allow(dead_code)]
#[path = "../../tests/src/fuzz_checks.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::manifest(data));

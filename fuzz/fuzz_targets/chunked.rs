//! See `code_server::fuzzing::chunked` for the input's shape and what is asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| code_server::fuzzing::chunked(data));

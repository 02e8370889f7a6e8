//! What the benchmarks share: the helper processes (an upstream dev server, a bare relay),
//! nginx as the reference proxy, what `/proc` says about a process, and a small WebSocket
//! client that speaks the protocol by hand (cheap enough to hold ten thousand of).
//!
//! Each benchmark is a crate of its own that includes this module (`mod support;`) and uses part
//! of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod helper;
pub mod nginx;
pub mod procs;
pub mod ws;

/// The value after `--name` on the command line, parsed; `default` without the flag.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .map(|s| s.parse().unwrap_or_else(|_| panic!("{name} takes a number, got {s:?}")))
        .unwrap_or(default)
}

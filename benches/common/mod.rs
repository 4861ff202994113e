//! Measuring helpers shared by the benchmarks (each bench uses what it needs).
#![allow(dead_code)]

use std::time::Instant;

/// Resident memory of this process, from /proc (Linux); 0 elsewhere.
pub fn resident_bytes() -> i64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<i64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// Nanoseconds per call of `f`, over `n` calls after `n / 10` to warm up.
pub fn ns_per_call(n: u64, mut f: impl FnMut(u64)) -> f64 {
    for i in 0..n / 10 {
        f(i);
    }
    let started = Instant::now();
    for i in 0..n {
        f(i);
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

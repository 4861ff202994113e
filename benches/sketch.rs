//! Reach sketches on the write path and in reports, in nanoseconds per operation, next to
//! a baseline measured in the same run: one insert and one lookup in a
//! `HashMap<u64, u64>` (as in `benches/rules.rs`).
//!
//! `cargo bench --bench sketch` — prints one JSON line per operation.

use std::collections::HashMap;
use std::hint::black_box;

mod common;

use adtally_core::sketch::{mix, Sketch};
use common::ns_per_call as time_n;

fn sketch_of(keys: impl IntoIterator<Item = u64>) -> Sketch {
    let mut s = Sketch::default();
    for k in keys {
        s.insert(mix(k ^ 0x5eed));
    }
    s
}

fn report(name: &str, ns: f64, baseline: f64) {
    println!(
        "{}",
        serde_json::json!({"bench": name, "ns": (ns * 10.0).round() / 10.0, "x_hashmap_baseline": (ns / baseline * 100.0).round() / 100.0})
    );
}

fn main() {
    let mut map: HashMap<u64, u64> = HashMap::new();
    let baseline = time_n(1_000_000, |i| {
        map.insert(i, i);
        black_box(map.get(&(i / 2)));
    });
    println!(
        "{}",
        serde_json::json!({"bench": "baseline_hashmap_insert_lookup", "ns": (baseline * 10.0).round() / 10.0})
    );

    // Per event in a batch: add the user to the batch row's sparse sketch (a few users).
    let mut small = Sketch::default();
    let ns = time_n(1_000_000, |i| {
        if i % 8 == 0 {
            small = Sketch::default();
        }
        small.insert(i);
    });
    report("insert_sparse_per_event", ns, baseline);

    // Per event into a dense sketch (a busy row).
    let mut dense = sketch_of(0..10_000);
    let ns = time_n(1_000_000, |i| dense.insert(i));
    report("insert_dense_per_event", ns, baseline);

    // Per upsert of a valid-impression row, as `reach_merge` does it: decode the stored
    // sketch and the batch's, merge, encode.
    let stored = sketch_of(0..12).to_bytes();
    let batch = sketch_of(10..14).to_bytes();
    let ns = time_n(200_000, |_| {
        let (Ok(mut a), Ok(b)) = (Sketch::from_bytes(&stored), Sketch::from_bytes(&batch)) else { return };
        a.merge(&b);
        black_box(a.to_bytes());
    });
    report("upsert_merge_sparse_12_plus_4", ns, baseline);
    let stored = sketch_of(0..20_000).to_bytes();
    let batch = sketch_of(20_000..20_030).to_bytes();
    let ns = time_n(50_000, |_| {
        let (Ok(mut a), Ok(b)) = (Sketch::from_bytes(&stored), Sketch::from_bytes(&batch)) else { return };
        a.merge(&b);
        black_box(a.to_bytes());
    });
    report("upsert_merge_dense_16k_plus_30", ns, baseline);

    // Reports: one row's union over 30 days × 96 quarter hours of small sketches, per
    // bucket merged.
    let buckets: Vec<Sketch> = (0..2880u64).map(|b| sketch_of(b * 3..b * 3 + 5)).collect();
    let ns = time_n(20, |_| {
        let mut union = Sketch::default();
        for s in &buckets {
            union.merge(s);
        }
        black_box(union.estimate());
    }) / buckets.len() as f64;
    report("report_union_per_sparse_bucket", ns, baseline);
    let days: Vec<Sketch> = (0..30u64).map(|d| sketch_of(d * 5_000..d * 5_000 + 20_000)).collect();
    let ns = time_n(200, |_| {
        let mut union = Sketch::default();
        for s in &days {
            union.merge(s);
        }
        black_box(union.estimate());
    }) / days.len() as f64;
    report("report_union_per_dense_bucket", ns, baseline);
    // A report estimates every row it shows.
    let ns = time_n(2_000, |_| {
        black_box(dense.estimate());
    });
    report("estimate_dense", ns, baseline);
    println!(
        "{}",
        serde_json::json!({"bench": "stored_bytes", "sparse_5_users": sketch_of(0..5).to_bytes().len(), "dense": dense.to_bytes().len()})
    );
}

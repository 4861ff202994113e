//! "At most one impression per decision" at volume: 10 million distinct decisions, each
//! with a counted impression, all inside one token TTL, then a replay of the first one.
//! Prints throughput (ns per judged impression) and resident memory per decision, next
//! to a baseline measured in the same run: inserting the same ids into a
//! `HashMap<u64, u8>`, the least any exact per-decision memory could cost.
//!
//! `cargo bench --bench decisions` (`DECISIONS=N` to change the count).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

mod common;
use common::resident_bytes;

use adtally_core::clock::{Millis, DAY};
use adtally_core::counting::{Arrival, CountingConfig, CountingState, DecisionRef};
use adtally_core::event::{EventKind, Verdict};

const T0: Millis = 1_764_000_000_000;

/// Decision `i` of `n`, issued evenly over 23 hours (inside the 24 h TTL), with a real
/// id: issue millisecond << 20 | sequence.
fn decision(i: u64, n: u64) -> (u64, Millis) {
    let issued = T0 + (i as i128 * 23 * 3_600_000 / n as i128) as Millis;
    (((issued as u64) << 20) | (i & 0xfffff), issued)
}

fn impression(i: u64, n: u64) -> Arrival {
    let (decision_id, issued_at_ms) = decision(i, n);
    Arrival {
        kind: EventKind::Impression,
        at_ms: issued_at_ms + 500,
        decision: DecisionRef::Token { decision_id, issued_at_ms },
        ad_id: (i % 1000) as i64,
        user_key: i,
        ip_key: Some(i % 65_536),
        givt: None,
        video: false,
    }
}

fn main() {
    let n: u64 = std::env::var("DECISIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);

    let before = resident_bytes();
    let started = Instant::now();
    let mut baseline: HashMap<u64, u8> = HashMap::new();
    for i in 0..n {
        baseline.insert(decision(i, n).0, 1);
    }
    let baseline_ns = started.elapsed().as_nanos() as f64 / n as f64;
    let baseline_bytes = (resident_bytes() - before) as f64 / n as f64;
    black_box(&baseline);
    drop(baseline);

    // The writer's default configuration: the cap that used to evict decisions early.
    let mut state = CountingState::new(CountingConfig::default());
    let before = resident_bytes();
    let started = Instant::now();
    let mut counted = 0u64;
    for i in 0..n {
        let a = impression(i, n);
        if state.judge(&a, a.at_ms).verdict == Verdict::Valid {
            counted += 1;
        }
        if i % 100_000 == 0 {
            state.expire(a.at_ms);
        }
    }
    let judge_ns = started.elapsed().as_nanos() as f64 / n as f64;
    let bytes = (resident_bytes() - before) as f64 / n as f64;
    let last = impression(n - 1, n).at_ms;
    let replay = Arrival { at_ms: last + 1_000, ..impression(0, n) };
    let replay_verdict = state.judge(&replay, last + 1_000).verdict;
    assert_eq!(counted, n);
    assert_eq!(replay_verdict, Verdict::Duplicate, "a replay of the first decision must stay a duplicate");
    assert_eq!(state.tracked_decisions() as u64, n);
    state.expire(last + DAY + 120_000);
    println!(
        "{}",
        serde_json::json!({
            "bench": "ten_million_decisions",
            "decisions": n,
            "counted": counted,
            "replay_of_first": replay_verdict.as_str(),
            "judge_ns_per_impression": (judge_ns * 10.0).round() / 10.0,
            "resident_bytes_per_decision": bytes.round(),
            "baseline_hashmap_ns": (baseline_ns * 10.0).round() / 10.0,
            "baseline_hashmap_bytes": baseline_bytes.round(),
            "ratio_ns_to_baseline": (judge_ns / baseline_ns * 100.0).round() / 100.0,
            "tracked_after_ttl": state.tracked_decisions(),
        })
    );
}

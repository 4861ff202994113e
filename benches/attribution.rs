//! Attribution of 1 000 000 conversions over 10 000 000 touches (500 000 converting users,
//! 20 touches each over 40 days: 1 in 4 a click), with every model at once and with
//! `last_click` alone, next to a baseline measured in the same run: sorting the same
//! touches by (user, time), the least any per-user attribution has to do. Peak memory is
//! the process's high-water mark (`VmHWM`) before and after.
//!
//! `cargo bench --bench attribution` — prints one JSON line.

use std::hint::black_box;
use std::time::Instant;

use adtally_core::attribution::{attribute, ConversionFact, Model, PathTouch, TouchKind, Windows};
use adtally_core::clock::DAY;

const USERS: u64 = 500_000;
const TOUCHES_PER_USER: u64 = 20;
const CONVERSIONS_PER_USER: u64 = 2;

/// Peak resident memory of this process (Linux); 0 elsewhere.
fn peak_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        })
        .map_or(0, |kb| kb * 1024)
}

/// A cheap deterministic mix (SplitMix64) for spreading touches.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn main() {
    let t0 = 1_790_000_000_000i64;
    let span = 40 * DAY;
    // Touches in time order (as the store returns them), users interleaved.
    let mut touches: Vec<(u64, PathTouch)> = (0..USERS * TOUCHES_PER_USER)
        .map(|i| {
            let r = mix(i);
            let user = i % USERS;
            let at_ms = t0 + (r % span as u64) as i64;
            let kind = if r >> 60 < 4 { TouchKind::Click } else { TouchKind::Impression };
            let campaign_id = 1 + (r >> 40) as i64 % 20;
            (
                user,
                PathTouch {
                    at_ms,
                    kind,
                    decision_id: Some(i),
                    campaign_id,
                    ad_id: campaign_id * 10 + (r >> 50) as i64 % 3,
                },
            )
        })
        .collect();
    touches.sort_by_key(|(_, t)| t.at_ms);
    let conversions: Vec<ConversionFact> = (0..USERS * CONVERSIONS_PER_USER)
        .map(|i| ConversionFact {
            user_key: i % USERS,
            at_ms: t0 + span - (mix(i ^ 0xABCD) % (10 * DAY as u64)) as i64,
            value_micros: 1_000_000 + (mix(i) % 100_000_000) as i64,
        })
        .collect();
    let before = peak_bytes();

    let mut copy = touches.clone();
    let started = Instant::now();
    copy.sort_by_key(|(u, t)| (*u, t.at_ms));
    let baseline = started.elapsed().as_secs_f64();
    black_box(&copy);
    drop(copy);

    // The copies are made outside the timings: the server hands its vector over.
    let input = touches.clone();
    let started = Instant::now();
    let last_click = black_box(attribute(&[Model::LastClick], &conversions, input, Windows::default()));
    let one = started.elapsed().as_secs_f64();
    let after_one = peak_bytes();
    let input = touches.clone();
    let started = Instant::now();
    let all = black_box(attribute(&Model::ALL, &conversions, input, Windows::default()));
    let every = started.elapsed().as_secs_f64();
    let after_all = peak_bytes();
    assert_eq!(all[&Model::LastClick], last_click[&Model::LastClick]);

    let r = &all[&Model::Linear];
    println!(
        "{}",
        serde_json::json!({
            "bench": "attribution",
            "conversions": conversions.len(),
            "touches": touches.len(),
            "attributed": r.conversions - r.unattributed,
            "baseline_sort_s": (baseline * 1000.0).round() / 1000.0,
            "last_click_s": (one * 1000.0).round() / 1000.0,
            "all_models_s": (every * 1000.0).round() / 1000.0,
            "last_click_ratio": (one / baseline * 100.0).round() / 100.0,
            "all_models_ratio": (every / baseline * 100.0).round() / 100.0,
            "input_peak_mb": before / 1_000_000,
            "peak_mb_after_last_click": after_one / 1_000_000,
            "peak_mb_after_all_models": after_all / 1_000_000,
        })
    );
}

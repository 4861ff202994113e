//! The per-request rules on the hot path, in nanoseconds per operation, next to a
//! baseline measured in the same run: one insert and one lookup in a `HashMap<u64, u64>`
//! (the least any stateful rule could cost).
//!
//! `cargo bench --bench rules` — prints one JSON line per rule.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use adtally_core::auction::{self, Bid};
use adtally_core::clock::HOUR;
use adtally_core::counting::{Arrival, CountingConfig, CountingState, DecisionRef};
use adtally_core::event::{Country, Device, EventKind};
use adtally_core::token::{TokenSigner, TrackingToken};
use adtally_core::traffic::{DatacenterRanges, UserAgentClassifier};

const N: u64 = 1_000_000;

fn time(mut f: impl FnMut(u64)) -> f64 {
    for i in 0..N / 10 {
        f(i);
    }
    let started = Instant::now();
    for i in 0..N {
        f(i);
    }
    started.elapsed().as_nanos() as f64 / N as f64
}

fn main() {
    let mut map: HashMap<u64, u64> = HashMap::new();
    let baseline = time(|i| {
        map.insert(i, i);
        black_box(map.get(&(i / 2)));
    });

    let signer = TokenSigner::new(b"bench-secret");
    let token = TrackingToken {
        decision_id: 1,
        issued_at_ms: 1_764_000_000_000,
        advertiser_id: 1,
        campaign_id: 2,
        ad_id: 3,
        placement_id: 4,
        user_key: 5,
        device: Device::Desktop,
        country: Country::UNKNOWN,
        clearing_cpm_micros: 1_000_000,
    };
    let signed = signer.sign(&token);
    let sign = time(|i| {
        black_box(signer.sign(&TrackingToken { decision_id: i, ..token }));
    });
    let verify = time(|_| {
        let _ = black_box(signer.verify(black_box(&signed)));
    });

    let mut state = CountingState::new(CountingConfig::default());
    let t0 = 1_764_000_000_000i64;
    let judge = time(|i| {
        let kind = if i % 3 == 2 { EventKind::Click } else { EventKind::Impression };
        let arrival = Arrival {
            kind,
            at_ms: t0 + i as i64,
            decision: DecisionRef::Token { decision_id: i / 3, issued_at_ms: t0 },
            ad_id: (i % 100) as i64,
            user_key: i / 3,
            ip_key: i % 5000,
            givt: None,
        };
        black_box(state.judge(&arrival, t0 + (i as i64 % HOUR)));
    });

    let ua = UserAgentClassifier::new();
    let browser = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    let is_bot = time(|_| {
        black_box(ua.is_bot(black_box(browser)));
    });
    let ranges = DatacenterRanges::bundled();
    let datacenter = time(|i| {
        black_box(ranges.contains(std::net::IpAddr::from(((i as u32).wrapping_mul(2_654_435_761)).to_be_bytes())));
    });
    let bids: Vec<Bid> =
        (0..50).map(|i| Bid { cpm_bid_micros: 1_000_000 + i * 1000, quality: 0.01 + i as f64 * 0.0001 }).collect();
    let auction = time(|i| {
        black_box(auction::run(&bids, 500_000, i));
    });

    for (name, ns) in [
        ("token_sign", sign),
        ("token_verify", verify),
        ("counting_judge", judge),
        ("user_agent_is_bot_uncached", is_bot),
        ("datacenter_lookup", datacenter),
        ("auction_50_campaigns", auction),
    ] {
        println!(
            "{}",
            serde_json::json!({"bench": name, "ns_per_op": (ns * 10.0).round() / 10.0, "baseline_hashmap_ns": (baseline * 10.0).round() / 10.0, "ratio_to_baseline": (ns / baseline * 100.0).round() / 100.0})
        );
    }
}

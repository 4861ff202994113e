//! The per-request rules on the hot path, in nanoseconds per operation, next to a
//! baseline measured in the same run: one insert and one lookup in a `HashMap<u64, u64>`
//! (the least any stateful rule could cost).
//!
//! `cargo bench --bench rules` — prints one JSON line per rule.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

mod common;

use adtally_core::auction::{self, Bid};
use adtally_core::clock::HOUR;
use adtally_core::counting::{Arrival, CountingConfig, CountingState, DecisionRef};
use adtally_core::event::{Country, Device, EventKind};
use adtally_core::token::{TokenSigner, TrackingToken};
use adtally_core::traffic::{DatacenterRanges, UserAgentClassifier};
use common::{ns_per_call as time_n, resident_bytes};

const N: u64 = 1_000_000;

/// Resident bytes per (user, campaign) pair (allocator overhead included) in frequency-cap state: 100 000 users who each
/// saw one of 1 000 capped campaigns (cap 3 per 24 h) twice.
fn bytes_per_capped_pair() -> (usize, f64) {
    use adtally_core::catalog::{FrequencyCap, Pacing};
    use adtally_core::delivery::{CampaignLimits, DeliveryState};
    let mut state = DeliveryState::new(10_000_000);
    for c in 0..1000 {
        state.set_campaign(
            c,
            CampaignLimits {
                advertiser_id: 1,
                total_budget_micros: i64::MAX / 4,
                daily_budget_micros: None,
                pacing: Pacing::Asap,
                frequency_cap: Some(FrequencyCap { impressions: 3, per_hours: 24 }),
                timezone: adtally_core::jiff::tz::TimeZone::UTC,
            },
        );
    }
    state.credit(1, i64::MAX / 4);
    let before = resident_bytes();
    let t0 = 1_764_000_000_000i64;
    for user in 0..100_000u64 {
        for seen in 0..2 {
            state.record_impression((user % 1000) as i64, 1, user, 1_000_000, t0 + seen * 60_000, None);
        }
    }
    let after = resident_bytes();
    let pairs = state.capped_pairs();
    (pairs, (after - before) as f64 / pairs as f64)
}

fn time(f: impl FnMut(u64)) -> f64 {
    time_n(N, f)
}

fn main() {
    let (pairs, bytes) = bytes_per_capped_pair();
    println!(
        "{}",
        serde_json::json!({"bench": "frequency_cap_state", "pairs": pairs, "resident_bytes_per_pair": bytes.round()})
    );
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
        ad_version: 1,
        placement_id: 4,
        user_key: 5,
        device: Device::Desktop,
        country: Country::UNKNOWN,
        clearing_cpm_micros: 1_000_000,
        format: adtally_core::catalog::Format::Sidebar,
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
            ip_key: Some(i % 5000),
            givt: None,
            video: false,
        };
        black_box(state.judge(&arrival, t0 + (i as i64 % HOUR)));
    });

    let built = Instant::now();
    let ua = UserAgentClassifier::new();
    let build_ms = built.elapsed().as_secs_f64() * 1000.0;
    let browser = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    let is_bot = time_n(N / 100, |_| {
        black_box(ua.classify_uncached(black_box(browser)));
    });
    // A mix of real agents: desktop, phone, tablet, web view, feature phone, app stack, bots.
    let mix = [
        browser,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Linux; Android 12; SM-G991B Build/SP1A.210812.016; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/119.0.6045.66 Mobile Safari/537.36",
        "Nokia6300/2.0 (07.21) Profile/MIDP-2.0 Configuration/CLDC-1.1",
        "okhttp/4.12.0",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "curl/8.5.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    ];
    let classify_uncached = time_n(N / 100, |i| {
        black_box(ua.classify_uncached(black_box(mix[i as usize % mix.len()])));
    });
    let classify_cached = time(|i| {
        black_box(ua.classify(black_box(mix[i as usize % mix.len()])));
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

    println!("{}", serde_json::json!({"bench": "user_agent_classifier_build", "ms": (build_ms * 10.0).round() / 10.0}));
    for (name, ns) in [
        ("token_sign", sign),
        ("token_verify", verify),
        ("counting_judge", judge),
        ("user_agent_classify_uncached_chrome", is_bot),
        ("user_agent_classify_uncached_mix", classify_uncached),
        ("user_agent_classify_cached_mix", classify_cached),
        ("datacenter_lookup", datacenter),
        ("auction_50_campaigns", auction),
    ] {
        println!(
            "{}",
            serde_json::json!({"bench": name, "ns_per_op": (ns * 10.0).round() / 10.0, "baseline_hashmap_ns": (baseline * 10.0).round() / 10.0, "ratio_to_baseline": (ns / baseline * 100.0).round() / 100.0})
        );
    }
}

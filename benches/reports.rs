//! Dashboard report latency on a generated store, before and after the day layer, in
//! the same run.
//!
//! `cargo bench --bench reports` generates a store of `ADTALLY_BENCH_EVENTS` events
//! (default 200 000, the CI size) in `ADTALLY_BENCH_DIR` (default: a temporary
//! directory), or reuses the store already there (generation is the slow part: keep the
//! directory to measure again). The generator writes through `Store::append_events` —
//! the writer's own path, events and rollups in one transaction — with verdicts and
//! kinds drawn from fixed shares instead of judged (judging 100M events through the
//! import path would take hours): 10 advertisers in 5 time zones (UTC, Berlin, New York,
//! Kolkata +05:30, Kathmandu +05:45), 5 campaigns of 4 ads each per advertiser, 8
//! placements, 3 devices, 20 countries, `events / 20` users, over the last
//! `ADTALLY_BENCH_DAYS` days (default 30), in time order, 8 192 events a transaction.
//!
//! The server is then started in-process on the store twice: with
//! `reports_from_quarter_hours` (every report from the quarter-hour rollups, folded in
//! Rust: the layout and code before the day layer) and with the defaults. Each
//! dashboard query is sent over HTTP (`ADTALLY_BENCH_ITERATIONS`, default 200, or as
//! many as fit in 20 s, at least 5) after one warm-up; p50 and p99 of the response
//! time are printed, one JSON line per query and layout, then a table with the ratios.
//!
//! 100M events: `ADTALLY_BENCH_EVENTS=100000000 ADTALLY_BENCH_DIR=/data/bench-100m
//! cargo bench --bench reports` (about 25 GB of disk).
//!
//! Before timing, the store's spans of days are sealed as the server's housekeeping does
//! (`ADTALLY_BENCH_SEAL=0` skips that, to time a store without them).
//!
//! PostgreSQL: `ADTALLY_BENCH_DATABASE=postgres://…/db` generates into (or reuses) that
//! database instead, through the same `Store::append_events` (leasing each batch's spend
//! first, as a node does), and measures the same queries; PostgreSQL has no day layer, so
//! only one layout is timed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adtally_core::catalog::{Ad, AdContent, Advertiser, Campaign, CampaignStatus, CreditKind, Format, Pacing};
use adtally_core::clock::{Clock, SystemClock, DAY};
use adtally_core::event::{Country, Device, Event, EventKind, Verdict};
use adtally_core::jiff::tz::TimeZone;
use adtally_server::{Application, Options, ServerConfig};
use adtally_store::{PendingEvent, SqliteStore, Store};

const ADMIN: &str = "bench-admin";
const ZONES: [&str; 5] = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu"];
const ADVERTISERS: usize = 10;
const CAMPAIGNS: usize = 5;
const ADS: usize = 4;
const PLACEMENTS: usize = 8;
const COUNTRIES: [&str; 20] = [
    "US", "DE", "GB", "FR", "IN", "NP", "CA", "BR", "JP", "ES", "IT", "NL", "SE", "PL", "MX", "AU", "KR", "TR", "ZA",
    "AR",
];
const BATCH: usize = 8_192;

/// SplitMix64: the same store for the same size, every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Skewed pick in `0..n`: low indexes are likelier (squared uniform).
    fn skewed(&mut self, n: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((u * u) * n as f64) as usize
    }
}

/// (campaign id, its ad ids).
type CampaignAds = (i64, Vec<i64>);

struct Catalog {
    /// (advertiser id, its campaigns).
    advertisers: Vec<(i64, Vec<CampaignAds>)>,
    placements: Vec<i64>,
}

fn catalog(store: &dyn Store, now: i64) -> Catalog {
    let mut placements = Vec::new();
    for p in 0..PLACEMENTS {
        let slug = format!("placement-{p}");
        placements.push(store.create_placement(&slug, &slug, Format::Sidebar, 0).expect("placement").id);
    }
    let mut advertisers = Vec::new();
    for a in 0..ADVERTISERS {
        let zone = ZONES[a % ZONES.len()];
        let adv = store
            .create_advertiser(&Advertiser::new(&format!("adv-{a}"), "b@bench.example", zone, now - 400 * DAY))
            .expect("advertiser");
        store.add_credit(adv.id, CreditKind::Topup, 1_000_000_000_000_000, None, now - 400 * DAY).expect("credit");
        let mut campaigns = Vec::new();
        for c in 0..CAMPAIGNS {
            let campaign = store
                .create_campaign(&Campaign {
                    status: CampaignStatus::Active,
                    pacing: Pacing::Asap,
                    ..Campaign::draft(adv.id, &format!("c{c}"), 2_000_000, 1_000_000_000_000_000, now - 400 * DAY)
                })
                .expect("campaign");
            let mut ads = Vec::new();
            for i in 0..ADS {
                let content = AdContent::new(Format::Sidebar, &format!("ad {i}"), "https://bench.example/");
                let mut ad = Ad::new(campaign.id, adv.id, content, now - 400 * DAY);
                ad.approve();
                ads.push(store.create_ad(&ad).expect("ad").id);
            }
            campaigns.push((campaign.id, ads));
        }
        advertisers.push((adv.id, campaigns));
    }
    Catalog { advertisers, placements }
}

fn generate(store: &dyn Store, events: u64, days: i64, now: i64) -> Catalog {
    let cat = catalog(store, now);
    let mut rng = Rng(events);
    let users = (events / 20).max(1_000);
    let start = now - days * DAY;
    let step = (days * DAY) as f64 / events as f64;
    let countries: Vec<Country> = COUNTRIES.iter().map(|c| Country::parse(c)).collect();
    let started = Instant::now();
    let zones: std::collections::HashMap<i64, TimeZone> = store
        .advertisers()
        .expect("advertisers")
        .into_iter()
        .map(|a| (a.id, TimeZone::get(&a.timezone).unwrap_or(TimeZone::UTC)))
        .collect();
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..events {
        let at_ms = start + (i as f64 * step) as i64;
        let (advertiser_id, campaigns) = &cat.advertisers[rng.below(ADVERTISERS as u64) as usize];
        let (campaign_id, ads) = &campaigns[rng.skewed(CAMPAIGNS)];
        let ad_id = ads[rng.below(ADS as u64) as usize];
        let placement_id = cat.placements[rng.skewed(PLACEMENTS)];
        let roll = rng.below(1000);
        let kind = match roll {
            0..=699 => EventKind::Impression,
            700..=969 => EventKind::Viewable,
            970..=996 => EventKind::Click,
            _ => EventKind::Conversion,
        };
        let verdict = match rng.below(100) {
            0..=87 => Verdict::Valid,
            88..=92 => Verdict::Bot,
            93..=94 => Verdict::Prefetch,
            95..=96 => Verdict::Datacenter,
            97..=98 => Verdict::Duplicate,
            _ => Verdict::ExcessiveActivity,
        };
        let device = match rng.below(10) {
            0..=4 => Device::Mobile,
            5..=8 => Device::Desktop,
            _ => Device::Tablet,
        };
        let valid_impression = kind == EventKind::Impression && verdict == Verdict::Valid;
        batch.push(PendingEvent::new(Event {
            at_ms,
            kind,
            verdict,
            decision_id: (kind != EventKind::Conversion).then_some(i + 1),
            advertiser_id: *advertiser_id,
            campaign_id: Some(*campaign_id),
            ad_id: Some(ad_id),
            placement_id: (kind != EventKind::Conversion).then_some(placement_id),
            user_key: rng.below(users),
            ip_key: Some(rng.next()),
            device,
            country: countries[rng.skewed(COUNTRIES.len())],
            cost_micros: if valid_impression { 2_000 } else { 0 },
            value_micros: if kind == EventKind::Conversion { 25_000_000 } else { 0 },
        }));
        if batch.len() == BATCH || i + 1 == events {
            if let Some(cluster) = store.cluster() {
                // A shared database charges only leased budget: lease what the batch spends.
                let mut need: std::collections::BTreeMap<(i64, i32), i64> = Default::default();
                for p in &batch {
                    let (Some(c), cost) = (p.event.campaign_id, p.event.cost_micros) else { continue };
                    if cost > 0 {
                        let zone = zones.get(&p.event.advertiser_id).cloned().unwrap_or(TimeZone::UTC);
                        *need.entry((c, local_day(p.event.at_ms, &zone))).or_default() += cost;
                    }
                }
                // No server runs while generating: beat for it.
                cluster.heartbeat().expect("heartbeat");
                for ((c, day), micros) in need {
                    let grant = cluster.lease(c, day, micros).expect("lease");
                    assert!(grant.left_micros >= micros, "the generated campaigns have budget enough");
                }
            }
            store.append_events(at_ms, &mut batch, None, &mut |_, _, _| {}).expect("append");
            batch.clear();
        }
        if i > 0 && i % 5_000_000 == 0 {
            eprintln!("generated {i} events in {:.0} s", started.elapsed().as_secs_f64());
        }
    }
    eprintln!(
        "generated {events} events in {:.1} s ({:.0} events/s)",
        started.elapsed().as_secs_f64(),
        events as f64 / started.elapsed().as_secs_f64()
    );
    cat
}

/// Days since 1970-01-01 of `at_ms` in `zone` (the days leases are kept by).
fn local_day(at_ms: i64, zone: &TimeZone) -> i32 {
    let date =
        adtally_core::jiff::Timestamp::from_millisecond(at_ms).expect("time").to_zoned_datetime(zone.clone()).date();
    (date - adtally_core::jiff::civil::date(1970, 1, 1)).get_days()
}

/// The catalog of a store generated before.
fn existing(store: &dyn Store) -> Option<Catalog> {
    let placements: Vec<i64> = store.placements().ok()?.iter().map(|p| p.id).collect();
    let mut advertisers = Vec::new();
    for a in store.advertisers().ok()? {
        let mut campaigns = Vec::new();
        for c in store.campaigns(Some(a.id)).ok()? {
            campaigns.push((c.id, store.ads(Some(c.id)).ok()?.iter().map(|ad| ad.id).collect()));
        }
        advertisers.push((a.id, campaigns));
    }
    (!advertisers.is_empty()).then_some(Catalog { advertisers, placements })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

async fn measure(
    store: Arc<dyn Store>,
    config: ServerConfig,
    queries: &[(&'static str, String)],
    iterations: usize,
) -> Vec<(f64, f64, usize, usize)> {
    let options =
        Options { config, secret: Some("bench".into()), admin_key: Some(ADMIN.into()), clock: Arc::new(SystemClock) };
    let app = Application::build("127.0.0.1:0".parse().expect("addr"), store, options).await.expect("app");
    let base = format!("http://{}", app.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for (_, path) in queries {
        let url = format!("{base}{path}");
        let get = || async {
            let r = client.get(&url).bearer_auth(ADMIN).send().await.expect("request");
            let status = r.status().as_u16();
            let body = r.bytes().await.expect("body");
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
            serde_json::from_slice::<serde_json::Value>(&body).expect("json")["rows"].as_array().map_or(0, Vec::len)
        };
        let rows = get().await;
        let mut times = Vec::new();
        let began = Instant::now();
        while times.len() < iterations && (times.len() < 5 || began.elapsed() < Duration::from_secs(20)) {
            let t = Instant::now();
            get().await;
            times.push(t.elapsed());
        }
        times.sort();
        out.push((percentile(&times, 0.5), percentile(&times, 0.99), times.len(), rows));
    }
    let _ = stop.send(());
    let _ = server.await;
    out
}

fn main() {
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let events = env("ADTALLY_BENCH_EVENTS", 200_000);
    let days = env("ADTALLY_BENCH_DAYS", 30) as i64;
    let iterations = env("ADTALLY_BENCH_ITERATIONS", 200) as usize;
    let temp = tempfile::tempdir().expect("dir");
    let dir = std::env::var("ADTALLY_BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| temp.path().into());
    let opened = Instant::now();
    let postgres = std::env::var("ADTALLY_BENCH_DATABASE").ok().filter(|u| !u.is_empty());
    let store: Arc<dyn Store> = match &postgres {
        Some(url) => Arc::new(
            adtally_store::PgStore::connect(url, "bench")
                .expect("PostgreSQL")
                .holding(adtally_store::DataDirLock::acquire(&dir).expect("lock")),
        ),
        None => Arc::new(SqliteStore::open(&dir).expect("store")),
    };
    eprintln!("store opened (and migrated) in {:.1} s", opened.elapsed().as_secs_f64());
    let now = SystemClock.now_ms();
    let cat = match existing(store.as_ref()) {
        Some(cat) => {
            eprintln!("reusing the store in {}", dir.display());
            cat
        }
        None => generate(store.as_ref(), events, days, now),
    };
    // The day layer equals the quarter hours it was folded from, and those the events.
    let check = store.consistency_check().expect("check");
    assert!(check.is_consistent(), "the store is not consistent: {check:?}");
    let stored = check.raw_events();
    // What the server's housekeeping does within its first seconds: sums and reach of sealed
    // spans of days (ADTALLY_BENCH_SEAL=0 leaves a store without them as it is).
    if env("ADTALLY_BENCH_SEAL", 1) == 1 {
        let sealing = Instant::now();
        let spans = store.seal_spans(now).expect("seal");
        eprintln!("sealed {spans} spans of days in {:.1} s", sealing.elapsed().as_secs_f64());
    }
    // The Kathmandu advertiser (+05:45: its days are not UTC days) and its busiest campaign.
    let (adv, campaigns) = &cat.advertisers[4];
    let campaign = campaigns[0].0;
    let range = "range=last_30_days";
    let queries: Vec<(&'static str, String)> = vec![
        ("overview by day", format!("/v1/reports?{range}&granularity=day&advertiser_id={adv}")),
        ("campaigns table", format!("/v1/reports?{range}&group_by=campaign&advertiser_id={adv}")),
        ("ads table", format!("/v1/reports?{range}&campaign_id={campaign}&group_by=ad&advertiser_id={adv}")),
        ("device", format!("/v1/reports?{range}&campaign_id={campaign}&group_by=device&advertiser_id={adv}")),
        ("country", format!("/v1/reports?{range}&campaign_id={campaign}&group_by=country&advertiser_id={adv}")),
        (
            "campaign by day and placement",
            format!(
                "/v1/reports?{range}&campaign_id={campaign}&granularity=day&group_by=placement&advertiser_id={adv}"
            ),
        ),
        ("operator's campaigns", format!("/v1/reports?{range}&group_by=campaign")),
    ];
    // ADTALLY_BENCH_ONLY=placement: only the queries whose name contains it.
    let only = std::env::var("ADTALLY_BENCH_ONLY").unwrap_or_default();
    let queries: Vec<(&'static str, String)> = queries.into_iter().filter(|(name, _)| name.contains(&only)).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let after = runtime.block_on(measure(store.clone(), ServerConfig::default(), &queries, iterations));
    // ADTALLY_BENCH_BEFORE=0 skips the quarter-hour layout (slow on large stores).
    let before = if env("ADTALLY_BENCH_BEFORE", 1) == 0 || postgres.is_some() {
        after.iter().map(|a| (f64::NAN, f64::NAN, 0, a.3)).collect()
    } else {
        let before = ServerConfig { reports_from_quarter_hours: true, ..Default::default() };
        runtime.block_on(measure(store.clone(), before, &queries, iterations))
    };
    let mut table = Vec::new();
    for (((name, path), b), a) in queries.iter().zip(&before).zip(&after) {
        assert_eq!(b.3, a.3, "{name}: the layouts disagree on the number of rows");
        for (layout, m) in [("quarter_hours", b), ("day_layer", a)] {
            println!(
                "{}",
                serde_json::json!({"bench": "reports", "events": stored, "query": name, "path": path, "layout": layout,
                    "p50_ms": (m.0 * 100.0).round() / 100.0, "p99_ms": (m.1 * 100.0).round() / 100.0,
                    "samples": m.2, "rows": m.3})
            );
        }
        table.push(format!(
            "{name:<30} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>8.1}",
            b.0,
            b.1,
            a.0,
            a.1,
            b.1 / a.1.max(1e-9)
        ));
    }
    println!("\nreports on {stored} events ({}):", dir.display());
    println!(
        "{:<30} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "query", "before p50", "before p99", "after p50", "after p99", "p99 ×"
    );
    for line in table {
        println!("{line}");
    }
}

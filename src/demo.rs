//! The demo data set: four advertisers in four time zones, three placements, six
//! campaigns, and 30 days of traffic — people, bots, prefetches, data-centre hits,
//! double clicks and conversions — fed through the same import path as live history,
//! so every number in the demo was counted by the real rules.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::{anyhow, Result};

use adtally_core::catalog::{
    Ad, AdContent, AdStatus, Advertiser, Campaign, CampaignStatus, CreditKind, Format, Pacing,
};
use adtally_core::clock::{Clock, SystemClock, DAY, HOUR};
use adtally_server::build_state;
use adtally_server::import::import_ndjson;
use adtally_store::Store;

/// A small deterministic generator (SplitMix64), so the demo is the same every time.
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
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }
}

const BROWSERS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
];
const BOTS: &[&str] = &[
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "python-requests/2.32.3",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
];
const COUNTRIES: &[&str] = &["US", "DE", "GB", "NP", "FR", "CA", "IN"];

struct DemoCampaign {
    id: i64,
    ads: Vec<(i64, f64)>,
    placements: Vec<&'static str>,
    daily_impressions: u64,
    conversion_rate: f64,
    order_value_micros: i64,
}

/// Fills an empty store with the demo.
pub async fn create(store: Arc<dyn Store>, args: &crate::StoreArgs) -> Result<()> {
    let clock = SystemClock;
    let now = clock.now_ms();
    eprintln!("adtally: creating the demo in {} …", args.data.display());
    let advertisers = [
        ("Brightpath Recruiting", "ads@brightpath.example", "Europe/Berlin"),
        ("Northwind Logistics", "marketing@northwind.example", "America/New_York"),
        ("Acme Cloud", "growth@acme.example", "UTC"),
        ("Himalaya Treks", "hello@himalaya.example", "Asia/Kathmandu"),
    ];
    let mut advertiser_ids = Vec::new();
    for (name, email, tz) in advertisers {
        let a = store.create_advertiser(&Advertiser::new(name, email, tz, now - 40 * DAY))?;
        store.add_credit(a.id, CreditKind::Topup, 2_000_000_000, Some("demo top-up"), now - 40 * DAY)?;
        store.add_credit(a.id, CreditKind::Bonus, 100_000_000, Some("welcome bonus"), now - 40 * DAY)?;
        advertiser_ids.push(a.id);
    }
    store.create_placement("sidebar-main", "Sidebar, every page", Format::Sidebar, 500_000)?;
    store.create_placement("job-detail-sidebar", "Sidebar on job pages", Format::Sidebar, 800_000)?;
    store.create_placement("feed-inline", "Inline in the job feed", Format::Compact, 300_000)?;

    // (advertiser, name, format, bid, ads with CTR %, daily impressions, conversion rate, order value)
    type Plan = (usize, &'static str, Format, i64, &'static [(&'static str, f64)], u64, f64, i64);
    let plans: [Plan; 6] = [
        (
            0,
            "Senior engineers, Berlin",
            Format::Sidebar,
            4_000_000,
            &[("Hiring senior Rust engineers", 2.4), ("Work on hard problems", 1.1)],
            2200,
            0.08,
            0,
        ),
        (
            0,
            "Graduate programme",
            Format::Compact,
            2_500_000,
            &[("Start your career at Brightpath", 0.9)],
            1800,
            0.05,
            0,
        ),
        (
            1,
            "Drivers wanted",
            Format::Compact,
            1_800_000,
            &[("Drive with Northwind", 1.6), ("Sign-on bonus for drivers", 2.9)],
            2000,
            0.04,
            0,
        ),
        (
            2,
            "Free tier launch",
            Format::Sidebar,
            3_200_000,
            &[("Deploy in 30 seconds", 0.6), ("$300 free credits", 1.3), ("Kubernetes, managed", 0.15)],
            2500,
            0.10,
            49_000_000,
        ),
        (2, "Developer newsletter", Format::Compact, 1_200_000, &[("The Acme dev digest", 0.4)], 1200, 0.20, 0),
        (
            3,
            "Everest base camp 2027",
            Format::Sidebar,
            2_000_000,
            &[("Trek to Everest base camp", 1.9)],
            900,
            0.03,
            1_450_000_000,
        ),
    ];
    let mut campaigns = Vec::new();
    for (adv, name, format, bid, ads, daily, conv, value) in plans {
        let c = store.create_campaign(&Campaign {
            status: CampaignStatus::Active,
            pacing: Pacing::Asap,
            ..Campaign::draft(advertiser_ids[adv], name, bid, 900_000_000, now - 35 * DAY)
        })?;
        let mut ad_ids = Vec::new();
        for (headline, ctr) in ads {
            let ad = store.create_ad(&Ad {
                id: 0,
                campaign_id: c.id,
                advertiser_id: c.advertiser_id,
                content: AdContent {
                    format,
                    headline: (*headline).into(),
                    body: format!("{name} — find out more."),
                    image_url: None,
                    video_url: None,
                    cta: "Learn more".into(),
                    target_url: format!("https://example.com/{}", c.id),
                },
                status: AdStatus::Approved,
                rejection_reason: None,
                version: 1,
                revision: None,
                created_at_ms: now - 35 * DAY,
            })?;
            ad_ids.push((ad.id, ctr / 100.0));
        }
        let placements = match format {
            Format::Sidebar => vec!["sidebar-main", "job-detail-sidebar"],
            Format::Compact => vec!["feed-inline"],
            Format::Video => vec![],
        };
        campaigns.push(DemoCampaign {
            id: c.id,
            ads: ad_ids,
            placements,
            daily_impressions: daily,
            conversion_rate: conv,
            order_value_micros: value,
        });
    }

    let (state, _) = build_state(store.clone(), crate::offline_options(args))?;
    let mut rng = Rng(0x00ad_7a11);
    let mut seq = 0u64;
    let start = (now - 30 * DAY) / HOUR * HOUR;
    let (mut accepted, mut rejected) = (0usize, 0usize);
    for day in 0..30 {
        let mut out = String::new();
        let day_start = start + day * DAY;
        for c in &campaigns {
            let impressions = c.daily_impressions * (85 + rng.below(30)) / 100;
            for _ in 0..impressions {
                let at = day_start + rng.below(DAY as u64) as i64;
                if at >= now - 60_000 {
                    continue;
                }
                let (ad, ctr) = c.ads[rng.below(c.ads.len() as u64) as usize];
                let placement = c.placements[rng.below(c.placements.len() as u64) as usize];
                let user = format!("u{}", rng.below(40_000));
                let country = COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize];
                let roll = rng.below(1000);
                let (ua, ip, purpose) = if roll < 25 {
                    (BOTS[rng.below(BOTS.len() as u64) as usize], "81.2.69.160", "")
                } else if roll < 35 {
                    (BROWSERS[0], "81.2.69.161", "prefetch")
                } else if roll < 45 {
                    (BROWSERS[0], "52.95.110.1", "")
                } else {
                    (BROWSERS[rng.below(BROWSERS.len() as u64) as usize], "81.2.69.142", "")
                };
                let mut line = |kind: &str, at: i64, extra: &str| {
                    seq += 1;
                    let ts =
                        adtally_core::jiff::Timestamp::from_millisecond(at).map(|t| t.to_string()).unwrap_or_default();
                    let _ = writeln!(
                        out,
                        r#"{{"event_id":"demo-{seq}","type":"{kind}","at":"{ts}","campaign_id":{},"ad_id":{ad},"placement":"{placement}","uid":"{user}","user_agent":"{ua}","ip":"{ip}","country":"{country}","purpose":"{purpose}"{extra}}}"#,
                        c.id
                    );
                };
                line("impression", at, "");
                if rng.chance(0.68) {
                    line("viewable", at + 1_200, "");
                }
                if rng.chance(ctr) {
                    let click_at = at + 3_000 + rng.below(40_000) as i64;
                    line("click", click_at, "");
                    if rng.chance(0.08) {
                        line("click", click_at + 80, "");
                    }
                    if rng.chance(c.conversion_rate) {
                        let value = if c.order_value_micros > 0 { c.order_value_micros } else { 0 };
                        let order = format!(r#","value_micros":{value},"order_id":"o-{:x}""#, rng.next());
                        line("conversion", click_at + 600_000, &order);
                    }
                }
            }
        }
        let summary = import_ndjson(&state, out.as_bytes()).await.map_err(|e| anyhow!(e.message))?;
        accepted += summary.accepted;
        rejected += summary.rejected_count;
        if let Some((line, error)) = summary.rejected.first() {
            eprintln!("adtally: demo line {line} rejected: {error}");
        }
    }
    eprintln!("adtally: demo ready: {accepted} events imported, {rejected} rejected");
    Ok(())
}

/// `adtally report`: the report API's CSV, printed.
pub async fn print_report(
    store: Arc<dyn Store>,
    args: &crate::StoreArgs,
    advertiser: Option<i64>,
    range: &str,
    group_by: &str,
    granularity: &str,
) -> Result<()> {
    let (state, _) = build_state(store, crate::offline_options(args))?;
    let params = adtally_server::reports::ReportParams {
        range: Some(range.into()),
        group_by: Some(group_by.into()),
        granularity: Some(granularity.into()),
        advertiser_id: advertiser,
        format: Some("csv".into()),
        ..Default::default()
    };
    let response = adtally_server::reports::report(
        axum::extract::State(state),
        adtally_server::api::Caller::Admin,
        adtally_server::error::Query(params),
    )
    .await
    .map_err(|e| anyhow!("{}: {}", e.code, e.message))?;
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    print!("{}", String::from_utf8_lossy(&body));
    Ok(())
}

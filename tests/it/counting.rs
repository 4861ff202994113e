//! The honest-counting contract, end to end over HTTP.

use std::sync::Arc;

use adtally_core::clock::{HOUR, SECOND};
use adtally_core::counting::CountingConfig;
use adtally_server::ServerConfig;
use serde_json::{json, Value};

use crate::support::*;

async fn placement_with_floor(app: &TestApp, slug: &str, floor: i64) {
    let (s, p) = app
        .post(
            ADMIN,
            "/v1/placements",
            json!({"id": slug, "name": slug, "format": "sidebar", "floor_cpm_micros": floor}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
}

fn url(decision: &Value, which: &str) -> String {
    decision[which].as_str().expect("tracking url").to_owned()
}

#[tokio::test]
async fn decisions_beacons_and_clicks_count_exactly_once() {
    let app = spawn_app().await;
    placement_with_floor(&app, "sidebar-main", 1_000_000).await;
    let f = fixture_for_existing_placement(&app, "UTC", 2_000_000, 1_000_000_000).await;

    let mut decisions = Vec::new();
    for i in 0..20 {
        decisions.push(app.decision("sidebar-main", &format!("user-{i}")).await);
    }
    // 15 impressions, 5 of them sent twice.
    for (i, d) in decisions.iter().enumerate().take(15) {
        let r = app.hit(&url(d, "impression_url")).await;
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["content-type"], "image/gif");
        if i < 5 {
            app.hit(&url(d, "impression_url")).await;
        }
    }
    // 6 clicks, 2 repeated, one on a decision without an impression, one tampered.
    for (i, d) in decisions.iter().enumerate().take(6) {
        let r = app.hit(&url(d, "click_url")).await;
        assert_eq!(r.status().as_u16(), 302);
        assert_eq!(landing(&r.headers()["location"]), "https://acme.example/landing?x=1");
        if i < 2 {
            assert_eq!(app.hit(&url(d, "click_url")).await.status().as_u16(), 302);
        }
    }
    assert_eq!(app.hit(&url(&decisions[19], "click_url")).await.status().as_u16(), 302);
    let mut tampered = url(&decisions[7], "click_url");
    let last = tampered.pop().expect("char");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let r = app.hit(&tampered).await;
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.expect("json error");
    assert_eq!(body["error"]["code"], "invalid_token");

    let t = totals(&app, &f.key, "range=today").await;
    assert_eq!(t["impressions"], 15);
    assert_eq!(t["clicks"], 6);
    assert_eq!(t["ctr"], 40.0);
    assert_eq!(t["invalid_impressions"], 5);
    assert_eq!(t["invalid_clicks"], 3);
    // Alone in the auction, the campaign pays the floor: 15 × 1.00 / 1000.
    assert_eq!(t["spend_micros"], 15_000);
    assert_eq!(t["cpm_micros"], 1_000_000);
    assert_eq!(t["cpc_micros"], 2_500);
    assert_eq!(t["conversion_rate"], 0.0);
    assert_eq!(t["cpa_micros"], Value::Null);
    assert_eq!(t["roas"], 0.0);

    // The CSV says the same as the JSON.
    let (_, json_report) = app.get(&f.key, "/v1/reports?range=today&group_by=campaign,ad").await;
    let (s, csv) = app.get_text(&f.key, "/v1/reports?range=today&group_by=campaign,ad&format=csv").await;
    assert_eq!(s, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    let values: Vec<&str> = lines[1].split(',').collect();
    let row = &json_report["rows"][0];
    assert_eq!(row["campaign_id"], f.campaign_id);
    assert_eq!(row["ad_id"], f.ad_id);
    for (name, value) in header.iter().zip(values) {
        let expected = match &row[*name] {
            Value::Null => String::new(),
            other => other.to_string(),
        };
        assert_eq!(value, expected, "column {name}");
    }
    let consistency = app.store.consistency_check().expect("check");
    assert!(consistency.is_consistent(), "{consistency:?}");
    assert_eq!(consistency.raw_events(), 15 + 5 + 6 + 2 + 1);

    // The ledger balances: credits minus spend.
    let (_, me) = app.get(&f.key, "/v1/me").await;
    assert_eq!(
        (me["id"].as_i64(), me["balance_micros"].as_i64()),
        (Some(f.advertiser_id), Some(5_000_000_000 - 15_000))
    );
    let (_, ledger) = app.get(&f.key, "/v1/ledger").await;
    let sum: i64 = ledger["items"].as_array().expect("items").iter().filter_map(|e| e["amount_micros"].as_i64()).sum();
    assert_eq!(sum, 5_000_000_000 - 15_000, "{ledger}");
}

/// The scripted traffic mix of the honest-counting issue: every verdict, exactly.
#[tokio::test]
async fn a_mix_of_humans_bots_and_mistakes_gets_exact_verdicts() {
    let app = spawn_app().await;
    placement_with_floor(&app, "sidebar-main", 0).await;
    let f = fixture_for_existing_placement(&app, "UTC", 2_000_000, 1_000_000_000).await;
    let d = |uid: &'static str| {
        let app = &app;
        async move { app.decision("sidebar-main", uid).await }
    };
    let get = |url: String, headers: Vec<(&'static str, &'static str)>| {
        let app = &app;
        async move {
            let mut req = app.client.get(url);
            if !headers.iter().any(|(k, _)| *k == "user-agent") {
                req = req.header("user-agent", BROWSER);
            }
            for (k, v) in headers {
                req = req.header(k, v);
            }
            req.send().await.expect("beacon").status().as_u16()
        }
    };
    let googlebot = vec![("user-agent", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")];

    // Five people see an ad and keep it in view; one viewable beacon arrives sooner than
    // a tag could have measured a second of view.
    let humans = [d("h1").await, d("h2").await, d("h3").await, d("h4").await, d("h5").await];
    for h in &humans {
        assert_eq!(get(url(h, "impression_url"), vec![]).await, 200);
    }
    assert_eq!(get(url(&humans[4], "viewable_url"), vec![]).await, 204);
    app.clock.advance(SECOND);
    for h in &humans {
        assert_eq!(get(url(h, "viewable_url"), vec![]).await, 204);
    }
    // A crawler loads and clicks.
    let bot = d("b1").await;
    get(url(&bot, "impression_url"), googlebot.clone()).await;
    get(url(&bot, "click_url"), googlebot.clone()).await;
    get(url(&bot, "click_url"), googlebot.clone()).await;
    // A prefetch, then the real view of the same decision.
    let pre = d("p1").await;
    get(url(&pre, "impression_url"), vec![("sec-purpose", "prefetch;prerender")]).await;
    get(url(&pre, "impression_url"), vec![]).await;
    // A data-centre address behind our (trusted, loopback) proxy.
    let dc = d("c1").await;
    get(url(&dc, "impression_url"), vec![("x-forwarded-for", "52.95.110.1")]).await;
    // ...and an IPv6 one (RFC 7239 `Forwarded` is read only when the proxy is configured
    // to set it: see hardening.rs).
    let dc2 = d("c2").await;
    get(url(&dc2, "impression_url"), vec![("x-forwarded-for", "[2600:1f18::1]:443")]).await;
    // A forged left-most entry from the client does not fool the proxy chain.
    get(url(&dc2, "impression_url"), vec![("x-forwarded-for", "81.2.69.142, 52.95.110.1")]).await;
    // A link checker's HEAD uses up nothing.
    let checked = d("k1").await;
    let head = app.client.head(url(&checked, "impression_url")).send().await.expect("head");
    assert_eq!(head.status().as_u16(), 200);
    get(url(&checked, "impression_url"), vec![]).await;
    // h1 double-clicks 80 ms apart; h2 clicks, then again on a new decision 31 s later,
    // then once more 10 s after that.
    assert_eq!(get(url(&humans[0], "click_url"), vec![]).await, 302);
    app.clock.advance(80);
    assert_eq!(get(url(&humans[0], "click_url"), vec![]).await, 302);
    get(url(&humans[1], "click_url"), vec![]).await;
    app.clock.advance(31 * SECOND);
    let again = d("h2").await;
    get(url(&again, "impression_url"), vec![]).await;
    get(url(&again, "click_url"), vec![]).await;
    app.clock.advance(10 * SECOND);
    let third = d("h2").await;
    get(url(&third, "impression_url"), vec![]).await;
    get(url(&third, "click_url"), vec![]).await;
    // A click without an impression.
    let blind = d("n1").await;
    get(url(&blind, "click_url"), vec![]).await;
    // A tampered impression counts nothing but still gets its pixel.
    let mut forged = url(&humans[2], "impression_url");
    forged.replace_range(forged.len() - 3.., "AAA");
    assert_eq!(get(forged, vec![]).await, 200);
    // An impression a day and a second late.
    let late = d("l1").await;
    app.clock.advance(24 * HOUR + SECOND);
    get(url(&late, "impression_url"), vec![]).await;

    let t = totals(&app, &f.key, "range=lifetime").await;
    // h1..h5, p1, k1, h2 twice more.
    assert_eq!(t["impressions"], 9, "{t}");
    assert_eq!(t["viewable_impressions"], 5);
    // h1, h2, h2 after the window.
    assert_eq!(t["clicks"], 3);
    // bot, prefetch, datacenter ×3, expired.
    assert_eq!(t["invalid_impressions"], 6);
    // bot ×2, h1's double click, h2 within the window, the blind click.
    assert_eq!(t["invalid_clicks"], 5);

    let (s, ivt) = app.get(&f.key, "/v1/reports/ivt?range=lifetime").await;
    assert_eq!(s, 200);
    let reasons = &ivt["totals"]["by_reason"];
    let expect = [
        ("bot", "impression", 1),
        ("bot", "click", 2),
        ("prefetch", "impression", 1),
        ("datacenter", "impression", 3),
        ("expired", "impression", 1),
        ("duplicate", "click", 2),
        ("no_impression", "click", 1),
        ("excessive_activity", "click", 0),
        ("too_early", "viewable", 1),
    ];
    for (reason, kind, n) in expect {
        assert_eq!(reasons[reason][kind], n, "{reason} {kind}: {ivt}");
    }
    let (_, metrics) = app.get_text(ADMIN, "/metrics").await;
    assert!(metrics.contains(r#"adtally_events_total{type="click",verdict="duplicate"} 2"#), "{metrics}");
}

#[tokio::test]
async fn too_many_clicks_in_an_hour_are_excessive_activity() {
    let config = ServerConfig {
        counting: CountingConfig { max_clicks_per_hour: 2, ..CountingConfig::default() },
        ..ServerConfig::default()
    };
    let app = spawn_app_with(config).await;
    placement_with_floor(&app, "sidebar-main", 0).await;
    let f = fixture_for_existing_placement(&app, "UTC", 2_000_000, 1_000_000_000).await;
    for _ in 0..4 {
        let d = app.decision("sidebar-main", "eager").await;
        app.hit(&url(&d, "impression_url")).await;
        app.hit(&url(&d, "click_url")).await;
        app.clock.advance(31 * SECOND);
    }
    let (_, ivt) = app.get(&f.key, "/v1/reports/ivt?range=lifetime").await;
    assert_eq!(ivt["totals"]["by_reason"]["excessive_activity"]["click"], 2, "{ivt}");
    assert_eq!(totals(&app, &f.key, "range=lifetime").await["clicks"], 2);
}

#[tokio::test]
async fn a_restart_inside_the_dedup_window_still_rejects_the_duplicate() {
    let dir = Arc::new(tempfile::tempdir().expect("dir"));
    let clock = Arc::new(adtally_core::clock::ManualClock::new(adtally_core::clock::Clock::now_ms(
        &adtally_core::clock::SystemClock,
    )));
    let (first, key, old_base) = {
        let app = spawn_app_in(dir.clone(), ServerConfig::default(), clock.clone()).await;
        placement_with_floor(&app, "sidebar-main", 0).await;
        let f = fixture_for_existing_placement(&app, "UTC", 2_000_000, 1_000_000_000).await;
        let d = app.decision("sidebar-main", "restarter").await;
        app.hit(&url(&d, "impression_url")).await;
        app.hit(&url(&d, "click_url")).await;
        (d, f.key, app.base.clone())
    };
    clock.advance(5 * SECOND);
    let app = spawn_app_in(dir, ServerConfig::default(), clock).await;
    // The same decision again (its links name the old port), and a new decision for the
    // same user and ad.
    let moved = |which: &str| url(&first, which).replace(&old_base, &app.base);
    app.hit(&moved("impression_url")).await;
    app.hit(&moved("click_url")).await;
    let d = app.decision("sidebar-main", "restarter").await;
    app.hit(&url(&d, "impression_url")).await;
    app.hit(&url(&d, "click_url")).await;
    let t = totals(&app, &key, "range=lifetime").await;
    assert_eq!((t["impressions"].as_i64(), t["clicks"].as_i64()), (Some(2), Some(1)), "{t}");
    let (_, ivt) = app.get(&key, "/v1/reports/ivt?range=lifetime").await;
    assert_eq!(ivt["totals"]["by_reason"]["duplicate"]["impression"], 1);
    assert_eq!(ivt["totals"]["by_reason"]["duplicate"]["click"], 2);
}

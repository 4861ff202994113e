//! Delivery and billing over HTTP: hard budgets under concurrency, the auction, caps.

use std::sync::Arc;

use adtally_core::clock::{Clock, DAY, HOUR, MINUTE};
use serde_json::{json, Value};

use crate::support::*;

async fn placement(app: &TestApp, floor: i64) {
    let (s, p) = app
        .post(
            ADMIN,
            "/v1/placements",
            json!({"id": "sidebar-main", "name": "s", "format": "sidebar", "floor_cpm_micros": floor}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
}

/// An active campaign for an existing advertiser; returns (campaign id, ad id).
async fn campaign(app: &TestApp, key: &str, fields: Value) -> (i64, i64) {
    let (s, c) = app.post(key, "/v1/campaigns", fields).await;
    assert_eq!(s, 201, "{c}");
    let id = c["id"].as_i64().expect("id");
    let (s, ad) = app
        .post(
            key,
            &format!("/v1/campaigns/{id}/ads"),
            json!({"format": "sidebar", "headline": "h", "target_url": "https://x.example"}),
        )
        .await;
    assert_eq!(s, 201, "{ad}");
    let ad_id = ad["id"].as_i64().expect("id");
    app.post(key, &format!("/v1/campaigns/{id}/submit"), json!({})).await;
    app.post(ADMIN, &format!("/v1/ads/{ad_id}/review"), json!({"decision": "approve"})).await;
    (id, ad_id)
}

/// Fires `n` decisions and their impression beacons from `clients` concurrent clients.
async fn storm(app: &TestApp, n: usize, clients: usize) -> usize {
    let app_base = app.base.clone();
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, base, served) = (app.client.clone(), app_base.clone(), served.clone());
        tasks.push(tokio::spawn(async move {
            for i in (c..n).step_by(clients) {
                let r = client
                    .get(format!("{base}/v1/decision?placement=sidebar-main&uid=s{i}"))
                    .header("user-agent", BROWSER)
                    .send()
                    .await
                    .expect("decision");
                if r.status().as_u16() != 200 {
                    continue;
                }
                let d: Value = r.json().await.expect("json");
                let r = client
                    .get(d["impression_url"].as_str().expect("url"))
                    .header("user-agent", BROWSER)
                    .send()
                    .await
                    .expect("beacon");
                assert_eq!(r.status().as_u16(), 200);
                served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    served.load(std::sync::atomic::Ordering::SeqCst)
}

fn charged_impressions(app: &TestApp) -> i64 {
    // Straight from the raw events, not the rollups the reports use.
    raw_count(app.data_dir(), "SELECT COUNT(*) FROM events WHERE kind = 1 AND cost_micros > 0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_of_500_impressions_buys_exactly_500_under_concurrency() {
    let app = spawn_app().await;
    placement(&app, 2_000_000).await;
    let f = fixture_for_existing_placement(&app, "UTC", 2_000_000, 1_000_000).await;
    let served = storm(&app, 2000, 32).await;
    assert!(served >= 500, "{served}");
    let t = totals(&app, &f.key, "range=lifetime").await;
    assert_eq!(t["spend_micros"], 1_000_000, "{t}");
    assert_eq!(charged_impressions(&app), 500);
    let (_, c) = app.get(&f.key, &format!("/v1/campaigns/{}", f.campaign_id)).await;
    assert_eq!(c["spend_micros"], 1_000_000);
    // The background task may have got there first; either way the campaign is done.
    app.state.housekeeping().expect("housekeeping");
    let (_, c) = app.get(&f.key, &format!("/v1/campaigns/{}", f.campaign_id)).await;
    assert_eq!(c["status"], "completed", "a spent budget completes the campaign");
    let (_, me) = app.get(&f.key, "/v1/me").await;
    assert_eq!(me["balance_micros"], 5_000_000_000i64 - 1_000_000);
    let (_, ledger) = app.get(&f.key, "/v1/ledger").await;
    let sum: i64 = ledger["items"].as_array().expect("items").iter().filter_map(|e| e["amount_micros"].as_i64()).sum();
    assert_eq!(sum, me["balance_micros"].as_i64().expect("balance"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_campaigns_share_one_balance_without_overspending_it() {
    let app = spawn_app().await;
    placement(&app, 2_000_000).await;
    let (_, adv) = app.post(ADMIN, "/v1/advertisers", json!({"name": "Shared", "email": "s@s.example"})).await;
    let id = adv["id"].as_i64().expect("id");
    let (_, key) = app.post(ADMIN, &format!("/v1/advertisers/{id}/keys"), json!({})).await;
    let key = key["api_key"].as_str().expect("key").to_owned();
    app.post(ADMIN, &format!("/v1/advertisers/{id}/credits"), json!({"amount_micros": 1_000_000, "kind": "topup"}))
        .await;
    for name in ["one", "two"] {
        campaign(
            &app,
            &key,
            json!({"name": name, "cpm_bid_micros": 2_000_000, "total_budget_micros": 100_000_000, "pacing": "asap"}),
        )
        .await;
    }
    storm(&app, 2000, 32).await;
    let t = totals(&app, &key, "range=lifetime").await;
    assert_eq!(t["spend_micros"], 1_000_000, "{t}");
    assert_eq!(charged_impressions(&app), 500);
    let (_, me) = app.get(&key, "/v1/me").await;
    assert_eq!(me["balance_micros"], 0);
    // With no money left, nothing is served.
    let r = app.client.get(app.url("/v1/decision?placement=sidebar-main&uid=late")).send().await.expect("decision");
    assert_eq!(r.status().as_u16(), 204);
}

#[tokio::test]
async fn the_auction_weighs_bids_by_quality_and_charges_the_second_price() {
    let app = spawn_app().await;
    placement(&app, 500_000).await;
    let f = fixture_for_existing_placement(&app, "UTC", 3_000_000, 1_000_000_000).await;
    let (b_campaign, b_ad) =
        campaign(&app, &f.key, json!({"name": "B", "cpm_bid_micros": 2_000_000, "total_budget_micros": 1_000_000_000}))
            .await;

    // Equal (prior) quality: the higher bid wins every time and pays the other's bid.
    for i in 0..20 {
        let d = app.decision("sidebar-main", &format!("a{i}")).await;
        assert_eq!(d["ad"]["campaign_id"], f.campaign_id);
    }
    let d = app.decision("sidebar-main", "payer").await;
    app.hit(d["impression_url"].as_str().expect("url")).await;
    let (_, c) = app.get(&f.key, &format!("/v1/campaigns/{}", f.campaign_id)).await;
    assert_eq!(c["spend_micros"], 2_000, "one impression at the runner-up's 2.00 CPM");

    // B's ad earns a 10% click rate over 200 impressions of history.
    let now = adtally_core::jiff::Timestamp::now();
    let mut lines = Vec::new();
    for i in 0..200 {
        let at = (now - adtally_core::jiff::SignedDuration::from_secs(3600 - i)).to_string();
        lines.push(format!(r#"{{"event_id":"h{i}","type":"impression","at":"{at}","campaign_id":{b_campaign},"ad_id":{b_ad},"placement":"sidebar-main","uid":"hist{i}"}}"#));
        if i % 10 == 0 {
            lines.push(format!(r#"{{"event_id":"c{i}","type":"click","at":"{at}","campaign_id":{b_campaign},"ad_id":{b_ad},"placement":"sidebar-main","uid":"hist{i}"}}"#));
        }
    }
    let r =
        app.client.post(app.url("/v1/events")).bearer_auth(ADMIN).body(lines.join("\n")).send().await.expect("import");
    let summary: Value = r.json().await.expect("json");
    assert_eq!(summary["accepted"], 220, "{summary}");
    // Housekeeping re-ranks every few seconds; do it now.
    app.state.rerank();

    // Now B ranks 2.00 × 21/300 = 0.14 against A's 3.00 × 2/201 ≈ 0.03: B wins every
    // auction and pays the floor, since A's rank would need only 0.43 CPM from B.
    let before =
        app.get(&f.key, &format!("/v1/campaigns/{b_campaign}")).await.1["spend_micros"].as_i64().expect("spend");
    for i in 0..20 {
        let d = app.decision("sidebar-main", &format!("b{i}")).await;
        assert_eq!(d["ad"]["campaign_id"], b_campaign);
        app.hit(d["impression_url"].as_str().expect("url")).await;
    }
    let after =
        app.get(&f.key, &format!("/v1/campaigns/{b_campaign}")).await.1["spend_micros"].as_i64().expect("spend");
    assert_eq!(after - before, 20 * 500);
}

#[tokio::test]
async fn frequency_caps_and_dates_limit_who_sees_what() {
    let app = spawn_app().await;
    placement(&app, 0).await;
    let f = fixture_for_existing_placement(&app, "UTC", 2_000_000, 1_000_000_000).await;
    let (s, c) = app.post(&f.key, &format!("/v1/campaigns/{}/pause", f.campaign_id), json!({})).await;
    assert_eq!((s, c["status"].as_str()), (200, Some("paused")));
    let r = app.client.get(app.url("/v1/decision?placement=sidebar-main&uid=x")).send().await.expect("decision");
    assert_eq!(r.status().as_u16(), 204, "a paused campaign serves nothing from the next request on");
    let (s, c) = app
        .client
        .patch(app.url(&format!("/v1/campaigns/{}", f.campaign_id)))
        .bearer_auth(&f.key)
        .json(&json!({"frequency_cap": {"impressions": 2, "per_hours": 1}}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .expect("patch");
    assert_eq!(s, 200, "{:?}", c.text().await);
    app.post(&f.key, &format!("/v1/campaigns/{}/resume", f.campaign_id), json!({})).await;

    for _ in 0..2 {
        let d = app.decision("sidebar-main", "capped").await;
        app.hit(d["impression_url"].as_str().expect("url")).await;
    }
    let r = app
        .client
        .get(app.url("/v1/decision?placement=sidebar-main&uid=capped"))
        .header("user-agent", BROWSER)
        .send()
        .await
        .expect("decision");
    assert_eq!(r.status().as_u16(), 204, "two impressions in the hour: capped");
    app.decision("sidebar-main", "someone-else").await;
    app.clock.advance(HOUR + MINUTE);
    app.decision("sidebar-main", "capped").await;

    // An end date in the past stops serving.
    let past = (adtally_core::jiff::Timestamp::now() - adtally_core::jiff::SignedDuration::from_hours(2)).to_string();
    let r = app
        .client
        .patch(app.url(&format!("/v1/campaigns/{}", f.campaign_id)))
        .bearer_auth(&f.key)
        .json(&json!({"start_at": null, "end_at": past}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status().as_u16(), 200);
    let r = app.client.get(app.url("/v1/decision?placement=sidebar-main&uid=new")).send().await.expect("decision");
    assert_eq!(r.status().as_u16(), 204);
    // The background task may have got there first; either way the campaign is done.
    app.state.housekeeping().expect("housekeeping");
    let (_, c) = app.get(&f.key, &format!("/v1/campaigns/{}", f.campaign_id)).await;
    assert_eq!(c["status"], "completed", "a passed end date completes the campaign");
}

/// An import of days the writer no longer keeps in memory (older than yesterday) used to
/// charge them from zero, and each housekeeping pass forgot them again: two imports of
/// the same day last week paid two daily budgets. The day's spend now comes from the
/// store.
#[tokio::test]
async fn an_import_of_a_past_day_stays_within_that_days_budget() {
    use crate::attribution::{import, line};
    let app = spawn_app().await;
    let f = fixture(&app, "sidebar-main", 2_000_000).await;
    let (s, c) =
        app.patch(&f.key, &format!("/v1/campaigns/{}", f.campaign_id), json!({"daily_budget_micros": 10_000})).await;
    assert_eq!(s, 200, "{c}");
    // Noon UTC five days ago; every impression costs 2 000 micros.
    let day = app.clock.now_ms() / DAY * DAY - 5 * DAY;
    let lines = |from: i64| -> Vec<String> {
        (from..from + 4)
            .map(|i| {
                line(
                    &format!("i{i}"),
                    "impression",
                    day + 12 * HOUR + i * MINUTE,
                    f.campaign_id,
                    f.ad_id,
                    &format!("u{i}"),
                )
            })
            .collect()
    };
    import(&app, &lines(0)).await;
    let state = app.state.clone();
    tokio::task::spawn_blocking(move || state.housekeeping()).await.expect("join").expect("housekeeping");
    import(&app, &lines(4)).await;

    let date = adtally_core::jiff::Timestamp::from_millisecond(day).expect("day").to_string()[..10].to_owned();
    let t = totals(&app, &f.key, &format!("from={date}&to={date}")).await;
    assert_eq!((t["impressions"].as_i64(), t["spend_micros"].as_i64()), (Some(8), Some(10_000)), "{t}");
}

/// An advertiser moving from Los Angeles to Tokyo at 20:00 UTC: Tokyo's day began at
/// 15:00 UTC, so what was spent since counts against today's budget there. The writer
/// kept the spend under Los Angeles' day and charged Tokyo's day from zero.
#[tokio::test]
async fn a_time_zone_change_keeps_the_daily_budget() {
    use crate::attribution::{import, line};
    let at = |h: i64| 1_795_392_000_000 + h * HOUR; // Monday 2026-11-23, h:00 UTC
    let clock = Arc::new(adtally_core::clock::ManualClock::new(at(20)));
    let app = spawn_app_in(Arc::new(tempfile::tempdir().expect("dir")), Default::default(), clock).await;
    let (s, _) =
        app.post(ADMIN, "/v1/placements", json!({"id": "sidebar-main", "name": "s", "format": "sidebar"})).await;
    assert_eq!(s, 201);
    let f = fixture_for_existing_placement(&app, "America/Los_Angeles", 2_000_000, 1_000_000_000).await;
    let (s, _) =
        app.patch(&f.key, &format!("/v1/campaigns/{}", f.campaign_id), json!({"daily_budget_micros": 10_000})).await;
    assert_eq!(s, 200);
    // 2 000 micros each: 10, 16, 17 and 18 UTC are one day in Los Angeles (8 000 spent).
    let lines: Vec<String> = [10, 16, 17, 18]
        .iter()
        .map(|h| line(&format!("e{h}"), "impression", at(*h), f.campaign_id, f.ad_id, &format!("u{h}")))
        .collect();
    import(&app, &lines).await;

    let (s, a) =
        app.patch(ADMIN, &format!("/v1/advertisers/{}", f.advertiser_id), json!({"timezone": "Asia/Tokyo"})).await;
    assert_eq!(s, 200, "{a}");
    let lines: Vec<String> = (0..5)
        .map(|i| line(&format!("n{i}"), "impression", at(20), f.campaign_id, f.ad_id, &format!("n{i}")))
        .collect();
    import(&app, &lines).await;
    // Tokyo's 2026-11-24: 16, 17 and 18 UTC (6 000), then only 4 000 more of the five.
    let t = totals(&app, &f.key, "from=2026-11-24&to=2026-11-24").await;
    assert_eq!((t["impressions"].as_i64(), t["spend_micros"].as_i64()), (Some(8), Some(10_000)), "{t}");
}

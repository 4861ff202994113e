//! Regression tests for the holes adversarial testing found (issue 8): each test names
//! the defect it pins down and fails on the code that had it.

use adtally_core::clock::Clock;
use serde_json::{json, Value};

use crate::support::*;

async fn postback(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    app.post(key, "/v1/conversions", body).await
}

/// Defect 1: two advertisers' unattributed conversions in one quarter hour shared a
/// rollup row, so A saw both and B saw none.
#[tokio::test]
async fn unattributed_conversions_stay_with_their_advertiser() {
    let app = spawn_app().await;
    let a = fixture(&app, "sidebar-main", 2_000_000).await;
    let b = fixture_for_existing_placement(&app, "UTC", 2_000_000, 1_000_000_000).await;
    let (s, r) = postback(&app, &a.key, json!({"uid": "nobody-a", "value_micros": 1_000_000})).await;
    assert_eq!(s, 201, "{r}");
    let (s, r) = postback(&app, &b.key, json!({"uid": "nobody-b", "value_micros": 2_000_000})).await;
    assert_eq!(s, 201, "{r}");

    let ta = totals(&app, &a.key, "range=today").await;
    assert_eq!((ta["conversions"].as_i64(), ta["revenue_micros"].as_i64()), (Some(1), Some(1_000_000)));
    let tb = totals(&app, &b.key, "range=today").await;
    assert_eq!((tb["conversions"].as_i64(), tb["revenue_micros"].as_i64()), (Some(1), Some(2_000_000)));
    let (_, r) = app.get(&a.key, "/v1/reports?range=today&group_by=campaign,ad,placement").await;
    assert_eq!(r["rows"][0]["campaign_id"], Value::Null, "{r}");
    assert_eq!(r["rows"][0]["ad_id"], Value::Null, "{r}");

    let check = app.store.consistency_check().expect("check");
    assert!(check.is_consistent(), "{check:?}");
    assert_eq!(check.rollups[&a.advertiser_id].value_micros, 1_000_000);
    assert_eq!(check.rollups[&b.advertiser_id].value_micros, 2_000_000);
}

/// Defect 2, the attack: anonymous pixels claiming 10^15 each count for the
/// advertiser's cap, so the sums stay exact and far from overflow.
#[tokio::test]
async fn the_conversion_pixel_is_capped_by_the_advertiser() {
    let app = spawn_app().await;
    let a = fixture(&app, "sidebar-main", 2_000_000).await;
    let (_, me) = app.get(&a.key, "/v1/me").await;
    assert_eq!(me["max_conversion_value_micros"], 1_000_000_000);
    let hits = 9_300;
    let mut pending = Vec::new();
    for i in 0..hits {
        let url = app.url(&format!("/t/conv?advertiser={}&value_micros=1000000000000000&uid=u{i}", a.advertiser_id));
        let client = app.client.clone();
        pending.push(tokio::spawn(async move { client.get(url).header("user-agent", BROWSER).send().await }));
        if pending.len() == 64 {
            for p in pending.drain(..) {
                assert_eq!(p.await.expect("join").expect("pixel").status().as_u16(), 200);
            }
        }
    }
    for p in pending {
        assert_eq!(p.await.expect("join").expect("pixel").status().as_u16(), 200);
    }
    let t = totals(&app, &a.key, "range=today").await;
    assert_eq!(t["conversions"].as_i64(), Some(hits));
    assert_eq!(t["revenue_micros"].as_i64(), Some(hits * 1_000_000_000));
    let (s, _) = app.get(ADMIN, "/v1/reports?range=today").await;
    assert_eq!(s, 200);

    // The operator can lower the cap; a new pixel counts for the new cap.
    let (s, r) = app
        .client
        .patch(app.url(&format!("/v1/advertisers/{}", a.advertiser_id)))
        .bearer_auth(ADMIN)
        .json(&json!({"max_conversion_value_micros": 5_000_000}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .expect("patch");
    assert_eq!(s, 200, "{:?}", r.text().await);
    let url = app.url(&format!("/t/conv?advertiser={}&value_micros=9000000&uid=late", a.advertiser_id));
    assert_eq!(app.hit(&url).await.status().as_u16(), 200);
    let t = totals(&app, &a.key, "range=today").await;
    assert_eq!(t["revenue_micros"].as_i64(), Some(hits * 1_000_000_000 + 5_000_000));
}

/// Defect 2, the root: sums that pass `i64` (here 9 300 imported conversions of 10^15)
/// no longer make SQLite's `SUM` fail; every report still answers.
#[tokio::test]
async fn reports_survive_sums_beyond_i64() {
    let app = spawn_app().await;
    let a = fixture(&app, "sidebar-main", 2_000_000).await;
    let at = adtally_core::jiff::Timestamp::from_millisecond(app.clock.now_ms() - 60_000).expect("time");
    let body: String = (0..9_300)
        .map(|i| {
            format!(
                "{{\"event_id\":\"c{i}\",\"type\":\"conversion\",\"at\":\"{at}\",\"advertiser_id\":{},\"uid\":\"u{i}\",\"value_micros\":1000000000000000}}\n",
                a.advertiser_id
            )
        })
        .collect();
    let r = app.client.post(app.url("/v1/events")).bearer_auth(ADMIN).body(body).send().await.expect("import");
    assert_eq!(r.status().as_u16(), 200);
    let t = totals(&app, &a.key, "range=today").await;
    assert_eq!(t["conversions"].as_i64(), Some(9_300));
    assert_eq!(t["revenue_micros"].as_i64(), Some(i64::MAX), "saturated, not an error");
    for path in ["/v1/reports?range=lifetime&group_by=campaign,ad", "/v1/reports?range=today&format=csv"] {
        let (s, _) = app.get_text(&a.key, path).await;
        assert_eq!(s, 200, "{path}");
    }
    let (s, _) = app.get_text(ADMIN, "/v1/reports?range=today&granularity=hour").await;
    assert_eq!(s, 200);
}

/// Defect 8: an advertiser key posting `{}` to an admin route learned the route's body
/// schema (400) instead of being refused (403).
#[tokio::test]
async fn admin_routes_refuse_before_reading_the_body() {
    let app = spawn_app().await;
    let a = fixture(&app, "sidebar-main", 2_000_000).await;
    for path in
        ["/v1/advertisers", "/v1/placements", "/v1/promo-codes", "/v1/advertisers/1/credits", "/v1/ads/1/review"]
    {
        let (s, body) = app.post(&a.key, path, json!({})).await;
        assert_eq!((s, body["error"]["code"].as_str()), (403, Some("forbidden")), "{path}: {body}");
    }
    let r = app.client.post(app.url("/v1/events")).bearer_auth(&a.key).body("not json").send().await.expect("import");
    assert_eq!(r.status().as_u16(), 403);
    let r = app
        .client
        .patch(app.url("/v1/advertisers/1"))
        .bearer_auth(&a.key)
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status().as_u16(), 403);
}

/// Defect 3: an anonymous pixel that claimed an order id first made the advertiser's own
/// postback for it `duplicate_order`, and its revenue was lost. The postback replaces it.
#[tokio::test]
async fn the_postback_replaces_a_pixel_with_the_same_order_id() {
    let app = spawn_app().await;
    let a = fixture(&app, "sidebar-main", 2_000_000).await;
    let pixel = |value: i64| {
        app.url(&format!("/t/conv?advertiser={}&uid=thief&value_micros={value}&order_id=ORD-1001", a.advertiser_id))
    };
    assert_eq!(app.hit(&pixel(1)).await.status().as_u16(), 200);
    let (s, r) =
        postback(&app, &a.key, json!({"uid": "buyer", "value_micros": 250_000_000, "order_id": "ORD-1001"})).await;
    assert_eq!((s, r["status"].as_str()), (201, Some("recorded")), "{r}");
    // Afterwards neither a pixel nor a second postback can take the order again.
    assert_eq!(app.hit(&pixel(7)).await.status().as_u16(), 200);
    let (s, r) = postback(&app, &a.key, json!({"uid": "buyer", "value_micros": 1, "order_id": "ORD-1001"})).await;
    assert_eq!((s, r["status"].as_str()), (200, Some("duplicate_order")), "{r}");

    let t = totals(&app, &a.key, "range=today").await;
    assert_eq!((t["conversions"].as_i64(), t["revenue_micros"].as_i64()), (Some(1), Some(250_000_000)));
    let (_, ivt) = app.get(&a.key, "/v1/reports/ivt?range=today").await;
    assert_eq!(ivt["totals"]["by_reason"]["duplicate"]["conversion"], 1, "{ivt}");
    let check = app.store.consistency_check().expect("check");
    assert!(check.is_consistent(), "{check:?}");
}

/// Defect 3 inside one batch: the pixel and the postback committed together.
#[test]
fn a_postback_replaces_a_pixel_in_the_same_batch() {
    use adtally_core::event::{Country, Device, Event, EventKind, Verdict};
    use adtally_store::{Idempotency, PendingEvent, SqliteStore, Store};
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let a = store.create_advertiser(&adtally_core::catalog::Advertiser::new("A", "a@a.example", "UTC", 0)).expect("a");
    let conversion = |value_micros: i64, authoritative: bool| PendingEvent {
        event: Event {
            at_ms: 1_800_000_000_000,
            kind: EventKind::Conversion,
            verdict: Verdict::Valid,
            decision_id: None,
            advertiser_id: a.id,
            campaign_id: None,
            ad_id: None,
            placement_id: None,
            user_key: 1,
            ip_key: None,
            device: Device::Desktop,
            country: Country::UNKNOWN,
            cost_micros: 0,
            value_micros,
        },
        idempotency: Some(Idempotency::Order { key: format!("order:{}:X", a.id), authoritative }),
        skipped_as_duplicate: false,
    };
    let mut batch = vec![conversion(5, false), conversion(900, true), conversion(6, false)];
    store.append_events(1_800_000_000_000, &mut batch, None, &mut |_, _, _| {}).expect("append");
    let skipped: Vec<bool> = batch.iter().map(|p| p.skipped_as_duplicate).collect();
    assert_eq!(skipped, [false, false, true]);
    assert_eq!(batch[0].event.verdict, Verdict::Duplicate);
    let check = store.consistency_check().expect("check");
    assert!(check.is_consistent(), "{check:?}");
    let rows = store.rollup_rows(&adtally_store::RollupQuery { to_ms: i64::MAX, ..Default::default() }).expect("rows");
    let valid: i128 = rows.iter().filter(|r| r.verdict == Verdict::Valid).map(|r| r.sums.value_micros).sum();
    assert_eq!(valid, 900);
}

/// Defect 5: an internationalized target URL was stored raw and the click answered
/// non-ASCII bytes in `Location`. It is stored normalized and redirected to as such.
#[tokio::test]
async fn internationalized_target_urls_are_normalized() {
    let app = spawn_app().await;
    let a = fixture(&app, "sidebar-main", 2_000_000).await;
    let (s, ad) = app
        .client
        .patch(app.url(&format!("/v1/ads/{}", a.ad_id)))
        .bearer_auth(&a.key)
        .json(&json!({"target_url": "https://bücher.example/ü?q=straße"}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .expect("patch");
    let ad: Value = ad.json().await.expect("json");
    assert_eq!(s, 200, "{ad}");
    let expected = "https://xn--bcher-kva.example/%C3%BC?q=stra%C3%9Fe";
    assert_eq!(ad["revision"]["target_url"], expected);
    let (s, ad) = app.post(ADMIN, &format!("/v1/ads/{}/review", a.ad_id), json!({"decision": "approve"})).await;
    assert_eq!((s, ad["target_url"].as_str()), (200, Some(expected)));
    let d = app.decision("sidebar-main", "reader").await;
    app.hit(d["impression_url"].as_str().expect("url")).await;
    let r = app.hit(d["click_url"].as_str().expect("url")).await;
    assert_eq!(r.status().as_u16(), 302);
    assert_eq!(landing(&r.headers()["location"]), expected);

    for bad in [
        "https://bank.example@phish.example/",
        "javascript:alert(1)",
        "https://",
        "https://exa mple.com/",
        "ftp://files.example/",
    ] {
        let (s, body) = app
            .post(
                &a.key,
                &format!("/v1/campaigns/{}/ads", a.campaign_id),
                json!({"format": "sidebar", "headline": "h", "body": "b", "target_url": bad}),
            )
            .await;
        assert_eq!(s, 400, "{bad}: {body}");
    }
}

/// Defect 4: after an approved ad's target URL was edited, clicks on ads served before
/// the edit went to the new, unreviewed URL. The approved version keeps serving; a click
/// goes to the target of the version its decision served.
#[tokio::test]
async fn clicks_go_to_the_reviewed_version_that_was_served() {
    let app = spawn_app().await;
    let a = fixture(&app, "sidebar-main", 2_000_000).await;
    let served_before = app.decision("sidebar-main", "early").await;
    let patch = |target: &'static str| {
        app.client
            .patch(app.url(&format!("/v1/ads/{}", a.ad_id)))
            .bearer_auth(&a.key)
            .json(&json!({"target_url": target, "headline": "Changed"}))
            .send()
    };
    let r = patch("https://phish.example/login").await.expect("patch");
    assert_eq!(r.status().as_u16(), 200);
    let ad: Value = r.json().await.expect("json");
    assert_eq!((ad["status"].as_str(), ad["version"].as_i64()), (Some("approved"), Some(1)), "{ad}");
    assert_eq!(ad["target_url"], "https://acme.example/landing?x=1");
    assert_eq!(ad["revision"]["status"], "pending_review");
    assert_eq!(ad["revision"]["target_url"], "https://phish.example/login");
    let (_, queue) = app.get(ADMIN, "/v1/ads?status=pending_review").await;
    assert_eq!(queue["items"][0]["id"].as_i64(), Some(a.ad_id), "{queue}");

    // The approved version keeps serving, and its clicks go where it was approved to.
    let served_during = app.decision("sidebar-main", "middle").await;
    assert_eq!(served_during["ad"]["headline"], "Hello");
    for d in [&served_before, &served_during] {
        app.hit(d["impression_url"].as_str().expect("url")).await;
        let r = app.hit(d["click_url"].as_str().expect("url")).await;
        assert_eq!(landing(&r.headers()["location"]), "https://acme.example/landing?x=1");
    }

    // Rejected: nothing changes for visitors.
    let (s, ad) = app
        .post(ADMIN, &format!("/v1/ads/{}/review", a.ad_id), json!({"decision": "reject", "reason": "phishing"}))
        .await;
    assert_eq!(
        (s, ad["status"].as_str(), ad["revision"]["status"].as_str()),
        (200, Some("approved"), Some("rejected"))
    );
    assert_eq!(app.decision("sidebar-main", "later").await["ad"]["headline"], "Hello");

    // An honest edit, approved, becomes version 3 (version 2 was the rejected content);
    // old decisions still go to version 1.
    let r = patch("https://acme.example/new").await.expect("patch");
    assert_eq!(r.status().as_u16(), 200);
    let (s, ad) = app.post(ADMIN, &format!("/v1/ads/{}/review", a.ad_id), json!({"decision": "approve"})).await;
    assert_eq!((s, ad["version"].as_i64(), ad["revision"].clone()), (200, Some(3), Value::Null), "{ad}");
    let served_after = app.decision("sidebar-main", "late").await;
    assert_eq!(served_after["ad"]["headline"], "Changed");
    app.hit(served_after["impression_url"].as_str().expect("url")).await;
    let r = app.hit(served_after["click_url"].as_str().expect("url")).await;
    assert_eq!(landing(&r.headers()["location"]), "https://acme.example/new");
    let r = app.hit(served_before["click_url"].as_str().expect("url")).await;
    assert_eq!(landing(&r.headers()["location"]), "https://acme.example/landing?x=1");
}

/// Defect 14: multi-step writes were several transactions, so a failure half-way left
/// half a change (a top-up without its bonus, a clone without its ads, an approved ad
/// whose campaign never went live). A trigger makes the second step fail; nothing of
/// the first may remain.
#[test]
fn multi_step_writes_are_one_transaction() {
    use adtally_core::catalog::{Ad, AdContent, AdStatus, Advertiser, Campaign, CampaignStatus, Format};
    use adtally_store::{SqliteStore, Store};
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let side = rusqlite::Connection::open(dir.path().join("adtally.db")).expect("side connection");
    let fail_when = |sql: &str| side.execute_batch(sql).expect("trigger");
    let a = store.create_advertiser(&Advertiser::new("A", "a@a.example", "UTC", 0)).expect("a");
    let count = |table: &str| -> i64 {
        side.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).expect("count")
    };

    // A top-up and its bonus.
    fail_when("CREATE TRIGGER no_bonus BEFORE INSERT ON credits WHEN NEW.kind = 'bonus' BEGIN SELECT RAISE(ABORT, 'injected'); END;");
    assert!(store.add_topup(a.id, 100_000_000, None, Some(10_000_000), 1).is_err());
    assert_eq!(count("credits"), 0, "the top-up was rolled back with its bonus");

    // A campaign cloned with its ads.
    let mut campaign = Campaign::draft(a.id, "Spring", 1_000_000, 10_000_000, 1);
    campaign.status = CampaignStatus::PendingReview;
    let ad = Ad::new(0, a.id, AdContent::new(Format::Sidebar, "h", "https://a.example/"), 1);
    fail_when("CREATE TRIGGER no_ads BEFORE INSERT ON ads BEGIN SELECT RAISE(ABORT, 'injected'); END;");
    assert!(store.create_campaign_with_ads(&campaign, &[ad.clone(), ad.clone()]).is_err());
    assert_eq!(count("campaigns"), 0, "the clone was rolled back with its ads");
    fail_when("DROP TRIGGER no_ads;");

    // An ad approved and its campaign activated.
    let campaign = store.create_campaign_with_ads(&campaign, &[ad]).expect("campaign");
    let mut ad = store.ads(Some(campaign.id)).expect("ads").remove(0);
    let read = ad.stamp();
    ad.approve();
    fail_when("CREATE TRIGGER no_activation BEFORE UPDATE ON campaigns BEGIN SELECT RAISE(ABORT, 'injected'); END;");
    assert!(store.review_ad(&ad, read, 2).is_err());
    assert_eq!(store.ad(ad.id).expect("ad").map(|a| a.status), Some(AdStatus::PendingReview));
    assert_eq!(count("ad_versions"), 0);
    fail_when("DROP TRIGGER no_activation;");
    store.review_ad(&ad, read, 2).expect("review");
    assert_eq!(store.campaign(campaign.id).expect("c").map(|c| c.status), Some(CampaignStatus::Active));
    assert_eq!(count("ad_versions"), 1);
}

/// The `video` format: a video ad needs an https MP4/WebM `video_url`, the decision
/// carries it, and its viewable counts only 1.5 s after the impression (`too_early`).
#[tokio::test]
async fn video_ads_carry_their_file_and_need_longer_in_view() {
    let app = spawn_app().await;
    let (s, _) =
        app.post(ADMIN, "/v1/placements", json!({"id": "pre-roll", "name": "Pre-roll", "format": "video"})).await;
    assert_eq!(s, 201);
    let f = fixture_for_existing_placement(&app, "UTC", 2_000_000, 1_000_000_000).await;
    let ads = format!("/v1/campaigns/{}/ads", f.campaign_id);
    let base = json!({"format": "video", "headline": "Watch", "target_url": "https://acme.example/"});
    for (video_url, ok) in [
        (None, false),
        (Some("http://cdn.example/a.mp4"), false),
        (Some("https://cdn.example/a.gif"), false),
        (Some("https://cdn.example/clip.WEBM?v=2"), true),
    ] {
        let mut body = base.clone();
        if let Some(v) = video_url {
            body["video_url"] = json!(v);
        }
        let (s, ad) = app.post(&f.key, &ads, body).await;
        assert_eq!(s == 201, ok, "{video_url:?}: {ad}");
        if ok {
            let (s, _) = app.post(ADMIN, &format!("/v1/ads/{}/review", ad["id"]), json!({"decision": "approve"})).await;
            assert_eq!(s, 200);
        }
    }
    let (s, body) = app.post(&f.key, &ads, json!({"format": "sidebar", "headline": "h", "target_url": "https://a.example/", "video_url": "https://cdn.example/a.mp4"})).await;
    assert_eq!(s, 400, "{body}");

    let d = app.decision("pre-roll", "viewer").await;
    assert_eq!(
        (d["ad"]["format"].as_str(), d["ad"]["video_url"].as_str()),
        (Some("video"), Some("https://cdn.example/clip.WEBM?v=2"))
    );
    app.hit(d["impression_url"].as_str().expect("url")).await;
    app.clock.advance(1_000);
    app.hit(d["viewable_url"].as_str().expect("url")).await;
    app.clock.advance(600);
    app.hit(d["viewable_url"].as_str().expect("url")).await;
    let t = totals(&app, &f.key, "range=today").await;
    assert_eq!((t["impressions"].as_i64(), t["viewable_impressions"].as_i64()), (Some(1), Some(1)));
    let (_, ivt) = app.get(&f.key, "/v1/reports/ivt?range=today").await;
    assert_eq!(ivt["totals"]["by_reason"]["too_early"]["viewable"], 1, "{ivt}");
}

/// Defect 13, through the dashboard: a sign-in with a wrong key is a failed
/// authentication like a wrong Bearer key, so guessing through `/v1/session` hits the
/// same per-address limit.
#[tokio::test]
async fn wrong_dashboard_sign_ins_count_towards_the_failure_limit() {
    let app = spawn_app().await;
    let sign_in = |key: String| {
        let request = app.client.post(app.url("/v1/session")).json(&json!({"api_key": key}));
        async move {
            let r = request.send().await.expect("sign in");
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    for i in 0..20 {
        assert_eq!(sign_in(format!("guess-{i}")).await.0, 401, "guess {i}");
    }
    let (s, body) = sign_in(ADMIN.to_owned()).await;
    assert_eq!((s, body["error"]["code"].as_str()), (429, Some("too_many_failed_authentications")), "{body}");
}

/// Defect 19: a wrong promo code answered 404 and was never counted, so any advertiser
/// could try codes without limit until one paid out another customer's credit.
#[tokio::test]
async fn guessing_promo_codes_counts_towards_the_failure_limit() {
    let app = spawn_app().await;
    let a = fixture(&app, "sidebar-main", 2_000_000).await;
    let (s, _) = app.post(ADMIN, "/v1/promo-codes", json!({"code": "WELCOME-7F3K", "amount_micros": 5_000_000})).await;
    assert_eq!(s, 201);
    for i in 0..20 {
        let (s, body) = app.post(&a.key, "/v1/promo-codes/redeem", json!({"code": format!("WELCOME-{i:04}")})).await;
        assert_eq!((s, body["error"]["code"].as_str()), (404, Some("promo_not_found")), "guess {i}");
    }
    let (s, body) = app.post(&a.key, "/v1/promo-codes/redeem", json!({"code": "WELCOME-7F3K"})).await;
    assert_eq!((s, body["error"]["code"].as_str()), (429, Some("too_many_failed_authentications")), "{body}");
    assert_eq!(raw_count(app.data_dir(), "SELECT COUNT(*) FROM promo_redemptions"), 0);
}

/// Retention: raw events older than `retention_days` are deleted, their rollups kept, so
/// lifetime reports still count them and the store stays consistent.
#[tokio::test]
async fn retention_deletes_old_raw_events_and_keeps_their_rollups() {
    let config = adtally_server::ServerConfig { retention_days: Some(35), ..Default::default() };
    let app = spawn_app_with(config).await;
    let f = fixture(&app, "sidebar-main", 2_000_000).await;
    let now = app.clock.now_ms();
    let line = |id: &str, days_ago: i64| {
        let at = adtally_core::jiff::Timestamp::from_millisecond(now - days_ago * 86_400_000).expect("time");
        format!(
            "{{\"event_id\":\"{id}\",\"type\":\"impression\",\"at\":\"{at}\",\"campaign_id\":{},\"ad_id\":{},\"placement\":\"sidebar-main\",\"uid\":\"{id}\"}}\n",
            f.campaign_id, f.ad_id
        )
    };
    let body: String = [line("old-1", 60), line("old-2", 40), line("new-1", 5)].concat();
    let r = app.client.post(app.url("/v1/events")).bearer_auth(ADMIN).body(body).send().await.expect("import");
    assert_eq!(r.status().as_u16(), 200);
    let state = app.state.clone();
    tokio::task::spawn_blocking(move || state.housekeeping()).await.expect("join").expect("housekeeping");

    let raw = raw_count(app.data_dir(), "SELECT COUNT(*) FROM events");
    assert_eq!(raw, 1, "only the event of 5 days ago is kept raw");
    assert_eq!(totals(&app, &f.key, "range=lifetime").await["impressions"], 3);
    let check = app.store.consistency_check().expect("check");
    assert!(check.is_consistent(), "{check:?}");
    assert_eq!(check.raw_events(), 1);
}

/// Conversions by click id (issue 12): the click redirect hands the landing page an
/// `adtally_click` id; a postback or pixel with it is the clicking user's conversion, so
/// it is credited to the clicked campaign. Another advertiser's or a forged id is refused.
#[tokio::test]
async fn conversions_by_click_id_are_credited_to_the_click() {
    let app = spawn_app().await;
    let a = fixture(&app, "sidebar-main", 2_000_000).await;
    let d = app.decision("sidebar-main", "page-visitor").await;
    app.hit(d["impression_url"].as_str().expect("url")).await;
    let r = app.hit(d["click_url"].as_str().expect("url")).await;
    let location = r.headers()["location"].to_str().expect("ascii").to_owned();
    let click_id = location.split("adtally_click=").nth(1).expect("click id in the redirect").to_owned();
    assert_eq!(landing(&r.headers()["location"]), "https://acme.example/landing?x=1");

    let (s, body) =
        postback(&app, &a.key, json!({"click_id": click_id, "value_micros": 5_000_000, "order_id": "C-1"})).await;
    assert_eq!(s, 201, "{body}");
    let pixel = app.url(&format!("/t/conv?advertiser={}&click_id={click_id}&value_micros=1000000", a.advertiser_id));
    assert_eq!(app.hit(&pixel).await.status().as_u16(), 200);
    let (_, r) = app.get(&a.key, "/v1/reports?range=today&group_by=campaign").await;
    assert_eq!(r["rows"][0]["campaign_id"].as_i64(), Some(a.campaign_id), "{r}");
    assert_eq!(
        (r["rows"][0]["conversions"].as_i64(), r["rows"][0]["revenue_micros"].as_i64()),
        (Some(2), Some(6_000_000))
    );

    // Forged, malformed, both or neither, and another advertiser's.
    let mut forged = click_id.clone().into_bytes();
    forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    for body in
        [json!({"click_id": forged}), json!({"click_id": "nope"}), json!({"uid": "u", "click_id": click_id}), json!({})]
    {
        let (s, r) = postback(&app, &a.key, body.clone()).await;
        assert_eq!(s, 400, "{body}: {r}");
    }
    let b = fixture_for_existing_placement(&app, "UTC", 2_000_000, 1_000_000_000).await;
    let (s, r) = postback(&app, &b.key, json!({"click_id": click_id})).await;
    assert_eq!((s, r["error"]["code"].as_str()), (400, Some("invalid_click_id")), "{r}");
}

/// Defect 17: a review named no version, so an operator who read a harmless edit and
/// clicked Approve approved whatever the advertiser had put there since (a phishing URL
/// swapped in while the review page was open), under the very same version number.
#[tokio::test]
async fn a_review_decides_on_the_version_the_operator_read() {
    let app = spawn_app().await;
    let a = fixture(&app, "sidebar-main", 2_000_000).await;
    let ad_path = format!("/v1/ads/{}", a.ad_id);
    let review_path = format!("/v1/ads/{}/review", a.ad_id);
    let patch = |body: Value| app.client.patch(app.url(&ad_path)).bearer_auth(&a.key).json(&body).send();

    let r = patch(json!({"headline": "Spring sale"})).await.expect("patch");
    assert_eq!(r.status().as_u16(), 200);
    let (_, read) = app.get(ADMIN, &ad_path).await;
    assert_eq!(
        (read["revision"]["version"].as_i64(), read["revision"]["headline"].as_str()),
        (Some(2), Some("Spring sale"))
    );
    // While the operator looks, the advertiser swaps the target.
    let r = patch(json!({"target_url": "https://phish.example/login"})).await.expect("patch");
    let swapped: Value = r.json().await.expect("json");
    assert_eq!(swapped["revision"]["version"].as_i64(), Some(3), "{swapped}");

    let (s, refused) = app.post(ADMIN, &review_path, json!({"decision": "approve", "version": 2})).await;
    assert_eq!((s, refused["error"]["code"].as_str()), (409, Some("ad_changed")), "{refused}");
    let (_, now) = app.get(ADMIN, &ad_path).await;
    assert_eq!(
        (now["version"].as_i64(), now["target_url"].as_str()),
        (Some(1), Some("https://acme.example/landing?x=1"))
    );
    assert_eq!(now["revision"]["status"], "pending_review");
    assert_eq!(app.decision("sidebar-main", "visitor").await["ad"]["headline"], "Hello");

    // Back to the serving target is one more version, not version 2 again.
    let r = patch(json!({"target_url": "https://acme.example/landing?x=1"})).await.expect("patch");
    let back: Value = r.json().await.expect("json");
    assert_eq!(back["revision"]["version"].as_i64(), Some(4), "{back}");
    let (s, refused) = app.post(ADMIN, &review_path, json!({"decision": "reject", "reason": "no", "version": 3})).await;
    assert_eq!((s, refused["error"]["code"].as_str()), (409, Some("ad_changed")), "{refused}");
    let (s, ad) = app.post(ADMIN, &review_path, json!({"decision": "approve", "version": 4})).await;
    assert_eq!(
        (s, ad["version"].as_i64(), ad["target_url"].as_str()),
        (200, Some(4), Some("https://acme.example/landing?x=1")),
        "{ad}"
    );
    let (s, bad) = app.post(ADMIN, &review_path, json!({"decision": "approve", "version": -1})).await;
    assert_eq!(s, 400, "{bad}");
}

/// Defect 18: a takedown stopped an ad serving, but every click link handed out before
/// kept redirecting to the URL the operator had just judged bad.
#[tokio::test]
async fn a_taken_down_ads_click_links_go_nowhere() {
    let app = spawn_app().await;
    let a = fixture(&app, "sidebar-main", 2_000_000).await;
    let served = app.decision("sidebar-main", "early").await;
    app.hit(served["impression_url"].as_str().expect("url")).await;
    let (s, ad) = app
        .post(
            ADMIN,
            &format!("/v1/ads/{}/review", a.ad_id),
            json!({"decision": "reject", "reason": "counterfeit", "version": 1}),
        )
        .await;
    assert_eq!((s, ad["status"].as_str()), (200, Some("rejected")), "{ad}");
    let r = app.hit(served["click_url"].as_str().expect("url")).await;
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.headers().get("location").is_none());
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "ad_withdrawn", "{body}");
    // The click happened on an ad that was served, so it is counted.
    let t = totals(&app, &a.key, "range=today").await;
    assert_eq!((t["impressions"].as_i64(), t["clicks"].as_i64()), (Some(1), Some(1)), "{t}");
}

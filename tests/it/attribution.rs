//! `GET /v1/attribution`: every model's credit for conversions by pixel and postback
//! (one order id reported by both), over touches of two campaigns, with another
//! advertiser's touches on the same user ignored. Figures are computed by hand in the
//! comments.

use serde_json::{json, Value};

use adtally_core::clock::{DAY, HOUR, MINUTE};
use adtally_core::jiff::Timestamp;

use crate::support::*;

/// 2026-11-20T12:00:00Z: the test's "now".
pub const NOW: i64 = 1_795_176_000_000;

pub fn at(ms: i64) -> String {
    Timestamp::from_millisecond(ms).expect("valid time").to_string()
}

/// A second active campaign with one approved sidebar ad for an existing advertiser.
pub async fn second_campaign(app: &TestApp, key: &str) -> (i64, i64) {
    let (s, c) = app
        .post(key, "/v1/campaigns", json!({"name": "Autumn", "cpm_bid_micros": 1_000_000, "total_budget_micros": 1_000_000_000, "pacing": "asap"}))
        .await;
    assert_eq!(s, 201, "{c}");
    let campaign_id = c["id"].as_i64().expect("id");
    let (s, ad) = app
        .post(key, &format!("/v1/campaigns/{campaign_id}/ads"), json!({"format": "sidebar", "headline": "Autumn", "body": "Sale", "target_url": "https://acme.example/autumn"}))
        .await;
    assert_eq!(s, 201, "{ad}");
    let ad_id = ad["id"].as_i64().expect("id");
    let (s, _) = app.post(key, &format!("/v1/campaigns/{campaign_id}/submit"), json!({})).await;
    assert_eq!(s, 200);
    let (s, _) = app.post(ADMIN, &format!("/v1/ads/{ad_id}/review"), json!({"decision": "approve"})).await;
    assert_eq!(s, 200);
    (campaign_id, ad_id)
}

/// Imports NDJSON lines as the operator and checks that every line was accepted.
pub async fn import(app: &TestApp, lines: &[String]) -> Value {
    let r =
        app.client.post(app.url("/v1/events")).bearer_auth(ADMIN).body(lines.join("\n")).send().await.expect("import");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["accepted"].as_u64(), Some(lines.len() as u64), "{body}");
    body
}

pub fn line(id: &str, kind: &str, at_ms: i64, campaign_id: i64, ad_id: i64, uid: &str) -> String {
    json!({"event_id": id, "type": kind, "at": at(at_ms), "campaign_id": campaign_id, "ad_id": ad_id,
           "placement": "sidebar-main", "uid": uid})
    .to_string()
}

/// (campaign_id, conversions) of each row of a report by campaign that has conversions.
fn conversions_by_campaign(rep: &Value) -> Vec<(Value, i64)> {
    rep["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["conversions"].as_i64() != Some(0))
        .map(|r| (r["campaign_id"].clone(), r["conversions"].as_i64().unwrap_or(-1)))
        .collect()
}

/// (campaign_id, ad_id, conversions, revenue_micros) of each row.
fn rows(model: &Value) -> Vec<(i64, i64, f64, i64)> {
    model["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["campaign_id"].as_i64().unwrap_or(-1),
                r["ad_id"].as_i64().unwrap_or(-1),
                r["conversions"].as_f64().unwrap_or(-1.0),
                r["revenue_micros"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_model_credits_pixel_and_postback_conversions_exactly() {
    let app = spawn_app().await;
    app.clock.set(NOW);
    let a = fixture(&app, "sidebar-main", 2_000_000).await;
    let (c1, a1) = (a.campaign_id, a.ad_id);
    let (c2, a2) = second_campaign(&app, &a.key).await;
    let b = fixture_for_existing_placement(&app, "UTC", 2_000_000, 1_000_000_000).await;

    let mut touches = vec![
        // u1: click on a1 ten days ago, an unclicked view of a2 three hours ago, and a
        // click on a2 an hour ago (each click follows its own impression, which the
        // journey replaces by the click).
        line("u1-i1", "impression", NOW - 10 * DAY - MINUTE, c1, a1, "u1"),
        line("u1-c1", "click", NOW - 10 * DAY, c1, a1, "u1"),
        line("u1-i2", "impression", NOW - 3 * HOUR, c2, a2, "u1"),
        line("u1-i3", "impression", NOW - HOUR - MINUTE, c2, a2, "u1"),
        line("u1-c3", "click", NOW - HOUR, c2, a2, "u1"),
        // u2: a view of a1 20 hours ago.
        line("u2-i1", "impression", NOW - 20 * HOUR, c1, a1, "u2"),
        // u3: a click 31 days ago, outside the 30-day window.
        line("u3-i1", "impression", NOW - 31 * DAY - MINUTE, c1, a1, "u3"),
        line("u3-c1", "click", NOW - 31 * DAY, c1, a1, "u3"),
    ];
    // Another advertiser's later click on u2 never counts for A.
    touches.push(line("b-u2-i", "impression", NOW - 2 * HOUR, b.campaign_id, b.ad_id, "u2"));
    touches.push(line("b-u2-c", "click", NOW - HOUR, b.campaign_id, b.ad_id, "u2"));
    import(&app, &touches).await;

    // u1's order O-1 by pixel, then by the advertiser's postback, which replaces it.
    let pixel = |uid: &str, value: i64, order: &str| {
        app.url(&format!("/t/conv?advertiser={}&uid={uid}&value_micros={value}&order_id={order}", a.advertiser_id))
    };
    assert_eq!(app.hit(&pixel("u1", 3_000_000, "O-1")).await.status().as_u16(), 200);
    let (s, r) =
        app.post(&a.key, "/v1/conversions", json!({"uid": "u1", "value_micros": 1_000_001, "order_id": "O-1"})).await;
    assert_eq!((s, &r["status"]), (201, &json!("recorded")), "{r}");
    // u2 by pixel only; u3 by postback, with no touch in its windows.
    assert_eq!(app.hit(&pixel("u2", 500_000, "O-2")).await.status().as_u16(), 200);
    let (s, _) =
        app.post(&a.key, "/v1/conversions", json!({"uid": "u3", "value_micros": 250_000, "order_id": "O-3"})).await;
    assert_eq!(s, 201);

    let (s, all) = app.get(&a.key, "/v1/attribution?model=all&range=today").await;
    assert_eq!(s, 200, "{all}");
    let m = |name: &str| all["models"][name].clone();
    // u1's journey: [click a1 (10 d), view a2 (3 h), click a2 (1 h)], value 1 000 001.
    // u2's: [view a1 (20 h)], value 500 000. u3: unattributed, 250 000.
    assert_eq!(rows(&m("last_click")), vec![(c1, a1, 1.0, 500_000), (c2, a2, 1.0, 1_000_001)]);
    assert_eq!(rows(&m("first_touch")), vec![(c1, a1, 2.0, 1_500_001)]);
    // Thirds: credits 333 333 / 333 333 / 333 334 millionths; revenue 333 333.67 each,
    // the two micros left over go to the later touches (equal remainders).
    assert_eq!(rows(&m("linear")), vec![(c1, a1, 1.333333, 833_333), (c2, a2, 0.666667, 666_668)]);
    // 40/20/40: revenue 400 000.4 / 200 000.2 / 400 000.4, the spare micro to the later
    // of the two largest remainders.
    assert_eq!(rows(&m("position_based")), vec![(c1, a1, 1.4, 900_000), (c2, a2, 0.6, 600_001)]);
    // Weights 2^(−10/7), 2^(−3/168), 2^(−1/168): 157 743 / 419 391 / 422 866 millionths;
    // revenue 157 744 / 419 391 / 422 866 micros.
    assert_eq!(rows(&m("time_decay")), vec![(c1, a1, 1.157743, 657_744), (c2, a2, 0.842257, 842_257)]);
    let totals = json!({"conversions": 3, "revenue_micros": 1_750_001, "unattributed": 1, "unattributed_revenue_micros": 250_000});
    for name in ["last_click", "first_touch", "linear", "time_decay", "position_based"] {
        assert_eq!(m(name)["totals"], totals, "{name}");
    }

    // One model at a time answers the same; last_click is the default.
    let (s, one) = app.get(&a.key, "/v1/attribution?range=today").await;
    assert_eq!(s, 200);
    assert_eq!(one["model"], "last_click");
    assert_eq!(one["rows"], m("last_click")["rows"]);
    let (_, one) = app.get(&a.key, "/v1/attribution?model=linear&from=2026-11-20&to=2026-11-20").await;
    assert_eq!(one["rows"], m("linear")["rows"]);

    // The reports' conversions (last touch, frozen when each conversion was recorded)
    // agree with last_click: u2's view on campaign 1, u1's click on campaign 2.
    let (s, rep) = app.get(&a.key, "/v1/reports?from=2026-10-01&to=2026-11-20&group_by=campaign").await;
    assert_eq!(s, 200);
    let by_campaign: Vec<(Value, i64, i64)> = rep["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["conversions"].as_i64() != Some(0))
        .map(|r| {
            (
                r["campaign_id"].clone(),
                r["conversions"].as_i64().unwrap_or(-1),
                r["revenue_micros"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(by_campaign, vec![(Value::Null, 1, 250_000), (json!(c1), 1, 500_000), (json!(c2), 1, 1_000_001)]);
    let t = &rep["totals"];
    assert_eq!((t["conversions"].as_i64(), t["revenue_micros"].as_i64()), (Some(3), Some(1_750_001)));
    // Spend since October: imported impressions cost their campaign's bid / 1000 —
    // campaign 1 three at 2 000 micros, campaign 2 two at 1 000. CPA = 8 000 / 3
    // (truncated), ROAS = 1 750 001 / 8 000 = 218.750125 (reports round to four places);
    // per campaign 6 000 / 1 and 500 000 / 6 000, 2 000 / 1 and 1 000 001 / 2 000.
    assert_eq!(
        (t["spend_micros"].as_i64(), t["cpa_micros"].as_i64(), t["roas"].as_f64()),
        (Some(8_000), Some(2_666), Some(218.7501))
    );
    let per_campaign: Vec<(i64, Option<i64>, Option<f64>)> = rep["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| Some((r["campaign_id"].as_i64()?, r["cpa_micros"].as_i64(), r["roas"].as_f64())))
        .collect();
    assert_eq!(per_campaign, vec![(c1, Some(6_000), Some(83.3333)), (c2, Some(2_000), Some(500.0005))]);

    // Tenants: B sees its own (empty) attribution, never A's; the admin names whose.
    let (s, r) = app.get(&b.key, "/v1/attribution?range=today").await;
    assert_eq!((s, r["totals"]["conversions"].as_i64()), (200, Some(0)), "{r}");
    let (s, r) = app.get(&b.key, &format!("/v1/attribution?range=today&advertiser_id={}", a.advertiser_id)).await;
    assert_eq!((s, r["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, r) = app.get(&b.key, "/v1/attribution?range=today&advertiser_id=999999").await;
    assert_eq!((s, r["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, r) =
        app.get(ADMIN, &format!("/v1/attribution?model=all&range=today&advertiser_id={}", a.advertiser_id)).await;
    assert_eq!((s, &r["models"]), (200, &all["models"]));

    // Any report range works, lifetime and years included: the work is bounded by rows.
    for query in ["range=lifetime", "from=2024-01-01&to=2026-12-31"] {
        let (s, r) = app.get(&a.key, &format!("/v1/attribution?model=all&{query}")).await;
        assert_eq!((s, &r["models"]), (200, &all["models"]), "{query}: {r}");
    }

    // Bad input is a 400 in the error shape.
    for (query, code) in
        [("model=best", "invalid_request"), ("from=2026-11-20", "invalid_report"), ("range=someday", "invalid_report")]
    {
        let (s, r) = app.get(&a.key, &format!("/v1/attribution?{query}")).await;
        assert_eq!((s, r["error"]["code"].as_str()), (400, Some(code)), "{query}: {r}");
    }
    let (s, _) = app.get(ADMIN, "/v1/attribution?range=today").await;
    assert_eq!(s, 400);
    let (s, _) = app.get("wrong-key", "/v1/attribution?range=today").await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn an_advertisers_own_windows_and_half_life_decide_its_credit() {
    let app = spawn_app().await;
    app.clock.set(NOW);
    let a = fixture(&app, "sidebar-main", 2_000_000).await;
    let (c1, a1) = (a.campaign_id, a.ad_id);
    let (c2, a2) = second_campaign(&app, &a.key).await;
    let windows = |click: i64, view: i64, half_life: i64| json!({"click_window_days": click, "view_window_days": view, "half_life_days": half_life});
    let (_, me) = app.get(&a.key, "/v1/me").await;
    assert_eq!(me["attribution"], windows(30, 1, 7), "the defaults");

    // The advertiser shortens its click window to 14 days, turns view-through off and
    // halves the weight of a touch per day.
    let (s, me) = app.patch(&a.key, "/v1/me", json!({"attribution": windows(14, 0, 1)})).await;
    assert_eq!((s, &me["attribution"]), (200, &windows(14, 0, 1)), "{me}");
    for (body, why) in [
        (json!({"attribution": {"click_window_days": 0}}), "no click window"),
        (json!({"attribution": {"click_window_days": 91}}), "past 90 days"),
        (json!({"attribution": {"click_window_days": 99_999_999_999_i64}}), "huge"),
        (json!({"attribution": {"view_window_days": -1}}), "negative"),
        (json!({"attribution": {"view_window_days": 15}}), "longer than the click window"),
        (json!({"attribution": {"half_life_days": 0}}), "no half-life"),
        (json!({"attribution": {"click_window_days": 30, "typo": 1}}), "unknown field"),
        (json!({"name": "Someone else"}), "only attribution is the advertiser's own"),
    ] {
        let (s, r) = app.patch(&a.key, "/v1/me", body).await;
        assert_eq!(s, 400, "{why}: {r}");
    }
    let (s, _) = app.patch(ADMIN, "/v1/me", json!({"attribution": windows(30, 1, 7)})).await;
    assert_eq!(s, 400, "the admin has no account of its own");
    let (_, me) = app.get(&a.key, "/v1/me").await;
    assert_eq!(me["attribution"], windows(14, 0, 1), "refused changes changed nothing");

    import(
        &app,
        &[
            // u1: a click 20 days ago (outside 14 days), then clicks 3 days and 1 day ago.
            line("u1-i0", "impression", NOW - 20 * DAY - MINUTE, c1, a1, "u1"),
            line("u1-c0", "click", NOW - 20 * DAY, c1, a1, "u1"),
            line("u1-i1", "impression", NOW - 3 * DAY - MINUTE, c1, a1, "u1"),
            line("u1-c1", "click", NOW - 3 * DAY, c1, a1, "u1"),
            line("u1-i2", "impression", NOW - DAY - MINUTE, c2, a2, "u1"),
            line("u1-c2", "click", NOW - DAY, c2, a2, "u1"),
            // u2: only a view two hours ago, which no longer counts.
            line("u2-i1", "impression", NOW - 2 * HOUR, c1, a1, "u2"),
        ],
    )
    .await;
    let (s, _) =
        app.post(&a.key, "/v1/conversions", json!({"uid": "u1", "value_micros": 1_000_000, "order_id": "O-1"})).await;
    assert_eq!(s, 201);
    let pixel = format!("/t/conv?advertiser={}&uid=u2&value_micros=500000&order_id=O-2", a.advertiser_id);
    assert_eq!(app.hit(&app.url(&pixel)).await.status().as_u16(), 200);

    let (s, all) = app.get(&a.key, "/v1/attribution?model=all&range=today").await;
    assert_eq!((s, &all["windows"]), (200, &windows(14, 0, 1)), "{all}");
    let m = |name: &str| all["models"][name].clone();
    // u1's journey: [click a1 (3 d), click a2 (1 d)]; u2 has none.
    assert_eq!(rows(&m("last_click")), vec![(c2, a2, 1.0, 1_000_000)]);
    assert_eq!(rows(&m("first_touch")), vec![(c1, a1, 1.0, 1_000_000)]);
    assert_eq!(rows(&m("linear")), vec![(c1, a1, 0.5, 500_000), (c2, a2, 0.5, 500_000)]);
    assert_eq!(rows(&m("position_based")), vec![(c1, a1, 0.5, 500_000), (c2, a2, 0.5, 500_000)]);
    // Weights 2^−3 : 2^−1 = 1 : 4.
    assert_eq!(rows(&m("time_decay")), vec![(c1, a1, 0.2, 200_000), (c2, a2, 0.8, 800_000)]);
    assert_eq!(m("linear")["totals"]["unattributed"], 1);
    assert_eq!(m("linear")["totals"]["unattributed_revenue_micros"], 500_000);

    // The credit frozen into the conversions when they were recorded used the same
    // windows: u1's to campaign 2, u2's to no campaign.
    let (s, rep) = app.get(&a.key, "/v1/reports?range=today&group_by=campaign").await;
    assert_eq!(s, 200);
    let conversions = conversions_by_campaign(&rep);
    assert_eq!(conversions, vec![(Value::Null, 1), (json!(c2), 1)]);

    // The operator restores 30-day clicks and 1-day view-through (the half-life stays):
    // the models, computed at query time, now see the 20-day click and u2's view.
    let (s, r) = app
        .patch(
            ADMIN,
            &format!("/v1/advertisers/{}", a.advertiser_id),
            json!({"attribution": {"click_window_days": 30, "view_window_days": 1}}),
        )
        .await;
    assert_eq!((s, &r["attribution"]), (200, &windows(30, 1, 1)), "{r}");
    let (_, all) = app.get(&a.key, "/v1/attribution?model=all&range=today").await;
    let m = |name: &str| all["models"][name].clone();
    assert_eq!(rows(&m("last_click")), vec![(c1, a1, 1.0, 500_000), (c2, a2, 1.0, 1_000_000)]);
    assert_eq!(rows(&m("first_touch")), vec![(c1, a1, 2.0, 1_500_000)]);
    assert_eq!(m("linear")["totals"]["unattributed"], 0);
    // An advertiser created with its own settings keeps them.
    let (s, r) = app
        .post(
            ADMIN,
            "/v1/advertisers",
            json!({"name": "Brief", "email": "b@example.com", "attribution": windows(7, 7, 2)}),
        )
        .await;
    assert_eq!((s, &r["attribution"]), (201, &windows(7, 7, 2)), "{r}");
}

/// A restart rebuilds the touches that credit conversions from the stored events: a
/// view inside the advertiser's own view window (here 7 days, not the default 1) and a
/// click inside its click window (read from the valid clicks alone) still credit.
#[tokio::test]
async fn a_restart_keeps_the_touches_of_the_advertisers_windows() {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("dir"));
    let clock = std::sync::Arc::new(adtally_core::clock::ManualClock::new(NOW));
    let windows = json!({"click_window_days": 30, "view_window_days": 7, "half_life_days": 7});
    let (key, campaign_id, advertiser_id) = {
        let app = spawn_app_in(dir.clone(), adtally_server::ServerConfig::default(), clock.clone()).await;
        let a = fixture(&app, "sidebar-main", 2_000_000).await;
        let (s, me) = app.patch(&a.key, "/v1/me", json!({"attribution": windows})).await;
        assert_eq!((s, &me["attribution"]), (200, &windows), "{me}");
        import(
            &app,
            &[
                line("v-i", "impression", NOW - 5 * DAY, a.campaign_id, a.ad_id, "viewer"),
                line("c-i", "impression", NOW - 20 * DAY - MINUTE, a.campaign_id, a.ad_id, "clicker"),
                line("c-c", "click", NOW - 20 * DAY, a.campaign_id, a.ad_id, "clicker"),
                line("o-i", "impression", NOW - 9 * DAY, a.campaign_id, a.ad_id, "outside"),
            ],
        )
        .await;
        (a.key, a.campaign_id, a.advertiser_id)
    };
    let app = spawn_app_in(dir, adtally_server::ServerConfig::default(), clock).await;
    for (uid, order) in [("viewer", "O-1"), ("clicker", "O-2"), ("outside", "O-3")] {
        let pixel = format!("/t/conv?advertiser={advertiser_id}&uid={uid}&value_micros=1000&order_id={order}");
        assert_eq!(app.hit(&app.url(&pixel)).await.status().as_u16(), 200, "{uid}");
    }
    let (s, rep) = app.get(&key, "/v1/reports?range=today&group_by=campaign").await;
    assert_eq!(s, 200, "{rep}");
    let conversions = conversions_by_campaign(&rep);
    // The view 9 days ago is outside the 7-day window: that conversion has no campaign.
    assert_eq!(conversions, vec![(Value::Null, 1), (json!(campaign_id), 2)], "{rep}");
}

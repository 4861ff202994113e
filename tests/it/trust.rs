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

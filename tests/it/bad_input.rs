//! Bad input gets a 4xx with the JSON error shape; never a 5xx, never a panic.

use serde_json::{json, Value};

use crate::support::*;

fn assert_error(status: u16, body: &Value, expected: u16, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn bad_requests_get_clear_4xx_errors() {
    let app = spawn_app().await;
    let f = fixture(&app, "sidebar-main", 2_000_000).await;
    let k = f.key.as_str();

    let (s, b) = app.get(k, "/v1/decision?placement=nope").await;
    assert_error(s, &b, 404, "unknown_placement");
    let (s, b) = app.get(k, "/v1/decision").await;
    assert_error(s, &b, 400, "missing_placement");
    let (s, b) = app.get(k, &format!("/v1/decision?placement=sidebar-main&uid={}", "x".repeat(500))).await;
    assert_error(s, &b, 400, "invalid_request");
    let (s, b) = app.get(k, "/t/c/not-a-token").await;
    assert_error(s, &b, 400, "invalid_token");
    let r = app.hit(&app.url("/t/i/garbage")).await;
    assert_eq!(r.status().as_u16(), 200, "a bad impression token still gets its pixel");

    for (query, code) in [
        ("from=2026-02-30&to=2026-03-01", "invalid_report"),
        ("from=2026-03-02&to=2026-03-01", "invalid_report"),
        ("from=2026-03-01", "invalid_report"),
        ("range=forever", "invalid_report"),
        ("group_by=campaign,planet", "invalid_report"),
        ("granularity=minute", "invalid_report"),
        ("format=xml", "invalid_request"),
        ("campaign_id=abc", "invalid_query"),
    ] {
        let (s, b) = app.get(k, &format!("/v1/reports?{query}")).await;
        assert_error(s, &b, 400, code);
    }

    let (s, b) = app.get("wrong", "/v1/campaigns").await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = app.post(k, "/v1/placements", json!({"id": "x", "name": "x", "format": "sidebar"})).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) =
        app.post(k, "/v1/campaigns", json!({"name": "x", "cpm_bid_micros": -5, "total_budget_micros": 10})).await;
    assert_error(s, &b, 400, "invalid_request");
    let (s, b) = app
        .post(
            k,
            "/v1/campaigns",
            json!({"name": "x", "cpm_bid_micros": 2_000_000, "total_budget_micros": 10, "colour": "red"}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_json");
    let (s, b) = app
        .post(
            k,
            &format!("/v1/campaigns/{}/ads", f.campaign_id),
            json!({"format": "sidebar", "headline": "h", "target_url": "javascript:alert(1)"}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_request");
    let (s, b) = app.post(k, &format!("/v1/campaigns/{}/submit", f.campaign_id), json!({})).await;
    assert_error(s, &b, 409, "invalid_transition");

    let big = "x".repeat(100 * 1024);
    let (s, b) = app.post(ADMIN, "/v1/advertisers", json!({"name": big, "email": "a@b.c"})).await;
    assert_error(s, &b, 413, "payload_too_large");
    let r = app
        .client
        .post(app.url("/v1/advertisers"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .expect("post");
    let s = r.status().as_u16();
    assert_error(s, &r.json().await.expect("json"), 400, "invalid_json");
    let (s, b) = app.get(k, "/v1/no-such-thing").await;
    assert_error(s, &b, 404, "not_found");
}

#[tokio::test]
async fn an_import_keeps_its_good_lines_and_names_the_bad_ones() {
    let app = spawn_app().await;
    let f = fixture(&app, "sidebar-main", 2_000_000).await;
    let now = adtally_core::jiff::Timestamp::now();
    let at = |secs: i64| (now - adtally_core::jiff::SignedDuration::from_secs(secs)).to_string();
    let c = f.campaign_id;
    let a = f.ad_id;
    let body = [
        format!(r#"{{"event_id":"e1","type":"impression","at":"{}","campaign_id":{c},"ad_id":{a},"placement":"sidebar-main","uid":"u1"}}"#, at(600)),
        "{not json".to_owned(),
        format!(r#"{{"event_id":"e2","type":"click","at":"{}","campaign_id":{c},"ad_id":{a},"placement":"sidebar-main","uid":"u1"}}"#, at(590)),
        format!(r#"{{"event_id":"e3","type":"teleport","at":"{}","campaign_id":{c},"ad_id":{a},"placement":"sidebar-main","uid":"u1"}}"#, at(580)),
        format!(r#"{{"event_id":"e4","type":"impression","at":"yesterday","campaign_id":{c},"ad_id":{a},"placement":"sidebar-main","uid":"u1"}}"#),
        format!(r#"{{"event_id":"e5","type":"impression","at":"{}","campaign_id":{c},"ad_id":999,"placement":"sidebar-main","uid":"u1"}}"#, at(570)),
        String::new(),
        format!(r#"{{"event_id":"e6","type":"impression","at":"{}","campaign_id":{c},"ad_id":{a},"placement":"sidebar-main","uid":"u2","user_agent":"curl/8.0"}}"#, at(560)),
    ]
    .join("\n");
    let post = |body: String| {
        let app = &app;
        async move {
            let r = app.client.post(app.url("/v1/events")).bearer_auth(ADMIN).body(body).send().await.expect("import");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        }
    };
    let (s, r) = post(body.clone()).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["accepted"], 3);
    assert_eq!(r["duplicates"], 0);
    let lines: Vec<i64> =
        r["rejected"].as_array().expect("rejected").iter().map(|x| x["line"].as_i64().unwrap_or(0)).collect();
    assert_eq!(lines, [2, 4, 5, 6]);
    // Importing again changes nothing.
    let (_, again) = post(body).await;
    assert_eq!((again["accepted"].as_i64(), again["duplicates"].as_i64()), (Some(0), Some(3)));
    // Ten minutes ago may be yesterday (UTC): the last seven days hold both.
    let t = totals(&app, &f.key, "range=last_7_days").await;
    assert_eq!(
        (t["impressions"].as_i64(), t["clicks"].as_i64(), t["invalid_impressions"].as_i64()),
        (Some(1), Some(1), Some(1))
    );
}

//! Report shapes: granularity, group-bys and time zones.

use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn days_and_hours_are_in_the_advertisers_time_zone() {
    let app = spawn_app().await;
    let (s, _) = app
        .post(ADMIN, "/v1/placements", serde_json::json!({"id": "sidebar-main", "name": "s", "format": "sidebar"}))
        .await;
    assert_eq!(s, 201);
    let f = fixture_for_existing_placement(&app, "Asia/Kathmandu", 2_000_000, 1_000_000_000).await;
    // 18:10 and 18:20 UTC on 2026-11-20 are 23:55 that day and 00:05 the next in Kathmandu.
    let body = [("i1", "2026-11-20T18:10:00Z", "k1"), ("i2", "2026-11-20T18:20:00Z", "k2")]
        .iter()
        .map(|(id, at, uid)| {
            format!(
                r#"{{"event_id":"{id}","type":"impression","at":"{at}","campaign_id":{},"ad_id":{},"placement":"sidebar-main","uid":"{uid}","device":"mobile","country":"np"}}"#,
                f.campaign_id, f.ad_id
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let r = app.client.post(app.url("/v1/events")).bearer_auth(ADMIN).body(body).send().await.expect("import");
    assert_eq!(r.status().as_u16(), 200);

    let (s, r) = app
        .get(&f.key, "/v1/reports?from=2026-11-20&to=2026-11-21&granularity=day&group_by=device,country,placement")
        .await;
    assert_eq!(s, 200, "{r}");
    let rows: Vec<(String, i64)> = r["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| (row["date"].as_str().unwrap_or("").to_owned(), row["impressions"].as_i64().unwrap_or(-1)))
        .collect();
    assert_eq!(rows, [("2026-11-20".to_owned(), 1), ("2026-11-21".to_owned(), 1)]);
    assert_eq!(r["rows"][0]["device"], "mobile");
    assert_eq!(r["rows"][0]["country"], "NP");
    assert_eq!(r["rows"][0]["placement"], "sidebar-main");
    assert_eq!(r["rows"][0]["ctr"], 0.0);
    assert_eq!(r["rows"][0]["cpc_micros"], Value::Null);

    let (_, r) = app.get(&f.key, "/v1/reports?from=2026-11-20&to=2026-11-21&granularity=hour").await;
    let hours: Vec<&str> = r["rows"].as_array().expect("rows").iter().filter_map(|row| row["hour"].as_str()).collect();
    assert_eq!(hours, ["2026-11-20T23:00:00+05:45", "2026-11-21T00:00:00+05:45"]);

    // Another advertiser sees none of it.
    let other = fixture_for_existing_placement(&app, "UTC", 2_000_000, 1_000_000_000).await;
    let t = totals(&app, &other.key, "from=2026-11-20&to=2026-11-21").await;
    assert_eq!(t["impressions"], 0);
    let (s, _) = app.get(&other.key, &format!("/v1/reports?campaign_id={}", f.campaign_id)).await;
    assert_eq!(s, 404);
    let (s, _) = app.get(&other.key, &format!("/v1/campaigns/{}", f.campaign_id)).await;
    assert_eq!(s, 404);
}

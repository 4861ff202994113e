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

    // The ledger's spend is by the same local days, and still adds up to the balance.
    let (_, ledger) = app.get(&f.key, "/v1/ledger").await;
    let spend: Vec<(&str, &str, i64)> = ledger["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["kind"] == "spend")
        .map(|e| {
            (e["date"].as_str().unwrap_or(""), e["at"].as_str().unwrap_or(""), e["amount_micros"].as_i64().unwrap_or(0))
        })
        .collect();
    assert_eq!(
        spend,
        [("2026-11-20", "2026-11-19T18:15:00Z", -2_000), ("2026-11-21", "2026-11-20T18:15:00Z", -2_000)],
        "{ledger}"
    );
    let credits: i64 =
        ledger["items"].as_array().expect("items").iter().filter_map(|e| e["amount_micros"].as_i64()).sum();
    assert_eq!(Some(credits), ledger["balance_micros"].as_i64(), "{ledger}");

    // The operator's report of that campaign (or ad) has the advertiser's days, not UTC's.
    for filter in [format!("campaign_id={}", f.campaign_id), format!("ad_id={}", f.ad_id)] {
        let path = format!("/v1/reports?from=2026-11-20&to=2026-11-21&granularity=day&{filter}");
        let (s, mine) = app.get(&f.key, &path).await;
        assert_eq!(s, 200, "{mine}");
        let (s, operators) = app.get(ADMIN, &path).await;
        assert_eq!(s, 200, "{operators}");
        assert_eq!(operators, mine, "{filter}");
    }

    // Another advertiser sees none of it.
    let other = fixture_for_existing_placement(&app, "UTC", 2_000_000, 1_000_000_000).await;
    let t = totals(&app, &other.key, "from=2026-11-20&to=2026-11-21").await;
    assert_eq!(t["impressions"], 0);
    let (s, _) = app.get(&other.key, &format!("/v1/reports?campaign_id={}", f.campaign_id)).await;
    assert_eq!(s, 404);
    let (s, _) = app.get(&other.key, &format!("/v1/campaigns/{}", f.campaign_id)).await;
    assert_eq!(s, 404);
}

/// Imports `n` impressions per day (and a click on every third) for `days` days before
/// 2026-11-21, at hours that cross Kathmandu's midnight, on two devices and countries.
async fn import_days(app: &TestApp, f: &Fixture, days: u32, n: u32) {
    let mut lines = Vec::new();
    for d in 0..days {
        for i in 0..n {
            let at = format!("2026-11-{:02}T{:02}:{:02}:00Z", 20 - d, (i * 7) % 24, (i * 13) % 60);
            let (device, country) = if i % 2 == 0 { ("mobile", "np") } else { ("desktop", "de") };
            let common = format!(
                r#""at":"{at}","campaign_id":{},"ad_id":{},"placement":"sidebar-main","uid":"u{}","device":"{device}","country":"{country}""#,
                f.campaign_id,
                f.ad_id,
                i % 5
            );
            lines.push(format!(r#"{{"event_id":"i{d}-{i}","type":"impression",{common}}}"#));
            if i % 3 == 0 {
                lines.push(format!(r#"{{"event_id":"c{d}-{i}","type":"click",{common}}}"#));
            }
        }
    }
    let r =
        app.client.post(app.url("/v1/events")).bearer_auth(ADMIN).body(lines.join("\n")).send().await.expect("import");
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn a_report_over_the_row_limit_is_refused_with_a_clear_400() {
    let config = adtally_server::ServerConfig { max_report_rows: 3, ..Default::default() };
    let app = spawn_app_with(config).await;
    let (s, _) = app
        .post(ADMIN, "/v1/placements", serde_json::json!({"id": "sidebar-main", "name": "s", "format": "sidebar"}))
        .await;
    assert_eq!(s, 201);
    let f = fixture_for_existing_placement(&app, "Asia/Kathmandu", 2_000_000, 1_000_000_000).await;
    import_days(&app, &f, 4, 6).await;

    let range = "from=2026-11-15&to=2026-11-21";
    // Four local days and more: over 3 rows, by the day layer, the quarter hours, and in CSV.
    for path in [
        format!("/v1/reports?{range}&granularity=day"),
        format!("/v1/reports?{range}&granularity=hour"),
        format!("/v1/reports?{range}&granularity=day&format=csv"),
        format!("/v1/reports?{range}&granularity=day&group_by=device,country"),
        format!("/v1/reports/ivt?{range}&granularity=day"),
    ] {
        let (s, r) = app.get(&f.key, &path).await;
        assert_eq!(s, 400, "{path}: {r}");
        assert_eq!(r["error"]["code"], "report_too_large", "{path}");
        let message = r["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("more than 3 rows"), "{message}");
    }
    // Within the limit: answered.
    for path in [format!("/v1/reports?{range}"), format!("/v1/reports?{range}&group_by=device,country")] {
        let (s, r) = app.get(&f.key, &path).await;
        assert_eq!(s, 200, "{path}: {r}");
    }
}

/// The day layer gives every dashboard report exactly what the quarter-hour rollups
/// give (the same server on the same data, with `reports_from_quarter_hours`), in a
/// +05:45 zone, for the operator, and after the advertiser moves to another zone.
#[tokio::test]
async fn reports_from_the_day_layer_equal_reports_from_quarter_hours() {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let clock = std::sync::Arc::new(adtally_core::clock::ManualClock::new(1_795_310_000_000));
    let app = spawn_app_in(dir.clone(), adtally_server::ServerConfig::default(), clock.clone()).await;
    let (s, _) = app
        .post(ADMIN, "/v1/placements", serde_json::json!({"id": "sidebar-main", "name": "s", "format": "sidebar"}))
        .await;
    assert_eq!(s, 201);
    let f = fixture_for_existing_placement(&app, "Asia/Kathmandu", 2_000_000, 1_000_000_000).await;
    import_days(&app, &f, 5, 24).await;
    let queries: Vec<(String, String)> =
        ["", "&group_by=campaign", "&group_by=ad", "&group_by=device", "&group_by=country"]
            .iter()
            .chain(&["&granularity=day", "&granularity=day&group_by=placement", "&group_by=campaign,ad,placement"])
            .flat_map(|q| {
                let c = f.campaign_id;
                [
                    (f.key.clone(), format!("/v1/reports?range=lifetime{q}")),
                    (f.key.clone(), format!("/v1/reports?from=2026-11-17&to=2026-11-19{q}")),
                    (f.key.clone(), format!("/v1/reports?from=2026-11-17&to=2026-11-19&campaign_id={c}{q}")),
                    (ADMIN.to_owned(), format!("/v1/reports?from=2026-11-17&to=2026-11-19{q}")),
                    (ADMIN.to_owned(), format!("/v1/reports/ivt?range=lifetime{q}")),
                ]
            })
            .collect();
    async fn answers(app: &TestApp, queries: &[(String, String)]) -> Vec<Value> {
        let mut out = Vec::new();
        for (key, path) in queries {
            let (s, r) = app.get(key, path).await;
            assert_eq!(s, 200, "{path}: {r}");
            out.push(r);
        }
        out
    }
    let from_days = answers(&app, &queries).await;
    assert_eq!(from_days[0]["totals"]["impressions"], 5 * 24, "{}", from_days[0]);
    drop(app);
    let quarter_hours = adtally_server::ServerConfig { reports_from_quarter_hours: true, ..Default::default() };
    let app = spawn_app_in(dir.clone(), quarter_hours.clone(), clock.clone()).await;
    assert_eq!(answers(&app, &queries).await, from_days);

    // The advertiser moves to New York: its days are rebuilt in the new zone.
    let r = app
        .client
        .patch(app.url(&format!("/v1/advertisers/{}", f.advertiser_id)))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"timezone": "America/New_York"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status().as_u16(), 200);
    let from_quarter_hours = answers(&app, &queries).await;
    drop(app);
    let app = spawn_app_in(dir.clone(), adtally_server::ServerConfig::default(), clock.clone()).await;
    assert_eq!(answers(&app, &queries).await, from_quarter_hours);
    assert_ne!(from_quarter_hours, from_days);
    let check = app.store.consistency_check().expect("check");
    assert!(check.is_consistent(), "{check:?}");
}

//! `GET /v1/campaigns/{id}/insights` on six weeks of imported history: a campaign whose
//! CTR declines at steady volume is reported as fatigued; a steady control campaign of
//! the same advertiser, and a campaign with too little data, get no alert.

use serde_json::{json, Value};

use adtally_core::clock::{DAY, SECOND};

use crate::attribution::{import, line, second_campaign, NOW};
use crate::support::*;

/// Start of 2026-11-19 UTC, the last complete day at [`NOW`].
const LAST_DAY: i64 = NOW - 12 * 3_600_000 - DAY;

/// `impressions` a day for 42 days ending on 2026-11-19, each with its own user, and
/// `clicks(day)` of them clicked 10 s later.
pub(crate) fn six_weeks(
    tag: &str,
    campaign_id: i64,
    ad_id: i64,
    impressions: usize,
    clicks: impl Fn(i64) -> usize,
) -> Vec<String> {
    let mut out = Vec::new();
    for day in 0..42i64 {
        let start = LAST_DAY - (41 - day) * DAY;
        for i in 0..impressions {
            let at = start + i as i64 * 200 * SECOND;
            let uid = format!("{tag}-{day}-{i}");
            out.push(line(&format!("{uid}-i"), "impression", at, campaign_id, ad_id, &uid));
            if i < clicks(day) {
                out.push(line(&format!("{uid}-c"), "click", at + 10 * SECOND, campaign_id, ad_id, &uid));
            }
        }
    }
    out
}

#[tokio::test]
async fn six_weeks_with_a_fatigue_pattern_and_a_steady_control() {
    let app = spawn_app().await;
    app.clock.set(NOW);
    let a = fixture(&app, "sidebar-main", 2_000_000).await;
    let (tired, tired_ad) = (a.campaign_id, a.ad_id);
    let (steady, steady_ad) = second_campaign(&app, &a.key).await;
    // CTR 3% for three weeks, then 2.5%, 2% and 1.25% a week, at 400 impressions a day.
    let fatigue = six_weeks("f", tired, tired_ad, 400, |day| match day {
        0..21 => 12,
        21..28 => 10,
        28..35 => 8,
        _ => 5,
    });
    let control = six_weeks("s", steady, steady_ad, 400, |_| 12);
    import(&app, &fatigue).await;
    import(&app, &control).await;

    let (s, r) = app.get(&a.key, &format!("/v1/campaigns/{tired}/insights")).await;
    assert_eq!(s, 200, "{r}");
    let items = r["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{r}");
    let alert = &items[0];
    assert_eq!(alert["kind"], "ad_fatigue");
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["period"], json!({"from": "2026-11-13", "to": "2026-11-19"}));
    assert_eq!(alert["baseline"], json!({"from": "2026-10-09", "to": "2026-10-29"}));
    let e = &alert["evidence"];
    // Period: 7 × 400 impressions, 7 × 5 clicks; baseline: 21 × 400 and 21 × 12.
    assert_eq!((e["impressions"].as_i64(), e["clicks"].as_i64()), (Some(2_800), Some(35)));
    assert_eq!((e["baseline_impressions"].as_i64(), e["baseline_clicks"].as_i64()), (Some(8_400), Some(252)));
    assert_eq!((e["ctr_percent"].as_f64(), e["baseline_ctr_percent"].as_f64()), (Some(1.25), Some(3.0)));
    assert_eq!(e["relative_change_percent"].as_f64(), Some(-58.33));
    // Pooled 287/11 200: z = (0.0125 − 0.03) / √(p(1−p)(1/2 800 + 1/8 400)) = −0.0175 / 0.003448 ≈ −5.08.
    assert_eq!(e["z"].as_f64(), Some(-5.08));
    assert_eq!(e["daily_impressions_ratio"].as_f64(), Some(1.0));
    assert!(alert["action"].as_str().is_some_and(|a| a.contains("creative")));

    // The control campaign, same volume and a steady 3%: nothing to say.
    let (s, r) = app.get(&a.key, &format!("/v1/campaigns/{steady}/insights")).await;
    assert_eq!((s, &r["items"]), (200, &json!([])), "{r}");

    // A campaign with a week of data and a collapsed CTR: too little history to judge.
    let b = fixture_for_existing_placement(&app, "UTC", 2_000_000, 1_000_000_000).await;
    let young: Vec<String> = six_weeks("y", b.campaign_id, b.ad_id, 30, |day| if day < 38 { 3 } else { 0 })
        .into_iter()
        .skip(30 * 35)
        .collect();
    import(&app, &young).await;
    let (s, r) = app.get(&b.key, &format!("/v1/campaigns/{}/insights", b.campaign_id)).await;
    assert_eq!((s, &r["items"]), (200, &json!([])), "{r}");

    // Tenants: another advertiser's campaign is not found; the admin sees any.
    let (s, r) = app.get(&b.key, &format!("/v1/campaigns/{tired}/insights")).await;
    assert_eq!((s, r["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, r) = app.get(ADMIN, &format!("/v1/campaigns/{tired}/insights")).await;
    assert_eq!((s, r["items"][0]["kind"].as_str()), (200, Some("ad_fatigue")));
    let (s, _) = app.get(&a.key, "/v1/campaigns/999999/insights").await;
    assert_eq!(s, 404);
    // A malformed id is not found either (the API's path rule), in the error shape.
    let (s, r): (u16, Value) = app.get(&a.key, "/v1/campaigns/abc/insights").await;
    assert_eq!((s, r["error"]["code"].as_str()), (404, Some("not_found")), "{r}");
}

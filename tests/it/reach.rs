//! `reach` and `frequency` in reports: exact for a few users over two days and two
//! campaigns (rows made of several quarter-hour buckets each, so the sketches of
//! different buckets and days are merged), and within 2% for 20 000 users.

use serde_json::{json, Value};

use adtally_core::clock::{DAY, MINUTE};

use crate::attribution::{at, import, line, second_campaign, NOW};
use crate::support::*;

/// (date, campaign_id, impressions, reach, frequency) of each row.
fn rows(report: &Value) -> Vec<(String, i64, i64, i64, Option<f64>)> {
    report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["date"].as_str().unwrap_or("").to_owned(),
                r["campaign_id"].as_i64().unwrap_or(-1),
                r["impressions"].as_i64().unwrap_or(-1),
                r["reach"].as_i64().unwrap_or(-1),
                r["frequency"].as_f64(),
            )
        })
        .collect()
}

#[tokio::test]
async fn reach_and_frequency_are_exact_per_row_and_in_totals() {
    let app = spawn_app().await;
    app.clock.set(NOW);
    let a = fixture(&app, "sidebar-main", 2_000_000).await;
    let (c1, a1) = (a.campaign_id, a.ad_id);
    let (c2, a2) = second_campaign(&app, &a.key).await;
    // 2026-11-19 and 2026-11-20 (UTC, the advertiser's zone), from midnight on; every
    // impression 37 minutes after the one before, so a day row spans many buckets.
    let (day1, day2) = (NOW - 12 * 60 * MINUTE - DAY, NOW - 12 * 60 * MINUTE);
    let plan: [(i64, i64, i64, &str, usize); 7] = [
        (day1, c1, a1, "u1", 3),
        (day1, c1, a1, "u2", 1),
        (day1, c2, a2, "u1", 2),
        (day1, c2, a2, "u3", 2),
        (day2, c1, a1, "u1", 1),
        (day2, c1, a1, "u3", 2),
        (day2, c2, a2, "u2", 2),
    ];
    let mut lines = Vec::new();
    let mut minute = [0i64; 2];
    for (day, campaign, ad, user, n) in plan {
        let slot = usize::from(day == day2);
        for _ in 0..n {
            minute[slot] += 37;
            let id = format!("i{}", lines.len());
            lines.push(line(&id, "impression", day + minute[slot] * MINUTE, campaign, ad, user));
        }
    }
    // A bot's impression is invalid: neither an impression nor reach.
    lines.push(
        json!({"event_id": "bot", "type": "impression", "at": at(day1 + 5 * MINUTE), "campaign_id": c1, "ad_id": a1,
               "placement": "sidebar-main", "uid": "u9", "user_agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"})
        .to_string(),
    );
    import(&app, &lines).await;

    let query = "/v1/reports?from=2026-11-19&to=2026-11-20&granularity=day&group_by=campaign";
    let (s, report) = app.get(&a.key, query).await;
    assert_eq!(s, 200, "{report}");
    let (d1, d2) = ("2026-11-19".to_owned(), "2026-11-20".to_owned());
    assert_eq!(
        rows(&report),
        vec![
            (d1.clone(), c1, 4, 2, Some(2.0)),
            (d1.clone(), c2, 4, 2, Some(2.0)),
            (d2.clone(), c1, 3, 2, Some(1.5)),
            (d2.clone(), c2, 2, 1, Some(2.0)),
        ]
    );
    let totals = &report["totals"];
    assert_eq!((totals["impressions"].as_i64(), totals["reach"].as_i64()), (Some(13), Some(3)), "{totals}");
    assert_eq!(totals["frequency"].as_f64(), Some(4.3333));
    assert_eq!(totals["invalid_impressions"].as_i64(), Some(1));

    // Once the days are sealed, SQLite keeps each day row's count of users: the rows take
    // their reach from it, and the totals' union comes from a query of its own.
    app.store.seal_spans(NOW + 5 * DAY).expect("seal");
    if postgres_url().is_none() {
        let counted = raw_count(app.data_dir(), "SELECT COUNT(*) FROM rollups_day_campaign WHERE users > 0");
        assert_eq!(counted, 4);
    }
    let (s, sealed) = app.get(&a.key, query).await;
    assert_eq!(s, 200, "{sealed}");
    assert_eq!(rows(&sealed), rows(&report));
    assert_eq!(sealed["totals"], report["totals"]);

    // Over the whole range per campaign: users are counted once across both days.
    let (s, report) = app.get(&a.key, "/v1/reports?from=2026-11-19&to=2026-11-20&group_by=campaign").await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(rows(&report), vec![(String::new(), c1, 7, 3, Some(2.3333)), (String::new(), c2, 6, 3, Some(2.0))]);

    // CSV: the two columns follow invalid_clicks; no impressions means reach 0 and an
    // empty frequency.
    let (s, csv) = app.get_text(&a.key, &format!("{query}&format=csv")).await;
    assert_eq!(s, 200);
    let mut csv_lines = csv.lines();
    let header = csv_lines.next().expect("header");
    assert!(header.ends_with(",invalid_impressions,invalid_clicks,reach,frequency"), "{header}");
    assert_eq!(csv_lines.next().map(|l| l.ends_with(",1,0,2,2.0")), Some(true), "{csv}");
    let (s, empty) = app.get(&a.key, "/v1/reports?from=2026-11-01&to=2026-11-02").await;
    assert_eq!(s, 200);
    assert_eq!((empty["totals"]["reach"].as_i64(), &empty["totals"]["frequency"]), (Some(0), &Value::Null));
}

#[tokio::test]
async fn reach_of_twenty_thousand_users_is_within_two_percent() {
    let app = spawn_app().await;
    app.clock.set(NOW);
    let a = fixture(&app, "sidebar-main", 2_000_000).await;
    const USERS: usize = 20_000;
    // Each user seen twice, a day apart; imported in parts to stay under the body limit.
    let lines: Vec<String> = (0..2 * USERS)
        .map(|i| {
            let (user, repeat) = (i % USERS, i / USERS);
            let at_ms = NOW - 2 * DAY + (repeat as i64) * DAY + (user as i64) * 4_000;
            line(&format!("e{i}"), "impression", at_ms, a.campaign_id, a.ad_id, &format!("user-{user}"))
        })
        .collect();
    for part in lines.chunks(10_000) {
        import(&app, part).await;
    }
    let totals = totals(&app, &a.key, "from=2026-11-17&to=2026-11-20").await;
    assert_eq!(totals["impressions"].as_i64(), Some(2 * USERS as i64), "{totals}");
    let reach = totals["reach"].as_i64().expect("reach");
    let error = (reach as f64 - USERS as f64).abs() / USERS as f64;
    assert!(error < 0.02, "reach {reach} of {USERS} users ({:.2}% off)", error * 100.0);
    let frequency = totals["frequency"].as_f64().expect("frequency");
    assert!((frequency - 2.0).abs() < 0.04, "frequency {frequency}");
}

//! `GET /v1/campaigns/{id}/insights`: the alerts of [`adtally_core::insights`] for one
//! campaign. This module only gathers the figures: eight weeks of the campaign's valid
//! events per local day of the advertiser's time zone (with the quarter-hour spend that
//! tells when a daily budget ran out), its lifetime spend, and the conversion rates of
//! the advertiser's and the platform's history to compare with.

use std::sync::Arc;

use axum::extract::State;
use serde_json::{json, Map, Value};

use adtally_core::catalog::Campaign;
use adtally_core::event::{EventKind, Verdict};
use adtally_core::insights::{
    budget_spent_at, insights, CampaignHistory, DayCounts, Figure, Insight, Reference, HISTORY_DAYS, PERIOD_DAYS,
};
use adtally_core::jiff::civil::Date;
use adtally_core::jiff::Span;
use adtally_core::metrics::saturate;
use adtally_core::report::{local_date, start_of_day};
use adtally_store::{ReachAs, RollupQuery, RollupRow, StoreError};

use crate::api::Caller;
use crate::error::{ApiError, Path};
use crate::state::AppState;

/// Valid impressions, clicks and conversions of rollup rows.
fn reference(source: &'static str, rows: &[RollupRow]) -> Reference {
    let mut r = Reference { source, ..Default::default() };
    for row in rows.iter().filter(|r| r.verdict == Verdict::Valid) {
        match row.kind {
            EventKind::Impression => r.impressions = r.impressions.saturating_add(row.sums.events),
            EventKind::Click => r.clicks = r.clicks.saturating_add(row.sums.events),
            EventKind::Conversion => r.conversions = r.conversions.saturating_add(row.sums.events),
            EventKind::Viewable => {}
        }
    }
    r
}

fn date_json(d: Date) -> Value {
    json!(d.to_string())
}

/// The alerts of one campaign now; blocking (it reads the store).
pub fn campaign_alerts(state: &AppState, campaign: &Campaign) -> Result<Vec<Insight>, StoreError> {
    let id = campaign.id;
    let advertiser_id = campaign.advertiser_id;
    let tz = state.catalog().timezone(advertiser_id);
    let today = local_date(state.clock.now_ms(), &tz);
    let span = |date: Date, days: usize| {
        date.checked_sub(Span::new().days(days as i64)).map_err(|e| StoreError::Database(e.to_string()))
    };
    let last_day = span(today, 1)?;
    let first_day = span(last_day, HISTORY_DAYS - 1)?;
    let period_start = span(last_day, PERIOD_DAYS - 1)?;
    let (from_ms, to_ms, period_ms) =
        (start_of_day(first_day, &tz), start_of_day(today, &tz), start_of_day(period_start, &tz));

    let query = |advertiser_id: Option<i64>, campaign_id: Option<i64>, to_ms: i64, by_bucket: bool| RollupQuery {
        advertiser_id,
        campaign_id,
        ad_id: None,
        from_ms,
        to_ms,
        by_bucket,
        group_by: Vec::new(),
        reach: ReachAs::Nothing,
        // Whole local days: the totals may come from the day layer; the campaign's
        // rows need quarter hours (spend by time of day).
        days_in: (!by_bucket).then(|| tz.iana_name().unwrap_or("UTC").to_owned()),
        max_rows: None,
    };
    let store = state.store.as_ref();
    let rows = store.rollup_rows(&query(Some(advertiser_id), Some(id), to_ms, true))?;
    let advertiser_rows = store.rollup_rows(&query(Some(advertiser_id), None, period_ms, false))?;
    let platform_rows = store.rollup_rows(&query(None, None, period_ms, false))?;
    // Per local day: counts, and spend per quarter hour (minute of the local day).
    let mut days = vec![DayCounts::default(); HISTORY_DAYS];
    let mut quarters: Vec<Vec<(u32, i64)>> = vec![Vec::new(); HISTORY_DAYS];
    for row in rows.iter().filter(|r| r.verdict == Verdict::Valid) {
        let date = local_date(row.bucket_ms, &tz);
        let Ok(index) = usize::try_from((date - first_day).get_days()) else { continue };
        let Some(day) = days.get_mut(index) else { continue };
        let n = row.sums.events;
        match row.kind {
            EventKind::Impression => {
                day.impressions = day.impressions.saturating_add(n);
                let spend = saturate(row.sums.cost_micros);
                day.spend_micros = day.spend_micros.saturating_add(spend);
                let minute = (row.bucket_ms - start_of_day(date, &tz)) / 60_000;
                quarters[index].push((u32::try_from(minute).unwrap_or(0), spend));
            }
            EventKind::Click => day.clicks = day.clicks.saturating_add(n),
            EventKind::Conversion => day.conversions = day.conversions.saturating_add(n),
            EventKind::Viewable => {}
        }
    }
    if let Some(daily) = campaign.daily_budget_micros {
        for (day, q) in days.iter_mut().zip(&mut quarters) {
            q.sort_unstable();
            day.budget_spent_at_minute = budget_spent_at(q, daily);
        }
    }
    let history = CampaignHistory {
        days,
        last_day,
        daily_budget_micros: campaign.daily_budget_micros,
        total_budget_micros: campaign.total_budget_micros,
        spent_total_micros: state.pipeline.delivery().spent(id),
        // The last local day the campaign serves (an end at midnight ends the day before).
        end_date: campaign.end_at_ms.map(|end| local_date(end - 1, &tz)),
        pacing_even: campaign.pacing == adtally_core::catalog::Pacing::Even,
        references: vec![reference("advertiser", &advertiser_rows), reference("platform", &platform_rows)],
    };
    Ok(insights(&history))
}

pub async fn campaign_insights(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<axum::Json<Value>, ApiError> {
    let campaign = state.blocking(move |s| s.campaign(id)).await?;
    let campaign = campaign.filter(|c| caller.owns(c.advertiser_id)).ok_or_else(|| ApiError::not_found("campaign"))?;
    let tz = state.catalog().timezone(campaign.advertiser_id);
    let worker = state.clone();
    let alerts = tokio::task::spawn_blocking(move || campaign_alerts(&worker, &campaign)).await??;
    let items: Vec<Value> = alerts
        .into_iter()
        .map(|i| {
            let evidence: Map<String, Value> = i
                .evidence
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Figure::Int(n) => json!(n),
                        Figure::Number(x) => json!(x),
                        Figure::Text(t) => json!(t),
                    };
                    (k.to_owned(), v)
                })
                .collect();
            json!({
                "kind": i.kind.as_str(),
                "severity": i.severity.as_str(),
                "period": {"from": date_json(i.period.0), "to": date_json(i.period.1)},
                "baseline": {"from": date_json(i.baseline.0), "to": date_json(i.baseline.1)},
                "evidence": evidence,
                "action": i.action,
            })
        })
        .collect();
    Ok(axum::Json(json!({"items": items, "campaign_id": id, "timezone": tz.iana_name().unwrap_or("UTC")})))
}

//! `GET /v1/attribution`: credit for one advertiser's conversions of a report range under
//! one attribution model, or all of them side by side, per campaign and ad.
//!
//! Computed at query time (see [`adtally_core::attribution`]) from the stored touch path,
//! not from the last-touch credit frozen into conversions, so every model reads the same
//! facts. Any report range works, `lifetime` included; the work is bounded by the rows:
//! at most [`MAX_ROWS`] conversions and touches are read (one range scan of the
//! advertiser's index), and past that the caller is asked to narrow the range (400
//! `range_too_large`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use adtally_core::attribution::{attribute, Model, ModelReport, Windows, CREDIT_UNIT};
use adtally_core::metrics::saturate;
use adtally_core::report::{local_date, RawReportRequest, ReportSpec};

use crate::api::Caller;
use crate::error::{ApiError, Query};
use crate::state::AppState;

/// Most conversions, and most touches, one answer reads.
pub const MAX_ROWS: usize = 1_000_000;

#[derive(Deserialize, Default)]
pub struct AttributionParams {
    pub model: Option<String>,
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub advertiser_id: Option<i64>,
}

/// The advertiser a per-advertiser read is about: the caller's own, or the one the admin
/// names. Someone else's id answers exactly like an unknown one (404).
pub fn advertiser_of(state: &AppState, caller: Caller, asked: Option<i64>) -> Result<i64, ApiError> {
    let id = match caller {
        Caller::Advertiser(id) if asked.is_none_or(|a| a == id) => id,
        Caller::Advertiser(_) => return Err(ApiError::not_found("advertiser")),
        Caller::Admin => asked.ok_or_else(|| ApiError::invalid("the admin key must name an advertiser_id"))?,
    };
    if !state.catalog().advertisers.contains_key(&id) {
        return Err(ApiError::not_found("advertiser"));
    }
    Ok(id)
}

/// An advertiser's attribution settings as the API shows and takes them.
pub fn windows_json(w: Windows) -> Value {
    json!({
        "click_window_days": w.click_days(),
        "view_window_days": w.view_days(),
        "half_life_days": w.half_life_days(),
    })
}

fn conversions_json(credit: i128) -> Value {
    // Credits are integer millionths: the float is the nearest double to a 6-decimal
    // number, which JSON prints as that number.
    json!(credit as f64 / CREDIT_UNIT as f64)
}

fn model_json(report: &ModelReport) -> Value {
    let rows: Vec<Value> = report
        .rows
        .iter()
        .map(|(&(campaign_id, ad_id), s)| {
            json!({
                "campaign_id": campaign_id,
                "ad_id": ad_id,
                "conversions": conversions_json(s.credit),
                "revenue_micros": saturate(s.revenue_micros),
            })
        })
        .collect();
    json!({
        "rows": rows,
        "totals": {
            "conversions": report.conversions,
            "revenue_micros": saturate(report.revenue_micros),
            "unattributed": report.unattributed,
            "unattributed_revenue_micros": saturate(report.unattributed_revenue_micros),
        }
    })
}

pub async fn attribution(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(p): Query<AttributionParams>,
) -> Result<Response, ApiError> {
    let models: Vec<Model> = match p.model.as_deref().unwrap_or("last_click") {
        "all" => Model::ALL.to_vec(),
        name => vec![Model::parse(name).ok_or_else(|| {
            ApiError::invalid(
                "model must be one of last_click, first_touch, linear, time_decay, position_based, all".to_owned(),
            )
        })?],
    };
    let advertiser_id = advertiser_of(&state, caller, p.advertiser_id)?;
    let catalog = state.catalog();
    let tz = catalog.timezone(advertiser_id);
    let windows = catalog.advertisers.get(&advertiser_id).map(|(a, _)| a.attribution).unwrap_or_default();
    drop(catalog);
    let raw = RawReportRequest { range: p.range.clone(), from: p.from.clone(), to: p.to.clone(), ..Default::default() };
    let spec = ReportSpec::parse(&raw, local_date(state.clock.now_ms(), &tz))
        .map_err(|e| ApiError::bad_request("invalid_report", e.to_string()))?;
    let (from_ms, to_ms) = spec.utc_range(&tz);
    let paths =
        state.blocking(move |s| s.touch_paths(advertiser_id, from_ms, to_ms, windows.click_ms(), MAX_ROWS)).await?;
    if paths.truncated {
        return Err(ApiError::bad_request(
            "range_too_large",
            format!("more than {MAX_ROWS} conversions or touches in this range; ask for a shorter one"),
        ));
    }
    // Pure CPU work on up to a million rows: off the async runtime.
    let reports: BTreeMap<Model, ModelReport> =
        tokio::task::spawn_blocking(move || attribute(&models, &paths.conversions, paths.touches, windows)).await?;
    let timezone = tz.iana_name().unwrap_or("UTC");
    let body = if reports.len() == 1 {
        let (model, report) = reports.iter().next().ok_or_else(ApiError::internal)?;
        let mut out = model_json(report);
        out["model"] = json!(model.as_str());
        out["timezone"] = json!(timezone);
        out["windows"] = windows_json(windows);
        out
    } else {
        let models: serde_json::Map<String, Value> =
            reports.iter().map(|(m, r)| (m.as_str().to_owned(), model_json(r))).collect();
        json!({"models": models, "timezone": timezone, "windows": windows_json(windows)})
    };
    Ok(axum::Json(body).into_response())
}

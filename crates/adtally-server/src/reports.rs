//! `GET /v1/reports` and `GET /v1/reports/ivt`: rollups grouped by the asked dimensions
//! and local days or hours of the advertiser's time zone, with every metric, as JSON or
//! CSV.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{json, Map, Value};

use adtally_core::clock::Millis;
use adtally_core::event::{Country, Device, EventKind, Verdict};
use adtally_core::metrics::{Counts, MetricValue, Metrics};
use adtally_core::report::{
    local_date, period_start, time_label, Dimension, Granularity, RawReportRequest, ReportSpec,
};
use adtally_core::sketch::Sketch;
use adtally_store::{Reach, ReachAs, RollupQuery};

use crate::api::Caller;
use crate::error::{ApiError, Query};
use crate::state::{AppState, ServingCatalog};

/// Grouped rollup rows a report reads at most, whatever its row limit: one report row
/// is many rollup rows (kinds, verdicts, and quarter hours when they answer it), so this
/// only bounds the memory of a query that would be refused anyway.
const MAX_ROLLUP_ROWS_READ: usize = 2_000_000;

#[derive(Deserialize, Default, Clone)]
pub struct ReportParams {
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub granularity: Option<String>,
    pub group_by: Option<String>,
    pub campaign_id: Option<i64>,
    pub ad_id: Option<i64>,
    pub advertiser_id: Option<i64>,
    pub format: Option<String>,
}

/// A report row's identity: period start and the grouped dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct RowKey {
    period_ms: i64,
    campaign_id: Option<i64>,
    ad_id: Option<i64>,
    placement_id: Option<i64>,
    device: Device,
    country: Country,
}

struct Report {
    spec: ReportSpec,
    tz: adtally_core::jiff::tz::TimeZone,
    rows: BTreeMap<RowKey, Counts>,
    totals: Counts,
    catalog: Arc<ServingCatalog>,
}

/// The report `p` asks for; `reach`: read the reach sketches too (the IVT report has no
/// use for them).
async fn build(state: &Arc<AppState>, caller: Caller, p: &ReportParams, reach: bool) -> Result<Report, ApiError> {
    if p.format.as_deref().is_some_and(|f| f != "json" && f != "csv") {
        return Err(ApiError::invalid("format must be json or csv"));
    }
    let advertiser_id = match caller {
        Caller::Advertiser(id) => {
            if p.advertiser_id.is_some_and(|a| a != id) {
                return Err(ApiError::not_found("advertiser"));
            }
            Some(id)
        }
        Caller::Admin => p.advertiser_id,
    };
    let catalog = state.catalog();
    if let Some(id) = p.campaign_id {
        if !catalog.campaigns.get(&id).is_some_and(|c| caller.owns(c.advertiser_id)) {
            return Err(ApiError::not_found("campaign"));
        }
    }
    if let Some(id) = p.ad_id {
        if !catalog.ads.get(&id).is_some_and(|a| caller.owns(a.advertiser_id)) {
            return Err(ApiError::not_found("ad"));
        }
    }
    // The operator's report of one campaign or ad is that advertiser's: its days are the
    // advertiser's, as on the advertiser's own report, not UTC's.
    let advertiser_id = advertiser_id
        .or_else(|| p.campaign_id.and_then(|id| catalog.campaigns.get(&id)).map(|c| c.advertiser_id))
        .or_else(|| p.ad_id.and_then(|id| catalog.ads.get(&id)).map(|a| a.advertiser_id));
    let tz = advertiser_id.map_or(adtally_core::jiff::tz::TimeZone::UTC, |id| catalog.timezone(id));
    let raw = RawReportRequest {
        range: p.range.clone(),
        from: p.from.clone(),
        to: p.to.clone(),
        granularity: p.granularity.clone(),
        group_by: p.group_by.clone(),
    };
    let spec = ReportSpec::parse(&raw, local_date(state.clock.now_ms(), &tz))
        .map_err(|e| ApiError::bad_request("invalid_report", e.to_string()))?;
    let (from_ms, to_ms) = spec.utc_range(&tz);
    let query = RollupQuery {
        advertiser_id,
        campaign_id: p.campaign_id,
        ad_id: p.ad_id,
        from_ms,
        to_ms,
        by_bucket: spec.granularity != Granularity::Total,
        group_by: spec.group_by.clone(),
        // Each group is one report row: it may come counted.
        reach: if reach { ReachAs::Counts } else { ReachAs::Nothing },
        // Days and totals are whole days of `tz`: the day layer answers them when it can.
        days_in: (spec.granularity != Granularity::Hour && !state.config.reports_from_quarter_hours)
            .then(|| tz.iana_name().unwrap_or("UTC").to_owned()),
        max_rows: Some(MAX_ROLLUP_ROWS_READ),
    };
    let max_rows = state.config.max_report_rows;
    let too_large = || {
        ApiError::bad_request(
            "report_too_large",
            format!(
                "this report would have more than {max_rows} rows; ask for a shorter range, granularity day \
                 instead of hour, or fewer group_by dimensions"
            ),
        )
    };
    let found = {
        let query = query.clone();
        state.blocking(move |s| s.rollup_rows(&query)).await?
    };
    if found.len() > MAX_ROLLUP_ROWS_READ {
        return Err(too_large());
    }
    let mut rows: BTreeMap<RowKey, Counts> = BTreeMap::new();
    let mut totals = Counts::default();
    // A bucket's rows come together (one per kind and verdict): its period, a time-zone
    // conversion, is computed once for them.
    let mut period: Option<(Millis, Millis)> = None;
    for r in found {
        let period_ms = match period {
            Some((bucket, start)) if bucket == r.bucket_ms => start,
            _ => {
                let start = period_start(r.bucket_ms, spec.granularity, &tz);
                period = Some((r.bucket_ms, start));
                start
            }
        };
        let key = RowKey {
            period_ms,
            campaign_id: r.campaign_id,
            ad_id: r.ad_id,
            placement_id: r.placement_id,
            device: r.device,
            country: r.country,
        };
        let s = r.sums;
        let (kind, verdict) = (r.kind, r.verdict);
        if rows.len() >= max_rows && !rows.contains_key(&key) {
            return Err(too_large());
        }
        let row = rows.entry(key).or_default();
        row.add(kind, verdict, s.events, s.cost_micros, s.value_micros);
        totals.add(kind, verdict, s.events, s.cost_micros, s.value_micros);
        // Reach is not additive: a row (a local day of quarter-hour buckets, say) and the
        // totals take the union of their buckets' users.
        match r.reach {
            Some(Reach::Users(users)) => {
                totals.reach.merge(&users);
                row.reach.merge_owned(users);
            }
            // The store counts a group only where it is one report row on its own.
            Some(Reach::Counted(n)) => row.counted_reach = Some(n),
            None => {}
        }
    }
    if rows.values().any(|r| r.counted_reach.is_some()) {
        // Counted rows brought no sketch to the totals' union: it is a query of its own,
        // which the day layer answers from a few spans of days.
        let whole =
            RollupQuery { by_bucket: false, group_by: Vec::new(), reach: ReachAs::Sketches, max_rows: None, ..query };
        let found = state.blocking(move |s| s.rollup_rows(&whole)).await?;
        totals.reach = Sketch::default();
        for r in found {
            if let Some(Reach::Users(users)) = r.reach {
                totals.reach.merge_owned(users);
            }
        }
    }
    Ok(Report { spec, tz, rows, totals, catalog })
}

impl Report {
    /// The row's key columns, in output order, as JSON values.
    fn key_columns(&self, key: &RowKey) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        match self.spec.granularity {
            Granularity::Total => {}
            Granularity::Day => out.push(("date", json!(time_label(key.period_ms, Granularity::Day, &self.tz)))),
            Granularity::Hour => out.push(("hour", json!(time_label(key.period_ms, Granularity::Hour, &self.tz)))),
        }
        let id = |v: Option<i64>| v.map_or(Value::Null, |v| json!(v));
        for dim in &self.spec.group_by {
            let value = match dim {
                Dimension::Campaign => id(key.campaign_id),
                Dimension::Ad => id(key.ad_id),
                Dimension::Placement => key
                    .placement_id
                    .and_then(|p| self.catalog.placement_slugs.get(&p))
                    .map_or(Value::Null, |s| json!(s)),
                Dimension::Device => json!(key.device.as_str()),
                Dimension::Country => json!(key.country.as_str()),
            };
            out.push((dim.column(), value));
        }
        out
    }
}

fn metric_json(v: MetricValue) -> Value {
    match v {
        MetricValue::Int(n) => json!(n),
        MetricValue::Money(m) => m.map_or(Value::Null, |n| json!(n)),
        MetricValue::Rate(r) => r.map_or(Value::Null, |x| json!((x * 10_000.0).round() / 10_000.0)),
    }
}

/// A report's JSON body, written straight from the report: building a `Value` tree of
/// its rows (a map of two dozen owned keys per row) and copying it into the answer took
/// a third of a 270-row report. Keys come in the CSV's order: the row's period and
/// dimensions, then the metrics.
struct ReportBody<'a>(&'a Report);

/// One row's columns, or the totals (no key columns).
struct RowBody {
    keys: Vec<(&'static str, Value)>,
    metrics: Metrics,
}

impl RowBody {
    fn new(keys: Vec<(&'static str, Value)>, counts: &Counts) -> Self {
        RowBody { keys, metrics: counts.metrics() }
    }
}

impl Serialize for RowBody {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.keys.len() + Metrics::NAMES.len()))?;
        for (name, value) in &self.keys {
            map.serialize_entry(name, value)?;
        }
        for (name, value) in Metrics::NAMES.iter().zip(self.metrics.values()) {
            map.serialize_entry(name, &metric_json(value))?;
        }
        map.end()
    }
}

impl Serialize for ReportBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let report = self.0;
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("rows", &Rows(report))?;
        map.serialize_entry("totals", &RowBody::new(Vec::new(), &report.totals))?;
        map.serialize_entry("timezone", report.tz.iana_name().unwrap_or("UTC"))?;
        map.end()
    }
}

/// The rows of a [`ReportBody`], each serialized as it is reached.
struct Rows<'a>(&'a Report);

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let report = self.0;
        let mut seq = s.serialize_seq(Some(report.rows.len()))?;
        for (key, counts) in &report.rows {
            seq.serialize_element(&RowBody::new(report.key_columns(key), counts))?;
        }
        seq.end()
    }
}

/// One CSV field, quoted per RFC 4180 when it needs to be.
fn csv_field(out: &mut String, value: &Value) {
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&text);
    }
}

fn csv_line(out: &mut String, values: &[Value]) {
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, v);
    }
    out.push_str("\r\n");
}

fn csv_response(body: String, name: &str) -> Response {
    let disposition = format!("attachment; filename=\"{name}.csv\"");
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, disposition)], body)
        .into_response()
}

pub async fn report(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(p): Query<ReportParams>,
) -> Result<Response, ApiError> {
    let report = build(&state, caller, &p, true).await?;
    if p.format.as_deref() == Some("csv") {
        let mut out = String::new();
        let mut header: Vec<Value> = report.key_columns(&RowKey::default_key()).iter().map(|(k, _)| json!(k)).collect();
        header.extend(Metrics::NAMES.iter().map(|n| json!(n)));
        csv_line(&mut out, &header);
        for (key, counts) in &report.rows {
            let mut line: Vec<Value> = report.key_columns(key).into_iter().map(|(_, v)| v).collect();
            line.extend(counts.metrics().values().into_iter().map(metric_json));
            csv_line(&mut out, &line);
        }
        return Ok(csv_response(out, "adtally-report"));
    }
    Ok(axum::Json(ReportBody(&report)).into_response())
}

/// The JSON answer of `GET /v1/reports` (without `format=csv`), for the dashboard.
pub async fn report_json(state: &Arc<AppState>, caller: Caller, p: &ReportParams) -> Result<Value, ApiError> {
    serde_json::to_value(ReportBody(&build(state, caller, p, true).await?)).map_err(|_| ApiError::internal())
}

impl RowKey {
    fn default_key() -> Self {
        RowKey {
            period_ms: 0,
            campaign_id: None,
            ad_id: None,
            placement_id: None,
            device: Device::Desktop,
            country: Country::UNKNOWN,
        }
    }
}

/// Invalid events by reason: one row per group, event kind and reason.
pub async fn ivt_report(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(p): Query<ReportParams>,
) -> Result<Response, ApiError> {
    let report = build(&state, caller, &p, false).await?;
    if p.format.as_deref() == Some("csv") {
        let mut out = String::new();
        let mut header: Vec<Value> = report.key_columns(&RowKey::default_key()).iter().map(|(k, _)| json!(k)).collect();
        header.extend(["event_type", "reason", "events"].map(|n| json!(n)));
        csv_line(&mut out, &header);
        for row in &ivt_rows(&report) {
            csv_line(&mut out, &row.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>());
        }
        return Ok(csv_response(out, "adtally-ivt"));
    }
    Ok(axum::Json(ivt_value(&report)).into_response())
}

/// The JSON answer of `GET /v1/reports/ivt` (without `format=csv`), for the dashboard.
pub async fn ivt_json(state: &Arc<AppState>, caller: Caller, p: &ReportParams) -> Result<Value, ApiError> {
    Ok(ivt_value(&build(state, caller, p, false).await?))
}

/// Invalid events: one row per group, event kind and reason.
fn ivt_rows(report: &Report) -> Vec<Vec<(&'static str, Value)>> {
    let mut rows = Vec::new();
    for (key, counts) in &report.rows {
        for (&(kind, verdict), &events) in &counts.invalid {
            let mut row: Vec<(&str, Value)> = report.key_columns(key);
            row.push(("event_type", json!(kind.as_str())));
            row.push(("reason", json!(verdict.as_str())));
            row.push(("events", json!(events)));
            rows.push(row);
        }
    }
    rows
}

fn ivt_value(report: &Report) -> Value {
    let rows = ivt_rows(report);
    let mut by_reason = Map::new();
    for verdict in Verdict::ALL.into_iter().filter(|v| !v.is_valid()) {
        let mut per_kind = Map::new();
        for kind in [EventKind::Impression, EventKind::Viewable, EventKind::Click, EventKind::Conversion] {
            per_kind
                .insert(kind.as_str().into(), json!(report.totals.invalid.get(&(kind, verdict)).copied().unwrap_or(0)));
        }
        by_reason.insert(verdict.as_str().into(), Value::Object(per_kind));
    }
    let rows: Vec<Value> =
        rows.into_iter().map(|r| Value::Object(r.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())).collect();
    json!({
        "rows": rows,
        "totals": {
            "invalid_impressions": report.totals.invalid_impressions,
            "invalid_clicks": report.totals.invalid_clicks,
            "by_reason": by_reason,
        }
    })
}

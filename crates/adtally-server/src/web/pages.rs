//! The dashboard's `GET` pages. Each reads through the functions the JSON API's handlers
//! use (the handlers themselves, or the shared bodies in [`crate::api`] and
//! [`crate::reports`]) and turns the JSON they answer into rows of formatted text for a
//! template; the `render_*` functions are also what [`super::forms`] shows again, with
//! the error, when a form is refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use adtally_core::jiff::civil::Date;
use adtally_core::jiff::tz::TimeZone;
use adtally_core::jiff::{Span, Timestamp};
use adtally_core::report::{local_date, RawReportRequest, ReportSpec};
use askama::Template;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{json, Value};

use super::chart::{self, Day};
use super::format::{amount_input, int_value, money, money_value, percent};
use super::{id_of, render, FormData, Layout, PageError, Signed};
use crate::api::{self, AdListQuery, Caller};
use crate::error::{Path, Query};
use crate::reports::{self, ReportParams};
use crate::state::AppState;

type PageResult = Result<Response, PageError>;

/// The sign-in form's double-submit cookie: the form carries the same random value.
pub const SIGN_IN_COOKIE: &str = "adtally_signin";

// ---- ranges ----------------------------------------------------------------------------

/// The range picker's choices, in order.
pub const RANGES: [(&str, &str); 6] = [
    ("today", "Today"),
    ("yesterday", "Yesterday"),
    ("last_7_days", "Last 7 days"),
    ("last_30_days", "Last 30 days"),
    ("lifetime", "Lifetime"),
    ("custom", "Custom"),
];

/// A report range from a page's query: a named range, or (`custom`) two local dates.
#[derive(Clone)]
pub struct Range {
    pub name: String,
    pub from: String,
    pub to: String,
}

impl Range {
    /// `?range=…` or `?range=custom&from=…&to=…` (also `from` and `to` alone); the last 7
    /// days without either. Names and dates are checked by the report itself.
    pub fn from_query(query: Option<&str>) -> Result<Range, PageError> {
        let form = FormData::parse(query.unwrap_or_default().as_bytes());
        let (from, to) = (form.opt("from").unwrap_or_default(), form.opt("to").unwrap_or_default());
        let name = match form.opt("range") {
            Some(name) => name,
            None if !from.is_empty() || !to.is_empty() => "custom",
            None => "last_7_days",
        };
        if !RANGES.iter().any(|(n, _)| *n == name) {
            return Err(PageError::bad_request(format!(
                "The range {:?} is not one this dashboard knows: choose today, yesterday, last 7 days, last 30 days, lifetime or a custom range.",
                name.chars().take(40).collect::<String>()
            )));
        }
        if name == "custom" && (from.is_empty() || to.is_empty()) {
            return Err(PageError::bad_request("A custom range needs both a first and a last day."));
        }
        let (from, to) =
            if name == "custom" { (from.to_owned(), to.to_owned()) } else { (String::new(), String::new()) };
        Ok(Range { name: name.to_owned(), from, to })
    }

    fn custom(&self) -> bool {
        self.name == "custom"
    }

    /// The report parameters of this range.
    pub fn params(&self) -> ReportParams {
        if self.custom() {
            ReportParams { from: Some(self.from.clone()), to: Some(self.to.clone()), ..Default::default() }
        } else {
            ReportParams { range: Some(self.name.clone()), ..Default::default() }
        }
    }

    /// The range in an API URL's query.
    pub fn api_query(&self) -> String {
        if self.custom() {
            format!("from={}&to={}", enc(&self.from), enc(&self.to))
        } else {
            format!("range={}", enc(&self.name))
        }
    }

    /// The range in a dashboard URL's query.
    pub fn page_query(&self) -> String {
        if self.custom() {
            format!("range=custom&from={}&to={}", enc(&self.from), enc(&self.to))
        } else {
            format!("range={}", enc(&self.name))
        }
    }

    /// The local dates the range covers (`None`: lifetime), as the report reads them.
    fn dates(&self, today: Date) -> Result<Option<(Date, Date)>, PageError> {
        let p = self.params();
        let raw = RawReportRequest { range: p.range, from: p.from, to: p.to, granularity: None, group_by: None };
        let spec =
            ReportSpec::parse(&raw, today).map_err(|e| PageError::bad_request(super::sentence(&e.to_string())))?;
        Ok(spec.dates)
    }
}

/// Percent-encodes a query value.
pub fn enc(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The picker's view.
pub struct Picker {
    pub action: String,
    pub range: Range,
    pub timezone: String,
}

impl Picker {
    pub fn options(&self) -> Vec<(&'static str, &'static str, bool)> {
        RANGES.iter().map(|(v, l)| (*v, *l, *v == self.range.name)).collect()
    }
}

async fn report(state: &Arc<AppState>, caller: Caller, p: ReportParams) -> Result<Value, PageError> {
    reports::report_json(state, caller, &p).await.map_err(PageError::from)
}

/// One metric cell per column, read from a report row or totals.
pub struct Figures {
    pub impressions: String,
    pub viewable: String,
    pub clicks: String,
    pub ctr: String,
    pub spend: String,
    pub conversions: String,
    pub reach: String,
}

impl Figures {
    fn of(m: &Value) -> Figures {
        Figures {
            impressions: int_value(&m["impressions"]),
            viewable: percent(&m["viewability_rate"]),
            clicks: int_value(&m["clicks"]),
            ctr: percent(&m["ctr"]),
            spend: money_value(&m["spend_micros"]),
            conversions: int_value(&m["conversions"]),
            reach: int_value(&m["reach"]),
        }
    }
    fn zero() -> Figures {
        Figures::of(&json!({"impressions": 0, "clicks": 0, "spend_micros": 0, "conversions": 0, "reach": 0}))
    }
}

// ---- sign-in and the advertiser's overview ----------------------------------------------

#[derive(Template)]
#[template(path = "sign_in.html")]
pub struct SignInPage {
    pub layout: Layout,
    pub token: String,
    pub error: Option<String>,
}

/// The sign-in form, with a fresh double-submit token in a cookie (`Secure` when `secure`)
/// and the form.
pub fn render_sign_in(status: StatusCode, error: Option<String>, secure: bool) -> PageResult {
    let token = crate::session::new_token()?;
    let page = SignInPage { layout: Layout::anonymous("Sign in"), token: token.clone(), error };
    let mut response = render(status, &page);
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{SIGN_IN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/sign-in{secure}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    layout: Layout,
    /// The operator looking at an advertiser's campaigns: no advertiser's own links
    /// (new campaign, billing).
    operator_view: Option<(i64, String)>,
    balance: String,
    picker: Picker,
    rows: Vec<CampaignRow>,
    totals: Figures,
    csv: String,
}

struct CampaignRow {
    id: i64,
    name: String,
    status: String,
    figures: Figures,
    budget_left: String,
}

/// `GET /`: the sign-in form, the advertiser's overview, or the operator's review queue.
pub async fn home(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let signed = match crate::session::page(&state, &headers).await {
        Ok(Some((caller, session))) => Signed { caller, session },
        Ok(None) => {
            let secure = crate::session::https(&state, peer, &headers);
            return render_sign_in(StatusCode::OK, None, secure).unwrap_or_else(IntoResponse::into_response);
        }
        Err(e) => return PageError::from(e).into_response(),
    };
    if signed.caller == Caller::Admin {
        return Redirect::to("/admin/review").into_response();
    }
    overview(&state, &signed, query.as_deref()).await.unwrap_or_else(IntoResponse::into_response)
}

async fn overview(state: &Arc<AppState>, signed: &Signed, query: Option<&str>) -> PageResult {
    overview_of(state, signed, signed.caller, query).await
}

/// The campaigns table of `whose` campaigns: the signed-in advertiser's, or for the
/// operator any advertiser's (`Caller::Advertiser(id)` after [`Signed::admin`]).
async fn overview_of(state: &Arc<AppState>, signed: &Signed, whose: Caller, query: Option<&str>) -> PageResult {
    let range = Range::from_query(query)?;
    let campaigns = api::list_campaigns(State(state.clone()), whose).await?.0;
    let report = report(state, whose, ReportParams { group_by: Some("campaign".into()), ..range.params() }).await?;
    let by_campaign: HashMap<i64, &Value> =
        report["rows"].as_array().into_iter().flatten().filter_map(|r| Some((r["campaign_id"].as_i64()?, r))).collect();
    let rows = items(&campaigns)
        .map(|c| {
            let id = c["id"].as_i64().unwrap_or_default();
            let left = c["total_budget_micros"].as_i64().unwrap_or(0) - c["spend_micros"].as_i64().unwrap_or(0);
            CampaignRow {
                id,
                name: text(&c["name"]),
                status: text(&c["status"]),
                figures: by_campaign.get(&id).map_or_else(Figures::zero, |r| Figures::of(r)),
                budget_left: money(left.max(0)),
            }
        })
        .collect();
    let me = api::me(State(state.clone()), whose).await?.0;
    let operator_view = match (signed.caller, whose) {
        (Caller::Admin, Caller::Advertiser(id)) => Some((id, text(&me["name"]))),
        _ => None,
    };
    let (layout, action, csv) = match &operator_view {
        Some((id, name)) => (
            signed.layout(format!("{name}: campaigns"), "advertisers"),
            format!("/admin/advertisers/{id}"),
            format!("/v1/reports?{}&group_by=campaign&format=csv&advertiser_id={id}", range.api_query()),
        ),
        None => (
            signed.layout("Campaigns", "campaigns"),
            "/".into(),
            format!("/v1/reports?{}&group_by=campaign&format=csv", range.api_query()),
        ),
    };
    let page = Overview {
        layout,
        operator_view,
        balance: money_value(&me["balance_micros"]),
        picker: Picker { action, timezone: text(&report["timezone"]), range: range.clone() },
        rows,
        totals: Figures::of(&report["totals"]),
        csv,
    };
    Ok(render(StatusCode::OK, &page))
}

/// `GET /admin/advertisers/{id}`: the operator's view of one advertiser's campaigns, as
/// the advertiser sees them (in the advertiser's time zone).
pub async fn advertiser_campaigns(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    axum::extract::Path(id): axum::extract::Path<String>,
    RawQuery(query): RawQuery,
) -> PageResult {
    signed.admin()?;
    let id = id_of(&id, "advertiser")?;
    overview_of(&state, &signed, Caller::Advertiser(id), query.as_deref()).await
}

fn items(list: &Value) -> std::slice::Iter<'_, Value> {
    list["items"].as_array().map_or(&[][..], Vec::as_slice).iter()
}

/// A JSON string as text ("" for anything else).
fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

// ---- the campaign page ------------------------------------------------------------------

#[derive(Template)]
#[template(path = "campaign.html")]
struct CampaignPage {
    layout: Layout,
    picker: Picker,
    c: CampaignView,
    kpis: Figures,
    chart: String,
    days: Vec<(String, String, String, String)>,
    daily_csv: String,
    breakdowns: Vec<Breakdown>,
    ads: Vec<AdRow>,
    ads_csv: String,
    ivt: Vec<(String, String, String)>,
    ivt_totals: (String, String),
    ivt_csv: String,
    alerts: Vec<Alert>,
    actions: Vec<(&'static str, &'static str, bool)>,
    notice: Option<String>,
}

struct CampaignView {
    id: i64,
    name: String,
    status: String,
    summary: String,
}

struct Breakdown {
    key: &'static str,
    title: &'static str,
    rows: Vec<(String, Figures)>,
    csv: String,
}

struct AdRow {
    id: i64,
    headline: String,
    format: String,
    status: String,
    note: String,
    figures: Figures,
}

/// `ctr_below_own_history` as `CTR below own history`.
fn alert_title(kind: &str) -> String {
    let words = kind.replace('_', " ").replace("ctr", "CTR");
    let mut chars = words.chars();
    chars.next().map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
}

struct Alert {
    kind: String,
    severity: String,
    title: String,
    period: String,
    /// What the alert is based on, formatted: (name, value).
    evidence: Vec<(String, String)>,
    /// The campaign's own earlier weeks or the dates the projection covers.
    baseline: String,
    action: String,
}

/// The actions a campaign in `status` offers: (action, label, dangerous).
fn actions(status: &str) -> Vec<(&'static str, &'static str, bool)> {
    let mut out = Vec::new();
    match status {
        "draft" => out.push(("submit", "Submit for review", false)),
        "active" => out.push(("pause", "Pause", false)),
        "paused" => out.push(("resume", "Resume", false)),
        "archived" => out.push(("restore", "Restore", false)),
        _ => {}
    }
    out.push(("clone", "Clone", false));
    if !matches!(status, "pending_review" | "archived") {
        out.push(("archive", "Archive", true));
    }
    out
}

fn campaign_summary(c: &Value) -> String {
    let left = c["total_budget_micros"].as_i64().unwrap_or(0) - c["spend_micros"].as_i64().unwrap_or(0);
    let mut out = format!(
        "Bid {} CPM · budget {} ({} left)",
        money_value(&c["cpm_bid_micros"]),
        money_value(&c["total_budget_micros"]),
        money(left.max(0))
    );
    if let Some(daily) = c["daily_budget_micros"].as_i64() {
        out.push_str(&format!(" · daily {}", money(daily)));
    }
    out.push_str(&format!(" · pacing {}", text(&c["pacing"])));
    if let Some(cap) = c["frequency_cap"].as_object() {
        out.push_str(&format!(" · at most {} per person every {} h", cap["impressions"], cap["per_hours"]));
    }
    out
}

/// `GET /campaigns/{id}`: figures, the daily chart, breakdowns, ads, invalid traffic and
/// alerts for the range in the query.
pub async fn campaign(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    axum::extract::Path(id): axum::extract::Path<String>,
    RawQuery(query): RawQuery,
) -> PageResult {
    let id = id_of(&id, "campaign")?;
    let range = Range::from_query(query.as_deref())?;
    let caller = signed.caller;
    let c = api::get_campaign(State(state.clone()), caller, Path(id)).await?.0;
    let advertiser_id = c["advertiser_id"].as_i64().unwrap_or_default();
    // The operator reads the advertiser's reports, in the advertiser's time zone.
    let owner = (caller == Caller::Admin).then_some(advertiser_id);
    let base = ReportParams { campaign_id: Some(id), advertiser_id: owner, ..range.params() };
    let scope = format!(
        "{}&campaign_id={id}{}",
        range.api_query(),
        owner.map(|a| format!("&advertiser_id={a}")).unwrap_or_default()
    );
    let totals = report(&state, caller, base.clone()).await?;
    let daily = report(&state, caller, ReportParams { granularity: Some("day".into()), ..base.clone() }).await?;

    // Every day of the range, zero where nothing happened.
    let tz = state.catalog().timezone(advertiser_id);
    let today = local_date(state.clock.now_ms(), &tz);
    let by_day: HashMap<String, &Value> =
        daily["rows"].as_array().into_iter().flatten().map(|r| (text(&r["date"]), r)).collect();
    let (first, last) = match range.dates(today)? {
        Some(span) => span,
        None => {
            let created = c["created_at"].as_str().and_then(|t| t.parse::<Timestamp>().ok());
            let created = created.map_or(today, |t| local_date(t.as_millisecond(), &tz));
            let first_data = by_day.keys().filter_map(|d| d.parse::<Date>().ok()).min();
            (first_data.map_or(created, |d| d.min(created)).min(today), today)
        }
    };
    let chart_days = days_between(first, last, &by_day);
    let days = chart_days
        .iter()
        .rev()
        .map(|d| {
            let ctr = d.ctr.map_or_else(|| "—".to_owned(), |c| format!("{c:.2}%"));
            (d.date.clone(), super::format::int(d.impressions), super::format::int(d.clicks), ctr)
        })
        .collect();

    let mut breakdowns = Vec::new();
    for (key, title) in [("device", "By device"), ("placement", "By placement"), ("country", "By country")] {
        let r = report(&state, caller, ReportParams { group_by: Some(key.into()), ..base.clone() }).await?;
        let rows = r["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| {
                let label = match &row[key] {
                    Value::String(s) => s.clone(),
                    Value::Null => "(none)".to_owned(),
                    other => other.to_string(),
                };
                (label, Figures::of(row))
            })
            .collect();
        let csv = format!("/v1/reports?{scope}&group_by={key}&format=csv");
        breakdowns.push(Breakdown { key, title, rows, csv });
    }

    let by_ad = report(&state, caller, ReportParams { group_by: Some("ad".into()), ..base.clone() }).await?;
    let ad_figures: HashMap<i64, &Value> =
        by_ad["rows"].as_array().into_iter().flatten().filter_map(|r| Some((r["ad_id"].as_i64()?, r))).collect();
    let ad_list =
        api::list_ads(State(state.clone()), caller, Query(AdListQuery { status: None, campaign_id: Some(id) }))
            .await?
            .0;
    let ads = items(&ad_list)
        .map(|a| {
            let ad_id = a["id"].as_i64().unwrap_or_default();
            let note = match (a["rejection_reason"].as_str(), a["revision"]["status"].as_str()) {
                (Some(reason), _) => format!("Rejected: {reason}"),
                (_, Some("pending_review")) => "An edit is waiting for review".to_owned(),
                (_, Some("rejected")) => format!(
                    "The last edit was rejected: {}",
                    a["revision"]["rejection_reason"].as_str().unwrap_or_default()
                ),
                _ => String::new(),
            };
            AdRow {
                id: ad_id,
                headline: text(&a["headline"]),
                format: text(&a["format"]),
                status: text(&a["status"]),
                note,
                figures: ad_figures.get(&ad_id).map_or_else(Figures::zero, |r| Figures::of(r)),
            }
        })
        .collect();

    let ivt = reports::ivt_json(&state, caller, &base).await?;
    let mut ivt_rows = Vec::new();
    if let Some(by_reason) = ivt["totals"]["by_reason"].as_object() {
        for (reason, kinds) in by_reason {
            let n = |k: &str| kinds[k].as_i64().unwrap_or(0);
            if n("impression") + n("click") + n("viewable") + n("conversion") > 0 {
                ivt_rows.push((reason.replace('_', " "), int_value(&kinds["impression"]), int_value(&kinds["click"])));
            }
        }
    }

    let insights = crate::insights::campaign_insights(State(state.clone()), caller, Path(id)).await?.0;
    let alerts = items(&insights)
        .map(|i| Alert {
            kind: text(&i["kind"]),
            severity: text(&i["severity"]),
            title: alert_title(&text(&i["kind"])),
            period: format!("{} to {}", text(&i["period"]["from"]), text(&i["period"]["to"])),
            evidence: i["evidence"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| super::format::evidence(k, v))
                .collect(),
            baseline: format!("{} to {}", text(&i["baseline"]["from"]), text(&i["baseline"]["to"])),
            action: text(&i["action"]),
        })
        .collect();

    let status = text(&c["status"]);
    let notice = match status.as_str() {
        "draft" => Some("This campaign is a draft: add an ad, then submit it for review.".to_owned()),
        "pending_review" => Some("Waiting for review: it starts serving once an ad is approved.".to_owned()),
        _ => None,
    };
    let page = CampaignPage {
        layout: signed.layout(text(&c["name"]), "campaigns"),
        picker: Picker { action: format!("/campaigns/{id}"), timezone: text(&totals["timezone"]), range },
        kpis: Figures::of(&totals["totals"]),
        chart: chart::daily(&chart_days),
        days,
        daily_csv: format!("/v1/reports?{scope}&granularity=day&format=csv"),
        breakdowns,
        ads,
        ads_csv: format!("/v1/reports?{scope}&group_by=ad&format=csv"),
        ivt: ivt_rows,
        ivt_totals: (int_value(&ivt["totals"]["invalid_impressions"]), int_value(&ivt["totals"]["invalid_clicks"])),
        ivt_csv: format!("/v1/reports/ivt?{scope}&format=csv"),
        alerts,
        actions: actions(&status),
        notice,
        c: CampaignView { id, name: text(&c["name"]), summary: campaign_summary(&c), status },
    };
    Ok(render(StatusCode::OK, &page))
}

/// The chart's days, `first..=last` (at most the last 1 000), zero where there is no row:
/// a day without traffic is a day the ad did not run, which the chart must show.
fn days_between(first: Date, last: Date, rows: &HashMap<String, &Value>) -> Vec<Day> {
    let mut out = Vec::new();
    // Only the days that will be drawn are built, whatever the range.
    let mut day = last.checked_sub(Span::new().days(999)).map_or(first, |d| d.max(first));
    while day <= last {
        let key = day.to_string();
        let row = rows.get(&key);
        let n = |m: &str| row.and_then(|r| r[m].as_i64()).unwrap_or(0);
        out.push(Day {
            impressions: n("impressions"),
            clicks: n("clicks"),
            ctr: row.and_then(|r| r["ctr"].as_f64()),
            date: key,
        });
        match day.checked_add(Span::new().days(1)) {
            Ok(next) => day = next,
            Err(_) => break,
        }
    }
    out
}

// ---- campaign and ad forms ---------------------------------------------------------------

#[derive(Template)]
#[template(path = "campaign_form.html")]
pub struct CampaignForm {
    pub layout: Layout,
    pub action: String,
    pub cancel: String,
    pub timezone: String,
    pub error: Option<String>,
    pub name: String,
    pub bid: String,
    pub total: String,
    pub daily: String,
    pub start: String,
    pub end: String,
    pub pacing: String,
    pub cap_n: String,
    pub cap_h: String,
    pub devices: Vec<(&'static str, bool)>,
    pub placements: Vec<(String, String, bool)>,
}

impl CampaignForm {
    /// The form filled from what was posted (shown again with an error).
    pub fn refilled(mut self, form: &FormData, placements: &Value) -> Self {
        self.name = form.get("name").to_owned();
        self.bid = form.get("bid").to_owned();
        self.total = form.get("total").to_owned();
        self.daily = form.get("daily").to_owned();
        self.start = form.get("start").to_owned();
        self.end = form.get("end").to_owned();
        self.pacing = form.get("pacing").to_owned();
        self.cap_n = form.get("cap_n").to_owned();
        self.cap_h = form.get("cap_h").to_owned();
        let devices = form.all("devices");
        self.devices = DEVICES.iter().map(|d| (*d, devices.contains(d))).collect();
        let chosen = form.all("placements");
        self.placements = placement_choices(placements, |slug| chosen.contains(&slug));
        self
    }
}

const DEVICES: [&str; 3] = ["desktop", "mobile", "tablet"];

fn placement_choices(placements: &Value, chosen: impl Fn(&str) -> bool) -> Vec<(String, String, bool)> {
    items(placements)
        .map(|p| {
            let slug = text(&p["id"]);
            let on = chosen(&slug);
            (slug, text(&p["name"]), on)
        })
        .collect()
}

/// A timestamp as a `datetime-local` value in `tz`.
fn local_input(v: &Value, tz: &TimeZone) -> String {
    v.as_str()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map(|t| t.to_zoned_datetime(tz.clone()).datetime().strftime("%Y-%m-%dT%H:%M").to_string())
        .unwrap_or_default()
}

/// The empty or filled campaign form; `campaign` is the campaign being edited.
pub async fn campaign_form(
    state: &Arc<AppState>,
    signed: &Signed,
    campaign: Option<&Value>,
) -> Result<CampaignForm, PageError> {
    let placements = api::list_placements(State(state.clone()), signed.caller).await?.0;
    let advertiser_id = campaign.and_then(|c| c["advertiser_id"].as_i64()).or(signed.caller.advertiser_id());
    let tz = advertiser_id.map_or(TimeZone::UTC, |a| state.catalog().timezone(a));
    let timezone = tz.iana_name().unwrap_or("UTC").to_owned();
    let Some(c) = campaign else {
        return Ok(CampaignForm {
            layout: signed.layout("New campaign", "new"),
            action: "/campaigns/new".into(),
            cancel: "/".into(),
            timezone,
            error: None,
            name: String::new(),
            bid: String::new(),
            total: String::new(),
            daily: String::new(),
            start: String::new(),
            end: String::new(),
            pacing: "even".into(),
            cap_n: String::new(),
            cap_h: String::new(),
            devices: DEVICES.iter().map(|d| (*d, false)).collect(),
            placements: placement_choices(&placements, |_| false),
        });
    };
    let id = c["id"].as_i64().unwrap_or_default();
    let devices: Vec<&str> =
        c["targeting"]["devices"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let slugs: Vec<&str> =
        c["targeting"]["placements"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let amount = |v: &Value| v.as_i64().map(amount_input).unwrap_or_default();
    let cap = |k: &str| c["frequency_cap"][k].as_i64().map(|n| n.to_string()).unwrap_or_default();
    Ok(CampaignForm {
        layout: signed.layout(format!("Edit {}", text(&c["name"])), "campaigns"),
        action: format!("/campaigns/{id}/edit"),
        cancel: format!("/campaigns/{id}"),
        error: None,
        name: text(&c["name"]),
        bid: amount(&c["cpm_bid_micros"]),
        total: amount(&c["total_budget_micros"]),
        daily: amount(&c["daily_budget_micros"]),
        start: local_input(&c["start_at"], &tz),
        end: local_input(&c["end_at"], &tz),
        pacing: text(&c["pacing"]),
        cap_n: cap("impressions"),
        cap_h: cap("per_hours"),
        devices: DEVICES.iter().map(|d| (*d, devices.contains(d))).collect(),
        placements: placement_choices(&placements, |slug| slugs.contains(&slug)),
        timezone,
    })
}

/// `GET /campaigns/new`.
pub async fn new_campaign(State(state): State<Arc<AppState>>, signed: Signed) -> PageResult {
    Ok(render(StatusCode::OK, &campaign_form(&state, &signed, None).await?))
}

/// `GET /campaigns/{id}/edit`.
pub async fn edit_campaign(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> PageResult {
    let id = id_of(&id, "campaign")?;
    let c = api::get_campaign(State(state.clone()), signed.caller, Path(id)).await?.0;
    Ok(render(StatusCode::OK, &campaign_form(&state, &signed, Some(&c)).await?))
}

/// What an ad looks like, for previews: the same markup as the tag renders.
pub struct Creative {
    pub format: String,
    pub headline: String,
    pub body: String,
    pub image_url: String,
    pub video_url: String,
    pub cta: String,
    pub target_url: String,
}

impl Creative {
    pub fn of(a: &Value) -> Creative {
        Creative {
            format: text(&a["format"]),
            headline: text(&a["headline"]),
            body: text(&a["body"]),
            image_url: text(&a["image_url"]),
            video_url: text(&a["video_url"]),
            cta: text(&a["cta"]),
            target_url: text(&a["target_url"]),
        }
    }
    pub fn from_form(form: &FormData) -> Creative {
        Creative {
            format: form.get("format").to_owned(),
            headline: form.get("headline").to_owned(),
            body: form.get("body").to_owned(),
            image_url: form.get("image_url").to_owned(),
            video_url: form.get("video_url").to_owned(),
            cta: form.get("cta").to_owned(),
            target_url: form.get("target_url").to_owned(),
        }
    }
    /// Only http(s) media are previewed (as the tag does).
    pub fn image(&self) -> Option<&str> {
        Some(self.image_url.as_str()).filter(|u| u.starts_with("https://") || u.starts_with("http://"))
    }
    pub fn video(&self) -> Option<&str> {
        Some(self.video_url.as_str()).filter(|u| self.format == "video" && u.starts_with("https://"))
    }
    /// The landing page as the preview links it: only an http(s) URL, never `javascript:`
    /// or anything else typed into a refused form.
    pub fn href(&self) -> &str {
        let t = self.target_url.as_str();
        if t.starts_with("https://") || t.starts_with("http://") {
            t
        } else {
            "#"
        }
    }
    pub fn cta_text(&self) -> &str {
        if self.cta.trim().is_empty() {
            "Learn more"
        } else {
            &self.cta
        }
    }
    pub fn format_class(&self) -> &str {
        match self.format.as_str() {
            "sidebar" | "video" => &self.format,
            _ => "compact",
        }
    }
}

#[derive(Template)]
#[template(path = "ad_form.html")]
pub struct AdForm {
    pub layout: Layout,
    pub action: String,
    pub cancel: String,
    pub campaign_name: String,
    pub error: Option<String>,
    pub ad: Creative,
    pub formats: Vec<(&'static str, bool)>,
}

impl AdForm {
    pub fn new(layout: Layout, action: String, cancel: String, campaign_name: String, ad: Creative) -> Self {
        let formats = ["compact", "sidebar", "video"].into_iter().map(|f| (f, f == ad.format)).collect();
        AdForm { layout, action, cancel, campaign_name, error: None, ad, formats }
    }
}

/// `GET /campaigns/{id}/ads/new`.
pub async fn new_ad(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> PageResult {
    let id = id_of(&id, "campaign")?;
    let c = api::get_campaign(State(state.clone()), signed.caller, Path(id)).await?.0;
    let blank = Creative::of(&json!({"format": "sidebar", "cta": "Learn more"}));
    let form = AdForm::new(
        signed.layout("New ad", "campaigns"),
        format!("/campaigns/{id}/ads/new"),
        format!("/campaigns/{id}"),
        text(&c["name"]),
        blank,
    );
    Ok(render(StatusCode::OK, &form))
}

/// The content an edit starts from: the pending or rejected revision, else the ad.
pub fn latest(a: &Value) -> &Value {
    if a["revision"].is_object() {
        &a["revision"]
    } else {
        a
    }
}

/// `GET /ads/{id}/edit`.
pub async fn edit_ad(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> PageResult {
    let id = id_of(&id, "ad")?;
    let a = api::get_ad(State(state.clone()), signed.caller, Path(id)).await?.0;
    let campaign_id = a["campaign_id"].as_i64().unwrap_or_default();
    let c = api::get_campaign(State(state.clone()), signed.caller, Path(campaign_id)).await?.0;
    let form = AdForm::new(
        signed.layout("Edit ad", "campaigns"),
        format!("/ads/{id}/edit"),
        format!("/campaigns/{campaign_id}"),
        text(&c["name"]),
        Creative::of(latest(&a)),
    );
    Ok(render(StatusCode::OK, &form))
}

// ---- billing ----------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "billing.html")]
struct BillingPage {
    layout: Layout,
    balance: String,
    entries: Vec<(String, String, String, String)>,
    weekly: bool,
    smtp: bool,
    notice: Option<&'static str>,
    error: Option<String>,
    code: String,
}

/// What a `?done=` after a form says (fixed texts: nothing from the query is shown).
pub fn notice(query: Option<&str>) -> Option<&'static str> {
    match FormData::parse(query.unwrap_or_default().as_bytes()).get("done") {
        "redeemed" => Some("The promo code was redeemed: its credit is in your balance."),
        "weekly-on" => Some("You will get the weekly email report."),
        "weekly-off" => Some("You will no longer get the weekly email report."),
        "credited" => Some("The credit was added."),
        "advertiser" => Some("The advertiser was created: give it an API key to sign in with."),
        "promo" => Some("The promo code was created."),
        "placement" => Some("The placement was created."),
        "approved" => Some("The ad was approved."),
        "rejected" => Some("The ad was rejected; the advertiser sees the reason."),
        _ => None,
    }
}

/// `GET /billing`.
pub async fn billing(State(state): State<Arc<AppState>>, signed: Signed, RawQuery(query): RawQuery) -> PageResult {
    render_billing(&state, &signed, notice(query.as_deref()), None, String::new(), StatusCode::OK).await
}

/// The billing page: balance, ledger, promo code, weekly report; with a form's error.
pub async fn render_billing(
    state: &Arc<AppState>,
    signed: &Signed,
    notice: Option<&'static str>,
    error: Option<String>,
    code: String,
    status: StatusCode,
) -> PageResult {
    if signed.caller == Caller::Admin {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            "Billing is an advertiser's page: the operator credits accounts under Advertisers.",
        ));
    }
    let ledger = api::ledger(
        State(state.clone()),
        signed.caller,
        Query(serde_json::from_value(json!({})).map_err(|_| PageError::bad_request("bad query"))?),
    )
    .await?
    .0;
    let entries = items(&ledger)
        .rev()
        .map(|e| {
            (
                // The day in the advertiser's zone, as the reports count it.
                text(&e["date"]),
                text(&e["kind"]),
                money_value(&e["amount_micros"]),
                text(&e["note"]),
            )
        })
        .collect();
    let weekly = crate::mailer::get_weekly_report(
        State(state.clone()),
        signed.caller,
        Query(crate::mailer::WhoParams { advertiser_id: None }),
    )
    .await?
    .0;
    let page = BillingPage {
        layout: signed.layout("Billing", "billing"),
        balance: money_value(&ledger["balance_micros"]),
        entries,
        weekly: weekly["enabled"] == true,
        smtp: state.config.smtp_url.is_some(),
        notice,
        error,
        code,
    };
    Ok(render(status, &page))
}

// ---- the operator -------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "review.html")]
struct ReviewPage {
    layout: Layout,
    items: Vec<ReviewItem>,
    notice: Option<&'static str>,
    error: Option<String>,
}

struct ReviewItem {
    id: i64,
    campaign_id: i64,
    campaign: String,
    pending_version: i64,
    pending: Creative,
    serving: Option<(i64, Creative)>,
}

/// `GET /admin/review`: ads and edits waiting for review.
pub async fn review_queue(State(state): State<Arc<AppState>>, signed: Signed, RawQuery(query): RawQuery) -> PageResult {
    render_review(&state, &signed, notice(query.as_deref()), None, StatusCode::OK).await
}

pub async fn render_review(
    state: &Arc<AppState>,
    signed: &Signed,
    notice: Option<&'static str>,
    error: Option<String>,
    status: StatusCode,
) -> PageResult {
    signed.admin()?;
    let query = AdListQuery { status: Some("pending_review".into()), campaign_id: None };
    let ads = api::list_ads(State(state.clone()), signed.caller, Query(query)).await?.0;
    let catalog = state.catalog();
    let items = items(&ads)
        .map(|a| {
            let id = a["id"].as_i64().unwrap_or_default();
            let campaign_id = a["campaign_id"].as_i64().unwrap_or_default();
            let campaign =
                catalog.campaigns.get(&campaign_id).map_or_else(|| format!("#{campaign_id}"), |c| c.name.clone());
            let (pending, serving) = if a["revision"].is_object() {
                (&a["revision"], Some((a["version"].as_i64().unwrap_or_default(), Creative::of(a))))
            } else {
                (a, None)
            };
            ReviewItem {
                id,
                campaign_id,
                campaign,
                pending_version: pending["version"].as_i64().unwrap_or_default(),
                pending: Creative::of(pending),
                serving,
            }
        })
        .collect();
    let page = ReviewPage { layout: signed.layout("Review", "review"), items, notice, error };
    Ok(render(status, &page))
}

#[derive(Template)]
#[template(path = "advertisers.html")]
struct AdvertisersPage {
    layout: Layout,
    rows: Vec<(i64, String, String, String, String)>,
    notice: Option<&'static str>,
    error: Option<String>,
}

/// `GET /admin/advertisers`: accounts, balances, credits and promo codes.
pub async fn advertisers(State(state): State<Arc<AppState>>, signed: Signed, RawQuery(query): RawQuery) -> PageResult {
    render_advertisers(&state, &signed, notice(query.as_deref()), None, StatusCode::OK).await
}

pub async fn render_advertisers(
    state: &Arc<AppState>,
    signed: &Signed,
    notice: Option<&'static str>,
    error: Option<String>,
    status: StatusCode,
) -> PageResult {
    let admin = signed.admin()?;
    let list = api::list_advertisers(State(state.clone()), admin).await?.0;
    let rows = items(&list)
        .map(|a| {
            (
                a["id"].as_i64().unwrap_or_default(),
                text(&a["name"]),
                text(&a["email"]),
                text(&a["timezone"]),
                money_value(&a["balance_micros"]),
            )
        })
        .collect();
    let page = AdvertisersPage { layout: signed.layout("Advertisers", "advertisers"), rows, notice, error };
    Ok(render(status, &page))
}

#[derive(Template)]
#[template(path = "placements.html")]
struct PlacementsPage {
    layout: Layout,
    rows: Vec<(String, String, String, String, String)>,
    notice: Option<&'static str>,
    error: Option<String>,
}

/// The ad server's address as publishers' pages should load it.
fn public_base(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:8080");
    format!("http://{host}")
}

/// `GET /admin/placements`: placements with the embed code to copy.
pub async fn placements(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> PageResult {
    render_placements(&state, &signed, &headers, notice(query.as_deref()), None, StatusCode::OK).await
}

pub async fn render_placements(
    state: &Arc<AppState>,
    signed: &Signed,
    headers: &HeaderMap,
    notice: Option<&'static str>,
    error: Option<String>,
    status: StatusCode,
) -> PageResult {
    signed.admin()?;
    let list = api::list_placements(State(state.clone()), signed.caller).await?.0;
    let base = public_base(state, headers);
    let rows = items(&list)
        .map(|p| {
            let slug = text(&p["id"]);
            let snippet =
                format!("<script async src=\"{base}/tag.js\"></script>\n<div data-adtally-placement=\"{slug}\"></div>");
            (slug, text(&p["name"]), text(&p["format"]), money_value(&p["floor_cpm_micros"]), snippet)
        })
        .collect();
    let page = PlacementsPage { layout: signed.layout("Placements", "placements"), rows, notice, error };
    Ok(render(status, &page))
}

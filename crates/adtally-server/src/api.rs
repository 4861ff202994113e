//! The management half of the JSON API: advertisers and their keys and credits,
//! placements, campaigns and ads. Every input is validated and bounded here, at the
//! edge, before it reaches the store.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use adtally_core::attribution::Windows;
use adtally_core::catalog::{
    Ad, AdContent, AdStatus, Advertiser, Campaign, CampaignAction, CampaignStatus, CreditKind, Format, FrequencyCap,
    LedgerEntry, Pacing, Placement, Targeting,
};
use adtally_core::clock::Millis;
use adtally_core::delivery::MAX_CAP_HOURS;
use adtally_core::event::Device;
use adtally_core::token::api_key_hash;
use adtally_store::{AuditEntry, KeyOwner, PromoCode};

use crate::error::{ApiError, Json, Path, Query};
use crate::state::{AppState, ServingCatalog};

type AppResult<T> = Result<T, ApiError>;

/// Who is calling, from the bearer key or the dashboard's session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Advertiser(i64),
}

/// The operator, from the bearer key. Taking this extractor instead of [`Caller`] makes a
/// route admin-only, and the refusal (403) comes before the body is read or parsed: an
/// advertiser key learns nothing about an admin route's body schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admin(pub Caller);

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Admin => Ok(Admin(Caller::Admin)),
            Caller::Advertiser(_) => Err(ApiError::forbidden()),
        }
    }
}

impl Caller {
    /// Whether the caller may see things owned by `advertiser_id`.
    pub fn owns(self, advertiser_id: i64) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Advertiser(id) => id == advertiser_id,
        }
    }
    pub fn advertiser_id(self) -> Option<i64> {
        match self {
            Caller::Admin => None,
            Caller::Advertiser(id) => Some(id),
        }
    }
    fn actor(self) -> String {
        match self {
            Caller::Admin => "admin".into(),
            Caller::Advertiser(id) => format!("advertiser:{id}"),
        }
    }
}

/// Records a change in the audit log.
async fn audit(state: &Arc<AppState>, caller: Caller, action: &str, target: String, detail: Value) -> AppResult<()> {
    let entry = AuditEntry {
        at_ms: state.clock.now_ms(),
        actor: caller.actor(),
        action: action.into(),
        target,
        detail: detail.to_string(),
    };
    state.blocking(move |s| s.audit(&entry)).await
}

const MAX_KEY_LEN: usize = 200;

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        // Without an Authorization header, the dashboard's session cookie (and, for a
        // write, its CSRF token); the cookie never overrides a Bearer key.
        if !parts.headers.contains_key(axum::http::header::AUTHORIZATION) {
            if let Some(caller) = crate::session::caller(parts, state).await? {
                return Ok(caller);
            }
        }
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let key = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN);
        let Some(key) = key else { return Err(ApiError::unauthorized()) };
        let hash = api_key_hash(key);
        if hash == state.admin_key_hash {
            return Ok(Caller::Admin);
        }
        let now = state.clock.now_ms();
        match state.blocking(move |s| s.api_key_owner(&hash, now)).await? {
            Some(KeyOwner::Admin) => Ok(Caller::Admin),
            Some(KeyOwner::Advertiser(id)) => Ok(Caller::Advertiser(id)),
            None => Err(ApiError::unauthorized()),
        }
    }
}

/// Bounded text: trimmed, `min..=max` characters, no control characters.
pub fn text(field: &str, value: &str, min: usize, max: usize) -> AppResult<String> {
    text_ref(field, value, min, max).map(str::to_owned)
}

/// [`text`] without the copy: the trimmed value, borrowed.
pub fn text_ref<'a>(field: &str, value: &'a str, min: usize, max: usize) -> AppResult<&'a str> {
    let value = value.trim();
    let len = value.chars().count();
    if len < min || len > max {
        return Err(ApiError::invalid(format!("{field} must be {min} to {max} characters long")));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(ApiError::invalid(format!("{field} must not contain control characters")));
    }
    Ok(value)
}

/// An absolute http(s) URL of bounded length, parsed by a real URL parser and returned
/// in its normalized form: the host in IDNA (punycode) form, the path and query
/// percent-encoded, so it can go into a `Location` header as it is. User info is
/// refused: `https://bank.example@phish.example/` reads as one host and goes to another.
pub fn web_url(field: &str, value: &str) -> AppResult<String> {
    let invalid = || ApiError::invalid(format!("{field} must be an absolute http:// or https:// URL"));
    let value = text(field, value, 8, 2048)?;
    let url = url::Url::parse(&value).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::invalid(format!("{field} must not carry a user name or password")));
    }
    let normalized: String = url.into();
    if normalized.len() > 4096 {
        return Err(ApiError::invalid(format!("{field} is too long once percent-encoded")));
    }
    Ok(normalized)
}

fn money(field: &str, value: i64, min: i64) -> AppResult<i64> {
    const MAX: i64 = 1_000_000_000_000_000; // a billion units of currency
    if value < min || value > MAX {
        return Err(ApiError::invalid(format!("{field} must be between {min} and {MAX} micros")));
    }
    Ok(value)
}

fn timestamp(field: &str, value: &str) -> AppResult<Millis> {
    value
        .parse::<adtally_core::jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| ApiError::invalid(format!("{field} must be an RFC 3339 time like 2026-11-25T00:00:00Z")))
}

fn rfc3339(ms: Millis) -> String {
    adtally_core::jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

fn random_key(prefix: &str) -> AppResult<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|_| ApiError::internal())?;
    Ok(format!("{prefix}{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

// ---- JSON views ---------------------------------------------------------------------

fn advertiser_json(a: &Advertiser, balance_micros: i64) -> Value {
    json!({"id": a.id, "name": a.name, "email": a.email, "timezone": a.timezone,
           "max_conversion_value_micros": a.max_conversion_value_micros,
           "attribution": crate::attribution::windows_json(a.attribution),
           "balance_micros": balance_micros, "created_at": rfc3339(a.created_at_ms)})
}

fn placement_json(p: &Placement) -> Value {
    json!({"id": p.slug, "name": p.name, "format": p.format.as_str(), "floor_cpm_micros": p.floor_cpm_micros})
}

fn campaign_json(c: &Campaign, spend_micros: i64) -> Value {
    json!({
        "id": c.id, "advertiser_id": c.advertiser_id, "name": c.name, "status": c.status.as_str(),
        "cpm_bid_micros": c.cpm_bid_micros, "total_budget_micros": c.total_budget_micros,
        "daily_budget_micros": c.daily_budget_micros,
        "start_at": c.start_at_ms.map(rfc3339), "end_at": c.end_at_ms.map(rfc3339),
        "pacing": c.pacing.as_str(),
        "targeting": {"devices": c.targeting.devices.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
                      "placements": c.targeting.placements},
        "frequency_cap": c.frequency_cap.map(|f| json!({"impressions": f.impressions, "per_hours": f.per_hours})),
        "spend_micros": spend_micros,
        "created_at": rfc3339(c.created_at_ms),
    })
}

fn content_json(c: &AdContent, into: &mut Value) {
    into["format"] = json!(c.format.as_str());
    into["headline"] = json!(c.headline);
    into["body"] = json!(c.body);
    into["image_url"] = json!(c.image_url);
    into["video_url"] = json!(c.video_url);
    into["cta"] = json!(c.cta);
    into["target_url"] = json!(c.target_url);
}

/// An ad as it serves, with `revision` holding an edit under review (or rejected).
fn ad_json(a: &Ad) -> Value {
    let mut out = json!({
        "id": a.id, "campaign_id": a.campaign_id, "advertiser_id": a.advertiser_id, "version": a.version,
        "status": a.status.as_str(), "rejection_reason": a.rejection_reason, "created_at": rfc3339(a.created_at_ms),
        "revision": null,
    });
    content_json(&a.content, &mut out);
    if let Some(r) = &a.revision {
        let mut revision = json!({"version": r.version, "status": r.status.as_str(),
            "rejection_reason": r.rejection_reason, "created_at": rfc3339(r.created_at_ms)});
        content_json(&r.content, &mut revision);
        out["revision"] = revision;
    }
    out
}

fn ledger_json(e: &LedgerEntry) -> Value {
    json!({"id": e.id, "at": rfc3339(e.at_ms), "kind": e.kind, "amount_micros": e.amount_micros, "note": e.note})
}

fn created(value: Value) -> Response {
    (StatusCode::CREATED, axum::Json(value)).into_response()
}

fn items(values: Vec<Value>) -> axum::Json<Value> {
    axum::Json(json!({ "items": values }))
}

// ---- advertisers, keys, credits -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAdvertiser {
    name: String,
    email: String,
    timezone: Option<String>,
    max_conversion_value_micros: Option<i64>,
    attribution: Option<AttributionPatch>,
}

/// Attribution settings to change; what is left out keeps its value.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AttributionPatch {
    click_window_days: Option<i64>,
    view_window_days: Option<i64>,
    half_life_days: Option<i64>,
}

impl AttributionPatch {
    /// `current` with the given fields replaced, if the result is within bounds.
    fn apply(&self, current: Windows) -> AppResult<Windows> {
        // Out of u16 is out of bounds too: the bounds' own message says which.
        let day = |v: Option<i64>, now: u16| v.map_or(now, |v| u16::try_from(v).unwrap_or(u16::MAX));
        Windows::new(
            day(self.click_window_days, current.click_days()),
            day(self.view_window_days, current.view_days()),
            day(self.half_life_days, current.half_life_days()),
        )
        .map_err(|e| ApiError::invalid(format!("attribution: {e}")))
    }
}

fn email_address(value: &str) -> AppResult<String> {
    let email = text("email", value, 3, 254)?;
    if !email.contains('@') {
        return Err(ApiError::invalid("email must be an email address"));
    }
    Ok(email)
}

fn timezone_name(value: &str) -> AppResult<String> {
    let timezone = value.trim().to_owned();
    if timezone.len() > 64 || adtally_core::jiff::tz::TimeZone::get(&timezone).is_err() {
        return Err(ApiError::invalid("timezone must be an IANA time zone name like Europe/Berlin"));
    }
    Ok(timezone)
}

pub async fn create_advertiser(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Json(body): Json<NewAdvertiser>,
) -> AppResult<Response> {
    Ok(created(new_advertiser(&state, Admin(caller), body).await?))
}

/// Creates an advertiser: the body of `POST /v1/advertisers`.
pub async fn new_advertiser(state: &Arc<AppState>, Admin(caller): Admin, body: NewAdvertiser) -> AppResult<Value> {
    let name = text("name", &body.name, 1, 200)?;
    let email = email_address(&body.email)?;
    let timezone = timezone_name(body.timezone.as_deref().unwrap_or("UTC"))?;
    let mut advertiser = Advertiser::new(&name, &email, &timezone, state.clock.now_ms());
    if let Some(max) = body.max_conversion_value_micros {
        advertiser.max_conversion_value_micros = money("max_conversion_value_micros", max, 0)?;
    }
    if let Some(patch) = &body.attribution {
        advertiser.attribution = patch.apply(advertiser.attribution)?;
    }
    let advertiser = state.blocking(move |s| s.create_advertiser(&advertiser)).await?;
    state.reload_catalog().await?;
    audit(
        state,
        caller,
        "advertiser.create",
        format!("advertiser:{}", advertiser.id),
        json!({"name": advertiser.name}),
    )
    .await?;
    Ok(advertiser_json(&advertiser, 0))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvertiserPatch {
    name: Option<String>,
    email: Option<String>,
    timezone: Option<String>,
    max_conversion_value_micros: Option<i64>,
    attribution: Option<AttributionPatch>,
}

/// `PATCH /v1/advertisers/{id}`: the operator changes an account's details, its pixel cap
/// or its attribution settings.
pub async fn patch_advertiser(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(id): Path<i64>,
    Json(body): Json<AdvertiserPatch>,
) -> AppResult<axum::Json<Value>> {
    let mut advertiser = advertiser_for(&state, caller, id).await?;
    if let Some(name) = &body.name {
        advertiser.name = text("name", name, 1, 200)?;
    }
    if let Some(email) = &body.email {
        advertiser.email = email_address(email)?;
    }
    if let Some(timezone) = &body.timezone {
        advertiser.timezone = timezone_name(timezone)?;
    }
    if let Some(max) = body.max_conversion_value_micros {
        advertiser.max_conversion_value_micros = money("max_conversion_value_micros", max, 0)?;
    }
    if let Some(patch) = &body.attribution {
        advertiser.attribution = patch.apply(advertiser.attribution)?;
    }
    save_advertiser(&state, caller, advertiser).await
}

/// Stores a changed advertiser, reloads the catalog (the writer credits conversions
/// with the new windows from then on) and audits the change.
async fn save_advertiser(
    state: &Arc<AppState>,
    caller: Caller,
    advertiser: Advertiser,
) -> AppResult<axum::Json<Value>> {
    let stored = advertiser.clone();
    state.blocking(move |s| s.update_advertiser(&stored)).await?;
    state.reload_catalog().await?;
    let id = advertiser.id;
    audit(
        state,
        caller,
        "advertiser.update",
        format!("advertiser:{id}"),
        json!({"max_conversion_value_micros": advertiser.max_conversion_value_micros,
               "attribution": crate::attribution::windows_json(advertiser.attribution)}),
    )
    .await?;
    let balance = state.pipeline.delivery().balance(id);
    Ok(axum::Json(advertiser_json(&advertiser, balance)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MePatch {
    attribution: AttributionPatch,
}

/// `PATCH /v1/me`: an advertiser changes its own attribution settings (the rest of the
/// account is the operator's).
pub async fn patch_me(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<MePatch>,
) -> AppResult<axum::Json<Value>> {
    let Caller::Advertiser(id) = caller else {
        return Err(ApiError::invalid("the admin key has no account; use PATCH /v1/advertisers/{id}"));
    };
    let mut advertiser = advertiser_for(&state, caller, id).await?;
    advertiser.attribution = body.attribution.apply(advertiser.attribution)?;
    save_advertiser(&state, caller, advertiser).await
}

pub async fn list_advertisers(State(state): State<Arc<AppState>>, _: Admin) -> AppResult<axum::Json<Value>> {
    let all = state.blocking(|s| s.advertisers()).await?;
    let delivery = state.pipeline.delivery();
    Ok(items(all.iter().map(|a| advertiser_json(a, delivery.balance(a.id))).collect()))
}

async fn advertiser_for(state: &Arc<AppState>, caller: Caller, id: i64) -> AppResult<Advertiser> {
    if !caller.owns(id) {
        return Err(ApiError::not_found("advertiser"));
    }
    state.blocking(move |s| s.advertiser(id)).await?.ok_or_else(|| ApiError::not_found("advertiser"))
}

pub async fn create_key(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    Ok(created(new_key(&state, Admin(caller), id).await?))
}

/// Creates an API key for an advertiser (shown once): the body of
/// `POST /v1/advertisers/{id}/keys`.
pub async fn new_key(state: &Arc<AppState>, Admin(caller): Admin, id: i64) -> AppResult<Value> {
    let state = state.clone();
    advertiser_for(&state, caller, id).await?;
    let key = random_key("adt_")?;
    let hash = api_key_hash(&key);
    let now = state.clock.now_ms();
    let key_id = state.blocking(move |s| s.add_api_key(KeyOwner::Advertiser(id), &hash, now)).await?;
    audit(&state, caller, "key.create", format!("key:{key_id}"), json!({"advertiser_id": id})).await?;
    Ok(json!({"id": key_id, "api_key": key, "advertiser_id": id}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCredit {
    amount_micros: i64,
    kind: String,
    note: Option<String>,
}

pub async fn add_credit(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(id): Path<i64>,
    Json(body): Json<NewCredit>,
) -> AppResult<Response> {
    Ok(created(credit(&state, Admin(caller), id, body).await?))
}

/// Credits an advertiser's account: the body of `POST /v1/advertisers/{id}/credits`.
pub async fn credit(state: &Arc<AppState>, Admin(caller): Admin, id: i64, body: NewCredit) -> AppResult<Value> {
    let state = state.clone();
    advertiser_for(&state, caller, id).await?;
    let amount = money("amount_micros", body.amount_micros, 1)?;
    let kind = CreditKind::parse(&body.kind).ok_or_else(|| ApiError::invalid("kind must be topup, bonus or promo"))?;
    let note = body.note.as_deref().map(|n| text("note", n, 0, 500)).transpose()?;
    let now = state.clock.now_ms();
    let bonus = state.config.topup_bonus.filter(|_| kind == CreditKind::Topup).and_then(|b| b.bonus_for(amount));
    // A top-up and its bonus are one transaction: both or neither.
    let (entry, bonus_entry) = match kind {
        CreditKind::Topup => state.blocking(move |s| s.add_topup(id, amount, note.as_deref(), bonus, now)).await?,
        _ => (state.blocking(move |s| s.add_credit(id, kind, amount, note.as_deref(), now)).await?, None),
    };
    state.pipeline.delivery().credit(id, amount);
    state.refresh_room().await?;
    audit(
        &state,
        caller,
        "credit.add",
        format!("advertiser:{id}"),
        json!({"kind": kind.as_str(), "amount_micros": amount}),
    )
    .await?;
    let mut body = ledger_json(&entry);
    if let Some(bonus_entry) = bonus_entry {
        state.pipeline.delivery().credit(id, bonus_entry.amount_micros);
        audit(
            &state,
            caller,
            "credit.add",
            format!("advertiser:{id}"),
            json!({"kind": "bonus", "amount_micros": bonus_entry.amount_micros}),
        )
        .await?;
        body["bonus"] = ledger_json(&bonus_entry);
    }
    body["balance_micros"] = json!(state.pipeline.delivery().balance(id));
    Ok(body)
}

pub async fn me(State(state): State<Arc<AppState>>, caller: Caller) -> AppResult<axum::Json<Value>> {
    let Caller::Advertiser(id) = caller else {
        return Ok(axum::Json(json!({"role": "admin"})));
    };
    let advertiser = advertiser_for(&state, caller, id).await?;
    let balance = state.pipeline.delivery().balance(id);
    Ok(axum::Json(advertiser_json(&advertiser, balance)))
}

#[derive(Deserialize)]
pub struct LedgerQuery {
    advertiser_id: Option<i64>,
}

pub async fn ledger(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<LedgerQuery>,
) -> AppResult<axum::Json<Value>> {
    let id = q
        .advertiser_id
        .or(caller.advertiser_id())
        .ok_or_else(|| ApiError::invalid("the admin key must name an advertiser_id"))?;
    advertiser_for(&state, caller, id).await?;
    let tz = state.catalog().timezone(id);
    let zone = tz.iana_name().unwrap_or("UTC").to_owned();
    // Spend per day of the advertiser's zone, as the reports count days: the same query
    // a lifetime report by day makes.
    let query = adtally_store::RollupQuery {
        advertiser_id: Some(id),
        from_ms: Millis::MIN / 2,
        to_ms: Millis::MAX / 2,
        by_bucket: true,
        days_in: Some(zone),
        ..Default::default()
    };
    let (mut entries, rows) = state.blocking(move |s| Ok((s.credits(id)?, s.rollup_rows(&query)?))).await?;
    let mut spend_by_day: std::collections::BTreeMap<adtally_core::jiff::civil::Date, i128> = Default::default();
    for row in rows.iter().filter(|r| r.sums.cost_micros != 0) {
        *spend_by_day.entry(adtally_core::report::local_date(row.bucket_ms, &tz)).or_default() += row.sums.cost_micros;
    }
    entries.extend(spend_by_day.into_iter().map(|(day, cost)| LedgerEntry {
        id: None,
        at_ms: adtally_core::report::start_of_day(day, &tz),
        kind: "spend".into(),
        amount_micros: adtally_core::metrics::saturate(-cost),
        note: None,
    }));
    entries.sort_by_key(|e| (e.at_ms, e.id.is_none()));
    let balance = state.pipeline.delivery().balance(id);
    let items: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut item = ledger_json(e);
            item["date"] = json!(adtally_core::report::local_date(e.at_ms, &tz).to_string());
            item
        })
        .collect();
    Ok(axum::Json(json!({"advertiser_id": id, "balance_micros": balance, "timezone": tz.iana_name(), "items": items})))
}

// ---- placements -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPlacement {
    id: String,
    name: String,
    format: String,
    floor_cpm_micros: Option<i64>,
}

pub async fn create_placement(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Json(body): Json<NewPlacement>,
) -> AppResult<Response> {
    Ok(created(new_placement(&state, Admin(caller), body).await?))
}

/// Creates a placement: the body of `POST /v1/placements`.
pub async fn new_placement(state: &Arc<AppState>, Admin(caller): Admin, body: NewPlacement) -> AppResult<Value> {
    let state = state.clone();
    let slug = text("id", &body.id, 1, 64)?;
    if !slug.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
        return Err(ApiError::invalid("id must be a slug of lowercase letters, digits, - and _"));
    }
    let name = text("name", &body.name, 1, 200)?;
    let format =
        Format::parse(&body.format).ok_or_else(|| ApiError::invalid("format must be compact, sidebar or video"))?;
    let floor = money("floor_cpm_micros", body.floor_cpm_micros.unwrap_or(0), 0)?;
    let placement = state.blocking(move |s| s.create_placement(&slug, &name, format, floor)).await.map_err(|e| {
        if e.status == StatusCode::CONFLICT {
            ApiError::conflict("conflict", "a placement with this id exists")
        } else {
            e
        }
    })?;
    state.reload_catalog().await?;
    let detail = json!({"format": placement.format.as_str()});
    audit(&state, caller, "placement.create", format!("placement:{}", placement.slug), detail).await?;
    Ok(placement_json(&placement))
}

pub async fn list_placements(State(state): State<Arc<AppState>>, _caller: Caller) -> AppResult<axum::Json<Value>> {
    let placements = state.blocking(|s| s.placements()).await?;
    Ok(items(placements.iter().map(placement_json).collect()))
}

// ---- campaigns --------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TargetingInput {
    devices: Option<Vec<String>>,
    placements: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCapInput {
    impressions: u32,
    per_hours: u32,
}

/// Campaign fields as sent; on create the required ones must be present, on PATCH any
/// subset. `Some(None)` (JSON `null`) clears an optional field.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CampaignInput {
    advertiser_id: Option<i64>,
    name: Option<String>,
    cpm_bid_micros: Option<i64>,
    total_budget_micros: Option<i64>,
    #[serde(default, with = "double_option")]
    daily_budget_micros: Option<Option<i64>>,
    #[serde(default, with = "double_option")]
    start_at: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    end_at: Option<Option<String>>,
    pacing: Option<String>,
    targeting: Option<TargetingInput>,
    #[serde(default, with = "double_option")]
    frequency_cap: Option<Option<FrequencyCapInput>>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// The platform's smallest CPM bid: 0.01 of the currency per thousand.
pub const MIN_CPM_BID_MICROS: i64 = 10_000;

impl CampaignInput {
    /// Applies the fields to `c` and validates the result as a whole.
    fn apply(self, c: &mut Campaign, catalog: &ServingCatalog) -> AppResult<()> {
        if let Some(name) = self.name {
            c.name = text("name", &name, 1, 200)?;
        }
        if let Some(bid) = self.cpm_bid_micros {
            c.cpm_bid_micros = money("cpm_bid_micros", bid, MIN_CPM_BID_MICROS)?;
        }
        if let Some(total) = self.total_budget_micros {
            c.total_budget_micros = money("total_budget_micros", total, 1)?;
        }
        if let Some(daily) = self.daily_budget_micros {
            c.daily_budget_micros = daily.map(|d| money("daily_budget_micros", d, 1)).transpose()?;
        }
        if let Some(start) = self.start_at {
            c.start_at_ms = start.map(|s| timestamp("start_at", &s)).transpose()?;
        }
        if let Some(end) = self.end_at {
            c.end_at_ms = end.map(|s| timestamp("end_at", &s)).transpose()?;
        }
        if let Some(pacing) = self.pacing {
            c.pacing = Pacing::parse(&pacing).ok_or_else(|| ApiError::invalid("pacing must be even or asap"))?;
        }
        if let Some(t) = self.targeting {
            let devices = t.devices.unwrap_or_default();
            let slugs = t.placements.unwrap_or_default();
            if devices.len() > 3 || slugs.len() > 100 {
                return Err(ApiError::invalid("targeting lists are too long"));
            }
            let mut targeting = Targeting::default();
            for d in devices {
                let device =
                    Device::parse(&d).ok_or_else(|| ApiError::invalid("devices must be desktop, mobile or tablet"))?;
                if !targeting.devices.contains(&device) {
                    targeting.devices.push(device);
                }
            }
            for slug in slugs {
                if !catalog.placements.contains_key(&slug) {
                    return Err(ApiError::invalid(format!(
                        "unknown placement {:?} in targeting",
                        slug.chars().take(64).collect::<String>()
                    )));
                }
                targeting.placements.push(slug);
            }
            c.targeting = targeting;
        }
        if let Some(cap) = self.frequency_cap {
            c.frequency_cap = match cap {
                None => None,
                Some(f) if (1..=1_000).contains(&f.impressions) && (1..=MAX_CAP_HOURS).contains(&f.per_hours) => {
                    Some(FrequencyCap { impressions: f.impressions, per_hours: f.per_hours })
                }
                Some(_) => {
                    return Err(ApiError::invalid("frequency_cap needs impressions 1..1000 and per_hours 1..168"))
                }
            };
        }
        if c.daily_budget_micros.is_some_and(|d| d > c.total_budget_micros) {
            return Err(ApiError::invalid("daily_budget_micros must not exceed total_budget_micros"));
        }
        if let (Some(start), Some(end)) = (c.start_at_ms, c.end_at_ms) {
            if start >= end {
                return Err(ApiError::invalid("start_at must be before end_at"));
            }
        }
        Ok(())
    }
}

pub async fn create_campaign(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<CampaignInput>,
) -> AppResult<Response> {
    Ok(created(new_campaign(&state, caller, body).await?))
}

/// Creates a draft campaign: the body of `POST /v1/campaigns`.
pub async fn new_campaign(state: &Arc<AppState>, caller: Caller, mut body: CampaignInput) -> AppResult<Value> {
    let state = state.clone();
    let advertiser_id = match caller {
        Caller::Advertiser(id) => {
            if body.advertiser_id.is_some_and(|a| a != id) {
                return Err(ApiError::invalid("advertiser_id names another advertiser"));
            }
            id
        }
        Caller::Admin => {
            body.advertiser_id.ok_or_else(|| ApiError::invalid("the admin key must name an advertiser_id"))?
        }
    };
    advertiser_for(&state, Caller::Admin, advertiser_id).await?;
    let (Some(_), Some(_), Some(_)) = (&body.name, body.cpm_bid_micros, body.total_budget_micros) else {
        return Err(ApiError::invalid("name, cpm_bid_micros and total_budget_micros are required"));
    };
    body.advertiser_id = None;
    let mut campaign = Campaign::draft(advertiser_id, "", 0, 0, state.clock.now_ms());
    body.apply(&mut campaign, &state.catalog())?;
    let campaign = state.blocking(move |s| s.create_campaign(&campaign)).await?;
    state.reload_catalog().await?;
    audit(&state, caller, "campaign.create", format!("campaign:{}", campaign.id), json!({"name": campaign.name}))
        .await?;
    Ok(campaign_json(&campaign, 0))
}

async fn campaign_for(state: &Arc<AppState>, caller: Caller, id: i64) -> AppResult<Campaign> {
    let campaign = state.blocking(move |s| s.campaign(id)).await?;
    campaign.filter(|c| caller.owns(c.advertiser_id)).ok_or_else(|| ApiError::not_found("campaign"))
}

pub async fn get_campaign(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> AppResult<axum::Json<Value>> {
    let c = campaign_for(&state, caller, id).await?;
    let spend = state.pipeline.delivery().spent(c.id);
    Ok(axum::Json(campaign_json(&c, spend)))
}

pub async fn list_campaigns(State(state): State<Arc<AppState>>, caller: Caller) -> AppResult<axum::Json<Value>> {
    let owner = caller.advertiser_id();
    let all = state.blocking(move |s| s.campaigns(owner)).await?;
    let delivery = state.pipeline.delivery();
    Ok(items(all.iter().map(|c| campaign_json(c, delivery.spent(c.id))).collect()))
}

pub async fn patch_campaign(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<CampaignInput>,
) -> AppResult<axum::Json<Value>> {
    let mut campaign = campaign_for(&state, caller, id).await?;
    if body.advertiser_id.is_some() {
        return Err(ApiError::invalid("a campaign cannot change advertiser"));
    }
    body.apply(&mut campaign, &state.catalog())?;
    let saved = campaign.clone();
    state.blocking(move |s| s.update_campaign(&saved)).await?;
    state.reload_catalog().await?;
    audit(&state, caller, "campaign.update", format!("campaign:{id}"), json!({})).await?;
    let spend = state.pipeline.delivery().spent(id);
    Ok(axum::Json(campaign_json(&campaign, spend)))
}

pub async fn campaign_action(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, action)): Path<(i64, String)>,
) -> AppResult<Response> {
    Ok(match run_campaign_action(&state, caller, id, &action).await? {
        Acted::Changed(campaign) => axum::Json(campaign).into_response(),
        Acted::Cloned(copy) => created(copy),
    })
}

/// What a campaign action did: the campaign in its new status, or a new copy.
pub enum Acted {
    Changed(Value),
    Cloned(Value),
}

/// Submit, pause, resume, archive, restore or clone: the body of
/// `POST /v1/campaigns/{id}/{action}`.
pub async fn run_campaign_action(state: &Arc<AppState>, caller: Caller, id: i64, action: &str) -> AppResult<Acted> {
    let mut campaign = campaign_for(state, caller, id).await?;
    if action == "clone" {
        return Ok(Acted::Cloned(clone_campaign(state, caller, campaign).await?));
    }
    let action = CampaignAction::parse(action).ok_or_else(|| ApiError::not_found("campaign action"))?;
    let next = campaign.status.after(action).ok_or_else(|| {
        ApiError::conflict(
            "invalid_transition",
            format!("cannot {action:?} a campaign that is {}", campaign.status.as_str()).to_lowercase(),
        )
    })?;
    if action == CampaignAction::Submit {
        let ads = state.blocking(move |s| s.ads(Some(id))).await?;
        if ads.is_empty() {
            return Err(ApiError::conflict("no_ads", "add at least one ad before submitting"));
        }
    }
    let from = campaign.status;
    campaign.status = next;
    let saved = campaign.clone();
    state.blocking(move |s| s.update_campaign(&saved)).await?;
    state.reload_catalog().await?;
    let detail = json!({"from": from.as_str(), "to": next.as_str()});
    audit(state, caller, &format!("campaign.{action:?}").to_lowercase(), format!("campaign:{id}"), detail).await?;
    let spend = state.pipeline.delivery().spent(id);
    Ok(Acted::Changed(campaign_json(&campaign, spend)))
}

/// A new `draft` with the same settings and copies of the ads, back in review.
async fn clone_campaign(state: &Arc<AppState>, caller: Caller, original: Campaign) -> AppResult<Value> {
    let now = state.clock.now_ms();
    let mut name: String = original.name.chars().take(193).collect();
    name.push_str(" (copy)");
    let copy = Campaign { id: 0, name, status: CampaignStatus::Draft, created_at_ms: now, ..original.clone() };
    let original_id = original.id;
    let copy = state
        .blocking(move |s| {
            // The copy's ads start over in review, at version 1 of the original's latest content.
            let ads: Vec<Ad> = s
                .ads(Some(original_id))?
                .into_iter()
                .map(|ad| {
                    let mut fresh = Ad {
                        id: 0,
                        status: AdStatus::PendingReview,
                        version: 0,
                        revision: None,
                        created_at_ms: now,
                        ..ad.clone()
                    };
                    fresh.edit(ad.latest_content(), now);
                    fresh
                })
                .collect();
            s.create_campaign_with_ads(&copy, &ads)
        })
        .await?;
    state.reload_catalog().await?;
    audit(state, caller, "campaign.clone", format!("campaign:{}", copy.id), json!({"from": original_id})).await?;
    Ok(campaign_json(&copy, 0))
}

// ---- ads --------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdInput {
    format: Option<String>,
    headline: Option<String>,
    body: Option<String>,
    #[serde(default, with = "double_option")]
    image_url: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    video_url: Option<Option<String>>,
    cta: Option<String>,
    target_url: Option<String>,
}

/// A video creative's file: an https URL whose path ends in `.mp4` or `.webm`.
fn video_url(value: &str) -> AppResult<String> {
    let url = web_url("video_url", value)?;
    let path = url.split(['?', '#']).next().unwrap_or_default().to_ascii_lowercase();
    if !url.starts_with("https://") || !(path.ends_with(".mp4") || path.ends_with(".webm")) {
        return Err(ApiError::invalid("video_url must be an https:// URL of an .mp4 or .webm file"));
    }
    Ok(url)
}

impl AdInput {
    fn apply(self, ad: &mut AdContent) -> AppResult<bool> {
        let mut changed = false;
        if let Some(f) = self.format {
            ad.format =
                Format::parse(&f).ok_or_else(|| ApiError::invalid("format must be compact, sidebar or video"))?;
            changed = true;
        }
        if let Some(v) = self.video_url {
            ad.video_url = v.map(|u| video_url(&u)).transpose()?;
            changed = true;
        }
        if let Some(h) = self.headline {
            ad.headline = text("headline", &h, 1, 90)?;
            changed = true;
        }
        if let Some(b) = self.body {
            ad.body = text("body", &b, 0, 300)?;
            changed = true;
        }
        if let Some(i) = self.image_url {
            ad.image_url = i.map(|u| web_url("image_url", &u)).transpose()?;
            changed = true;
        }
        if let Some(c) = self.cta {
            ad.cta = text("cta", &c, 1, 30)?;
            changed = true;
        }
        if let Some(t) = self.target_url {
            ad.target_url = web_url("target_url", &t)?;
            changed = true;
        }
        match (ad.format, &ad.video_url) {
            (Format::Video, None) => return Err(ApiError::invalid("a video ad needs a video_url")),
            (Format::Compact | Format::Sidebar, Some(_)) => {
                return Err(ApiError::invalid("only a video ad has a video_url"));
            }
            _ => {}
        }
        Ok(changed)
    }
}

pub async fn create_ad(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(campaign_id): Path<i64>,
    Json(body): Json<AdInput>,
) -> AppResult<Response> {
    Ok(created(new_ad(&state, caller, campaign_id, body).await?))
}

/// Creates an ad, pending review: the body of `POST /v1/campaigns/{id}/ads`.
pub async fn new_ad(state: &Arc<AppState>, caller: Caller, campaign_id: i64, body: AdInput) -> AppResult<Value> {
    let state = state.clone();
    let campaign = campaign_for(&state, caller, campaign_id).await?;
    if body.format.is_none() || body.headline.is_none() || body.target_url.is_none() {
        return Err(ApiError::invalid("format, headline and target_url are required"));
    }
    let mut content = AdContent::new(Format::Compact, "", "");
    body.apply(&mut content)?;
    let ad = Ad::new(campaign_id, campaign.advertiser_id, content, state.clock.now_ms());
    let ad = state.blocking(move |s| s.create_ad(&ad)).await?;
    state.reload_catalog().await?;
    audit(&state, caller, "ad.create", format!("ad:{}", ad.id), json!({"campaign_id": campaign_id})).await?;
    Ok(ad_json(&ad))
}

async fn ad_for(state: &Arc<AppState>, caller: Caller, id: i64) -> AppResult<Ad> {
    let ad = state.blocking(move |s| s.ad(id)).await?;
    ad.filter(|a| caller.owns(a.advertiser_id)).ok_or_else(|| ApiError::not_found("ad"))
}

pub async fn get_ad(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> AppResult<axum::Json<Value>> {
    Ok(axum::Json(ad_json(&ad_for(&state, caller, id).await?)))
}

#[derive(Deserialize)]
pub struct AdListQuery {
    pub status: Option<String>,
    pub campaign_id: Option<i64>,
}

pub async fn list_ads(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<AdListQuery>,
) -> AppResult<axum::Json<Value>> {
    let status = q
        .status
        .as_deref()
        .map(|s| {
            AdStatus::parse(s).ok_or_else(|| ApiError::invalid("status must be pending_review, approved or rejected"))
        })
        .transpose()?;
    let campaign = q.campaign_id;
    let ads = state.blocking(move |s| s.ads(campaign)).await?;
    // The review queue (`status=pending_review`) holds approved ads with an edit to review.
    let has = |a: &Ad, s: AdStatus| a.status == s || a.revision.as_ref().is_some_and(|r| r.status == s);
    let visible = ads.iter().filter(|a| caller.owns(a.advertiser_id) && status.is_none_or(|s| has(a, s)));
    Ok(items(visible.map(ad_json).collect()))
}

/// Editing an ad: an approved ad keeps serving and the edit waits for review as its
/// revision; any other ad is edited in place and goes back to review.
pub async fn patch_ad(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<AdInput>,
) -> AppResult<axum::Json<Value>> {
    let mut ad = ad_for(&state, caller, id).await?;
    let read = ad.stamp();
    let mut content = ad.latest_content();
    if body.apply(&mut content)? {
        ad.edit(content, state.clock.now_ms());
    }
    let saved = ad.clone();
    let now = state.clock.now_ms();
    state.blocking(move |s| s.update_ad(&saved, read, now)).await?;
    state.reload_catalog().await?;
    audit(&state, caller, "ad.update", format!("ad:{id}"), json!({"status": ad.review_status().as_str()})).await?;
    Ok(axum::Json(ad_json(&ad)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Review {
    decision: String,
    reason: Option<String>,
    /// The version the reviewer read (the revision's, when there is one). When given, the
    /// review applies only to that version: an ad edited since answers 409 `ad_changed`.
    version: Option<u32>,
}

pub async fn review_ad(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(id): Path<i64>,
    Json(body): Json<Review>,
) -> AppResult<axum::Json<Value>> {
    let mut ad = ad_for(&state, caller, id).await?;
    if let Some(version) = body.version.filter(|v| *v != ad.reviewed_version()) {
        let now = ad.reviewed_version();
        return Err(ApiError::conflict(
            "ad_changed",
            format!("ad {id} is at version {now} now, not {version}: look at it again before deciding"),
        ));
    }
    let read = ad.stamp();
    let reason = match body.decision.as_str() {
        "approve" => {
            ad.approve();
            None
        }
        "reject" => {
            let reason = body.reason.as_deref().ok_or_else(|| ApiError::invalid("a rejection needs a reason"))?;
            let reason = text("reason", reason, 1, 500)?;
            ad.reject(reason.clone());
            Some(reason)
        }
        _ => return Err(ApiError::invalid("decision must be approve or reject")),
    };
    let saved = ad.clone();
    let now = state.clock.now_ms();
    state.blocking(move |s| s.review_ad(&saved, read, now)).await?;
    state.reload_catalog().await?;
    let detail = json!({"decision": body.decision, "reason": reason, "version": ad.version});
    audit(&state, caller, "ad.review", format!("ad:{id}"), detail).await?;
    Ok(axum::Json(ad_json(&ad)))
}

// ---- keys, promo codes, audit -------------------------------------------------------------

fn key_json(k: &adtally_store::ApiKeyInfo) -> Value {
    json!({"id": k.id, "advertiser_id": k.advertiser_id, "created_at": rfc3339(k.created_at_ms),
           "last_used_at": k.last_used_at_ms.map(rfc3339), "revoked_at": k.revoked_at_ms.map(rfc3339)})
}

pub async fn list_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> AppResult<axum::Json<Value>> {
    advertiser_for(&state, caller, id).await?;
    let keys = state.blocking(move |s| s.api_keys(id)).await?;
    Ok(items(keys.iter().map(key_json).collect()))
}

pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(key_id): Path<i64>,
) -> AppResult<axum::Json<Value>> {
    let now = state.clock.now_ms();
    let owner = caller.advertiser_id();
    if !state.blocking(move |s| s.revoke_api_key(key_id, owner, now)).await? {
        return Err(ApiError::not_found("key"));
    }
    audit(&state, caller, "key.revoke", format!("key:{key_id}"), json!({})).await?;
    Ok(axum::Json(json!({"id": key_id, "revoked": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPromo {
    code: String,
    amount_micros: i64,
    expires_at: Option<String>,
    max_redemptions: Option<i64>,
}

pub async fn create_promo(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Json(body): Json<NewPromo>,
) -> AppResult<Response> {
    Ok(created(new_promo(&state, Admin(caller), body).await?))
}

/// Creates a promo code: the body of `POST /v1/promo-codes`.
pub async fn new_promo(state: &Arc<AppState>, Admin(caller): Admin, body: NewPromo) -> AppResult<Value> {
    let state = state.clone();
    let code = text("code", &body.code, 3, 64)?;
    if !code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(ApiError::invalid("code may use letters, digits, - and _"));
    }
    let amount = money("amount_micros", body.amount_micros, 1)?;
    let expires_at_ms = body.expires_at.as_deref().map(|e| timestamp("expires_at", e)).transpose()?;
    let max_redemptions = body.max_redemptions.unwrap_or(1);
    if !(1..=1_000_000).contains(&max_redemptions) {
        return Err(ApiError::invalid("max_redemptions must be 1 to 1000000"));
    }
    let promo = PromoCode {
        code: code.clone(),
        amount_micros: amount,
        expires_at_ms,
        max_redemptions,
        created_at_ms: state.clock.now_ms(),
    };
    state.blocking(move |s| s.create_promo(&promo)).await.map_err(|e| {
        if e.status == StatusCode::CONFLICT {
            ApiError::conflict("conflict", "a promo code with this name exists")
        } else {
            e
        }
    })?;
    audit(&state, caller, "promo.create", format!("promo:{code}"), json!({"amount_micros": amount})).await?;
    Ok(
        json!({"code": code, "amount_micros": amount, "expires_at": expires_at_ms.map(rfc3339), "max_redemptions": max_redemptions}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redeem {
    code: String,
}

pub async fn redeem_promo(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<Redeem>,
) -> AppResult<Response> {
    Ok(created(redeem(&state, caller, body).await?))
}

/// Redeems a promo code for the caller's account: the body of `POST /v1/promo-codes/redeem`.
pub async fn redeem(state: &Arc<AppState>, caller: Caller, body: Redeem) -> AppResult<Value> {
    let state = state.clone();
    let Caller::Advertiser(id) = caller else {
        return Err(ApiError::invalid("promo codes are redeemed with an advertiser key"));
    };
    let code = text("code", &body.code, 1, 64)?;
    let now = state.clock.now_ms();
    let entry = state.blocking(move |s| s.redeem_promo(&code, id, now)).await?;
    state.pipeline.delivery().credit(id, entry.amount_micros);
    state.refresh_room().await?;
    audit(&state, caller, "promo.redeem", format!("advertiser:{id}"), json!({"amount_micros": entry.amount_micros}))
        .await?;
    let mut body = ledger_json(&entry);
    body["balance_micros"] = json!(state.pipeline.delivery().balance(id));
    Ok(body)
}

#[derive(Deserialize)]
pub struct AuditQuery {
    limit: Option<usize>,
}

pub async fn audit_log(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Query(q): Query<AuditQuery>,
) -> AppResult<axum::Json<Value>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let entries = state.blocking(move |s| s.audit_log(limit)).await?;
    Ok(items(
        entries
            .iter()
            .map(|e| {
                let detail: Value = serde_json::from_str(&e.detail).unwrap_or(Value::Null);
                json!({"at": rfc3339(e.at_ms), "actor": e.actor, "action": e.action, "target": e.target, "detail": detail})
            })
            .collect(),
    ))
}

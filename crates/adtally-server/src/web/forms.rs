//! The `POST` handlers behind the dashboard's forms. Each checks the session's CSRF token
//! (the hidden `csrf` field) before anything else and refuses the form with 403 without
//! it; then turns the fields into the JSON API's own input and calls the function the
//! API's handler calls, so validation and effects are the API's. On success it redirects
//! (Post/Redirect/Get); on a refused input it shows the form again with the API's
//! message and what was typed (a 4xx, never a 5xx).

use std::net::SocketAddr;
use std::sync::Arc;

use adtally_core::jiff::civil::DateTime;
use adtally_core::jiff::tz::TimeZone;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use super::format::parse_amount;
use super::pages::{self, AdForm, Creative, SIGN_IN_COOKIE};
use super::{id_of, render, sentence, FormData, PageError, Signed};
use crate::api::{self, Acted, Caller};
use crate::error::{ApiError, Json, Path};
use crate::session;
use crate::state::AppState;

type PageResult = Result<Response, PageError>;
type StringPath = axum::extract::Path<String>;

/// The API input `T` from JSON built out of a form.
fn input<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| sentence(&e.to_string()))
}

/// An API refusal as the message to show on the form; a server failure stays an error.
fn refusal(e: ApiError) -> Result<(StatusCode, String), PageError> {
    if e.status.is_client_error() {
        Ok((e.status, sentence(&e.message)))
    } else {
        Err(PageError::from(e))
    }
}

fn see_other(path: &str) -> Response {
    Redirect::to(path).into_response()
}

// ---- signing in and out ------------------------------------------------------------------

/// The sign-in form's token from its cookie.
fn sign_in_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SIGN_IN_COOKIE)
        .map(|(_, v)| v)
}

/// `POST /sign-in` (`api_key`, `csrf`): opens a session and goes to the dashboard. The
/// form's token must equal its cookie's (a page on another site can set neither).
pub async fn sign_in(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let form = FormData::parse(&body);
    let secure = session::https(&state, peer, &headers);
    let sent = form.get("csrf");
    if sent.is_empty() || !sign_in_cookie(&headers).is_some_and(|c| session::same_token(c, sent)) {
        return pages::render_sign_in(
            StatusCode::FORBIDDEN,
            Some("This sign-in form had expired. Please sign in again.".into()),
            secure,
        );
    }
    match session::open(&state, secure, form.get("api_key")).await {
        Ok((_, cookie)) => {
            let mut response = see_other("/");
            let h = response.headers_mut();
            h.append(header::SET_COOKIE, cookie);
            let gone = format!("{SIGN_IN_COOKIE}=; HttpOnly; SameSite=Strict; Path=/sign-in; Max-Age=0");
            if let Ok(gone) = HeaderValue::from_str(&gone) {
                h.append(header::SET_COOKIE, gone);
            }
            Ok(response)
        }
        Err(e) if e.status == StatusCode::UNAUTHORIZED => pages::render_sign_in(
            StatusCode::UNAUTHORIZED,
            Some("This API key is not valid. Check it and try again.".into()),
            secure,
        ),
        Err(e) => Err(e.into()),
    }
}

/// `POST /sign-out`: ends the session and removes its cookie.
pub async fn sign_out(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    signed: Signed,
    body: Bytes,
) -> PageResult {
    signed.check(&FormData::parse(&body))?;
    let cookie = session::close(&state, &headers, session::https(&state, peer, &headers)).await?;
    let mut response = see_other("/");
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

// ---- campaigns ---------------------------------------------------------------------------

/// A `datetime-local` value read in the advertiser's time zone, as RFC 3339.
fn local_time(field: &str, value: &str, tz: &TimeZone) -> Result<String, String> {
    let bad = || format!("{field} must be a date and time like 2030-01-31T18:00");
    let local: DateTime = value.trim().parse().map_err(|_| bad())?;
    Ok(local.to_zoned_datetime(tz.clone()).map_err(|_| bad())?.timestamp().to_string())
}

/// The campaign form as the API's campaign input.
fn campaign_json(form: &FormData, tz: &TimeZone) -> Result<Value, String> {
    let optional_amount = |field: &str, name: &str| -> Result<Value, String> {
        form.opt(name).map(|v| parse_amount(field, v)).transpose().map(|v| json!(v))
    };
    let optional_time = |field: &str, name: &str| -> Result<Value, String> {
        form.opt(name).map(|v| local_time(field, v, tz)).transpose().map(|v| json!(v))
    };
    let cap = match (form.opt("cap_n"), form.opt("cap_h")) {
        (None, None) => Value::Null,
        (Some(n), Some(h)) => {
            let number = |v: &str| v.parse::<u32>().map_err(|_| "The frequency cap needs whole numbers".to_owned());
            json!({"impressions": number(n)?, "per_hours": number(h)?})
        }
        _ => return Err("The frequency cap needs both a number of impressions and hours".into()),
    };
    Ok(json!({
        "name": form.get("name"),
        "cpm_bid_micros": parse_amount("The CPM bid", form.get("bid"))?,
        "total_budget_micros": parse_amount("The total budget", form.get("total"))?,
        "daily_budget_micros": optional_amount("The daily budget", "daily")?,
        "start_at": optional_time("The start", "start")?,
        "end_at": optional_time("The end", "end")?,
        "pacing": form.opt("pacing").unwrap_or("even"),
        "targeting": {"devices": form.all("devices"), "placements": form.all("placements")},
        "frequency_cap": cap,
    }))
}

/// The campaign form again, with what was typed and why it was refused.
async fn campaign_form_again(
    state: &Arc<AppState>,
    signed: &Signed,
    campaign: Option<&Value>,
    form: &FormData,
    (status, message): (StatusCode, String),
) -> PageResult {
    let placements = api::list_placements(State(state.clone()), signed.caller).await?.0;
    let mut page = pages::campaign_form(state, signed, campaign).await?.refilled(form, &placements);
    page.error = Some(message);
    Ok(render(status, &page))
}

fn timezone_of(state: &AppState, caller: Caller, campaign: Option<&Value>) -> TimeZone {
    campaign
        .and_then(|c| c["advertiser_id"].as_i64())
        .or(caller.advertiser_id())
        .map_or(TimeZone::UTC, |a| state.catalog().timezone(a))
}

/// `POST /campaigns/new`: creates a draft and goes on to its first ad.
pub async fn create_campaign(State(state): State<Arc<AppState>>, signed: Signed, body: Bytes) -> PageResult {
    let form = FormData::parse(&body);
    signed.check(&form)?;
    let tz = timezone_of(&state, signed.caller, None);
    let refused = match campaign_json(&form, &tz).and_then(input) {
        Ok(body) => match api::new_campaign(&state, signed.caller, body).await {
            Ok(c) => return Ok(see_other(&format!("/campaigns/{}/ads/new", c["id"]))),
            Err(e) => refusal(e)?,
        },
        Err(message) => (StatusCode::BAD_REQUEST, message),
    };
    campaign_form_again(&state, &signed, None, &form, refused).await
}

/// `POST /campaigns/{id}/edit`.
pub async fn update_campaign(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    axum::extract::Path(id): StringPath,
    body: Bytes,
) -> PageResult {
    let form = FormData::parse(&body);
    signed.check(&form)?;
    let id = id_of(&id, "campaign")?;
    let campaign = api::get_campaign(State(state.clone()), signed.caller, Path(id)).await?.0;
    let tz = timezone_of(&state, signed.caller, Some(&campaign));
    let refused = match campaign_json(&form, &tz).and_then(input) {
        Ok(body) => match api::patch_campaign(State(state.clone()), signed.caller, Path(id), Json(body)).await {
            Ok(_) => return Ok(see_other(&format!("/campaigns/{id}"))),
            Err(e) => refusal(e)?,
        },
        Err(message) => (StatusCode::BAD_REQUEST, message),
    };
    campaign_form_again(&state, &signed, Some(&campaign), &form, refused).await
}

/// `POST /campaigns/{id}/do/{action}`: submit, pause, resume, archive, restore, clone.
pub async fn campaign_action(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    axum::extract::Path((id, action)): axum::extract::Path<(String, String)>,
    body: Bytes,
) -> PageResult {
    signed.check(&FormData::parse(&body))?;
    let id = id_of(&id, "campaign")?;
    match api::run_campaign_action(&state, signed.caller, id, &action).await {
        Ok(Acted::Changed(_)) => Ok(see_other(&format!("/campaigns/{id}"))),
        Ok(Acted::Cloned(copy)) => Ok(see_other(&format!("/campaigns/{}", copy["id"]))),
        Err(e) => {
            let (status, message) = refusal(e)?;
            Err(PageError::new(status, message))
        }
    }
}

// ---- ads ---------------------------------------------------------------------------------

const AD_FIELDS: [&str; 7] = ["format", "headline", "body", "image_url", "video_url", "cta", "target_url"];

/// The ad form as the API's ad input: every field for a new ad, only the changed ones for
/// an edit (an unchanged edit is no new version). Empty media fields are `null`.
fn ad_json(form: &FormData, current: Option<&Value>) -> Value {
    let mut out = Map::new();
    for field in AD_FIELDS {
        let sent = form.get(field).trim();
        let value = match field {
            "image_url" | "video_url" if sent.is_empty() => Value::Null,
            "cta" if sent.is_empty() => json!("Learn more"),
            _ => json!(sent),
        };
        let unchanged = current.is_some_and(|c| c[field] == value || (c[field].is_null() && value == json!("")));
        if !unchanged {
            out.insert(field.to_owned(), value);
        }
    }
    Value::Object(out)
}

async fn ad_form_again(
    state: &Arc<AppState>,
    signed: &Signed,
    (action, campaign_id): (String, i64),
    form: &FormData,
    (status, message): (StatusCode, String),
) -> PageResult {
    let c = api::get_campaign(State(state.clone()), signed.caller, Path(campaign_id)).await?.0;
    let mut page = AdForm::new(
        signed.layout("Ad", "campaigns"),
        action,
        format!("/campaigns/{campaign_id}"),
        c["name"].as_str().unwrap_or_default().to_owned(),
        Creative::from_form(form),
    );
    page.error = Some(message);
    Ok(render(status, &page))
}

/// `POST /campaigns/{id}/ads/new`.
pub async fn create_ad(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    axum::extract::Path(id): StringPath,
    body: Bytes,
) -> PageResult {
    let form = FormData::parse(&body);
    signed.check(&form)?;
    let id = id_of(&id, "campaign")?;
    let refused = match input(ad_json(&form, None)) {
        Ok(body) => match api::new_ad(&state, signed.caller, id, body).await {
            Ok(_) => return Ok(see_other(&format!("/campaigns/{id}"))),
            Err(e) => refusal(e)?,
        },
        Err(message) => (StatusCode::BAD_REQUEST, message),
    };
    ad_form_again(&state, &signed, (format!("/campaigns/{id}/ads/new"), id), &form, refused).await
}

/// `POST /ads/{id}/edit`: an approved ad keeps serving while the edit waits for review.
pub async fn update_ad(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    axum::extract::Path(id): StringPath,
    body: Bytes,
) -> PageResult {
    let form = FormData::parse(&body);
    signed.check(&form)?;
    let id = id_of(&id, "ad")?;
    let ad = api::get_ad(State(state.clone()), signed.caller, Path(id)).await?.0;
    let campaign_id = ad["campaign_id"].as_i64().unwrap_or_default();
    let refused = match input(ad_json(&form, Some(pages::latest(&ad)))) {
        Ok(body) => match api::patch_ad(State(state.clone()), signed.caller, Path(id), Json(body)).await {
            Ok(_) => return Ok(see_other(&format!("/campaigns/{campaign_id}"))),
            Err(e) => refusal(e)?,
        },
        Err(message) => (StatusCode::BAD_REQUEST, message),
    };
    ad_form_again(&state, &signed, (format!("/ads/{id}/edit"), campaign_id), &form, refused).await
}

// ---- billing -----------------------------------------------------------------------------

/// `POST /billing/redeem` (`code`).
pub async fn redeem(State(state): State<Arc<AppState>>, signed: Signed, body: Bytes) -> PageResult {
    let form = FormData::parse(&body);
    signed.check(&form)?;
    let refused = match input(json!({"code": form.get("code")})) {
        Ok(body) => match api::redeem(&state, signed.caller, body).await {
            Ok(_) => return Ok(see_other("/billing?done=redeemed")),
            Err(e) => refusal(e)?,
        },
        Err(message) => (StatusCode::BAD_REQUEST, message),
    };
    pages::render_billing(&state, &signed, None, Some(refused.1), form.get("code").to_owned(), refused.0).await
}

/// `POST /billing/weekly-report` (`enabled`: `true` or `false`).
pub async fn weekly_report(State(state): State<Arc<AppState>>, signed: Signed, body: Bytes) -> PageResult {
    let form = FormData::parse(&body);
    signed.check(&form)?;
    let enabled = form.get("enabled") == "true";
    let body = crate::mailer::WeeklyReportBody { enabled, advertiser_id: None };
    let _ = crate::mailer::put_weekly_report(State(state.clone()), signed.caller, Json(body)).await?;
    Ok(see_other(if enabled { "/billing?done=weekly-on" } else { "/billing?done=weekly-off" }))
}

// ---- the operator ------------------------------------------------------------------------

/// `POST /admin/ads/{id}/review` (`decision`: approve or reject, `reason`).
pub async fn review(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    axum::extract::Path(id): StringPath,
    body: Bytes,
) -> PageResult {
    let form = FormData::parse(&body);
    signed.check(&form)?;
    let admin = signed.admin()?;
    let id = id_of(&id, "ad")?;
    let decision = form.get("decision");
    let mut review = json!({"decision": decision});
    if let Some(reason) = form.opt("reason").filter(|_| decision == "reject") {
        review["reason"] = json!(reason);
    }
    // The version the page showed: a decision never lands on content the operator did
    // not see (a number that does not parse is refused as the API refuses it).
    if let Some(version) = form.opt("version") {
        review["version"] = version.parse::<u64>().map_or_else(|_| json!(version), |v| json!(v));
    }
    let refused = match input(review) {
        Ok(body) => match api::review_ad(State(state.clone()), admin, Path(id), Json(body)).await {
            Ok(_) => {
                let done = if decision == "approve" { "approved" } else { "rejected" };
                return Ok(see_other(&format!("/admin/review?done={done}")));
            }
            Err(e) => refusal(e)?,
        },
        Err(message) => (StatusCode::BAD_REQUEST, message),
    };
    pages::render_review(&state, &signed, None, Some(refused.1), refused.0).await
}

/// `POST /admin/advertisers` (`name`, `email`, `timezone`): a new account.
pub async fn advertiser(State(state): State<Arc<AppState>>, signed: Signed, body: Bytes) -> PageResult {
    let form = FormData::parse(&body);
    signed.check(&form)?;
    let admin = signed.admin()?;
    let fields = json!({"name": form.get("name"), "email": form.get("email"), "timezone": form.opt("timezone")});
    let refused = match input(fields) {
        Ok(body) => match api::new_advertiser(&state, admin, body).await {
            Ok(_) => return Ok(see_other("/admin/advertisers?done=advertiser")),
            Err(e) => refusal(e)?,
        },
        Err(message) => (StatusCode::BAD_REQUEST, message),
    };
    pages::render_advertisers(&state, &signed, None, Some(refused.1), refused.0).await
}

#[derive(askama::Template)]
#[template(path = "new_key.html")]
struct NewKeyPage {
    layout: super::Layout,
    advertiser_id: i64,
    key: String,
}

/// `POST /admin/advertisers/{id}/keys`: a new API key, shown on this one page and never
/// again (so no redirect: the key exists only in this answer).
pub async fn key(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    axum::extract::Path(id): StringPath,
    body: Bytes,
) -> PageResult {
    signed.check(&FormData::parse(&body))?;
    let admin = signed.admin()?;
    let id = id_of(&id, "advertiser")?;
    let created = api::new_key(&state, admin, id).await?;
    let page = NewKeyPage {
        layout: signed.layout("New API key", "advertisers"),
        advertiser_id: id,
        key: created["api_key"].as_str().unwrap_or_default().to_owned(),
    };
    Ok(render(StatusCode::CREATED, &page))
}

/// `POST /admin/advertisers/{id}/credits` (`amount`, `kind`, `note`).
pub async fn credit(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    axum::extract::Path(id): StringPath,
    body: Bytes,
) -> PageResult {
    let form = FormData::parse(&body);
    signed.check(&form)?;
    let admin = signed.admin()?;
    let id = id_of(&id, "advertiser")?;
    let body = parse_amount("The amount", form.get("amount")).and_then(|amount| {
        input(json!({"amount_micros": amount, "kind": form.opt("kind").unwrap_or("topup"), "note": form.opt("note")}))
    });
    let refused = match body {
        Ok(body) => match api::credit(&state, admin, id, body).await {
            Ok(_) => return Ok(see_other("/admin/advertisers?done=credited")),
            Err(e) => refusal(e)?,
        },
        Err(message) => (StatusCode::BAD_REQUEST, message),
    };
    pages::render_advertisers(&state, &signed, None, Some(refused.1), refused.0).await
}

/// `POST /admin/promo-codes` (`code`, `amount`, `max_redemptions`, `expires`: a date).
pub async fn promo(State(state): State<Arc<AppState>>, signed: Signed, body: Bytes) -> PageResult {
    let form = FormData::parse(&body);
    signed.check(&form)?;
    let admin = signed.admin()?;
    let body = (|| -> Result<_, String> {
        let amount = parse_amount("The amount", form.get("amount"))?;
        let max = form
            .opt("max_redemptions")
            .map(|m| m.parse::<i64>().map_err(|_| "The number of redemptions must be a whole number".to_owned()))
            .transpose()?;
        let expires = form.opt("expires").map(|d| format!("{d}T00:00:00Z"));
        input(json!({"code": form.get("code"), "amount_micros": amount, "max_redemptions": max, "expires_at": expires}))
    })();
    let refused = match body {
        Ok(body) => match api::new_promo(&state, admin, body).await {
            Ok(_) => return Ok(see_other("/admin/advertisers?done=promo")),
            Err(e) => refusal(e)?,
        },
        Err(message) => (StatusCode::BAD_REQUEST, message),
    };
    pages::render_advertisers(&state, &signed, None, Some(refused.1), refused.0).await
}

/// `POST /admin/placements` (`id`, `name`, `format`, `floor`).
pub async fn placement(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let form = FormData::parse(&body);
    signed.check(&form)?;
    let admin = signed.admin()?;
    let floor = form.opt("floor").map(|f| parse_amount("The floor", f)).transpose();
    let body = floor.and_then(|floor| {
        input(json!({"id": form.get("id"), "name": form.get("name"), "format": form.get("format"), "floor_cpm_micros": floor}))
    });
    let refused = match body {
        Ok(body) => match api::new_placement(&state, admin, body).await {
            Ok(_) => return Ok(see_other("/admin/placements?done=placement")),
            Err(e) => refusal(e)?,
        },
        Err(message) => (StatusCode::BAD_REQUEST, message),
    };
    pages::render_placements(&state, &signed, &headers, None, Some(refused.1), refused.0).await
}

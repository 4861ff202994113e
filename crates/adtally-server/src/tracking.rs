//! The public tracking surface: ad decisions, the impression, viewable and click
//! beacons, and conversions. This is the hot path: no store reads, one HMAC check per
//! beacon, and the only wait is for the group commit.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use adtally_core::auction::{self, Bid};
use adtally_core::catalog::Format;
use adtally_core::clock::DAY;
use adtally_core::counting::DecisionRef;
use adtally_core::event::{Country, Device, Event, EventKind, Verdict};
use adtally_core::token::{ClickId, TrackingToken, TOKEN_TEXT_LEN};
use adtally_core::traffic::{givt_verdict, is_prefetch};

use crate::api::{text, Caller};
use crate::client::{client_ip, client_prefix};
use crate::error::{ApiError, Json, Path, Query};
use adtally_store::Idempotency;

use crate::pipeline::{Health, Outcome, Submission};
use crate::state::{AppState, Ranked};

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
const COOKIE: &str = "adtally_uid";
const MAX_UA_LEN: usize = 1024;
const MAX_UID_LEN: usize = 128;

/// What the request says about its sender.
struct Visitor<'a> {
    ip: IpAddr,
    user_agent: &'a str,
    headers: &'a HeaderMap,
    trusted_peer: bool,
}

impl<'a> Visitor<'a> {
    fn new(state: &AppState, peer: SocketAddr, headers: &'a HeaderMap) -> Self {
        let trusted_peer = state.is_trusted_proxy(peer.ip());
        let ip = client_ip(state, peer.ip(), headers);
        let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
        Self { ip, user_agent, headers, trusted_peer }
    }

    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn givt(&self, state: &AppState) -> Option<Verdict> {
        if !state.config.traffic_filters {
            return None;
        }
        let bot = self.user_agent.len() > MAX_UA_LEN || state.is_bot(self.user_agent);
        let prefetch = is_prefetch(|name| self.header(name));
        givt_verdict(bot, prefetch, state.datacenters.contains(self.ip))
    }

    /// Country from a trusted proxy's geo header (`CF-IPCountry`, `X-Country-Code`).
    fn country(&self) -> Country {
        if !self.trusted_peer {
            return Country::UNKNOWN;
        }
        self.header("cf-ipcountry").or_else(|| self.header("x-country-code")).map_or(Country::UNKNOWN, Country::parse)
    }

    fn cookie(&self) -> Option<&'a str> {
        let cookies = self.header("cookie")?;
        cookies
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty() && v.len() <= MAX_UID_LEN)
    }

    fn https(&self) -> bool {
        self.trusted_peer && self.header("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https"))
    }

    /// The daily-salted key of the address (an IPv6 client by its /64): rate limits
    /// per address without storing it.
    fn ip_key(&self, state: &AppState, now_ms: i64) -> u64 {
        let day = (now_ms / DAY).to_le_bytes();
        state.signer.keyed_hash(&[b"ip", &day, &client_prefix(self.ip)])
    }

    /// Same user = the page's `uid`, else our first-party cookie, else a daily-salted
    /// hash of address and user agent.
    fn user_key(&self, state: &AppState, uid: Option<&str>, now_ms: i64) -> u64 {
        if let Some(uid) = uid {
            return state.signer.keyed_hash(&[b"uid", uid.as_bytes()]);
        }
        if let Some(cookie) = self.cookie() {
            return state.signer.keyed_hash(&[b"uid", cookie.as_bytes()]);
        }
        let day = (now_ms / DAY).to_le_bytes();
        state.signer.keyed_hash(&[b"ipua", &day, &self.ip_key(state, now_ms).to_le_bytes(), self.user_agent.as_bytes()])
    }
}

#[derive(Deserialize)]
pub struct DecisionQuery {
    placement: Option<String>,
    uid: Option<String>,
}

#[derive(Serialize)]
struct DecisionAd<'a> {
    id: i64,
    campaign_id: i64,
    format: &'static str,
    headline: &'a str,
    body: &'a str,
    image_url: Option<&'a str>,
    video_url: Option<&'a str>,
    cta: &'a str,
}

/// The decision's answer, `{request_id, ad, impression_url, viewable_url, click_url}`,
/// written once into a buffer of about its final size: the hot path builds no struct of
/// strings and no intermediate URL per beacon (they differ only in their path).
fn decision_json(decision_id: u64, ad: &DecisionAd<'_>, base: &str, token: &str) -> Result<Vec<u8>, ApiError> {
    use std::io::Write;
    let mut out = Vec::with_capacity(320 + 3 * (base.len() + token.len()));
    let mut url = String::with_capacity(base.len() + 5 + token.len());
    let written = (|| -> Result<(), serde_json::Error> {
        write!(out, "{{\"request_id\":\"{decision_id}\",\"ad\":").map_err(serde_json::Error::io)?;
        serde_json::to_writer(&mut out, ad)?;
        for (name, path) in [("impression_url", "/t/i/"), ("viewable_url", "/t/v/"), ("click_url", "/t/c/")] {
            url.clear();
            url.push_str(base);
            url.push_str(path);
            url.push_str(token);
            write!(out, ",\"{name}\":").map_err(serde_json::Error::io)?;
            serde_json::to_writer(&mut out, &url)?;
        }
        out.push(b'}');
        Ok(())
    })();
    written.map_err(|_| ApiError::internal())?;
    Ok(out)
}

pub async fn decision(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<DecisionQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    let slug =
        q.placement.as_deref().ok_or_else(|| ApiError::bad_request("missing_placement", "placement is required"))?;
    let uid = q.uid.as_deref().filter(|u| !u.is_empty());
    if uid.is_some_and(|u| u.len() > MAX_UID_LEN) {
        return Err(ApiError::invalid(format!("uid must be at most {MAX_UID_LEN} bytes")));
    }
    let catalog = state.catalog();
    let placement = catalog
        .placements
        .get(slug)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_placement", "no placement has this id"))?;
    let visitor = Visitor::new(&state, peer, headers);
    // An ad whose beacons cannot be recorded would be shown for free: serve none.
    if state.pipeline.health() != Health::Ok {
        state.decisions_unfilled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Ok(no_fill(&visitor));
    }
    let now = state.clock.now_ms();
    let device = state.user_agents.device(visitor.user_agent);
    let decision_id = state.next_decision_id(now);
    let draw = splitmix(decision_id);

    let user_key = visitor.user_key(&state, uid, now);

    // Walk the ranking, best first, until the winner and the runner-up are known: the
    // first two campaigns that may serve (all of equal top rank, for a fair tie break).
    let ranking = state.ranking();
    let ranked = ranking.by_format.get(&placement.format).map_or(&[][..], Vec::as_slice);
    let mut entrants: Vec<&Ranked> = Vec::with_capacity(4);
    {
        let delivery = state.pipeline.delivery();
        for r in ranked {
            let k = &r.candidate.campaign;
            if k.cpm_bid_micros < placement.floor_cpm_micros {
                continue;
            }
            if entrants.len() >= 2 && r.rank < entrants[1].rank {
                break;
            }
            let eligible = k.start_at_ms.is_none_or(|s| s <= now)
                && k.end_at_ms.is_none_or(|e| now < e)
                && (k.targeting.devices.is_empty() || k.targeting.devices.contains(&device))
                && (k.targeting.placements.is_empty() || k.targeting.placements.iter().any(|p| p == slug))
                && delivery.can_serve(k.id, now)
                && delivery.cap_allows(user_key, k.id, now);
            if eligible {
                entrants.push(r);
            }
        }
    }
    let bids: Vec<Bid> = entrants
        .iter()
        .map(|r| Bid { cpm_bid_micros: r.candidate.campaign.cpm_bid_micros, quality: r.quality })
        .collect();
    let Some(won) = auction::run(&bids, placement.floor_cpm_micros, draw) else {
        state.decisions_unfilled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Ok(no_fill(&visitor));
    };
    let winner = entrants[won.winner];
    let ad = &winner.candidate.ads[weighted_pick(&winner.ad_quality, splitmix(draw ^ 0x5eed))];
    let campaign = &winner.candidate.campaign;
    if state.store.cluster().is_some() {
        // Several nodes: until the next look at the cluster's room, count this decision
        // as spent, so a nearly spent budget stops being shown here (see `cluster.rs`).
        state.pipeline.delivery().take_room(campaign.id, now, won.price_cpm_micros / 1000 + 1);
    }

    let (Ok(advertiser_id), Ok(campaign_id), Ok(ad_id), Ok(placement_id)) = (
        u32::try_from(campaign.advertiser_id),
        u32::try_from(campaign.id),
        u32::try_from(ad.id),
        u32::try_from(placement.id),
    ) else {
        return Err(ApiError::internal());
    };
    let token = state.signer.sign(&TrackingToken {
        decision_id,
        issued_at_ms: now,
        advertiser_id,
        campaign_id,
        ad_id,
        ad_version: ad.version,
        placement_id,
        user_key,
        device,
        country: visitor.country(),
        clearing_cpm_micros: won.price_cpm_micros as u64,
        format: ad.content.format,
    });
    let ad_body = DecisionAd {
        id: ad.id,
        campaign_id: campaign.id,
        format: ad.content.format.as_str(),
        headline: &ad.content.headline,
        body: &ad.content.body,
        image_url: ad.content.image_url.as_deref(),
        video_url: ad.content.video_url.as_deref(),
        cta: &ad.content.cta,
    };
    let body = decision_json(decision_id, &ad_body, &base_url(&state, &visitor), &token)?;
    state.decisions_served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut response = ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
    set_cookie_if_absent(&mut response, &visitor, uid.is_some());
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn no_fill(visitor: &Visitor) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie_if_absent(&mut response, visitor, false);
    response
}

fn set_cookie_if_absent(response: &mut Response, visitor: &Visitor, has_uid: bool) {
    if has_uid || visitor.cookie().is_some() {
        return;
    }
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        return;
    }
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let attributes = if visitor.https() { "SameSite=None; Secure" } else { "SameSite=Lax" };
    let cookie = format!("{COOKIE}={id}; Path=/; Max-Age=31536000; HttpOnly; {attributes}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn base_url(state: &AppState, visitor: &Visitor) -> String {
    if let Some(url) = &state.config.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = visitor
        .header("host")
        .filter(|h| h.len() <= 255 && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)))
        .unwrap_or("localhost");
    let scheme = if visitor.https() { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// An index drawn with probability proportional to its weight.
fn weighted_pick(weights: &[f64], draw: u64) -> usize {
    let total: f64 = weights.iter().sum();
    if weights.len() <= 1 || total <= 0.0 {
        return 0;
    }
    let mut point = (draw >> 11) as f64 / (1u64 << 53) as f64 * total;
    for (i, w) in weights.iter().enumerate() {
        if point < *w {
            return i;
        }
        point -= w;
    }
    weights.len() - 1
}

/// SplitMix64: spreads decision ids into well-mixed draws for tie breaks and rotation.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Verifies a beacon's token and submits its event: `None` when the token is bad, else
/// the token and whether the event was recorded. A `HEAD` request (link checkers) records
/// nothing and never uses up a decision.
async fn track(
    state: &Arc<AppState>,
    kind: EventKind,
    method: &Method,
    peer: SocketAddr,
    headers: &HeaderMap,
    token: &str,
) -> Option<(TrackingToken, Result<(), ApiError>)> {
    if token.len() != TOKEN_TEXT_LEN {
        return None;
    }
    let t = state.signer.verify(token).ok()?;
    if method == Method::HEAD {
        return Some((t, Ok(())));
    }
    let visitor = Visitor::new(state, peer, headers);
    let now = state.clock.now_ms();
    let submission = Submission {
        event: Event {
            at_ms: now,
            kind,
            verdict: Verdict::Valid,
            decision_id: Some(t.decision_id),
            advertiser_id: t.advertiser_id.into(),
            campaign_id: Some(t.campaign_id.into()),
            ad_id: Some(t.ad_id.into()),
            placement_id: Some(t.placement_id.into()),
            user_key: t.user_key,
            ip_key: Some(visitor.ip_key(state, now)),
            device: t.device,
            country: t.country,
            cost_micros: 0,
            value_micros: 0,
        },
        decision: Some(DecisionRef::Token { decision_id: t.decision_id, issued_at_ms: t.issued_at_ms }),
        givt: visitor.givt(state),
        clearing_cpm_micros: t.clearing_cpm_micros.min(i64::MAX as u64) as i64,
        video: t.format == Format::Video,
        idempotency: None,
    };
    let recorded = state.pipeline.record(submission).await.map(drop).map_err(ApiError::from);
    Some((t, recorded))
}

fn pixel() -> Response {
    let headers = [(header::CONTENT_TYPE, "image/gif"), (header::CACHE_CONTROL, "no-store")];
    (headers, PIXEL).into_response()
}

/// `GET /t/i/{token}`: the impression beacon. Always answers the pixel (POST: 204),
/// even for a bad token, so pages never show a broken image.
pub async fn impression(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    // The request itself, not the `HeaderMap` extractor: that one clones every header.
    let (method, headers) = (request.method(), request.headers());
    // A 2xx says the impression is recorded: while events cannot be, the beacon fails.
    if let Some((_, recorded)) = track(&state, EventKind::Impression, method, peer, headers, &token).await {
        recorded?;
    }
    Ok(if method == Method::POST { StatusCode::NO_CONTENT.into_response() } else { pixel() })
}

/// `GET /t/v/{token}`: the viewable-impression beacon.
pub async fn viewable(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    // The request itself, not the `HeaderMap` extractor: that one clones every header.
    let (method, headers) = (request.method(), request.headers());
    if let Some((_, recorded)) = track(&state, EventKind::Viewable, method, peer, headers, &token).await {
        recorded?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /t/c/{token}`: the click. Redirects to the ad's own target URL whatever the
/// verdict; a token that fails verification gets 400 and goes nowhere, and a click on an
/// ad the operator has since taken down is counted but answers 404 `ad_withdrawn`.
pub async fn click(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    // The request itself, not the `HeaderMap` extractor: that one clones every header.
    let (method, headers) = (request.method(), request.headers());
    let Some((t, recorded)) = track(&state, EventKind::Click, method, peer, headers, &token).await else {
        return Err(ApiError::bad_request("invalid_token", "this click link is not valid"));
    };
    // The visitor goes to the landing page even when the click cannot be counted (the
    // writer failing, the disk full): a 302 promises nothing about counting, and losing
    // the visitor would cost the advertiser more than the count.
    if let Err(e) = recorded {
        // Debug, not warn: one line per click of an outage (possibly a full disk) would
        // only add to it; the writer's failure is logged and in `/healthz` already.
        tracing::debug!(error = %e.message, "a click went uncounted; redirected anyway");
    }
    // The version the decision served, whatever the ad says now: an edit is reviewed
    // before anyone is sent to its URL.
    let catalog = state.catalog();
    let target = catalog.click_targets.get(&(i64::from(t.ad_id), t.ad_version)).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "ad_withdrawn", "this ad has been withdrawn; its link goes nowhere")
    })?;
    let click_id = state.signer.sign_click_id(&ClickId {
        advertiser_id: t.advertiser_id.into(),
        user_key: t.user_key,
        clicked_at_ms: state.clock.now_ms(),
    });
    let location = redirect_target(target, &click_id).ok_or_else(|| ApiError::not_found("ad"))?;
    Ok((
        StatusCode::FOUND,
        [(header::LOCATION, location), (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
    )
        .into_response())
}

/// The query parameter that carries the click id to the advertiser's landing page, for
/// its postback to pass back (like an ad network's click id).
pub const CLICK_ID_PARAM: &str = "adtally_click";

/// The `Location` of a click: the approved target URL with the click id appended (in
/// the query, before any fragment).
fn redirect_target(target: &url::Url, click_id: &str) -> Option<HeaderValue> {
    let mut url = target.clone();
    url.query_pairs_mut().append_pair(CLICK_ID_PARAM, click_id);
    HeaderValue::from_str(url.as_str()).ok()
}

/// The user key of a click id the advertiser passed back; refused when it is not ours or
/// names another advertiser's click (which answers like an unknown one).
fn user_of_click(state: &AppState, advertiser_id: i64, click_id: &str) -> Result<u64, ApiError> {
    let click = state
        .signer
        .verify_click_id(click_id.trim())
        .map_err(|_| ApiError::bad_request("invalid_click_id", "click_id is not a click id this server gave"))?;
    if click.advertiser_id != advertiser_id {
        return Err(ApiError::bad_request("invalid_click_id", "click_id is not a click on this advertiser's ads"));
    }
    Ok(click.user_key)
}

#[derive(Deserialize)]
pub struct ConversionPixel {
    advertiser: Option<i64>,
    uid: Option<String>,
    /// The landing page's `adtally_click`, which names the user better than the pixel's
    /// own request can.
    click_id: Option<String>,
    value_micros: Option<i64>,
    order_id: Option<String>,
}

/// Bounds and normalises a conversion.
fn conversion_fields(value_micros: Option<i64>, order_id: Option<&str>) -> Result<(i64, Option<String>), ApiError> {
    let value = value_micros.unwrap_or(0);
    if !(0..=1_000_000_000_000_000).contains(&value) {
        return Err(ApiError::invalid("value_micros must be between 0 and 10^15"));
    }
    let order = order_id.map(|o| text("order_id", o, 1, 128)).transpose()?;
    Ok((value, order))
}

/// A conversion as a pixel or a postback reported it.
struct ConversionReport {
    advertiser_id: i64,
    user_key: u64,
    ip_key: Option<u64>,
    givt: Option<Verdict>,
    value_micros: i64,
    order_id: Option<String>,
    /// The advertiser's authenticated postback (replaces a pixel's conversion with the
    /// same order id), not the anonymous pixel.
    authoritative: bool,
}

async fn submit_conversion(state: &Arc<AppState>, report: ConversionReport) -> Result<Outcome, ApiError> {
    let ConversionReport { advertiser_id, user_key, ip_key, givt, value_micros, order_id, authoritative } = report;
    let now = state.clock.now_ms();
    let submission = Submission {
        event: Event {
            at_ms: now,
            kind: EventKind::Conversion,
            verdict: Verdict::Valid,
            decision_id: None,
            advertiser_id,
            campaign_id: None,
            ad_id: None,
            placement_id: None,
            user_key,
            ip_key,
            device: Device::Desktop,
            country: Country::UNKNOWN,
            cost_micros: 0,
            value_micros,
        },
        decision: None,
        givt,
        clearing_cpm_micros: 0,
        video: false,
        idempotency: order_id.map(|o| Idempotency::Order { key: format!("order:{advertiser_id}:{o}"), authoritative }),
    };
    Ok(state.pipeline.submit_one(submission).await?)
}

/// `GET /t/conv?advertiser=A&uid=U&value_micros=V&order_id=O`: the conversion pixel.
pub async fn conversion_pixel(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    Query(q): Query<ConversionPixel>,
) -> Result<Response, ApiError> {
    let advertiser_id = q.advertiser.ok_or_else(|| ApiError::invalid("advertiser is required"))?;
    let cap = match state.catalog().advertisers.get(&advertiser_id) {
        Some((advertiser, _)) => advertiser.max_conversion_value_micros,
        None => return Err(ApiError::not_found("advertiser")),
    };
    let (value, order) = conversion_fields(q.value_micros, q.order_id.as_deref())?;
    // The pixel is anonymous: whatever it claims counts for at most the advertiser's cap.
    let value = value.min(cap);
    if q.uid.as_ref().is_some_and(|u| u.len() > MAX_UID_LEN) {
        return Err(ApiError::invalid(format!("uid must be at most {MAX_UID_LEN} bytes")));
    }
    if method == Method::HEAD {
        return Ok(pixel());
    }
    let visitor = Visitor::new(&state, peer, &headers);
    let now = state.clock.now_ms();
    let user_key = match q.click_id.as_deref().filter(|c| !c.is_empty()) {
        Some(click_id) => user_of_click(&state, advertiser_id, click_id)?,
        None => visitor.user_key(&state, q.uid.as_deref().filter(|u| !u.is_empty()), now),
    };
    let report = ConversionReport {
        advertiser_id,
        user_key,
        ip_key: Some(visitor.ip_key(&state, now)),
        givt: visitor.givt(&state),
        value_micros: value,
        order_id: order,
        authoritative: false,
    };
    submit_conversion(&state, report).await?;
    Ok(pixel())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversionPostback {
    uid: Option<String>,
    /// The `adtally_click` parameter the landing page received, instead of `uid`.
    click_id: Option<String>,
    value_micros: Option<i64>,
    order_id: Option<String>,
    advertiser_id: Option<i64>,
}

/// `POST /v1/conversions`: a server-to-server postback by the advertiser.
pub async fn conversion_postback(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<ConversionPostback>,
) -> Result<Response, ApiError> {
    let advertiser_id = body
        .advertiser_id
        .or(caller.advertiser_id())
        .ok_or_else(|| ApiError::invalid("the admin key must name an advertiser_id"))?;
    if !caller.owns(advertiser_id) || !state.catalog().advertisers.contains_key(&advertiser_id) {
        return Err(ApiError::not_found("advertiser"));
    }
    let (value, order) = conversion_fields(body.value_micros, body.order_id.as_deref())?;
    let user_key = match (&body.uid, &body.click_id) {
        (Some(uid), None) => state.signer.keyed_hash(&[b"uid", text("uid", uid, 1, MAX_UID_LEN)?.as_bytes()]),
        (None, Some(click_id)) => user_of_click(&state, advertiser_id, click_id)?,
        _ => return Err(ApiError::invalid("give exactly one of uid and click_id")),
    };
    let report = ConversionReport {
        advertiser_id,
        user_key,
        ip_key: None,
        givt: None,
        value_micros: value,
        order_id: order,
        authoritative: true,
    };
    let outcome = submit_conversion(&state, report).await?;
    let (status, body) = match outcome {
        Outcome::Stored { verdict } => {
            (StatusCode::CREATED, serde_json::json!({"status": "recorded", "verdict": verdict.as_str()}))
        }
        Outcome::AlreadyStored => (StatusCode::OK, serde_json::json!({"status": "duplicate_order"})),
    };
    Ok((status, axum::Json(body)).into_response())
}

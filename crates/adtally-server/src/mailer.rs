//! Weekly email reports over SMTP (`--smtp-url`), and the routes to opt in and out.
//!
//! Every [`MAIL_EVERY`] the server looks for advertisers whose report is due
//! ([`adtally_core::weekly::due_monday`]: Monday 08:00 in their time zone), claims the
//! report in the sent-mail log, and only then builds and sends it: a restart (or two loops
//! racing) never sends a report twice, and a report already sent costs one insert per pass,
//! not a build. A report the mail server could not take for now (down, or a 4xx) is
//! released for the next pass; a crash between claim and send loses that one report. Advertisers are opted in by
//! default once SMTP is configured; `PUT /v1/weekly-report` and the one-click
//! unsubscribe link (RFC 8058, `List-Unsubscribe-Post`) opt them out.
//!
//! `--smtp-url` is `smtp://[user:pass@]host[:port]` (plain, or `?tls=required` for
//! STARTTLS) or `smtps://…` (TLS, rustls with the webpki roots); a `from=` query
//! parameter sets the sender (default `adtally@localhost`). Links point at
//! `--public-url`.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use lettre::message::header::{ContentTransferEncoding, ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{Message, SmtpTransport, Transport};
use serde::Deserialize;
use serde_json::json;

use adtally_core::catalog::{Advertiser, CampaignStatus};
use adtally_core::event::EventKind;
use adtally_core::metrics::Counts;
use adtally_core::report::{start_of_day, Dimension};
use adtally_core::weekly::{due_monday, rank_ads, render_html, render_text, weeks, AdLine, AlertLine, WeeklyReport};
use adtally_store::{ReachAs, RollupQuery, StoreError};

use crate::api::Caller;
use crate::error::{ApiError, Json, Query};
use crate::state::AppState;

/// How often due reports are looked for.
pub const MAIL_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("--smtp-url: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("message: {0}")]
    Message(String),
}

/// The transport and sender an `--smtp-url` names.
pub fn transport(smtp_url: &str) -> Result<(SmtpTransport, Mailbox), MailError> {
    let mut url = url::Url::parse(smtp_url).map_err(|e| MailError::Config(e.to_string()))?;
    let mut from = "adtally@localhost".to_owned();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter_map(|(k, v)| {
            if k == "from" {
                from = v.into_owned();
                None
            } else {
                Some((k.into_owned(), v.into_owned()))
            }
        })
        .collect();
    url.set_query(None);
    if !kept.is_empty() {
        url.query_pairs_mut().extend_pairs(kept);
    }
    let transport = SmtpTransport::from_url(url.as_str())
        .map_err(|e| MailError::Config(e.to_string()))?
        .timeout(Some(Duration::from_secs(30)))
        .build();
    let from: Mailbox = from.parse().map_err(|e| MailError::Config(format!("from: {e}")))?;
    Ok((transport, from))
}

/// The running weekly-report loop.
pub struct MailLoop {
    task: tokio::task::JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

impl MailLoop {
    /// Stops the loop. A pass under way (blocking, holding the state and so the data
    /// directory) ends after the message it is sending, instead of going through every
    /// advertiser while the server shuts down.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.task.abort();
    }
}

/// Runs the weekly-report loop when SMTP is configured.
pub fn spawn(state: Arc<AppState>) -> Option<MailLoop> {
    let url = state.config.smtp_url.clone()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(MAIL_EVERY);
        // A slow pass is followed by the next one a full period later, not at once.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Not at once: a server just started is still loading, and whatever was due
        // while it was down waits one period at most.
        tick.reset();
        loop {
            tick.tick().await;
            let (state, url, stop) = (state.clone(), url.clone(), stopping.clone());
            match tokio::task::spawn_blocking(move || send_due_until(&state, &url, &stop)).await {
                Ok(Ok(n)) if n > 0 => tracing::info!(reports = n, "weekly reports sent"),
                Ok(Err(e)) => tracing::error!(error = %e, "weekly reports failed"),
                _ => {}
            }
        }
    });
    Some(MailLoop { task, stop })
}

/// The unsubscribe token of an advertiser: its id and a keyed hash of it.
pub fn unsubscribe_token(state: &AppState, advertiser_id: i64) -> String {
    let tag = state.signer.keyed_hash(&[b"unsubscribe", &advertiser_id.to_le_bytes()]);
    format!("{advertiser_id}.{tag:016x}")
}

fn token_owner(state: &AppState, token: &str) -> Option<i64> {
    let (id, _) = token.split_once('.')?;
    let id: i64 = id.parse().ok()?;
    let expected = unsubscribe_token(state, id);
    // Length-independent comparison of equal-length hex strings.
    (expected.len() == token.len() && expected.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0)
        .then_some(id)
}

fn base_url(state: &AppState) -> String {
    state.config.public_url.clone().unwrap_or_else(|| "http://127.0.0.1:8080".into()).trim_end_matches('/').to_owned()
}

/// The report of `advertiser` for the week before `monday`.
pub fn build_report(
    state: &AppState,
    advertiser: &Advertiser,
    monday: adtally_core::jiff::civil::Date,
) -> Result<WeeklyReport, MailError> {
    let store = state.store.as_ref();
    let tz = state.catalog().timezone(advertiser.id);
    let (week, before) = weeks(monday);
    let start = |d| start_of_day(d, &tz);
    let counts = |from, to, group_by: Vec<Dimension>| -> Result<_, StoreError> {
        store.rollup_rows(&RollupQuery {
            advertiser_id: Some(advertiser.id),
            campaign_id: None,
            ad_id: None,
            from_ms: from,
            to_ms: to,
            by_bucket: false,
            group_by,
            reach: ReachAs::Nothing,
            days_in: Some(tz.iana_name().unwrap_or("UTC").to_owned()),
            max_rows: None,
        })
    };
    let mut this_week = Counts::default();
    let mut per_ad: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for r in counts(start(week.0), start(monday), vec![Dimension::Ad])? {
        let s = r.sums;
        this_week.add(r.kind, r.verdict, s.events, s.cost_micros, s.value_micros);
        if let (Some(ad), true) = (r.ad_id, r.verdict.is_valid()) {
            let entry = per_ad.entry(ad).or_default();
            match r.kind {
                EventKind::Impression => entry.0 += s.events,
                EventKind::Click => entry.1 += s.events,
                _ => {}
            }
        }
    }
    let mut last_week = Counts::default();
    for r in counts(start(before.0), start(week.0), vec![])? {
        last_week.add(r.kind, r.verdict, r.sums.events, r.sums.cost_micros, r.sums.value_micros);
    }
    let mut ads = Vec::new();
    for (ad_id, (impressions, clicks)) in per_ad {
        let headline = store.ad(ad_id)?.map_or_else(|| format!("ad {ad_id}"), |a| a.content.headline);
        ads.push(AdLine { ad_id, headline, impressions, clicks });
    }
    let (best_ads, worst_ads) = rank_ads(ads);
    let mut alerts = Vec::new();
    for campaign in store.campaigns(Some(advertiser.id))? {
        if !matches!(campaign.status, CampaignStatus::Active | CampaignStatus::Paused) {
            continue;
        }
        for alert in crate::insights::campaign_alerts(state, &campaign)? {
            alerts.push(AlertLine {
                campaign: campaign.name.clone(),
                kind: alert.kind.as_str(),
                severity: alert.severity.as_str(),
                action: alert.action,
            });
        }
    }
    let base = base_url(state);
    Ok(WeeklyReport {
        advertiser: advertiser.name.clone(),
        week,
        this_week,
        last_week,
        best_ads,
        worst_ads,
        alerts,
        dashboard_url: format!("{base}/"),
        unsubscribe_url: format!("{base}/v1/unsubscribe?token={}", unsubscribe_token(state, advertiser.id)),
    })
}

#[derive(Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

#[derive(Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".into())
    }
}

/// The message of a report. Both parts are base64: the HTML has long lines, and the
/// figures use a few non-ASCII signs (–, ×).
pub fn message(report: &WeeklyReport, from: &Mailbox, to: &str) -> Result<Message, MailError> {
    let to: Mailbox = to.parse().map_err(|e| MailError::Message(format!("to {to:?}: {e}")))?;
    let part = |content_type: ContentType, body: String| {
        SinglePart::builder().header(content_type).header(ContentTransferEncoding::Base64).body(body)
    };
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(format!("Your week on adtally: {} to {}", report.week.0, report.week.1))
        .header(ListUnsubscribe(format!("<{}>", report.unsubscribe_url)))
        .header(ListUnsubscribePost)
        .multipart(
            MultiPart::alternative()
                .singlepart(part(ContentType::TEXT_PLAIN, render_text(report)))
                .singlepart(part(ContentType::TEXT_HTML, render_html(report))),
        )
        .map_err(|e| MailError::Message(e.to_string()))
}

/// Sends every report due now; returns how many were sent. Blocking.
pub fn send_due(state: &AppState, smtp_url: &str) -> Result<usize, MailError> {
    send_due_until(state, smtp_url, &AtomicBool::new(false))
}

/// [`send_due`], ending early once `stop` is set.
///
/// A report that cannot go out for a reason that may pass (the store failing, the mail
/// server down or answering 4xx) is released for the next pass, and the first such answer
/// of the mail server ends this pass: every other report would wait for it too. A refusal
/// for good (a 5xx, an address that does not parse) keeps the claim: trying again every
/// minute would change nothing.
fn send_due_until(state: &AppState, smtp_url: &str, stop: &AtomicBool) -> Result<usize, MailError> {
    let (transport, from) = transport(smtp_url)?;
    let store = state.store.as_ref();
    let now = state.clock.now_ms();
    let optouts: HashSet<i64> = store.weekly_report_optouts()?.into_iter().collect();
    let mut sent = 0;
    for advertiser in store.advertisers()? {
        if stop.load(Ordering::Acquire) {
            break;
        }
        if optouts.contains(&advertiser.id) || advertiser.email.is_empty() {
            continue;
        }
        let Some(monday) = due_monday(now, &state.catalog().timezone(advertiser.id)) else { continue };
        let report_key = format!("weekly:{monday}");
        if !store.claim_mail(advertiser.id, &report_key, now)? {
            continue;
        }
        let message = match build_report(state, &advertiser, monday).and_then(|r| message(&r, &from, &advertiser.email))
        {
            Ok(m) => m,
            Err(MailError::Message(e)) => {
                tracing::error!(advertiser = advertiser.id, error = %e, "weekly report cannot be written; not sent");
                continue;
            }
            Err(e) => {
                tracing::warn!(advertiser = advertiser.id, error = %e, "weekly report not built; retried next pass");
                store.release_mail(advertiser.id, &report_key)?;
                continue;
            }
        };
        match transport.send(&message) {
            Ok(_) => sent += 1,
            Err(e) if e.is_permanent() => {
                tracing::error!(advertiser = advertiser.id, error = %e, "the mail server refused the weekly report");
            }
            Err(e) => {
                tracing::warn!(advertiser = advertiser.id, error = %e, "mail server unavailable; reports retried next pass");
                store.release_mail(advertiser.id, &report_key)?;
                break;
            }
        }
    }
    Ok(sent)
}

/// What the latest weekly report of an advertiser says (the Monday of the current local
/// week), as `To`, `Subject` and the plain-text part: `adtally report --email --dry-run`.
pub fn preview(state: &AppState, advertiser_id: i64) -> Result<String, MailError> {
    let advertiser = state
        .store
        .advertiser(advertiser_id)?
        .ok_or_else(|| MailError::Message(format!("advertiser {advertiser_id} not found")))?;
    let tz = state.catalog().timezone(advertiser_id);
    let today = adtally_core::report::local_date(state.clock.now_ms(), &tz);
    let back = i64::from(today.weekday().to_monday_zero_offset());
    let monday =
        today.checked_sub(adtally_core::jiff::Span::new().days(back)).map_err(|e| MailError::Message(e.to_string()))?;
    let report = build_report(state, &advertiser, monday)?;
    Ok(format!(
        "To: {}\nSubject: Your week on adtally: {} to {}\n\n{}",
        advertiser.email,
        report.week.0,
        report.week.1,
        render_text(&report)
    ))
}

#[derive(Deserialize)]
pub struct WhoParams {
    pub advertiser_id: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeeklyReportBody {
    pub enabled: bool,
    pub advertiser_id: Option<i64>,
}

/// `GET /v1/weekly-report`: whether the advertiser gets the weekly email.
pub async fn get_weekly_report(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(p): Query<WhoParams>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let id = crate::attribution::advertiser_of(&state, caller, p.advertiser_id)?;
    let optouts = state.blocking(|s| s.weekly_report_optouts()).await?;
    Ok(axum::Json(json!({"advertiser_id": id, "enabled": !optouts.contains(&id)})))
}

/// `PUT /v1/weekly-report` `{enabled}`: opt in or out.
pub async fn put_weekly_report(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<WeeklyReportBody>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let id = crate::attribution::advertiser_of(&state, caller, body.advertiser_id)?;
    let now = state.clock.now_ms();
    state.blocking(move |s| s.set_weekly_report(id, body.enabled, now)).await?;
    Ok(axum::Json(json!({"advertiser_id": id, "enabled": body.enabled})))
}

#[derive(Deserialize)]
pub struct TokenParams {
    token: Option<String>,
}

/// `GET /v1/unsubscribe?token=`: a page with a button, never a change (mail scanners
/// open links).
pub async fn unsubscribe_page(State(state): State<Arc<AppState>>, Query(p): Query<TokenParams>) -> Response {
    let Some(token) = p.token.filter(|t| token_owner(&state, t).is_some()) else {
        return ApiError::not_found("unsubscribe token").into_response();
    };
    let html = format!(
        "<!doctype html><html><body><form method=\"post\" action=\"/v1/unsubscribe?token={}\">\
         <p>Stop the weekly adtally report?</p><button type=\"submit\">Unsubscribe</button></form></body></html>",
        adtally_core::weekly::escape(&token)
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// `POST /v1/unsubscribe?token=`: the one-click unsubscribe (RFC 8058).
pub async fn unsubscribe(
    State(state): State<Arc<AppState>>,
    Query(p): Query<TokenParams>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let id = p.token.and_then(|t| token_owner(&state, &t)).ok_or_else(|| ApiError::not_found("unsubscribe token"))?;
    let now = state.clock.now_ms();
    state.blocking(move |s| s.set_weekly_report(id, false, now)).await?;
    Ok(axum::Json(json!({"advertiser_id": id, "enabled": false})))
}

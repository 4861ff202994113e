//! `POST /v1/events`: bulk import of historical events as NDJSON. Each line goes
//! through the same filters and the same writer as live traffic; it is idempotent by
//! `event_id`. A bad line is reported by number and never stops the good ones.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{json, Value};

use adtally_core::clock::DAY;
use adtally_core::counting::DecisionRef;
use adtally_core::event::{Country, Device, Event, EventKind, Verdict};
use adtally_core::traffic::{givt_verdict, purpose_is_prefetch};

use crate::api::{text_ref, Admin};
use crate::error::ApiError;
use adtally_store::Idempotency;

use crate::pipeline::{Outcome, Queued, Submission, MAX_BATCH};
use crate::state::{AppState, ServingCatalog};

/// Most lines one import request may carry.
pub const MAX_LINES: usize = 200_000;
/// Longest line accepted.
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// Rejected lines listed in the answer (all are counted).
const MAX_LISTED_REJECTIONS: usize = 1000;

/// One line as written, borrowing from the body wherever the JSON string has no escapes
/// (no allocation per field).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    at: Cow<'a, str>,
    campaign_id: Option<i64>,
    ad_id: Option<i64>,
    #[serde(borrow)]
    placement: Option<Cow<'a, str>>,
    #[serde(borrow)]
    uid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user_agent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ip: Option<Cow<'a, str>>,
    value_micros: Option<i64>,
    #[serde(borrow)]
    order_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    device: Option<Cow<'a, str>>,
    #[serde(borrow)]
    country: Option<Cow<'a, str>>,
    advertiser_id: Option<i64>,
    /// The request's `Sec-Purpose`/`Purpose` header, when the log recorded it.
    #[serde(borrow)]
    purpose: Option<Cow<'a, str>>,
}

/// The result of an import.
#[derive(Debug, Default)]
pub struct ImportSummary {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected_count: usize,
    pub rejected: Vec<(usize, String)>,
    pub verdicts: std::collections::BTreeMap<&'static str, usize>,
}

impl ImportSummary {
    pub fn to_json(&self) -> Value {
        json!({
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected_count": self.rejected_count,
            "rejected": self.rejected.iter().map(|(line, error)| json!({"line": line, "error": error})).collect::<Vec<_>>(),
            "verdicts": self.verdicts,
        })
    }
    /// Adds the result of the next part of the same import.
    pub fn absorb(&mut self, part: ImportSummary) {
        self.accepted += part.accepted;
        self.duplicates += part.duplicates;
        self.rejected_count += part.rejected_count;
        let room = MAX_LISTED_REJECTIONS.saturating_sub(self.rejected.len());
        self.rejected.extend(part.rejected.into_iter().take(room));
        for (verdict, n) in part.verdicts {
            *self.verdicts.entry(verdict).or_default() += n;
        }
    }

    fn reject(&mut self, line: usize, error: String) {
        self.rejected_count += 1;
        if self.rejected.len() < MAX_LISTED_REJECTIONS {
            self.rejected.push((line, error));
        }
    }
}

pub async fn import_events(
    State(state): State<Arc<AppState>>,
    _: Admin,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let summary = import_ndjson(&state, &body).await?;
    Ok(axum::Json(summary.to_json()))
}

/// Imports NDJSON through the live pipeline. Used by the HTTP endpoint and the demo.
pub async fn import_ndjson(state: &Arc<AppState>, body: &[u8]) -> Result<ImportSummary, ApiError> {
    import_ndjson_from(state, body, 1).await
}

/// Imports a part of a larger file whose first line is line `first_line`.
pub async fn import_ndjson_from(
    state: &Arc<AppState>,
    body: &[u8],
    first_line: usize,
) -> Result<ImportSummary, ApiError> {
    let mut summary = ImportSummary::default();
    let catalog = state.catalog();
    let mut chunk: Vec<Submission> = Vec::with_capacity(MAX_BATCH);
    let mut lines = 0;
    // The chunk the writer is committing while this task parses the next one: with two
    // cores, parsing, validating and classifying overlap the writer's transaction. At
    // most one chunk is in flight, and each is queued only after the one before it was
    // queued, so the writer still takes them in file order. If a chunk fails to commit,
    // the import answers the error as before; the one chunk queued behind it may still
    // commit (as every chunk before the failure did), and importing the file again is
    // safe because lines are deduplicated by event_id.
    let mut in_flight: Option<Queued> = None;
    for (index, raw) in body.split(|&b| b == b'\n').enumerate() {
        let number = index + first_line;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        lines += 1;
        if lines > MAX_LINES {
            return Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_lines",
                format!("an import holds at most {MAX_LINES} lines; split the file"),
            ));
        }
        match parse_line(state, &catalog, raw) {
            Ok(s) => chunk.push(s),
            Err(e) => summary.reject(number, e),
        }
        if chunk.len() >= MAX_BATCH {
            let queued = state.pipeline.enqueue(std::mem::replace(&mut chunk, Vec::with_capacity(MAX_BATCH))).await?;
            if let Some(previous) = in_flight.replace(queued) {
                tally(previous.committed().await?, &mut summary);
            }
        }
    }
    if let Some(previous) = in_flight.take() {
        tally(previous.committed().await?, &mut summary);
    }
    if !chunk.is_empty() {
        tally(state.pipeline.submit(chunk).await?, &mut summary);
    }
    Ok(summary)
}

fn tally(outcomes: Vec<Outcome>, summary: &mut ImportSummary) {
    for outcome in outcomes {
        match outcome {
            Outcome::Stored { verdict } => {
                summary.accepted += 1;
                *summary.verdicts.entry(verdict.as_str()).or_default() += 1;
            }
            Outcome::AlreadyStored => summary.duplicates += 1,
        }
    }
}

/// One NDJSON line as a submission, or why it is refused. Public for the fuzz target.
pub fn parse_line(state: &AppState, catalog: &ServingCatalog, raw: &[u8]) -> Result<Submission, String> {
    if raw.len() > MAX_LINE_BYTES {
        return Err(format!("line is longer than {MAX_LINE_BYTES} bytes"));
    }
    let line: ImportLine = serde_json::from_slice(raw).map_err(|e| format!("invalid JSON: {e}"))?;
    let event_id = text_ref("event_id", &line.event_id, 1, 128).map_err(|e| e.message)?;
    let kind = EventKind::parse(&line.kind).ok_or("type must be impression, viewable, click or conversion")?;
    let at_ms = line
        .at
        .parse::<adtally_core::jiff::Timestamp>()
        .map_err(|_| "at must be an RFC 3339 time like 2026-11-25T10:00:00Z".to_owned())?
        .as_millisecond();
    let now = state.clock.now_ms();
    if at_ms > now + 5 * 60_000 || at_ms < 946_684_800_000 {
        return Err("at must be between 2000-01-01 and now".into());
    }
    fn bounded<'s>(field: &str, v: &'s Option<Cow<'_, str>>, max: usize) -> Result<Option<&'s str>, String> {
        v.as_deref().map(|s| text_ref(field, s, 0, max).map_err(|e| e.message)).transpose()
    }
    let uid = bounded("uid", &line.uid, 128)?.filter(|u| !u.is_empty());
    let user_agent = bounded("user_agent", &line.user_agent, 1024)?;
    let order_id = bounded("order_id", &line.order_id, 128)?.filter(|o| !o.is_empty());
    let ip: Option<IpAddr> = line
        .ip
        .as_deref()
        .map(|i| i.parse().map_err(|_| "ip must be an IPv4 or IPv6 address".to_owned()))
        .transpose()?;
    let value_micros = line.value_micros.unwrap_or(0);
    if !(0..=1_000_000_000_000_000).contains(&value_micros) {
        return Err("value_micros must be between 0 and 10^15".into());
    }

    let ad = line.ad_id.map(|id| catalog.ads.get(&id).ok_or_else(|| format!("unknown ad_id {id}"))).transpose()?;
    // An ad names its campaign: a line cannot pair one advertiser's ad with another's.
    let campaign_id = match (line.campaign_id, ad) {
        (Some(c), Some(ad)) if ad.campaign_id != c => {
            return Err(format!("ad {} does not belong to campaign {c}", ad.id))
        }
        (c, ad) => c.or(ad.map(|a| a.campaign_id)),
    };
    let campaign = campaign_id
        .map(|id| catalog.campaigns.get(&id).ok_or_else(|| format!("unknown campaign_id {id}")))
        .transpose()?;
    let placement = line
        .placement
        .as_deref()
        .map(|slug| {
            catalog
                .placements
                .get(slug)
                .ok_or_else(|| format!("unknown placement {:?}", slug.chars().take(64).collect::<String>()))
        })
        .transpose()?;
    let advertiser_id = match (campaign, line.advertiser_id) {
        (Some(c), Some(a)) if c.advertiser_id != a => {
            return Err(format!("campaign {} does not belong to advertiser {a}", c.id))
        }
        (Some(c), _) => c.advertiser_id,
        (None, Some(a)) => a,
        (None, None) => return Err("a conversion needs campaign_id or advertiser_id".into()),
    };
    if kind != EventKind::Conversion && (ad.is_none() || placement.is_none()) {
        return Err("impressions, viewables and clicks need campaign_id, ad_id and placement".into());
    }
    if !catalog.advertisers.contains_key(&advertiser_id) {
        return Err(format!("unknown advertiser_id {advertiser_id}"));
    }

    let day = (at_ms / DAY).to_le_bytes();
    // Keyed like live traffic: an IPv6 client by its /64.
    let ip_key = ip.map(|ip| state.signer.keyed_hash(&[b"ip", &day, &crate::client::client_prefix(ip)]));
    let user_key = match (&uid, ip_key) {
        (Some(uid), _) => state.signer.keyed_hash(&[b"uid", uid.as_bytes()]),
        (None, Some(ip_key)) => {
            state.signer.keyed_hash(&[b"ipua", &day, &ip_key.to_le_bytes(), user_agent.unwrap_or("").as_bytes()])
        }
        (None, None) => return Err("give uid or ip so the event has a user".into()),
    };
    // One classification (one cache lookup) answers both the device and the bot check.
    let agent = user_agent.map(|ua| state.user_agents.classify(ua));
    let device = match line.device.as_deref() {
        Some(d) => Device::parse(d).ok_or("device must be desktop, mobile or tablet")?,
        None => agent.map_or(Device::Desktop, |a| a.device),
    };
    let country = line.country.as_deref().map_or(Country::UNKNOWN, Country::parse);
    let givt = givt_verdict(
        agent.is_some_and(|a| a.is_bot()),
        line.purpose.as_deref().is_some_and(purpose_is_prefetch),
        ip.is_some_and(|ip| state.datacenters.contains(ip)),
    );
    // The operator's import is as authoritative as the advertiser's postback.
    let idempotency = match (kind, &order_id) {
        (EventKind::Conversion, Some(order)) => {
            Idempotency::Order { key: format!("order:{advertiser_id}:{order}"), authoritative: true }
        }
        _ => Idempotency::Import(format!("import:{event_id}")),
    };
    Ok(Submission {
        event: Event {
            at_ms,
            kind,
            verdict: Verdict::Valid,
            decision_id: None,
            advertiser_id,
            campaign_id: campaign.map(|c| c.id),
            ad_id: ad.map(|a| a.id),
            placement_id: placement.map(|p| p.id),
            user_key,
            ip_key,
            device,
            country,
            cost_micros: 0,
            value_micros: if kind == EventKind::Conversion { value_micros } else { 0 },
        },
        decision: Some(DecisionRef::Imported { fresh_decision_id: state.next_decision_id(at_ms) }),
        givt,
        clearing_cpm_micros: campaign.map_or(0, |c| c.cpm_bid_micros),
        video: ad.is_some_and(|a| a.content.format == adtally_core::catalog::Format::Video),
        idempotency: Some(idempotency),
    })
}

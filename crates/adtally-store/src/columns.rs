//! Reading catalog rows, sessions and events back from query results, whichever
//! database gave them. Both stores select the same columns in the same order (the
//! `*_COLUMNS` lists, [`AD_SELECT`] and [`SESSION_SELECT`]), and this is the one place
//! that turns them into the domain's types: statuses and formats, the targeting lists,
//! frequency caps, attribution windows, event codes, and absent ids (stored as 0 in key
//! columns).

use adtally_core::attribution::Windows;
use adtally_core::catalog::{
    Ad, AdContent, AdRevision, AdStatus, Advertiser, Campaign, CampaignStatus, Format, FrequencyCap, Pacing, Targeting,
};
use adtally_core::event::{Country, Device, Event, EventKind, Verdict};

use adtally_core::report::Dimension;

use crate::{FoundSession, KeyOwner, Result, RollupQuery, Session, StoreError};

/// One result row, read by column index. Integers of any width come back as `i64`.
pub(crate) trait Columns {
    fn int(&self, i: usize) -> Result<Option<i64>>;
    fn text(&self, i: usize) -> Result<Option<String>>;
    /// A truth value: SQLite's 0/1, PostgreSQL's `boolean`.
    fn flag(&self, i: usize) -> Result<bool>;

    fn req_int(&self, i: usize) -> Result<i64> {
        self.int(i)?.ok_or_else(|| bad("NULL integer", i))
    }
    fn req_text(&self, i: usize) -> Result<String> {
        self.text(i)?.ok_or_else(|| bad("NULL text", i))
    }
    /// An integer column of a narrower type.
    fn narrow<T: TryFrom<i64>>(&self, i: usize) -> Result<T> {
        let v = self.req_int(i)?;
        T::try_from(v).map_err(|_| bad("out-of-range integer", v))
    }
    fn opt_narrow<T: TryFrom<i64>>(&self, i: usize) -> Result<Option<T>> {
        self.int(i)?.map(|v| T::try_from(v).map_err(|_| bad("out-of-range integer", v))).transpose()
    }
}

pub(crate) fn bad(what: &str, value: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("unexpected {what} in the database: {value}"))
}

impl Columns for rusqlite::Row<'_> {
    fn int(&self, i: usize) -> Result<Option<i64>> {
        Ok(self.get(i)?)
    }
    fn text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.get(i)?)
    }
    fn flag(&self, i: usize) -> Result<bool> {
        Ok(self.get(i)?)
    }
}

impl Columns for tokio_postgres::Row {
    fn int(&self, i: usize) -> Result<Option<i64>> {
        use tokio_postgres::types::Type;
        let ty = self.columns().get(i).map(|c| c.type_().clone()).ok_or_else(|| bad("column", i))?;
        Ok(match ty {
            Type::INT2 => self.try_get::<_, Option<i16>>(i)?.map(i64::from),
            Type::INT4 => self.try_get::<_, Option<i32>>(i)?.map(i64::from),
            _ => self.try_get::<_, Option<i64>>(i)?,
        })
    }
    fn text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.try_get(i)?)
    }
    fn flag(&self, i: usize) -> Result<bool> {
        Ok(self.try_get(i)?)
    }
}

/// An id stored as 0 because it is absent (ids start at 1).
pub(crate) fn id_from_db(value: i64) -> Option<i64> {
    (value > 0).then_some(value)
}

/// The columns [`advertiser_from`] reads, in its order.
pub(crate) const ADVERTISER_COLUMNS: &str = "id, name, email, timezone, created_at_ms, max_conversion_value_micros, \
                                             click_window_days, view_window_days, half_life_days";

pub(crate) fn advertiser_from(r: &impl Columns) -> Result<Advertiser> {
    let attribution =
        Windows::new(r.narrow(6)?, r.narrow(7)?, r.narrow(8)?).map_err(|e| bad("attribution windows", e.0))?;
    Ok(Advertiser {
        attribution,
        id: r.req_int(0)?,
        name: r.req_text(1)?,
        email: r.req_text(2)?,
        timezone: r.req_text(3)?,
        created_at_ms: r.req_int(4)?,
        max_conversion_value_micros: r.req_int(5)?,
    })
}

/// What [`session_from`] reads, in its order: the session `s` and whether its key is
/// still live. The caller adds `FROM sessions s WHERE s.id_hash = …`.
pub(crate) const SESSION_SELECT: &str =
    "SELECT s.advertiser_id, s.key_hash, s.csrf_token, s.created_at_ms, s.last_seen_at_ms, s.expires_at_ms,
            EXISTS (SELECT 1 FROM api_keys k WHERE k.key_hash = s.key_hash AND k.revoked_at_ms IS NULL)";

/// Who an API key or a session belongs to, from its `advertiser_id` (NULL: the admin).
pub(crate) fn owner_from(advertiser_id: Option<i64>) -> KeyOwner {
    advertiser_id.map_or(KeyOwner::Admin, KeyOwner::Advertiser)
}

/// A session and whether its key is live, from a row of [`SESSION_SELECT`].
pub(crate) fn session_from(r: &impl Columns) -> Result<FoundSession> {
    Ok(FoundSession {
        session: Session {
            owner: owner_from(r.int(0)?),
            key_hash: r.req_text(1)?,
            csrf_token: r.req_text(2)?,
            created_at_ms: r.req_int(3)?,
            last_seen_at_ms: r.req_int(4)?,
            expires_at_ms: r.req_int(5)?,
        },
        key_live: r.flag(6)?,
    })
}

/// The columns [`campaign_from`] reads, in its order.
pub(crate) const CAMPAIGN_COLUMNS: &str = "id, advertiser_id, name, status, cpm_bid_micros, total_budget_micros, \
    daily_budget_micros, start_at_ms, end_at_ms, pacing, target_devices, target_placements, cap_impressions, \
    cap_per_hours, created_at_ms";

/// The targeting lists as stored: comma-separated devices and placement slugs.
pub(crate) fn targeting_columns(t: &Targeting) -> (String, String) {
    (t.devices.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(","), t.placements.join(","))
}

pub(crate) fn campaign_from(r: &impl Columns) -> Result<Campaign> {
    let status = r.req_text(3)?;
    let pacing = r.req_text(9)?;
    let devices = r.req_text(10)?;
    let placements = r.req_text(11)?;
    let cap_impressions: Option<u32> = r.opt_narrow(12)?;
    let cap_per_hours: Option<u32> = r.opt_narrow(13)?;
    Ok(Campaign {
        id: r.req_int(0)?,
        advertiser_id: r.req_int(1)?,
        name: r.req_text(2)?,
        status: CampaignStatus::parse(&status).ok_or_else(|| bad("campaign status", &status))?,
        cpm_bid_micros: r.req_int(4)?,
        total_budget_micros: r.req_int(5)?,
        daily_budget_micros: r.int(6)?,
        start_at_ms: r.int(7)?,
        end_at_ms: r.int(8)?,
        pacing: Pacing::parse(&pacing).ok_or_else(|| bad("pacing", &pacing))?,
        targeting: Targeting {
            devices: devices.split(',').filter_map(Device::parse).collect(),
            placements: placements.split(',').filter(|s| !s.is_empty()).map(String::from).collect(),
        },
        frequency_cap: cap_impressions
            .zip(cap_per_hours)
            .map(|(impressions, per_hours)| FrequencyCap { impressions, per_hours }),
        created_at_ms: r.req_int(14)?,
    })
}

/// An ad with its waiting revision, if any: what [`ad_from`] reads.
pub(crate) const AD_SELECT: &str =
    "SELECT ads.id, ads.campaign_id, ads.advertiser_id, ads.format, ads.headline, ads.body,
    ads.image_url, ads.cta, ads.target_url, ads.status, ads.rejection_reason, ads.created_at_ms, ads.version,
    r.version, r.format, r.headline, r.body, r.image_url, r.cta, r.target_url, r.status, r.rejection_reason,
    r.created_at_ms, ads.video_url, r.video_url
    FROM ads LEFT JOIN ad_revisions r ON r.ad_id = ads.id";

pub(crate) fn format_from(text: &str) -> Result<Format> {
    Format::parse(text).ok_or_else(|| bad("format", text))
}

fn ad_status(text: &str) -> Result<AdStatus> {
    AdStatus::parse(text).ok_or_else(|| bad("ad status", text))
}

/// The content columns of [`AD_SELECT`] starting at `first` (format, headline, body,
/// image, cta, target) and the video column at `video`.
fn content_from(r: &impl Columns, first: usize, video: usize) -> Result<AdContent> {
    Ok(AdContent {
        format: format_from(&r.req_text(first)?)?,
        headline: r.req_text(first + 1)?,
        body: r.req_text(first + 2)?,
        image_url: r.text(first + 3)?,
        video_url: r.text(video)?,
        cta: r.req_text(first + 4)?,
        target_url: r.req_text(first + 5)?,
    })
}

pub(crate) fn ad_from(r: &impl Columns) -> Result<Ad> {
    let revision = match r.opt_narrow::<u32>(13)? {
        None => None,
        Some(version) => Some(Box::new(AdRevision {
            version,
            content: content_from(r, 14, 24)?,
            status: ad_status(&r.req_text(20)?)?,
            rejection_reason: r.text(21)?,
            created_at_ms: r.req_int(22)?,
        })),
    };
    Ok(Ad {
        id: r.req_int(0)?,
        campaign_id: r.req_int(1)?,
        advertiser_id: r.req_int(2)?,
        content: content_from(r, 3, 23)?,
        status: ad_status(&r.req_text(9)?)?,
        rejection_reason: r.text(10)?,
        created_at_ms: r.req_int(11)?,
        version: r.narrow(12)?,
        revision,
    })
}

/// The columns [`event_from`] reads, in its order.
pub(crate) const EVENT_COLUMNS: &str = "at_ms, kind, verdict, decision_id, advertiser_id, campaign_id, ad_id, \
                                        placement_id, user_key, ip_key, device, country, cost_micros, value_micros";

/// An event from the [`EVENT_COLUMNS`] of a row, starting at column `first`.
pub(crate) fn event_from(r: &impl Columns, first: usize) -> Result<Event> {
    let at = |i: usize| first + i;
    let kind = r.req_int(at(1))?;
    let verdict = r.req_int(at(2))?;
    let decision = r.req_int(at(3))?;
    Ok(Event {
        at_ms: r.req_int(at(0))?,
        kind: EventKind::from_code(kind).ok_or_else(|| bad("event kind", kind))?,
        verdict: Verdict::from_code(verdict).ok_or_else(|| bad("verdict", verdict))?,
        decision_id: (decision != 0).then_some(decision as u64),
        advertiser_id: r.req_int(at(4))?,
        campaign_id: id_from_db(r.req_int(at(5))?),
        ad_id: id_from_db(r.req_int(at(6))?),
        placement_id: id_from_db(r.req_int(at(7))?),
        user_key: r.req_int(at(8))? as u64,
        // An unknown address is stored as 0 (a keyed hash is 0 with probability 2^-64).
        ip_key: Some(r.req_int(at(9))? as u64).filter(|k| *k != 0),
        device: Device::from_code(r.req_int(at(10))?).unwrap_or_default(),
        country: Country::parse(&r.req_text(at(11))?),
        cost_micros: r.req_int(at(12))?,
        value_micros: r.req_int(at(13))?,
    })
}

/// The columns a report query selects: bucket, then campaign, ad, placement, device and
/// country — each a column when grouped by, else its "all" value (`typed`: with the
/// casts PostgreSQL needs to know their types) — and the group-by list. Column names
/// come from this fixed list, never from the request.
pub(crate) fn report_columns(
    q: &RollupQuery,
    bucket: &'static str,
    typed: bool,
) -> (Vec<&'static str>, Vec<&'static str>) {
    let none = |plain: &'static str, cast: &'static str| if typed { cast } else { plain };
    let mut select = vec![if q.by_bucket { bucket } else { none("0", "0::bigint") }];
    for dim in [Dimension::Campaign, Dimension::Ad, Dimension::Placement, Dimension::Device, Dimension::Country] {
        let (column, all) = match dim {
            Dimension::Campaign => ("campaign_id", none("0", "0::bigint")),
            Dimension::Ad => ("ad_id", none("0", "0::bigint")),
            Dimension::Placement => ("placement_id", none("0", "0::bigint")),
            Dimension::Device => ("device", none("0", "0::smallint")),
            Dimension::Country => ("country", none("'ZZ'", "'ZZ'::text")),
        };
        select.push(if q.group_by.contains(&dim) { column } else { all });
    }
    let group = select.iter().copied().filter(|c| !c.starts_with('0') && !c.starts_with('\'')).collect();
    (select, group)
}

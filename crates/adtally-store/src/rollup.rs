//! Rollups: events summed per quarter-hour bucket and every reporting dimension. A
//! batch is aggregated here in memory before it is upserted, so a batch of thousands
//! of impressions costs a few dozen upserts.
//!
//! Rows of valid impressions also carry a reach [`Sketch`] of their users, merged into
//! the stored one by the same upsert, so reach can be counted over any grouping.

use adtally_core::clock::Millis;
use adtally_core::event::{Country, Device, Event, EventKind, Verdict};
use adtally_core::fasthash::FastMap;
use adtally_core::report::{bucket_of, Dimension};
use adtally_core::sketch::Sketch;

/// One rollup row's identity. It carries the advertiser and the campaign, so events of
/// two advertisers can never be summed into one row, whatever else they share (two
/// unattributed conversions in the same quarter hour, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RollupKey {
    pub bucket_ms: Millis,
    pub advertiser_id: i64,
    pub campaign_id: Option<i64>,
    pub ad_id: Option<i64>,
    pub placement_id: Option<i64>,
    pub device: Device,
    pub country: Country,
    pub kind: EventKind,
    pub verdict: Verdict,
}

impl RollupKey {
    /// The row an event is summed into.
    pub(crate) fn of(e: &Event) -> Self {
        RollupKey {
            bucket_ms: bucket_of(e.at_ms),
            advertiser_id: e.advertiser_id,
            campaign_id: e.campaign_id,
            ad_id: e.ad_id,
            placement_id: e.placement_id,
            device: e.device,
            country: e.country,
            kind: e.kind,
            verdict: e.verdict,
        }
    }
}

/// Summed events, cost and value. Money sums are `i128`: a sum over any number of rows
/// of `i64` amounts cannot overflow it, so no report can fail on one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RollupSums {
    pub events: i64,
    pub cost_micros: i128,
    pub value_micros: i128,
}

/// Whether rows of this kind and verdict carry a reach sketch.
pub(crate) fn has_reach(kind: EventKind, verdict: Verdict) -> bool {
    kind == EventKind::Impression && verdict.is_valid()
}

/// A batch's events summed per rollup row, with the users of valid impressions.
pub(crate) fn aggregate<'a>(events: impl Iterator<Item = &'a Event>) -> FastMap<RollupKey, (RollupSums, Sketch)> {
    let mut sums: FastMap<RollupKey, (RollupSums, Sketch)> = FastMap::default();
    for e in events {
        let (s, reach) = sums.entry(RollupKey::of(e)).or_default();
        if has_reach(e.kind, e.verdict) {
            reach.insert(e.user_key);
        }
        s.events += 1;
        s.cost_micros += i128::from(e.cost_micros);
        s.value_micros += i128::from(e.value_micros);
    }
    sums
}

/// Which rollups a report reads and how it groups them.
#[derive(Debug, Clone, Default)]
pub struct RollupQuery {
    /// `None` = every advertiser (operator reports).
    pub advertiser_id: Option<i64>,
    pub campaign_id: Option<i64>,
    pub ad_id: Option<i64>,
    /// UTC `[start, end)`.
    pub from_ms: Millis,
    pub to_ms: Millis,
    /// Group by bucket too (day and hour granularity).
    pub by_bucket: bool,
    pub group_by: Vec<Dimension>,
    /// Merge the reach sketches of each group (reports); off, [`RollupRow::reach`] is
    /// `None` and the query costs what it did before reach existed.
    pub reach: bool,
}

/// A grouped row of a report query. Every dimension not grouped by holds its default
/// (`None`, desktop, `ZZ`; bucket 0 without time grouping) and means "all".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    pub bucket_ms: Millis,
    pub campaign_id: Option<i64>,
    pub ad_id: Option<i64>,
    pub placement_id: Option<i64>,
    pub device: Device,
    pub country: Country,
    pub kind: EventKind,
    pub verdict: Verdict,
    pub sums: RollupSums,
    /// The group's users, on valid-impression rows of a query that asked for reach.
    pub reach: Option<Sketch>,
}

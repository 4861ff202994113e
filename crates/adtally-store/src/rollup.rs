//! Rollups: events summed per quarter-hour bucket and every reporting dimension. A
//! batch is aggregated here in memory before it is upserted, so a batch of thousands
//! of impressions costs a few dozen upserts.
//!
//! Rows of valid impressions also carry a reach [`Sketch`] of their users, merged into
//! the stored one by the same upsert, so reach can be counted over any grouping.
//!
//! The quarter-hour rows are the exact base. Reports of whole days read the day layer
//! instead ([`DayKey`]): one row per day of the advertiser's own time zone (and of UTC,
//! for the operator) and per (campaign, ad, placement), or per (campaign, device) or
//! (campaign, country). It is derived from the same batch aggregate, in the same
//! transaction; ARCHITECTURE.md says why this layout.

use adtally_core::clock::Millis;
use adtally_core::event::{Country, Device, Event, EventKind, Verdict};
use adtally_core::fasthash::FastMap;
use adtally_core::jiff::tz::TimeZone;
use adtally_core::report::{bucket_of, period_start, Dimension, Granularity};
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

/// The tables of the day layer, each for the reports it answers (see ARCHITECTURE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DayTable {
    /// `rollups_day_campaign`: per campaign; own days and UTC days (the operator's).
    /// Overview by day, the campaigns table.
    Campaign,
    /// `rollups_day_ad`: per (campaign, ad). The ads table.
    Ad,
    /// `rollups_day_placement`: per (campaign, placement). A campaign by day and placement.
    Placement,
    /// `rollups_day_device`: per (campaign, device).
    Device,
    /// `rollups_day_country`: per (campaign, country).
    Country,
}

impl DayTable {
    /// In order of preference: the first that answers a query is the smallest that does.
    pub const ALL: [DayTable; 5] =
        [DayTable::Campaign, DayTable::Ad, DayTable::Placement, DayTable::Device, DayTable::Country];

    pub fn name(self) -> &'static str {
        match self {
            DayTable::Campaign => "rollups_day_campaign",
            DayTable::Ad => "rollups_day_ad",
            DayTable::Placement => "rollups_day_placement",
            DayTable::Device => "rollups_day_device",
            DayTable::Country => "rollups_day_country",
        }
    }

    /// The table of its rows' reach sketches (same key; only rows with a sketch).
    pub fn reach_name(self) -> &'static str {
        match self {
            DayTable::Campaign => "rollups_day_campaign_reach",
            DayTable::Ad => "rollups_day_ad_reach",
            DayTable::Placement => "rollups_day_placement_reach",
            DayTable::Device => "rollups_day_device_reach",
            DayTable::Country => "rollups_day_country_reach",
        }
    }

    /// Whether this table can answer a grouping (and an ad filter).
    pub fn answers(self, group_by: &[Dimension], ad_filter: bool) -> bool {
        let only = |allowed: &[Dimension]| group_by.iter().all(|d| allowed.contains(d));
        match self {
            DayTable::Campaign => !ad_filter && only(&[Dimension::Campaign]),
            DayTable::Ad => only(&[Dimension::Campaign, Dimension::Ad]),
            DayTable::Placement => !ad_filter && only(&[Dimension::Campaign, Dimension::Placement]),
            DayTable::Device => !ad_filter && only(&[Dimension::Campaign, Dimension::Device]),
            DayTable::Country => !ad_filter && only(&[Dimension::Campaign, Dimension::Country]),
        }
    }

    /// Whether the table also holds UTC days for advertisers in other zones.
    pub fn has_utc_days(self) -> bool {
        self == DayTable::Campaign
    }
}

/// The time zone the day layer of an advertiser is kept in.
#[derive(Debug, Clone)]
pub(crate) struct DayZone {
    pub tz: TimeZone,
    /// The zone is UTC itself: its local rows are the UTC rows, kept once.
    pub is_utc: bool,
}

impl DayZone {
    pub fn named(name: &str) -> Self {
        let tz = TimeZone::get(name).unwrap_or(TimeZone::UTC);
        DayZone { is_utc: is_utc_name(name), tz }
    }
}

/// Whether a stored zone name is UTC itself (its days are UTC days).
pub(crate) fn is_utc_name(name: &str) -> bool {
    name == "UTC"
}

/// One row of the day layer. `utc` rows hold UTC days; the others the days of the
/// advertiser's own zone. An advertiser in UTC has only `utc` rows, which are its own
/// days too; one in another zone has both in [`DayTable::Campaign`] (UTC days for the
/// operator's reports) and only its own days in the other tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct DayKey {
    pub table: DayTable,
    pub advertiser_id: i64,
    pub utc: bool,
    pub day_ms: Millis,
    pub campaign_id: Option<i64>,
    pub ad_id: Option<i64>,
    pub placement_id: Option<i64>,
    pub device: Option<Device>,
    pub country: Option<Country>,
}

/// Events per (kind, verdict) slot of a day-layer row: kinds and verdicts are columns of
/// the row, not part of its key, so a campaign-day is one row however its events were
/// judged (there are 4 × 9 pairs; a busy key has a dozen of them).
pub(crate) const SLOTS: usize = EventKind::ALL.len() * Verdict::ALL.len();

/// The slot of a (kind, verdict) pair.
pub(crate) fn slot(kind: EventKind, verdict: Verdict) -> usize {
    let k = EventKind::ALL.iter().position(|x| *x == kind).unwrap_or(0);
    let v = Verdict::ALL.iter().position(|x| *x == verdict).unwrap_or(0);
    k * Verdict::ALL.len() + v
}

/// Every slot's (kind, verdict), in slot order.
pub(crate) fn slot_pairs() -> impl Iterator<Item = (EventKind, Verdict)> {
    EventKind::ALL.iter().flat_map(|k| Verdict::ALL.iter().map(move |v| (*k, *v)))
}

/// Every slot: (kind, verdict, column name `n{kind}_{verdict}` by code), in slot order.
/// For writing statements; rows are read with [`slot_pairs`], which allocates nothing.
pub(crate) fn slots() -> Vec<(EventKind, Verdict, String)> {
    slot_pairs().map(|(k, v)| (k, v, slot_column(k, v))).collect()
}

/// The day-layer column that counts events of `kind` judged `verdict`.
pub(crate) fn slot_column(kind: EventKind, verdict: Verdict) -> String {
    format!("n{}_{}", kind.code(), verdict.code())
}

/// A day-layer row's sums: events per slot; cost and value of every event (what
/// `consistency_check` compares); revenue, the value of valid conversions (what reports
/// show).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DaySums {
    pub events: [i64; SLOTS],
    pub cost_micros: i128,
    pub value_micros: i128,
    pub revenue_micros: i128,
}

impl Default for DaySums {
    fn default() -> Self {
        DaySums { events: [0; SLOTS], cost_micros: 0, value_micros: 0, revenue_micros: 0 }
    }
}

impl DaySums {
    pub fn add(&mut self, kind: EventKind, verdict: Verdict, s: &RollupSums) {
        self.events[slot(kind, verdict)] += s.events;
        self.cost_micros += s.cost_micros;
        self.value_micros += s.value_micros;
        if kind == EventKind::Conversion && verdict.is_valid() {
            self.revenue_micros += s.value_micros;
        }
    }
}

/// Start of the UTC day that holds `at_ms`.
pub(crate) fn utc_day(at_ms: Millis) -> Millis {
    at_ms.div_euclid(adtally_core::clock::DAY) * adtally_core::clock::DAY
}

impl DayKey {
    /// The day-layer rows a quarter-hour row is summed into, for an advertiser whose
    /// days are kept in `zone`. Every zone in use is a whole number of quarter hours from
    /// UTC, so a quarter-hour bucket lies inside one local day.
    pub(crate) fn of(k: &RollupKey, zone: &DayZone) -> impl Iterator<Item = DayKey> {
        let local =
            if zone.is_utc { utc_day(k.bucket_ms) } else { period_start(k.bucket_ms, Granularity::Day, &zone.tz) };
        let campaign = DayKey {
            table: DayTable::Campaign,
            advertiser_id: k.advertiser_id,
            utc: zone.is_utc,
            day_ms: local,
            campaign_id: k.campaign_id,
            ad_id: None,
            placement_id: None,
            device: None,
            country: None,
        };
        let utc_campaign = (!zone.is_utc).then_some(DayKey { utc: true, day_ms: utc_day(k.bucket_ms), ..campaign });
        let ad = DayKey { table: DayTable::Ad, ad_id: k.ad_id, ..campaign };
        let placement = DayKey { table: DayTable::Placement, placement_id: k.placement_id, ..campaign };
        let device = DayKey { table: DayTable::Device, device: Some(k.device), ..campaign };
        let country = DayKey { table: DayTable::Country, country: Some(k.country), ..campaign };
        [Some(campaign), utc_campaign, Some(ad), Some(placement), Some(device), Some(country)].into_iter().flatten()
    }
}

/// A batch's quarter-hour aggregate folded into day-layer rows; `zone_of` gives each
/// advertiser's zone.
pub(crate) fn aggregate_days<'a>(
    quarter_hours: impl Iterator<Item = (&'a RollupKey, &'a (RollupSums, Sketch))>,
    mut zone_of: impl FnMut(i64) -> DayZone,
) -> FastMap<DayKey, (DaySums, Sketch)> {
    let mut out: FastMap<DayKey, (DaySums, Sketch)> = FastMap::default();
    let mut zones: FastMap<i64, DayZone> = FastMap::default();
    for (k, (s, reach)) in quarter_hours {
        let zone = zones.entry(k.advertiser_id).or_insert_with(|| zone_of(k.advertiser_id));
        for day in DayKey::of(k, zone) {
            let (sum, users) = out.entry(day).or_default();
            sum.add(k.kind, k.verdict, s);
            if has_reach(k.kind, k.verdict) {
                users.merge(reach);
            }
        }
    }
    out
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
    /// Whether and how each group's reach comes back ([`RollupRow::reach`]).
    pub reach: ReachAs,
    /// `from_ms` and `to_ms` are midnights of this zone (an IANA name; lifetime bounds
    /// too) and a bucket may be a whole day of it: the store may answer from the day
    /// layer when its days are kept in this zone (the advertiser's own, or UTC for every
    /// advertiser) and the grouping fits one of its tables. `None`: quarter hours.
    pub days_in: Option<String>,
    /// Return at most this many rows plus one, so that the caller can tell a result
    /// that is too large from one that is complete.
    pub max_rows: Option<usize>,
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
    pub reach: Option<Reach>,
}

/// How a query returns each group's reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReachAs {
    /// Not at all: [`RollupRow::reach`] is `None`, and the query costs what it did before
    /// reach existed.
    #[default]
    Nothing,
    /// Every group's sketch, for a caller that merges groups.
    Sketches,
    /// A group's number of users where the store keeps it counted (a sealed day-layer
    /// row that is the group on its own), its sketch elsewhere: for a caller that reports
    /// each group as it is and never merges two, the reports. A 30-day report by day
    /// then reads a few sketches, not one per day and row. The union of several groups
    /// (a report's totals) is a query of its own.
    Counts,
}

impl ReachAs {
    /// Whether the query reads reach at all.
    pub fn any(self) -> bool {
        self != ReachAs::Nothing
    }
}

/// A group's distinct users, as a query returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Their sketch, which merges with other groups'.
    Users(Sketch),
    /// How many there are: the estimate of the group's sketch, counted by the store
    /// ([`ReachAs::Counts`]).
    Counted(u64),
}

impl Reach {
    /// The number of users.
    pub fn estimate(&self) -> u64 {
        match self {
            Reach::Users(sketch) => sketch.estimate(),
            Reach::Counted(n) => *n,
        }
    }
}

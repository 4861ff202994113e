//! Delivery and billing state: what each campaign may still spend (total, today in its
//! time zone, the advertiser's balance), how fast it may spend (pacing), how often a
//! user may see it (frequency caps), and how well its ads perform (quality for the
//! auction). Pure: every method takes the time it should assume.
//!
//! The event writer is the only caller that changes this state (charges, counted
//! impressions and clicks); the decision path only asks.

use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::catalog::{FrequencyCap, Pacing};
use crate::clock::{Millis, DAY, HOUR};
use crate::fasthash::FastMap;
use crate::money::CpmCarry;

/// Prior for an ad's click-through rate: 1 click in 100 impressions, as if the ad had
/// already shown 100 times. New ads start there, so they get a fair chance; evidence
/// outweighs the prior after a few hundred impressions.
pub const PRIOR_CLICKS: f64 = 1.0;
pub const PRIOR_IMPRESSIONS: f64 = 100.0;

/// Longest frequency-cap window the platform accepts (a week): the state for one
/// (user, campaign) pair never needs to remember more.
pub const MAX_CAP_HOURS: u32 = 168;

/// What delivery needs to know of a campaign.
#[derive(Debug, Clone)]
pub struct CampaignLimits {
    pub advertiser_id: i64,
    pub total_budget_micros: i64,
    pub daily_budget_micros: Option<i64>,
    pub pacing: Pacing,
    pub frequency_cap: Option<FrequencyCap>,
    pub timezone: TimeZone,
}

#[derive(Debug, Clone)]
struct CampaignMoney {
    limits: CampaignLimits,
    spent_micros: i64,
    carry: CpmCarry,
}

/// A local calendar day of a campaign, as days since 1970-01-01.
pub type DayIndex = i32;

/// How far back daily spend is kept in memory: it is loaded from the store's spend of
/// the last [`RECENT_SPEND_MS`] at start (and after a zone change), which covers today
/// and yesterday in any zone; older days are [`DeliveryState::past_day`]s.
pub const RECENT_SPEND_MS: Millis = 3 * DAY;

fn local_day(at_ms: Millis, tz: &TimeZone) -> (DayIndex, Millis, Millis) {
    let ts = Timestamp::from_millisecond(at_ms).unwrap_or(Timestamp::UNIX_EPOCH);
    let date = ts.to_zoned_datetime(tz.clone()).date();
    let start = crate::report::start_of_day(date, tz);
    let end = date.tomorrow().map_or(start + 24 * HOUR, |d| crate::report::start_of_day(d, tz));
    let index = (date - jiff::civil::date(1970, 1, 1)).get_days();
    (index, start, end)
}

/// Seconds since 2020-01-01, so a cap timestamp fits in four bytes until 2156.
const CAP_EPOCH_MS: Millis = 1_577_836_800_000;

fn cap_seconds(at_ms: Millis) -> u32 {
    ((at_ms - CAP_EPOCH_MS).max(0) / 1000).min(u32::MAX as i64) as u32
}

/// Recent impression times of one user for one campaign, newest last, at most as many
/// as the cap allows.
type CapTimes = Vec<u32>;

/// Budget of one campaign that this node leased from a shared database for one local
/// day (several nodes on one PostgreSQL, issue 13): the most it may charge that day
/// until it leases more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Days since 1970-01-01 in the campaign's zone.
    pub day: i32,
    pub left_micros: i64,
    /// The database granted less than the next impressions need: the budget is spent
    /// (or held by other nodes), so the campaign does not serve from here until more is
    /// leased.
    pub exhausted: bool,
}

/// Delivery state of every campaign and advertiser.
#[derive(Debug, Default)]
pub struct DeliveryState {
    campaigns: FastMap<i64, CampaignMoney>,
    balances: FastMap<i64, i64>,
    /// Credits per advertiser as last synced, so that a new total adds only the difference.
    credited: FastMap<i64, i64>,
    /// `Some` when several nodes spend the same budgets: a charge never exceeds the
    /// campaign's lease for the day of the event.
    leases: Option<FastMap<(i64, i32), Lease>>,
    /// With leases: this node's share (divided among the live nodes) of what is left of
    /// each campaign's budget for a local day beyond all spend and the other nodes'
    /// leases (the least of total, daily and balance room), as the writer last read it,
    /// less the decisions made here since. A campaign serves while it is positive.
    /// Per campaign: (the local day read, micros). Only the latest reading is kept.
    room: FastMap<i64, (i32, i64)>,
    daily_spend: FastMap<(i64, DayIndex), i64>,
    caps: FastMap<(u64, i64), CapTimes>,
    max_cap_entries: usize,
    ad_performance: FastMap<i64, (u64, u64)>,
}

impl DeliveryState {
    pub fn new(max_cap_entries: usize) -> Self {
        Self { max_cap_entries: max_cap_entries.max(1), ..Self::default() }
    }

    /// Adds or updates a campaign (on start and whenever the catalog changes). True when
    /// its time zone changed: its daily spend is still filed under the old zone's days,
    /// and the caller passes the recent spend to [`DeliveryState::refile_daily_spend`].
    pub fn set_campaign(&mut self, campaign_id: i64, limits: CampaignLimits) -> bool {
        match self.campaigns.get_mut(&campaign_id) {
            Some(c) => {
                let moved = c.limits.timezone != limits.timezone;
                c.limits = limits;
                moved
            }
            None => {
                self.campaigns
                    .insert(campaign_id, CampaignMoney { limits, spent_micros: 0, carry: CpmCarry::default() });
                false
            }
        }
    }

    /// Files a campaign's daily spend anew under its current zone's days, from `spend`
    /// (time, micros: the store's recent spend buckets), after its advertiser moved to
    /// another zone: today in Tokyo began hours before today in Los Angeles, and what was
    /// spent since must count against it.
    pub fn refile_daily_spend(&mut self, campaign_id: i64, spend: impl IntoIterator<Item = (Millis, i64)>) {
        let Some(c) = self.campaigns.get(&campaign_id) else { return };
        let tz = c.limits.timezone.clone();
        self.daily_spend.retain(|(campaign, _), _| *campaign != campaign_id);
        for (at_ms, micros) in spend {
            let day = local_day(at_ms, &tz).0;
            *self.daily_spend.entry((campaign_id, day)).or_default() += micros;
        }
    }

    /// Saturating, as the store's sums are: credits are bounded one by one, not in total.
    pub fn credit(&mut self, advertiser_id: i64, amount_micros: i64) {
        let balance = self.balances.entry(advertiser_id).or_default();
        *balance = balance.saturating_add(amount_micros);
        let credited = self.credited.entry(advertiser_id).or_default();
        *credited = credited.saturating_add(amount_micros);
    }

    /// Brings an advertiser's credits to `total_micros` (credits added on another node).
    pub fn sync_credits(&mut self, advertiser_id: i64, total_micros: i64) {
        let known = self.credited.get(&advertiser_id).copied().unwrap_or(0);
        if total_micros != known {
            self.credit(advertiser_id, total_micros.saturating_sub(known));
        }
    }

    /// Charges only against leases from now on (see [`Lease`]); none is held yet.
    pub fn use_leases(&mut self) {
        self.leases.get_or_insert_with(FastMap::default);
    }

    pub fn uses_leases(&self) -> bool {
        self.leases.is_some()
    }

    pub fn set_lease(&mut self, campaign_id: i64, lease: Lease) {
        if let Some(leases) = &mut self.leases {
            leases.insert((campaign_id, lease.day), lease);
        }
    }

    /// The campaign's lease of local day `day`.
    pub fn lease(&self, campaign_id: i64, day: i32) -> Option<Lease> {
        self.leases.as_ref()?.get(&(campaign_id, day)).copied()
    }

    /// Takes `micros` off the campaign's room for today (a decision made here that may
    /// be charged anywhere); the next reading of the room replaces the estimate.
    pub fn take_room(&mut self, campaign_id: i64, now_ms: Millis, micros: i64) {
        let Some(c) = self.campaigns.get(&campaign_id) else { return };
        let today = local_day(now_ms, &c.limits.timezone).0;
        if let Some((day, room)) = self.room.get_mut(&campaign_id) {
            if *day == today {
                *room = room.saturating_sub(micros);
            }
        }
    }

    /// Campaigns with budget leased here and not spent yet.
    pub fn leased_campaigns(&self) -> Vec<i64> {
        let mut out: Vec<i64> =
            self.leases.iter().flatten().filter(|(_, l)| l.left_micros > 0).map(|((c, _), _)| *c).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Sets the cluster's room for the campaign's local day (see [`DeliveryState::can_serve`]).
    pub fn set_room(&mut self, campaign_id: i64, day: i32, room_micros: i64) {
        match self.room.get(&campaign_id) {
            Some((read, _)) if *read > day => {}
            _ => {
                self.room.insert(campaign_id, (day, room_micros));
            }
        }
    }

    /// Every campaign with its local day at `now_ms`: what the room is read for.
    pub fn campaign_days(&self, now_ms: Millis) -> Vec<(i64, i32)> {
        self.campaigns.iter().map(|(id, c)| (*id, local_day(now_ms, &c.limits.timezone).0)).collect()
    }

    /// The (campaign, day) leases that ran dry: worth asking again, as other nodes give
    /// back what they do not use (or held when they died).
    /// Only today's (in each campaign's zone): leases of days past can no longer be
    /// charged, and are forgotten here.
    pub fn exhausted_leases(&mut self, now_ms: Millis) -> Vec<(i64, i32)> {
        let campaigns = &self.campaigns;
        let today = |c: i64| campaigns.get(&c).map(|m| local_day(now_ms, &m.limits.timezone).0);
        let Some(leases) = &mut self.leases else { return Vec::new() };
        leases.retain(|(c, day), _| today(*c).is_some_and(|t| *day >= t));
        leases.iter().filter(|(_, l)| l.exhausted).map(|(k, _)| *k).collect()
    }

    /// Forgets the campaign's leases (given back to the database).
    pub fn clear_leases(&mut self, campaign_id: i64) {
        if let Some(leases) = &mut self.leases {
            leases.retain(|(c, _), _| *c != campaign_id);
        }
    }

    /// The day index (days since 1970-01-01 in the campaign's zone) of `at_ms`.
    pub fn local_day_index(&self, campaign_id: i64, at_ms: Millis) -> Option<i32> {
        let c = self.campaigns.get(&campaign_id)?;
        Some(local_day(at_ms, &c.limits.timezone).0)
    }

    /// Adds spend that another node charged (so pacing and the budget checks of the
    /// decision path see it); leases are not touched.
    pub fn observe_spend(&mut self, campaign_id: i64, at_ms: Millis, spent_micros: i64) {
        self.restore_spend(campaign_id, at_ms, spent_micros);
    }

    pub fn balance(&self, advertiser_id: i64) -> i64 {
        self.balances.get(&advertiser_id).copied().unwrap_or(0)
    }

    pub fn spent(&self, campaign_id: i64) -> i64 {
        self.campaigns.get(&campaign_id).map_or(0, |c| c.spent_micros)
    }

    pub fn spent_today(&self, campaign_id: i64, now_ms: Millis) -> i64 {
        let Some(c) = self.campaigns.get(&campaign_id) else { return 0 };
        let (day, _, _) = local_day(now_ms, &c.limits.timezone);
        self.daily_spend.get(&(campaign_id, day)).copied().unwrap_or(0)
    }

    /// Restores spend read back from the store: `spent_micros` at `at_ms`.
    pub fn restore_spend(&mut self, campaign_id: i64, at_ms: Millis, spent_micros: i64) {
        let Some(c) = self.campaigns.get_mut(&campaign_id) else { return };
        c.spent_micros += spent_micros;
        let advertiser = c.limits.advertiser_id;
        let (day, _, _) = local_day(at_ms, &c.limits.timezone);
        *self.daily_spend.entry((campaign_id, day)).or_default() += spent_micros;
        *self.balances.entry(advertiser).or_default() -= spent_micros;
    }

    /// Whether the campaign may win an auction now: money left in its total and daily
    /// budgets and in its advertiser's balance, and, when paced evenly, not ahead of
    /// its day's schedule.
    pub fn can_serve(&self, campaign_id: i64, now_ms: Millis) -> bool {
        let Some(c) = self.campaigns.get(&campaign_id) else { return false };
        if c.spent_micros >= c.limits.total_budget_micros || self.balance(c.limits.advertiser_id) <= 0 {
            return false;
        }
        if let Some(leases) = &self.leases {
            // Several nodes: a decision's beacons may be charged on any node, so serving
            // follows the whole cluster's room (read every tick, and on every catalog
            // change; for a campaign never read, serve: money is safe in the leases either
            // way), and stops at once when this node's own lease request was refused.
            let today = local_day(now_ms, &c.limits.timezone).0;
            // A day not read yet (just begun): the latest day read says as much.
            let room = self.room.get(&campaign_id).map(|(_, micros)| *micros);
            if room.is_some_and(|room| room <= 0) || leases.get(&(campaign_id, today)).is_some_and(|l| l.exhausted) {
                return false;
            }
        }
        let Some(daily) = c.limits.daily_budget_micros else { return true };
        let (day, start, end) = local_day(now_ms, &c.limits.timezone);
        let today = self.daily_spend.get(&(campaign_id, day)).copied().unwrap_or(0);
        today < daily && (c.limits.pacing == Pacing::Asap || even_pacing_allows(daily, today, start, end, now_ms))
    }

    /// Whether `user_key` may see the campaign again under its frequency cap.
    pub fn cap_allows(&self, user_key: u64, campaign_id: i64, now_ms: Millis) -> bool {
        let Some(cap) = self.campaigns.get(&campaign_id).and_then(|c| c.limits.frequency_cap) else { return true };
        let Some(times) = self.caps.get(&(user_key, campaign_id)) else { return true };
        let window_start = cap_seconds(now_ms - i64::from(cap.per_hours) * HOUR);
        times.iter().filter(|&&t| t > window_start).count() < cap.impressions as usize
    }

    /// The local day of `at_ms` for a campaign, with its UTC bounds, when its spend is
    /// not kept here: days before yesterday (in the campaign's zone at `now_ms`) are
    /// neither loaded at start nor kept by [`DeliveryState::expire_caps`]. Only imports
    /// (and beacons replayed after days of downtime) land there; their caller reads the
    /// day's spend from the store and passes it to [`DeliveryState::record_impression`].
    pub fn past_day(&self, campaign_id: i64, at_ms: Millis, now_ms: Millis) -> Option<(DayIndex, Millis, Millis)> {
        // Live beacons: no zone arithmetic on the writer's hot path. Two days back needs
        // a whole local day in between (a zone skipping a date aside, whose days are kept
        // anyway).
        if now_ms - at_ms < 20 * HOUR {
            return None;
        }
        let c = self.campaigns.get(&campaign_id)?;
        let day = local_day(at_ms, &c.limits.timezone);
        (local_day(now_ms, &c.limits.timezone).0 - day.0 >= 2).then_some(day)
    }

    /// Charges one valid impression at `cpm_micros` and remembers it for the cap.
    /// Returns what was charged: never past the total or daily budget or the balance;
    /// what cannot be paid is not charged and the impression still counts.
    /// `past_day_spent` is the day's spend so far for a [`DeliveryState::past_day`]
    /// (added to here); `None` for the days kept in memory.
    pub fn record_impression(
        &mut self,
        campaign_id: i64,
        ad_id: i64,
        user_key: u64,
        cpm_micros: i64,
        at_ms: Millis,
        past_day_spent: Option<&mut i64>,
    ) -> i64 {
        self.ad_performance.entry(ad_id).or_default().0 += 1;
        self.remember_capped_impression(campaign_id, user_key, at_ms);
        let Some(c) = self.campaigns.get_mut(&campaign_id) else { return 0 };
        let (day, _, _) = local_day(at_ms, &c.limits.timezone);
        let today = match past_day_spent {
            Some(spent) => spent,
            None => self.daily_spend.entry((campaign_id, day)).or_default(),
        };
        let balance = self.balances.entry(c.limits.advertiser_id).or_default();
        let owed = c.carry.charge(cpm_micros);
        let daily_left = c.limits.daily_budget_micros.map_or(i64::MAX, |d| d - *today);
        let lease = self.leases.as_mut().map(|l| l.get_mut(&(campaign_id, day)));
        let leased = match &lease {
            None => i64::MAX,
            Some(None) => 0,
            Some(Some(lease)) => lease.left_micros,
        };
        let payable =
            owed.min(c.limits.total_budget_micros - c.spent_micros).min(daily_left).min(*balance).min(leased).max(0);
        if let Some(Some(lease)) = lease {
            lease.left_micros -= payable;
        }
        c.spent_micros += payable;
        *today += payable;
        *balance -= payable;
        if self.caps.len() > self.max_cap_entries {
            self.expire_caps(at_ms);
        }
        payable
    }

    /// How far back the longest frequency cap of any campaign looks (0: no campaign has
    /// one): the impressions a restart must replay into the caps.
    pub fn longest_cap_ms(&self) -> Millis {
        let hours = self.campaigns.values().filter_map(|c| c.limits.frequency_cap).map(|cap| cap.per_hours);
        i64::from(hours.max().unwrap_or(0).min(MAX_CAP_HOURS)) * HOUR
    }

    /// Replays a stored impression into the frequency-cap state (after a restart).
    pub fn remember_capped_impression(&mut self, campaign_id: i64, user_key: u64, at_ms: Millis) {
        let Some(cap) = self.campaigns.get(&campaign_id).and_then(|c| c.limits.frequency_cap) else { return };
        let times = self.caps.entry((user_key, campaign_id)).or_default();
        times.push(cap_seconds(at_ms));
        if times.len() > cap.impressions as usize {
            times.remove(0);
        }
    }

    pub fn record_click(&mut self, ad_id: i64) {
        self.ad_performance.entry(ad_id).or_default().1 += 1;
    }

    /// Restores an ad's counted impressions and clicks (after a restart).
    pub fn restore_performance(&mut self, ad_id: i64, impressions: u64, clicks: u64) {
        let p = self.ad_performance.entry(ad_id).or_default();
        p.0 += impressions;
        p.1 += clicks;
    }

    /// The ad's smoothed click-through rate, the quality the auction weighs bids by.
    pub fn quality(&self, ad_id: i64) -> f64 {
        let (impressions, clicks) = self.ad_performance.get(&ad_id).copied().unwrap_or((0, 0));
        (clicks as f64 + PRIOR_CLICKS) / (impressions as f64 + PRIOR_IMPRESSIONS)
    }

    /// Forgets cap entries whose newest impression is out of every window, and daily
    /// spend of days long past.
    pub fn expire_caps(&mut self, now_ms: Millis) {
        let oldest_useful = cap_seconds(now_ms - i64::from(MAX_CAP_HOURS) * HOUR);
        self.caps.retain(|_, times| times.last().is_some_and(|&t| t > oldest_useful));
        if self.caps.len() > self.max_cap_entries {
            // Still full of live entries: drop the oldest half rather than grow without
            // bound. A dropped user may see a capped campaign again early.
            let mut newest: Vec<u32> = self.caps.values().filter_map(|t| t.last().copied()).collect();
            newest.sort_unstable();
            let cut = newest[newest.len() / 2];
            self.caps.retain(|_, times| times.last().is_some_and(|&t| t > cut));
        }
        let today = (now_ms / (24 * HOUR)) as DayIndex;
        self.daily_spend.retain(|(_, day), _| today - *day <= 2);
    }

    /// Number of (user, campaign) pairs in frequency-cap state.
    pub fn capped_pairs(&self) -> usize {
        self.caps.len()
    }
}

/// Even pacing: by any moment of the day, at most the share of the daily budget that
/// the elapsed share of the day allows, plus one percent of slack so that a campaign
/// is never starved by rounding at the start of the day.
pub fn even_pacing_allows(
    daily_budget: i64,
    spent_today: i64,
    day_start: Millis,
    day_end: Millis,
    now_ms: Millis,
) -> bool {
    let length = (day_end - day_start).max(1) as i128;
    let elapsed = (now_ms - day_start).clamp(0, day_end - day_start) as i128;
    let allowed = daily_budget as i128 * elapsed / length + daily_budget as i128 / 100;
    (spent_today as i128) < allowed
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: Millis = 1_764_028_800_000; // 2025-11-25T00:00:00Z

    /// Ten thousand top-ups of 10^15 micros each are allowed one by one; together they
    /// must not wrap the balance negative.
    #[test]
    fn credits_saturate_instead_of_wrapping() {
        let mut d = DeliveryState::new(10);
        for _ in 0..10_000 {
            d.credit(1, 1_000_000_000_000_000);
        }
        assert_eq!(d.balance(1), i64::MAX);
    }

    fn limits(total: i64, daily: Option<i64>, pacing: Pacing, tz: &str) -> CampaignLimits {
        CampaignLimits {
            advertiser_id: 1,
            total_budget_micros: total,
            daily_budget_micros: daily,
            pacing,
            frequency_cap: None,
            timezone: TimeZone::get(tz).expect("zone"),
        }
    }

    fn state_with(l: CampaignLimits, balance: i64) -> DeliveryState {
        let mut s = DeliveryState::new(1000);
        s.set_campaign(7, l);
        s.credit(1, balance);
        s
    }

    /// With leases, a charge never passes the lease of the event's local day; a lease
    /// the database could not refill stops the campaign serving, and another day's lease
    /// pays nothing today.
    #[test]
    fn leases_bound_every_charge() {
        let mut s = state_with(limits(1_000_000, None, Pacing::Asap, "UTC"), 1_000_000);
        s.use_leases();
        let day = s.local_day_index(7, T0).expect("day");
        assert_eq!(s.record_impression(7, 1, 9, 2_000_000, T0, None), 0, "no lease, no charge");
        assert!(s.can_serve(7, T0), "no room known yet: serve");
        s.set_room(7, day, 0);
        assert!(!s.can_serve(7, T0), "the cluster has no room left");
        s.set_room(7, day, 6_000);
        assert!(s.can_serve(7, T0));
        s.take_room(7, T0, 4_000);
        assert!(s.can_serve(7, T0));
        s.take_room(7, T0, 2_000);
        assert!(!s.can_serve(7, T0), "decisions made here used the room up");
        s.set_room(7, day, 6_000);
        s.set_lease(7, Lease { day, left_micros: 4_500, exhausted: false });
        let charged: Vec<i64> = (0..3).map(|u| s.record_impression(7, 1, u, 2_000_000, T0, None)).collect();
        assert_eq!(charged, [2_000, 2_000, 500]);
        assert_eq!(s.lease(7, day).map(|l| l.left_micros), Some(0));
        s.set_lease(7, Lease { day, left_micros: 0, exhausted: true });
        assert!(!s.can_serve(7, T0), "refused: wait for the retry");
        s.set_room(7, day, 0);
        assert!(!s.can_serve(7, T0 + 25 * HOUR), "tomorrow's room is not read yet: today's says no");
        s.set_room(7, day + 1, 1_000);
        assert!(s.can_serve(7, T0 + 25 * HOUR));
        s.set_lease(7, Lease { day: day + 1, left_micros: 10_000, exhausted: false });
        assert_eq!(s.record_impression(7, 1, 5, 2_000_000, T0, None), 0, "tomorrow's lease pays nothing today");
        assert_eq!(s.exhausted_leases(T0), [(7, day)]);
        assert_eq!(s.exhausted_leases(T0 + 25 * HOUR), [], "yesterday's dry lease is forgotten");
        s.sync_credits(1, 1_500_000);
        assert_eq!(s.balance(1), 1_500_000 - 4_500);
    }

    #[test]
    fn charges_stop_exactly_at_every_limit() {
        let mut s = state_with(limits(2_500, None, Pacing::Asap, "UTC"), 1_000_000);
        let total: i64 = (0..10).map(|_| s.record_impression(7, 1, 1, 1_000_000, T0, None)).sum();
        assert_eq!(total, 2_500);
        assert!(!s.can_serve(7, T0));

        let mut s = state_with(limits(1_000_000, None, Pacing::Asap, "UTC"), 1_500);
        let total: i64 = (0..4).map(|_| s.record_impression(7, 1, 1, 1_000_000, T0, None)).sum();
        assert_eq!((total, s.balance(1)), (1_500, 0));

        let mut s = state_with(limits(1_000_000, Some(3_000), Pacing::Asap, "UTC"), 1_000_000);
        let day1: i64 = (0..5).map(|_| s.record_impression(7, 1, 1, 1_000_000, T0 + HOUR, None)).sum();
        assert_eq!(day1, 3_000);
        assert!(!s.can_serve(7, T0 + 2 * HOUR));
        assert!(s.can_serve(7, T0 + 25 * HOUR), "a new day brings a new daily budget");
    }

    /// Los Angeles → Tokyo at 20:00 UTC: Tokyo's day began at 15:00 UTC, so the spend
    /// of 15:00–20:00 is today's there; refiled, the daily budget holds across the move.
    #[test]
    fn a_zone_change_refiles_the_daily_spend() {
        let la = limits(1_000_000, Some(3_000), Pacing::Asap, "America/Los_Angeles");
        let mut s = state_with(la.clone(), 1_000_000);
        let at = |h: i64| T0 + h * HOUR; // T0 is a UTC midnight
        for h in [10, 16, 19] {
            s.record_impression(7, 1, h as u64, 1_000_000, at(h), None);
        }
        assert_eq!(s.spent_today(7, at(20)), 3_000, "one LA day: 10, 16 and 19 UTC");
        let tokyo = CampaignLimits { timezone: TimeZone::get("Asia/Tokyo").expect("zone"), ..la.clone() };
        assert!(s.set_campaign(7, tokyo.clone()));
        assert!(!s.set_campaign(7, tokyo), "the same zone again");
        s.refile_daily_spend(7, [(at(10), 1_000), (at(16), 1_000), (at(19), 1_000)]);
        assert_eq!(s.spent_today(7, at(20)), 2_000, "16 and 19 UTC are today in Tokyo");
        assert_eq!(s.record_impression(7, 1, 99, 1_000_000, at(20), None), 1_000);
        assert_eq!(s.record_impression(7, 1, 98, 1_000_000, at(20), None), 0, "Tokyo's budget is spent");
    }

    /// An impression of a day whose spend is not kept (an import of last week) is charged
    /// against that day's spend as the caller read it, never from zero.
    #[test]
    fn a_past_day_is_charged_against_the_spend_passed_in() {
        let mut s = state_with(limits(1_000_000, Some(3_000), Pacing::Asap, "Europe/Berlin"), 1_000_000);
        let now = T0 + 10 * DAY;
        assert_eq!(s.past_day(7, now, now), None);
        assert_eq!(s.past_day(7, now - DAY, now), None, "yesterday is kept");
        let (day, start, end) = s.past_day(7, T0 + 12 * HOUR, now).expect("ten days back is past");
        assert_eq!((start, end), (T0 - HOUR, T0 + 23 * HOUR), "Berlin's day in UTC");
        assert_eq!(s.past_day(99, T0, now), None, "unknown campaign");
        let mut spent = 2_000; // what the store holds for that day
        let charged: i64 =
            (0..3).map(|_| s.record_impression(7, 1, 1, 1_000_000, T0 + 12 * HOUR, Some(&mut spent))).sum();
        assert_eq!((charged, spent), (1_000, 3_000));
        assert_eq!(s.spent(7), 1_000);
        assert!(!s.daily_spend.contains_key(&(7, day)), "a past day is not kept in memory");
    }

    #[test]
    fn daily_budgets_follow_the_campaigns_zone_across_dst() {
        // Berlin leaves summer time on 2026-10-25: that local day has 25 hours.
        let tz = "Europe/Berlin";
        let mut s = state_with(limits(1_000_000_000, Some(1_000), Pacing::Asap, tz), 1_000_000_000);
        let day_start = crate::report::start_of_day(jiff::civil::date(2026, 10, 25), &TimeZone::get(tz).expect("zone"));
        s.record_impression(7, 1, 1, 1_000_000, day_start + 24 * HOUR + 30 * 60_000, None);
        assert!(!s.can_serve(7, day_start + 24 * HOUR + 40 * 60_000), "still 25 Oct in Berlin");
        assert!(s.can_serve(7, day_start + 25 * HOUR + 60_000), "26 Oct has begun");
    }

    #[test]
    fn frequency_caps_hold_over_the_window_edges() {
        let mut l = limits(1_000_000_000, None, Pacing::Asap, "UTC");
        l.frequency_cap = Some(FrequencyCap { impressions: 2, per_hours: 1 });
        let mut s = state_with(l, 1_000_000_000);
        s.record_impression(7, 1, 42, 1_000, T0, None);
        assert!(s.cap_allows(42, 7, T0 + 1000));
        s.record_impression(7, 1, 42, 1_000, T0 + 10 * 60_000, None);
        assert!(!s.cap_allows(42, 7, T0 + 20 * 60_000));
        assert!(s.cap_allows(43, 7, T0 + 20 * 60_000), "other users are not affected");
        assert!(!s.cap_allows(42, 7, T0 + HOUR - 1000), "a second before the first leaves the window");
        assert!(s.cap_allows(42, 7, T0 + HOUR), "the window is (now − 1 h, now]");
    }

    #[test]
    fn even_pacing_spreads_the_daily_budget_over_a_simulated_day() {
        let tz = "America/New_York";
        let mut s = state_with(limits(1_000_000_000, Some(1_000_000), Pacing::Even, tz), 1_000_000_000);
        let start = crate::report::start_of_day(jiff::civil::date(2026, 6, 10), &TimeZone::get(tz).expect("zone"));
        // Ten times more demand than budget, spread evenly: one request every 8.64 s,
        // each impression worth 1 000 micros (CPM 1.00).
        let mut spent_by_hour = Vec::new();
        for i in 0..10_000i64 {
            let now = start + i * 8_640;
            if s.can_serve(7, now) {
                s.record_impression(7, 1, i as u64, 1_000_000, now, None);
            }
            if (i + 1) % (10_000 / 24) == 0 {
                spent_by_hour.push(s.spent_today(7, now));
            }
        }
        let total = s.spent_today(7, start + 24 * HOUR - 1);
        assert!((990_000..=1_000_000).contains(&total), "{total}");
        let midday = spent_by_hour[11];
        assert!((480_000..=520_000).contains(&midday), "half the budget by noon, got {midday}");
    }

    #[test]
    fn quality_starts_at_the_prior_and_follows_evidence() {
        let mut s = DeliveryState::new(10);
        assert!((s.quality(1) - 0.01).abs() < 1e-9);
        s.restore_performance(1, 10_000, 300);
        assert!((s.quality(1) - 301.0 / 10_100.0).abs() < 1e-9);
    }

    #[test]
    fn cap_state_is_small_and_bounded() {
        let mut l = limits(1_000_000_000, None, Pacing::Asap, "UTC");
        l.frequency_cap = Some(FrequencyCap { impressions: 3, per_hours: 24 });
        let mut s = state_with(l, 1_000_000_000);
        for user in 0..5_000u64 {
            s.record_impression(7, 1, user, 1_000, T0 + user as i64, None);
        }
        assert!(s.capped_pairs() <= 1000);
        s.expire_caps(T0 + i64::from(MAX_CAP_HOURS) * HOUR + 10_000);
        assert_eq!(s.capped_pairs(), 0);
    }

    #[test]
    fn a_restart_replays_impressions_as_far_back_as_the_longest_cap() {
        let mut s = state_with(limits(1_000_000_000, None, Pacing::Asap, "UTC"), 1_000_000_000);
        assert_eq!(s.longest_cap_ms(), 0, "no campaign has a cap");
        for (id, hours) in [(2, 24), (3, 72), (4, 1)] {
            let mut l = limits(1_000_000_000, None, Pacing::Asap, "UTC");
            l.frequency_cap = Some(FrequencyCap { impressions: 3, per_hours: hours });
            s.set_campaign(id, l);
        }
        assert_eq!(s.longest_cap_ms(), 72 * HOUR);
    }

    proptest! {
        #[test]
        fn spend_never_exceeds_any_limit(
            total in 1i64..5_000_000, daily in 1i64..5_000_000, balance in 0i64..5_000_000,
            cpms in proptest::collection::vec(0i64..20_000_000, 0..300),
        ) {
            let mut s = state_with(limits(total, Some(daily), Pacing::Asap, "UTC"), balance);
            let charged: i64 = cpms.iter().map(|&p| s.record_impression(7, 1, 1, p, T0, None)).sum();
            prop_assert!(charged <= total && charged <= daily && charged <= balance);
            prop_assert_eq!(s.balance(1), balance - charged);
            prop_assert_eq!(s.spent(7), charged);
        }
    }
}

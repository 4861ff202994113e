//! Which ads get the credit for a conversion.
//!
//! Two views of the same rules. [`LastTouches`] is the writer's bounded in-memory
//! last-touch state: it freezes the default credit (the user's latest counted click on
//! the advertiser's ads within its click window, else the latest counted impression within
//! its view-through window) into the stored conversion, which is what `/v1/reports`
//! counts. The models ([`Model`], [`attribute`]) recompute credit at query time from the
//! stored touch path, so any model can be applied to any range: a conversion's
//! [`journey`] is its advertiser's counted clicks of the click window before it plus its
//! counted impressions of the view-through window before it whose decision was not
//! clicked, in time order. Each advertiser chooses its [`Windows`] (30 days, 1 day and a
//! 7-day `time_decay` half-life unless it says otherwise). Credits are integer millionths
//! and revenue integer micros, each split by largest remainder so that one conversion's
//! shares sum exactly to 1 and to its value.

use std::collections::{BTreeMap, VecDeque};

use crate::clock::{Millis, DAY};
use crate::fasthash::FastMap;

/// The longest click window an advertiser may choose: it bounds what the writer replays
/// at start-up and how far back a report reads touches.
pub const MAX_CLICK_WINDOW_DAYS: u16 = 90;
/// The longest view-through window (0 turns view-through off).
pub const MAX_VIEW_WINDOW_DAYS: u16 = 30;
/// The longest `time_decay` half-life.
pub const MAX_HALF_LIFE_DAYS: u16 = 90;

/// One advertiser's attribution settings, in whole days: how long before a conversion a
/// click and a view-through impression still count, and the `time_decay` half-life.
/// Built only through [`Windows::new`], so every value is inside its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    click_days: u16,
    view_days: u16,
    half_life_days: u16,
}

impl Default for Windows {
    /// 30-day clicks, 1-day view-through, 7-day half-life (PRODUCT.md, Attribution).
    fn default() -> Self {
        Self { click_days: 30, view_days: 1, half_life_days: 7 }
    }
}

/// Why a set of windows was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WindowsError(pub String);

impl Windows {
    /// Clicks count for 1..=90 days, view-through impressions for 0..=30 days (0: never)
    /// and no longer than clicks, the half-life is 1..=90 days.
    pub fn new(click_days: u16, view_days: u16, half_life_days: u16) -> Result<Self, WindowsError> {
        if !(1..=MAX_CLICK_WINDOW_DAYS).contains(&click_days) {
            return Err(WindowsError(format!("click_window_days must be 1 to {MAX_CLICK_WINDOW_DAYS}")));
        }
        if view_days > MAX_VIEW_WINDOW_DAYS || view_days > click_days {
            return Err(WindowsError(format!(
                "view_window_days must be 0 to {MAX_VIEW_WINDOW_DAYS} and at most click_window_days"
            )));
        }
        if !(1..=MAX_HALF_LIFE_DAYS).contains(&half_life_days) {
            return Err(WindowsError(format!("half_life_days must be 1 to {MAX_HALF_LIFE_DAYS}")));
        }
        Ok(Self { click_days, view_days, half_life_days })
    }
    pub fn click_days(self) -> u16 {
        self.click_days
    }
    pub fn view_days(self) -> u16 {
        self.view_days
    }
    pub fn half_life_days(self) -> u16 {
        self.half_life_days
    }
    pub fn click_ms(self) -> Millis {
        Millis::from(self.click_days) * DAY
    }
    pub fn view_ms(self) -> Millis {
        Millis::from(self.view_days) * DAY
    }
    pub fn half_life_ms(self) -> Millis {
        Millis::from(self.half_life_days) * DAY
    }

    /// The longest click and view-through windows among `all` (the defaults when there
    /// are none): how long the writer must keep touches so that every advertiser's
    /// conversions find theirs.
    pub fn longest(all: impl IntoIterator<Item = Windows>) -> Windows {
        all.into_iter().fold(Windows::default(), |a, b| Windows {
            click_days: a.click_days.max(b.click_days),
            view_days: a.view_days.max(b.view_days),
            half_life_days: a.half_life_days,
        })
    }
}

/// A counted click or impression that a conversion can be credited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    pub at_ms: Millis,
    pub campaign_id: i64,
    pub ad_id: i64,
    pub placement_id: i64,
}

/// The latest click and impression per (user, advertiser), bounded in size.
#[derive(Debug, Default)]
pub struct LastTouches {
    clicks: Touches,
    impressions: Touches,
}

/// One kind of touch per (user, advertiser), with the keys in the order they were
/// written so that making room costs O(1) per entry (no scan of the map).
#[derive(Debug, Default)]
struct Touches {
    map: FastMap<(u64, i64), Touch>,
    /// Keys with the touch time they were written with; a key may appear more than
    /// once, and only the entry whose time matches the map's is live.
    order: VecDeque<((u64, i64), Millis)>,
    cap: usize,
    window: Millis,
}

impl Touches {
    fn new(cap: usize, window: Millis) -> Self {
        Self { cap: cap.max(1), window, ..Default::default() }
    }

    fn record(&mut self, key: (u64, i64), touch: Touch) {
        if self.map.get(&key).is_some_and(|t| t.at_ms > touch.at_ms) {
            return;
        }
        // Drop what is too old to be credited any more (relative to the newest touch:
        // imported history has its own clock), oldest written first.
        while let Some(&(old, written)) = self.order.front() {
            let live = self.map.get(&old).is_some_and(|t| t.at_ms == written);
            if live && touch.at_ms - written <= self.window && self.order.len() <= 2 * self.cap {
                break;
            }
            self.order.pop_front();
            if live {
                self.map.remove(&old);
            }
        }
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            // Full of creditable touches: refuse the newcomer (the store still has it;
            // only last-touch credit is lost).
            return;
        }
        self.map.insert(key, touch);
        self.order.push_back((key, touch.at_ms));
    }
}

impl LastTouches {
    /// Room for `cap` touches of each kind, kept as long as `keep`'s windows say: the
    /// longest windows of any advertiser (see [`Windows::longest`]).
    pub fn new(cap: usize, keep: Windows) -> Self {
        Self { clicks: Touches::new(cap, keep.click_ms()), impressions: Touches::new(cap, keep.view_ms()) }
    }

    /// Keeps touches as long as `keep`'s windows say from now on (advertisers changed
    /// theirs); touches dropped before are not brought back.
    pub fn keep_for(&mut self, keep: Windows) {
        self.clicks.window = keep.click_ms();
        self.impressions.window = keep.view_ms();
    }

    pub fn record_click(&mut self, user_key: u64, advertiser_id: i64, touch: Touch) {
        self.clicks.record((user_key, advertiser_id), touch);
    }

    pub fn record_impression(&mut self, user_key: u64, advertiser_id: i64, touch: Touch) {
        self.impressions.record((user_key, advertiser_id), touch);
    }

    /// The touch a conversion at `at_ms` is credited to under its advertiser's windows.
    pub fn credit(&self, user_key: u64, advertiser_id: i64, at_ms: Millis, windows: Windows) -> Option<Touch> {
        let key = (user_key, advertiser_id);
        let within = |t: &&Touch, window: Millis| t.at_ms <= at_ms && at_ms - t.at_ms <= window;
        self.clicks
            .map
            .get(&key)
            .filter(|t| within(t, windows.click_ms()))
            .or_else(|| {
                let view = windows.view_ms();
                self.impressions.map.get(&key).filter(|t| view > 0 && within(t, view))
            })
            .copied()
    }
}

// ---------------------------------------------------------------------------------------
// Multi-touch attribution, computed at query time from the stored touch path.
// ---------------------------------------------------------------------------------------

/// A credit of 1 (one whole conversion) in integer units: credits are integer
/// millionths of a conversion, so the shares of one conversion sum to exactly 1.
pub const CREDIT_UNIT: i64 = 1_000_000;

/// A journey keeps at most this many touches (the latest): it bounds the work of one
/// conversion whatever one user key did.
pub const MAX_JOURNEY: usize = 1_000;

/// How the credit of one conversion is shared among the touches of its journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Model {
    /// The last click; with no click, the last impression (view-through).
    LastClick,
    FirstTouch,
    /// Equal shares.
    Linear,
    /// Weight 2^(−age / half-life), the advertiser's half-life ([`Windows`]).
    TimeDecay,
    /// 40% first, 40% last, 20% shared by the middle; two touches 50/50; one 100%.
    PositionBased,
}

impl Model {
    pub const ALL: [Model; 5] = [Self::LastClick, Self::FirstTouch, Self::Linear, Self::TimeDecay, Self::PositionBased];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LastClick => "last_click",
            Self::FirstTouch => "first_touch",
            Self::Linear => "linear",
            Self::TimeDecay => "time_decay",
            Self::PositionBased => "position_based",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TouchKind {
    Impression,
    Click,
}

/// A counted click or impression of one user on one advertiser's ads, as the store
/// keeps it (the advertiser is implied by the path it belongs to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathTouch {
    pub at_ms: Millis,
    pub kind: TouchKind,
    pub decision_id: Option<u64>,
    pub campaign_id: i64,
    pub ad_id: i64,
}

/// The journey of a conversion at `at_ms`, in time order (touches with equal times keep
/// the order given, which is the store's commit order): the clicks of the click window
/// and the impressions of the view-through window whose decision has no click in the
/// journey (a clicked impression is represented by its click). `path` is one user's
/// touches on one advertiser, in time order. At most [`MAX_JOURNEY`] touches, the latest.
pub fn journey(path: &[PathTouch], at_ms: Millis, windows: Windows) -> Vec<PathTouch> {
    let (click_ms, view_ms) = (windows.click_ms(), windows.view_ms());
    let start = path.partition_point(|t| t.at_ms < at_ms.saturating_sub(click_ms));
    let end = path.partition_point(|t| t.at_ms <= at_ms);
    let candidates = &path[start..end.max(start)];
    let clicked: Vec<u64> =
        candidates.iter().filter(|t| t.kind == TouchKind::Click).filter_map(|t| t.decision_id).collect();
    let mut out: Vec<PathTouch> = candidates
        .iter()
        .filter(|t| match t.kind {
            TouchKind::Click => true,
            TouchKind::Impression => {
                view_ms > 0 && at_ms - t.at_ms <= view_ms && !t.decision_id.is_some_and(|d| clicked.contains(&d))
            }
        })
        .copied()
        .collect();
    if out.len() > MAX_JOURNEY {
        out.drain(..out.len() - MAX_JOURNEY);
    }
    out
}

/// Integer weights of the touches of a journey (same order) under a model; their sum
/// is positive for a non-empty journey. Integers so that shares can be allocated exactly.
pub fn weights(model: Model, journey: &[PathTouch], at_ms: Millis, half_life_ms: Millis) -> Vec<u128> {
    let n = journey.len();
    let mut w = vec![0u128; n];
    if n == 0 {
        return w;
    }
    match model {
        Model::LastClick => {
            let last = journey.iter().rposition(|t| t.kind == TouchKind::Click).unwrap_or(n - 1);
            w[last] = 1;
        }
        Model::FirstTouch => w[0] = 1,
        Model::Linear => w.fill(1),
        Model::TimeDecay => {
            // 2^(−age/half-life) in units of 2^-40: ages are at most 90 days and
            // half-lives at least one, so the smallest weight (2^-90) would vanish; it is
            // kept at 1 unit, which only matters against touches 40 half-lives younger.
            let half_life = half_life_ms.max(1) as f64;
            for (wi, t) in w.iter_mut().zip(journey) {
                let age = (at_ms - t.at_ms).max(0) as f64 / half_life;
                *wi = ((-age).exp2() * (1u64 << 40) as f64).round().max(1.0) as u128;
            }
        }
        Model::PositionBased => match n {
            1 => w[0] = 1,
            2 => w.fill(1),
            _ => {
                // 40% : 20%/(n−2) each : 40%, scaled by 5(n−2) to whole numbers.
                w.fill(1);
                let ends = 2 * (n as u128 - 2);
                w[0] = ends;
                w[n - 1] = ends;
            }
        },
    }
    w
}

/// Splits `total` into integer parts proportional to `weights` that sum exactly to
/// `total`: each part is its floor share, and the remainder goes one unit at a time to
/// the largest fractional remainders, ties to the later touch. All zero when the weights
/// are (nothing to share to).
pub fn allocate(total: i64, weights: &[u128]) -> Vec<i64> {
    let sum: u128 = weights.iter().sum();
    let total_u = total.max(0) as u128;
    if sum == 0 || total_u == 0 {
        return vec![0; weights.len()];
    }
    // total ≤ 2^63 and weights ≤ 2^41·n keep total·w far inside u128 for any journey.
    let mut parts: Vec<i64> = weights.iter().map(|&w| (total_u * w / sum) as i64).collect();
    let given: i64 = parts.iter().sum();
    let left = (total.max(0) - given) as usize;
    if left == 0 {
        return parts;
    }
    // Largest remainder first; among equal remainders the later touch first. Fewer than
    // `weights.len()` units are left, one each.
    let mut order: Vec<(u128, usize)> = weights.iter().enumerate().map(|(i, &w)| (total_u * w % sum, i)).collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    for &(_, i) in order.iter().take(left) {
        parts[i] += 1;
    }
    parts
}

/// What one touch of a conversion's journey is credited with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub campaign_id: i64,
    pub ad_id: i64,
    /// Millionths of the conversion ([`CREDIT_UNIT`] = 1).
    pub credit: i64,
    pub revenue_micros: i64,
}

/// Shares of one conversion of `value_micros` at `at_ms` under `model`; empty when the
/// journey is (unattributed). Credits sum to exactly [`CREDIT_UNIT`], revenue to exactly
/// `value_micros`. Touches with a zero share are left out.
pub fn shares(model: Model, journey: &[PathTouch], at_ms: Millis, value_micros: i64, windows: Windows) -> Vec<Share> {
    let w = weights(model, journey, at_ms, windows.half_life_ms());
    let credits = allocate(CREDIT_UNIT, &w);
    let revenue = allocate(value_micros, &w);
    journey
        .iter()
        .zip(credits.into_iter().zip(revenue))
        .filter(|(_, (c, r))| *c != 0 || *r != 0)
        .map(|(t, (credit, revenue_micros))| Share {
            campaign_id: t.campaign_id,
            ad_id: t.ad_id,
            credit,
            revenue_micros,
        })
        .collect()
}

/// A conversion to attribute: whose it was, when, and what it was worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversionFact {
    pub user_key: u64,
    pub at_ms: Millis,
    pub value_micros: i64,
}

/// Credit and revenue of one (campaign, ad) under one model, summed over conversions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CreditSums {
    /// Millionths of conversions.
    pub credit: i128,
    pub revenue_micros: i128,
}

/// One model's answer for a set of conversions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelReport {
    /// Per (campaign, ad).
    pub rows: BTreeMap<(i64, i64), CreditSums>,
    pub conversions: i64,
    pub revenue_micros: i128,
    /// Conversions with an empty journey, and their value.
    pub unattributed: i64,
    pub unattributed_revenue_micros: i128,
}

/// Attributes every conversion under every model asked. `touches` are one advertiser's
/// counted clicks and impressions with their user keys, in time order (equal times in
/// commit order); the conversions are the same advertiser's. The touches are sorted in
/// place by user (stable, so each user's stay in time order) instead of being copied
/// into a map of paths: the memory is the input's, the work a sort and one pass.
pub fn attribute(
    models: &[Model],
    conversions: &[ConversionFact],
    mut touches: Vec<(u64, PathTouch)>,
    windows: Windows,
) -> BTreeMap<Model, ModelReport> {
    touches.sort_by_key(|(user, t)| (*user, t.at_ms));
    let mut order: Vec<usize> = (0..conversions.len()).collect();
    order.sort_unstable_by_key(|&i| conversions[i].user_key);
    let mut path: Vec<PathTouch> = Vec::new();
    let mut path_user: Option<u64> = None;
    let mut next = 0;
    let mut out: BTreeMap<Model, ModelReport> = models.iter().map(|m| (*m, ModelReport::default())).collect();
    // Rows in hash maps while summing (a million conversions touch them many times).
    let mut rows: Vec<FastMap<(i64, i64), CreditSums>> = vec![FastMap::default(); out.len()];
    for c in order.into_iter().map(|i| &conversions[i]) {
        if path_user != Some(c.user_key) {
            // Conversions come by user in ascending order: advance to this user's touches.
            next += touches[next..].partition_point(|(u, _)| *u < c.user_key);
            let len = touches[next..].partition_point(|(u, _)| *u == c.user_key);
            path.clear();
            path.extend(touches[next..next + len].iter().map(|(_, t)| *t));
            path_user = Some(c.user_key);
        }
        let journey = journey(&path, c.at_ms, windows);
        for ((model, report), rows) in out.iter_mut().zip(rows.iter_mut()) {
            report.conversions += 1;
            report.revenue_micros += i128::from(c.value_micros);
            if journey.is_empty() {
                report.unattributed += 1;
                report.unattributed_revenue_micros += i128::from(c.value_micros);
                continue;
            }
            for s in shares(*model, &journey, c.at_ms, c.value_micros, windows) {
                let row = rows.entry((s.campaign_id, s.ad_id)).or_default();
                row.credit += i128::from(s.credit);
                row.revenue_micros += i128::from(s.revenue_micros);
            }
        }
    }
    for (report, rows) in out.values_mut().zip(rows) {
        report.rows = rows.into_iter().collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(at_ms: Millis, ad_id: i64) -> Touch {
        Touch { at_ms, campaign_id: 1, ad_id, placement_id: 1 }
    }

    #[test]
    fn clicks_win_over_impressions_within_their_windows() {
        let w = Windows::default();
        let mut t = LastTouches::new(100, w);
        t.record_impression(1, 9, touch(0, 1));
        assert_eq!(t.credit(1, 9, DAY, w).map(|t| t.ad_id), Some(1));
        assert_eq!(t.credit(1, 9, DAY + 1, w), None);
        t.record_click(1, 9, touch(10, 2));
        t.record_impression(1, 9, touch(20, 3));
        assert_eq!(t.credit(1, 9, 30, w).map(|t| t.ad_id), Some(2));
        assert_eq!(t.credit(1, 9, 10 + 30 * DAY + 1, w), None);
        assert_eq!(t.credit(2, 9, 30, w), None);
        assert_eq!(t.credit(1, 8, 30, w), None);
    }

    #[test]
    fn each_advertiser_applies_its_own_windows_to_the_kept_touches() {
        let short = Windows::new(7, 0, 7).expect("valid");
        let long = Windows::new(60, 3, 7).expect("valid");
        let mut t = LastTouches::new(100, Windows::longest([short, long]));
        t.record_click(1, 9, touch(0, 1));
        t.record_impression(2, 9, touch(0, 2));
        // Ten days later: outside the short click window, inside the long one.
        assert_eq!(t.credit(1, 9, 10 * DAY, short), None);
        assert_eq!(t.credit(1, 9, 10 * DAY, long).map(|t| t.ad_id), Some(1));
        // View-through off for the short windows; the long ones keep it three days.
        assert_eq!(t.credit(2, 9, HOUR, short), None);
        assert_eq!(t.credit(2, 9, 3 * DAY, long).map(|t| t.ad_id), Some(2));
        assert_eq!(t.credit(2, 9, 3 * DAY + 1, long), None);
    }

    #[test]
    fn windows_are_refused_outside_their_bounds() {
        assert!(Windows::new(0, 0, 7).is_err());
        assert!(Windows::new(91, 1, 7).is_err());
        assert!(Windows::new(30, 31, 7).is_err());
        assert!(Windows::new(5, 6, 7).is_err(), "view-through longer than clicks");
        assert!(Windows::new(30, 1, 0).is_err());
        assert!(Windows::new(30, 1, 91).is_err());
        assert_eq!(Windows::new(30, 1, 7), Ok(Windows::default()));
        assert_eq!(Windows::longest([]), Windows::default());
        let longest = Windows::longest([Windows::new(90, 0, 1).expect("valid"), Windows::new(2, 2, 3).expect("valid")]);
        assert_eq!((longest.click_days(), longest.view_days()), (90, 2));
    }

    #[test]
    fn full_of_fresh_touches_refuses_newcomers_and_makes_room_as_they_age() {
        let w = Windows::default();
        let mut t = LastTouches::new(3, w);
        for user in 0..3 {
            t.record_impression(user, 9, touch(user as i64, 1));
        }
        t.record_impression(7, 9, touch(10, 1));
        assert_eq!(t.credit(7, 9, 10, w), None, "full: refused");
        // A day later the first three can no longer be credited; the newcomer fits.
        t.record_impression(7, 9, touch(DAY + 5, 2));
        assert_eq!(t.credit(7, 9, DAY + 5, w).map(|t| t.ad_id), Some(2));
        assert_eq!(t.impressions.map.len(), 1);
    }
    // --- models -------------------------------------------------------------------

    use crate::clock::HOUR;

    fn click(at_ms: Millis, decision: u64, campaign_id: i64, ad_id: i64) -> PathTouch {
        PathTouch { at_ms, kind: TouchKind::Click, decision_id: Some(decision), campaign_id, ad_id }
    }
    fn imp(at_ms: Millis, decision: u64, campaign_id: i64, ad_id: i64) -> PathTouch {
        PathTouch { at_ms, kind: TouchKind::Impression, decision_id: Some(decision), campaign_id, ad_id }
    }

    /// (ad, credit, revenue) of each touch with a share, in journey order.
    fn check(model: Model, path: &[PathTouch], at_ms: Millis, value: i64) -> Vec<(i64, i64, i64)> {
        let w = Windows::default();
        let j = journey(path, at_ms, w);
        shares(model, &j, at_ms, value, w).into_iter().map(|s| (s.ad_id, s.credit, s.revenue_micros)).collect()
    }

    #[test]
    fn single_touch_gets_everything_under_every_model() {
        let path = [click(0, 1, 1, 10)];
        for model in Model::ALL {
            assert_eq!(check(model, &path, HOUR, 999), vec![(10, CREDIT_UNIT, 999)], "{model:?}");
        }
        let path = [imp(0, 1, 1, 10)];
        for model in Model::ALL {
            assert_eq!(check(model, &path, HOUR, 5), vec![(10, CREDIT_UNIT, 5)], "{model:?}");
        }
    }

    #[test]
    fn click_after_impressions() {
        // Impressions of ads 1 and 2, then ad 3's impression and its click: the clicked
        // impression is represented by its click, so the journey is [1, 2, 3(click)].
        let path = [imp(0, 1, 1, 1), imp(HOUR, 2, 1, 2), imp(2 * HOUR, 3, 2, 3), click(2 * HOUR + 5, 3, 2, 3)];
        let at = 3 * HOUR;
        assert_eq!(journey(&path, at, Windows::default()).len(), 3);
        assert_eq!(check(Model::LastClick, &path, at, 100), vec![(3, 1_000_000, 100)]);
        assert_eq!(check(Model::FirstTouch, &path, at, 100), vec![(1, 1_000_000, 100)]);
        assert_eq!(check(Model::Linear, &path, at, 100), vec![(1, 333_333, 33), (2, 333_333, 33), (3, 333_334, 34)]);
        assert_eq!(
            check(Model::PositionBased, &path, at, 100),
            vec![(1, 400_000, 40), (2, 200_000, 20), (3, 400_000, 40)]
        );
        // Ages 3 h, 2 h − 5 ms, 1 h: nearly equal weights, the latest slightly more.
        let td = check(Model::TimeDecay, &path, at, 100);
        assert_eq!(td.iter().map(|s| s.1).sum::<i64>(), CREDIT_UNIT);
        assert!(td[0].1 < td[1].1 && td[1].1 < td[2].1, "{td:?}");
        // Without the click, last_click falls back to the last impression.
        assert_eq!(check(Model::LastClick, &path[..3], at, 100), vec![(3, 1_000_000, 100)]);
    }

    #[test]
    fn time_decay_halves_per_week() {
        // Clicks 14, 7 and 0 days before: weights 1 : 2 : 4, so 1/7, 2/7, 4/7; the one
        // millionth left over by the floors goes to the largest remainder (4/7).
        let at = 20 * DAY;
        let path = [click(at - 14 * DAY, 1, 1, 1), click(at - 7 * DAY, 2, 1, 2), click(at, 3, 1, 3)];
        assert_eq!(
            check(Model::TimeDecay, &path, at, 7_000_000),
            vec![(1, 142_857, 1_000_000), (2, 285_714, 2_000_000), (3, 571_429, 4_000_000)]
        );
    }

    #[test]
    fn touches_outside_the_windows_do_not_count() {
        let at = 40 * DAY;
        let w = Windows::default();
        let (click_window, view_window) = (w.click_ms(), w.view_ms());
        let path = [
            click(at - click_window - 1, 1, 1, 1), // one millisecond too old
            click(at - click_window, 2, 1, 2),     // exactly 30 days: in
            imp(at - view_window - 1, 3, 1, 3),    // view-through too old
            imp(at - view_window, 4, 1, 4),        // exactly one day: in
            click(at + 1, 5, 1, 5),                // after the conversion
            imp(at + 1, 6, 1, 6),
        ];
        let ads: Vec<i64> = journey(&path, at, w).iter().map(|t| t.ad_id).collect();
        assert_eq!(ads, vec![2, 4]);
        assert_eq!(check(Model::LastClick, &path, at, 10), vec![(2, 1_000_000, 10)]);
        assert_eq!(check(Model::FirstTouch, &path, at, 10), vec![(2, 1_000_000, 10)]);
        assert_eq!(check(Model::PositionBased, &path, at, 10), vec![(2, 500_000, 5), (4, 500_000, 5)]);
        // Nothing in the windows: unattributed.
        assert!(journey(&path[..1], at, w).is_empty());
        assert!(check(Model::Linear, &path[..1], at, 10).is_empty());
    }

    #[test]
    fn an_advertisers_own_windows_and_half_life_shape_the_journey() {
        let at = 40 * DAY;
        let path = [
            click(at - 20 * DAY, 1, 1, 1), // in a 30-day window, not in a 14-day one
            click(at - 14 * DAY, 2, 1, 2), // exactly 14 days: in
            imp(at - 2 * DAY, 3, 1, 3),    // in a 3-day view-through window only
            click(at - DAY, 4, 1, 4),
        ];
        let fortnight = Windows::new(14, 3, 1).expect("valid");
        let ads: Vec<i64> = journey(&path, at, fortnight).iter().map(|t| t.ad_id).collect();
        assert_eq!(ads, vec![2, 3, 4]);
        let ads: Vec<i64> = journey(&path, at, Windows::default()).iter().map(|t| t.ad_id).collect();
        assert_eq!(ads, vec![1, 2, 4]);
        // View-through off: impressions never count, even a minute old.
        let clicks_only = Windows::new(14, 0, 7).expect("valid");
        assert!(journey(&[imp(at - 60_000, 5, 1, 5)], at, clicks_only).is_empty());
        // A one-day half-life: ages 14, 2 and 1 days weigh 2^-14 : 2^-2 : 2^-1, so of
        // 1 000 000 micros the touches get 81.37, 333 306.2 and 666 612.4: floors 81,
        // 333 306 and 666 612, and the one micro left to the largest remainder.
        let j = journey(&path, at, fortnight);
        let s: Vec<(i64, i64)> = shares(Model::TimeDecay, &j, at, 1_000_000, fortnight)
            .iter()
            .map(|s| (s.ad_id, s.revenue_micros))
            .collect();
        assert_eq!(s, vec![(2, 81), (3, 333_306), (4, 666_613)]);
    }

    #[test]
    fn a_click_after_the_conversion_leaves_its_impression_a_view_through() {
        let path = [imp(0, 1, 1, 1), click(2 * HOUR, 1, 1, 1)];
        assert_eq!(journey(&path, HOUR, Windows::default()), vec![path[0]]);
        assert_eq!(journey(&path, 3 * HOUR, Windows::default()), vec![path[1]]);
    }

    #[test]
    fn equal_timestamps_keep_commit_order_and_ties_go_to_the_later_touch() {
        let path = [click(HOUR, 1, 1, 1), click(HOUR, 2, 1, 2)];
        assert_eq!(check(Model::LastClick, &path, HOUR, 7), vec![(2, 1_000_000, 7)]);
        assert_eq!(check(Model::FirstTouch, &path, HOUR, 7), vec![(1, 1_000_000, 7)]);
        assert_eq!(check(Model::Linear, &path, HOUR, 7), vec![(1, 500_000, 3), (2, 500_000, 4)]);
        assert_eq!(check(Model::TimeDecay, &path, HOUR, 7), vec![(1, 500_000, 3), (2, 500_000, 4)]);
    }

    #[test]
    fn revenue_remainders() {
        let path = [click(0, 1, 1, 1), click(1, 2, 1, 2), click(2, 3, 1, 3)];
        // 2 micros over three equal shares: each remainder is 2/3, ties to the later.
        assert_eq!(check(Model::Linear, &path, 3, 2), vec![(1, 333_333, 0), (2, 333_333, 1), (3, 333_334, 1)]);
        // 1 micro at 40/20/40: remainders 2/5, 1/5, 2/5 — the later of the two largest.
        assert_eq!(check(Model::PositionBased, &path, 3, 1), vec![(1, 400_000, 0), (2, 200_000, 0), (3, 400_000, 1)]);
        assert_eq!(allocate(10, &[1, 1, 1]), vec![3, 3, 4]);
        assert_eq!(allocate(11, &[1, 1, 1]), vec![3, 4, 4]);
        assert_eq!(allocate(0, &[1, 2]), vec![0, 0]);
        assert_eq!(allocate(i64::MAX, &[1, 1]), vec![i64::MAX / 2, i64::MAX / 2 + 1]);
    }

    #[test]
    fn position_based_with_many_touches() {
        let path: Vec<PathTouch> = (0..6).map(|i| click(i, i as u64, 1, i)).collect();
        // 40% | 5% ×4 | 40%
        let got = check(Model::PositionBased, &path, 10, 1_000);
        assert_eq!(
            got,
            vec![
                (0, 400_000, 400),
                (1, 50_000, 50),
                (2, 50_000, 50),
                (3, 50_000, 50),
                (4, 50_000, 50),
                (5, 400_000, 400)
            ]
        );
    }

    #[test]
    fn two_campaigns_and_other_users_in_one_report() {
        let at = 2 * DAY;
        let touches = [
            (1, imp(at - HOUR, 1, 10, 100)),  // user 1: campaign 10 opens
            (1, click(at - 30, 2, 20, 200)),  // user 1: campaign 20 closes
            (2, click(at - DAY, 3, 10, 101)), // user 2: campaign 10 only
            (3, click(at - 10, 4, 20, 200)),  // user 3 never converts
        ];
        let conversions = [
            ConversionFact { user_key: 1, at_ms: at, value_micros: 1_000 },
            ConversionFact { user_key: 2, at_ms: at, value_micros: 501 },
            ConversionFact { user_key: 9, at_ms: at, value_micros: 7 },
        ];
        let out = attribute(&Model::ALL, &conversions, touches.to_vec(), Windows::default());
        let rows = |m: Model| -> Vec<((i64, i64), i128, i128)> {
            out[&m].rows.iter().map(|(k, s)| (*k, s.credit, s.revenue_micros)).collect()
        };
        assert_eq!(rows(Model::LastClick), vec![((10, 101), 1_000_000, 501), ((20, 200), 1_000_000, 1_000)]);
        assert_eq!(rows(Model::FirstTouch), vec![((10, 100), 1_000_000, 1_000), ((10, 101), 1_000_000, 501)]);
        assert_eq!(
            rows(Model::Linear),
            vec![((10, 100), 500_000, 500), ((10, 101), 1_000_000, 501), ((20, 200), 500_000, 500)]
        );
        for m in Model::ALL {
            let r = &out[&m];
            assert_eq!(
                (r.conversions, r.revenue_micros, r.unattributed, r.unattributed_revenue_micros),
                (3, 1_508, 1, 7)
            );
            assert_eq!(r.rows.values().map(|s| s.credit).sum::<i128>(), 2 * i128::from(CREDIT_UNIT));
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn touch_strategy() -> impl Strategy<Value = PathTouch> {
            (0..40 * DAY, any::<bool>(), 0u64..20, 1i64..4, 1i64..6).prop_map(|(at_ms, is_click, d, c, a)| PathTouch {
                at_ms,
                kind: if is_click { TouchKind::Click } else { TouchKind::Impression },
                decision_id: Some(d),
                campaign_id: c,
                ad_id: a,
            })
        }

        proptest! {
            #[test]
            fn shares_always_sum_exactly(
                mut path in proptest::collection::vec(touch_strategy(), 0..40),
                at in 0..41 * DAY,
                value in 0i64..=1_000_000_000_000_000,
                (click_days, view_days, half_life_days) in (1u16..=90, 0u16..=30, 1u16..=90),
            ) {
                path.sort_by_key(|t| t.at_ms);
                let w = Windows::new(click_days, view_days.min(click_days), half_life_days).expect("in bounds");
                let j = journey(&path, at, w);
                for model in Model::ALL {
                    let s = shares(model, &j, at, value, w);
                    if j.is_empty() {
                        prop_assert!(s.is_empty());
                    } else {
                        prop_assert_eq!(s.iter().map(|s| s.credit).sum::<i64>(), CREDIT_UNIT);
                        prop_assert_eq!(s.iter().map(|s| s.revenue_micros).sum::<i64>(), value);
                        prop_assert!(s.iter().all(|s| s.credit >= 0 && s.revenue_micros >= 0));
                    }
                }
            }

            #[test]
            fn allocate_sums_exactly(total in 0i64..=i64::MAX, w in proptest::collection::vec(0u128..(1 << 42), 1..50)) {
                let parts = allocate(total, &w);
                if w.iter().sum::<u128>() > 0 {
                    prop_assert_eq!(parts.iter().map(|&p| i128::from(p)).sum::<i128>(), i128::from(total));
                }
            }
        }
    }
}

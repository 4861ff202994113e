//! Insights: alerts computed from a campaign's own history, each with the figures that
//! triggered it and one thing to do about it. Pure: the server passes eight weeks of
//! daily counts in the advertiser's time zone, this module decides.
//!
//! Never an alert on noise or on too little data. Every comparison of two rates (CTR,
//! conversion rate) is a one-sided **two-proportion z-test** with a pooled variance, and
//! fires only when all of these hold:
//!
//! - `z ≤ −`[`Z_CRITICAL`] (3.09, one-sided p < 0.001: strict, because every campaign is
//!   tested for several alerts every time someone looks);
//! - the drop is large enough to matter, not only significant (a relative threshold per
//!   kind, below);
//! - minimum samples: at least [`MIN_IMPRESSIONS`] impressions on each side and at least
//!   [`MIN_EXPECTED`] clicks (or conversions) expected in the period at the baseline rate,
//!   so that the normal approximation holds.
//!
//! The period is always the last [`PERIOD_DAYS`] complete local days (today is partial).
//!
//! | kind | baseline | fires when |
//! | --- | --- | --- |
//! | `ad_fatigue` | days 21–41 before the period's last day (the campaign's earlier weeks, ≥ 14 active days) | CTR ≥ 25% below baseline, significant; impressions steady (period daily average within 0.75–1.33× baseline); the two weeks between already below baseline (a decline, not a sudden break). Critical at ≥ 50% |
//! | `ctr_below_own_history` | the 28 days before the period (≥ 14 active days) | CTR ≥ 20% below, significant; not reported when `ad_fatigue` is (same evidence, fatigue is the more specific diagnosis). Warning at ≥ 40%, else info |
//! | `high_ctr_low_conversion` | the advertiser's own 7 weeks before the period (all campaigns), else the platform's, whichever has ≥ 1 000 clicks and ≥ 30 conversions | ≥ [`MIN_CLICKS_FOR_CONVERSION`] clicks in the period, CTR at least the reference's, conversion rate (conversions per click) ≤ 50% of the reference's, significant, ≥ 10 conversions expected. Critical below 25% |
//! | `budget_pacing` (daily) | the period | the daily budget was ≥ 98% spent before 18:00 local on ≥ 3 of the 7 days |
//! | `budget_pacing` (total) | from today to the end date | at the spend rate of the period's active days (≥ 5) the remaining total budget will be < 80% spent by the end date. Warning below 50%, else info; the action names the daily budget when it cannot spend what is left |

use jiff::civil::Date;
use jiff::Span;

/// Days of history the server passes: eight weeks, ending with the last complete day.
pub const HISTORY_DAYS: usize = 56;
/// The period an alert is about: the last week.
pub const PERIOD_DAYS: usize = 7;
/// One-sided p < 0.001.
pub const Z_CRITICAL: f64 = 3.09;
/// Impressions needed on each side of a CTR comparison.
pub const MIN_IMPRESSIONS: i64 = 2_000;
/// Events (clicks or conversions) the period must be expected to have at the
/// baseline's rate.
pub const MIN_EXPECTED: f64 = 30.0;
/// "Many clicks" for `high_ctr_low_conversion`.
pub const MIN_CLICKS_FOR_CONVERSION: i64 = 200;
/// The daily budget counts as spent at 98%: the last impressions of a day rarely fit
/// the remainder exactly.
const SPENT_FRACTION: f64 = 0.98;
/// Spent before 18:00 local (three quarters of the day) is "early".
const EARLY_MINUTE: u32 = 18 * 60;

/// One local day of a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DayCounts {
    pub impressions: i64,
    pub clicks: i64,
    pub conversions: i64,
    pub spend_micros: i64,
    /// Minutes after local midnight when the day's spend reached the daily budget
    /// (see [`budget_spent_at`]); `None` when it did not.
    pub budget_spent_at_minute: Option<u32>,
}

/// Clicks, conversions and impressions to compare a conversion rate with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reference {
    /// `advertiser` (its own history) or `platform`.
    pub source: &'static str,
    pub impressions: i64,
    pub clicks: i64,
    pub conversions: i64,
}

/// What the insights of one campaign are computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignHistory {
    /// [`HISTORY_DAYS`] days, oldest first; the last is `last_day`.
    pub days: Vec<DayCounts>,
    /// The last complete local day (yesterday).
    pub last_day: Date,
    pub daily_budget_micros: Option<i64>,
    pub total_budget_micros: i64,
    /// Everything the campaign ever spent, today included.
    pub spent_total_micros: i64,
    /// Local date of the end, when the campaign has one.
    pub end_date: Option<Date>,
    pub pacing_even: bool,
    /// Candidates in order of preference; the first with enough data is used.
    pub references: Vec<Reference>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InsightKind {
    AdFatigue,
    HighCtrLowConversion,
    CtrBelowOwnHistory,
    BudgetPacing,
}

impl InsightKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdFatigue => "ad_fatigue",
            Self::HighCtrLowConversion => "high_ctr_low_conversion",
            Self::CtrBelowOwnHistory => "ctr_below_own_history",
            Self::BudgetPacing => "budget_pacing",
        }
    }
}

/// One figure of an alert's evidence.
#[derive(Debug, Clone, PartialEq)]
pub enum Figure {
    Int(i64),
    /// A rate or ratio; percentages are named `*_percent`.
    Number(f64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Insight {
    pub kind: InsightKind,
    pub severity: Severity,
    /// Inclusive local dates.
    pub period: (Date, Date),
    pub baseline: (Date, Date),
    pub evidence: Vec<(&'static str, Figure)>,
    pub action: String,
}

/// The pooled two-proportion z statistic of `x1/n1 − x2/n2`; `None` when a side is
/// empty or the pooled rate is 0 or 1 (no variance to test against). Successes are
/// clamped to trials (view-through conversions can outnumber clicks).
pub fn two_proportion_z(x1: i64, n1: i64, x2: i64, n2: i64) -> Option<f64> {
    if n1 <= 0 || n2 <= 0 {
        return None;
    }
    let (x1, x2) = (x1.clamp(0, n1) as f64, x2.clamp(0, n2) as f64);
    let (n1, n2) = (n1 as f64, n2 as f64);
    let pooled = (x1 + x2) / (n1 + n2);
    let variance = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2);
    if variance <= 0.0 {
        return None;
    }
    Some((x1 / n1 - x2 / n2) / variance.sqrt())
}

/// When cumulative spend first reached the daily budget: `quarters` are one local day's
/// (minute after midnight, spend) in time order.
pub fn budget_spent_at(quarters: &[(u32, i64)], daily_budget_micros: i64) -> Option<u32> {
    if daily_budget_micros <= 0 {
        return None;
    }
    let threshold = daily_budget_micros as f64 * SPENT_FRACTION;
    let mut spent: i128 = 0;
    for &(minute, spend) in quarters {
        spent += i128::from(spend);
        if spent as f64 >= threshold {
            // The quarter hour's end: the budget was gone by then.
            return Some(minute + 15);
        }
    }
    None
}

#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    impressions: i64,
    clicks: i64,
    conversions: i64,
    spend_micros: i64,
    active_days: i64,
}

impl Sums {
    fn of(days: &[DayCounts]) -> Self {
        let mut s = Sums::default();
        for d in days {
            s.impressions = s.impressions.saturating_add(d.impressions);
            s.clicks = s.clicks.saturating_add(d.clicks);
            s.conversions = s.conversions.saturating_add(d.conversions);
            s.spend_micros = s.spend_micros.saturating_add(d.spend_micros);
            s.active_days += i64::from(d.impressions > 0);
        }
        s
    }
    fn ctr(&self) -> f64 {
        if self.impressions > 0 {
            self.clicks as f64 / self.impressions as f64
        } else {
            0.0
        }
    }
    fn daily_impressions(&self) -> f64 {
        if self.active_days > 0 {
            self.impressions as f64 / self.active_days as f64
        } else {
            0.0
        }
    }
}

fn round(x: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (x * scale).round() / scale
}

/// A CTR fall of period against baseline that passes the test, as (relative drop, z).
fn ctr_drop(period: &Sums, baseline: &Sums, min_drop: f64) -> Option<(f64, f64)> {
    if period.impressions < MIN_IMPRESSIONS || baseline.impressions < MIN_IMPRESSIONS {
        return None;
    }
    if baseline.clicks < MIN_EXPECTED as i64 || period.impressions as f64 * baseline.ctr() < MIN_EXPECTED {
        return None;
    }
    let z = two_proportion_z(period.clicks, period.impressions, baseline.clicks, baseline.impressions)?;
    let drop = 1.0 - period.ctr() / baseline.ctr();
    (z <= -Z_CRITICAL && drop >= min_drop).then_some((drop, z))
}

fn ctr_evidence(period: &Sums, baseline: &Sums, drop: f64, z: f64) -> Vec<(&'static str, Figure)> {
    vec![
        ("impressions", Figure::Int(period.impressions)),
        ("clicks", Figure::Int(period.clicks)),
        ("ctr_percent", Figure::Number(round(period.ctr() * 100.0, 4))),
        ("baseline_impressions", Figure::Int(baseline.impressions)),
        ("baseline_clicks", Figure::Int(baseline.clicks)),
        ("baseline_ctr_percent", Figure::Number(round(baseline.ctr() * 100.0, 4))),
        ("relative_change_percent", Figure::Number(round(-drop * 100.0, 2))),
        ("z", Figure::Number(round(z, 2))),
    ]
}

/// Every alert the history supports, most severe first.
pub fn insights(h: &CampaignHistory) -> Vec<Insight> {
    let mut out = Vec::new();
    if h.days.len() != HISTORY_DAYS {
        return out;
    }
    let date_of = |index: usize| {
        h.last_day.checked_sub(Span::new().days((HISTORY_DAYS - 1 - index) as i64)).unwrap_or(h.last_day)
    };
    let range = |from: usize, to: usize| (date_of(from), date_of(to));
    let p_from = HISTORY_DAYS - PERIOD_DAYS;
    let last = HISTORY_DAYS - 1;
    let period = Sums::of(&h.days[p_from..]);
    let period_dates = range(p_from, last);

    // ad_fatigue: days 21–41 before the last day against the period, steady volume.
    let (f_from, f_to) = (last - 41, last - 21);
    let fatigue_base = Sums::of(&h.days[f_from..=f_to]);
    let between = Sums::of(&h.days[f_to + 1..p_from]);
    let mut fatigued = false;
    if fatigue_base.active_days >= 14 && period.active_days >= 5 {
        let volume = period.daily_impressions() / fatigue_base.daily_impressions().max(1.0);
        if let Some((drop, z)) = ctr_drop(&period, &fatigue_base, 0.25) {
            if (0.75..=4.0 / 3.0).contains(&volume) && between.impressions > 0 && between.ctr() < fatigue_base.ctr() {
                fatigued = true;
                let mut evidence = ctr_evidence(&period, &fatigue_base, drop, z);
                evidence.push(("between_ctr_percent", Figure::Number(round(between.ctr() * 100.0, 4))));
                evidence.push(("daily_impressions_ratio", Figure::Number(round(volume, 3))));
                out.push(Insight {
                    kind: InsightKind::AdFatigue,
                    severity: if drop >= 0.5 { Severity::Critical } else { Severity::Warning },
                    period: period_dates,
                    baseline: range(f_from, f_to),
                    evidence,
                    action: "Refresh the creative: add a new ad or change the headline and image; the audience has \
                             seen this one too often."
                        .into(),
                });
            }
        }
    }

    // ctr_below_own_history: the trailing 28 days before the period.
    let (t_from, t_to) = (p_from - 28, p_from - 1);
    let trailing = Sums::of(&h.days[t_from..=t_to]);
    if !fatigued && trailing.active_days >= 14 {
        if let Some((drop, z)) = ctr_drop(&period, &trailing, 0.20) {
            out.push(Insight {
                kind: InsightKind::CtrBelowOwnHistory,
                severity: if drop >= 0.4 { Severity::Warning } else { Severity::Info },
                period: period_dates,
                baseline: range(t_from, t_to),
                evidence: ctr_evidence(&period, &trailing, drop, z),
                action: "Check what changed this week (placements, targeting, ads); pause the placements or ads \
                         whose CTR fell most."
                    .into(),
            });
        }
    }

    // high_ctr_low_conversion: many clicks that convert far worse than usual.
    let reference = h.references.iter().find(|r| r.clicks >= 1_000 && r.conversions >= 30);
    if let Some(r) = reference.filter(|_| period.clicks >= MIN_CLICKS_FOR_CONVERSION) {
        let ref_rate = r.conversions.min(r.clicks) as f64 / r.clicks as f64;
        let ref_ctr = if r.impressions > 0 { r.clicks as f64 / r.impressions as f64 } else { 0.0 };
        let rate = period.conversions.min(period.clicks) as f64 / period.clicks as f64;
        let expected = period.clicks as f64 * ref_rate;
        let z = two_proportion_z(period.conversions, period.clicks, r.conversions, r.clicks);
        if let Some(z) = z.filter(|z| *z <= -Z_CRITICAL) {
            if expected >= 10.0 && rate <= 0.5 * ref_rate && period.ctr() >= ref_ctr {
                out.push(Insight {
                    kind: InsightKind::HighCtrLowConversion,
                    severity: if rate < 0.25 * ref_rate { Severity::Critical } else { Severity::Warning },
                    period: period_dates,
                    baseline: range(0, p_from - 1),
                    evidence: vec![
                        ("clicks", Figure::Int(period.clicks)),
                        ("conversions", Figure::Int(period.conversions)),
                        ("conversion_rate_percent", Figure::Number(round(rate * 100.0, 4))),
                        ("ctr_percent", Figure::Number(round(period.ctr() * 100.0, 4))),
                        ("reference", Figure::Text(r.source.into())),
                        ("reference_clicks", Figure::Int(r.clicks)),
                        ("reference_conversions", Figure::Int(r.conversions)),
                        ("reference_conversion_rate_percent", Figure::Number(round(ref_rate * 100.0, 4))),
                        ("reference_ctr_percent", Figure::Number(round(ref_ctr * 100.0, 4))),
                        ("expected_conversions", Figure::Number(round(expected, 1))),
                        ("z", Figure::Number(round(z, 2))),
                    ],
                    action: "The ad gets clicks that do not convert: check the landing page (speed, broken form, \
                             mismatch with the ad's promise) and the conversion tag."
                        .into(),
                });
            }
        }
    }

    // budget_pacing, daily: the budget is gone before the evening.
    if let Some(daily) = h.daily_budget_micros.filter(|d| *d > 0) {
        let early: Vec<u32> =
            h.days[p_from..].iter().filter_map(|d| d.budget_spent_at_minute).filter(|m| *m <= EARLY_MINUTE).collect();
        if early.len() >= 3 {
            let mut sorted = early.clone();
            sorted.sort_unstable();
            let median = sorted[sorted.len() / 2];
            let action = if h.pacing_even {
                "Raise the daily budget: the campaign misses the rest of each day's traffic."
            } else {
                "Switch pacing to even or raise the daily budget: the campaign misses the rest of each day's traffic."
            };
            out.push(Insight {
                kind: InsightKind::BudgetPacing,
                severity: Severity::Warning,
                period: period_dates,
                baseline: period_dates,
                evidence: vec![
                    ("daily_budget_micros", Figure::Int(daily)),
                    ("days_spent_early", Figure::Int(early.len() as i64)),
                    ("days", Figure::Int(PERIOD_DAYS as i64)),
                    ("median_spent_at", Figure::Text(format!("{:02}:{:02}", median / 60, median % 60))),
                ],
                action: action.into(),
            });
        }
    }

    // budget_pacing, total: at this rate the budget will not be spent by the end date.
    let today = h.last_day.tomorrow().unwrap_or(h.last_day);
    if let Some(end) = h.end_date.filter(|e| *e >= today) {
        let days_left = (end - today).get_days() as i64 + 1;
        let remaining = h.total_budget_micros.saturating_sub(h.spent_total_micros);
        if period.active_days >= 5 && remaining > 0 {
            // The rate of the days it ran: a campaign five days old, or paused two days
            // of the seven, is not behind by the days it did not run.
            let rate = period.spend_micros as f64 / period.active_days as f64;
            let projected = rate * days_left as f64;
            let share = projected / remaining as f64;
            // When the daily budget cannot spend what is left, no bid or targeting can.
            let capped_by_daily = h.daily_budget_micros.is_some_and(|d| d.saturating_mul(days_left) < remaining);
            let action = if capped_by_daily {
                "Raise the daily budget: even spent in full every day, it leaves part of the total budget \
                 unspent by the end date. Or lower the total budget."
            } else {
                "Raise the bid or widen the targeting (devices, placements) to spend the budget by the end date, \
                 or lower the budget."
            };
            if share < 0.8 {
                out.push(Insight {
                    kind: InsightKind::BudgetPacing,
                    severity: if share < 0.5 { Severity::Warning } else { Severity::Info },
                    period: period_dates,
                    baseline: (today, end),
                    evidence: vec![
                        ("total_budget_micros", Figure::Int(h.total_budget_micros)),
                        ("remaining_budget_micros", Figure::Int(remaining)),
                        ("daily_spend_micros", Figure::Int(rate.round() as i64)),
                        ("days_left", Figure::Int(days_left)),
                        ("projected_spend_micros", Figure::Int(projected.round().min(i64::MAX as f64) as i64)),
                        ("projected_percent_of_remaining", Figure::Number(round(share * 100.0, 1))),
                    ],
                    action: action.into(),
                });
            }
        }
    }

    out.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.kind.cmp(&b.kind)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    /// A deterministic generator (SplitMix64) for noisy series.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
        fn binomial(&mut self, n: i64, p: f64) -> i64 {
            (0..n).filter(|_| self.next() < p).count() as i64
        }
    }

    fn history(days: Vec<DayCounts>) -> CampaignHistory {
        CampaignHistory {
            days,
            last_day: date(2026, 11, 19),
            daily_budget_micros: None,
            total_budget_micros: 1_000_000_000,
            spent_total_micros: 0,
            end_date: None,
            pacing_even: true,
            references: vec![],
        }
    }

    /// Days with `impressions` each and the CTR `ctr(day index)`, clicks drawn at random.
    fn series(seed: u64, impressions: impl Fn(usize) -> i64, ctr: impl Fn(usize) -> f64) -> Vec<DayCounts> {
        let mut rng = Rng(seed);
        (0..HISTORY_DAYS)
            .map(|i| {
                let n = impressions(i);
                DayCounts {
                    impressions: n,
                    clicks: rng.binomial(n, ctr(i)),
                    spend_micros: n * 2_000,
                    ..Default::default()
                }
            })
            .collect()
    }

    fn kinds(h: &CampaignHistory) -> Vec<&'static str> {
        insights(h).iter().map(|i| i.kind.as_str()).collect()
    }

    #[test]
    fn z_test() {
        // 2% of 10 000 against 3% of 10 000: pooled 2.5%, se = √(0.025·0.975·2/10 000) ≈ 0.002208, z ≈ −4.529.
        let z = two_proportion_z(200, 10_000, 300, 10_000).expect("variance");
        assert!((z + 4.529).abs() < 0.001, "{z}");
        assert_eq!(two_proportion_z(0, 0, 1, 10), None);
        assert_eq!(two_proportion_z(0, 10, 0, 10), None);
        assert!(two_proportion_z(20, 10, 5, 10).is_some(), "clamped, not a panic");
    }

    #[test]
    fn fatigue_fires_on_a_steady_campaign_whose_ctr_declines() {
        // 1 000 impressions a day; CTR 3% for five weeks of the eight, then 2.4%, 1.8%, 1.2%.
        let ctr = |i: usize| match i {
            0..35 => 0.03,
            35..42 => 0.024,
            42..49 => 0.018,
            _ => 0.012,
        };
        let h = history(series(1, |_| 1_000, ctr));
        let found = insights(&h);
        assert_eq!(found.iter().map(|i| i.kind.as_str()).collect::<Vec<_>>(), ["ad_fatigue"]);
        let f = &found[0];
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.period, (date(2026, 11, 13), date(2026, 11, 19)));
        assert_eq!(f.baseline, (date(2026, 10, 9), date(2026, 10, 29)));
        assert!(f.evidence.iter().any(|(k, _)| *k == "z"));
    }

    #[test]
    fn a_drop_with_changed_volume_is_ctr_below_own_history() {
        // Volume tripled last week (new placements) and CTR halved: not fatigue.
        let h = history(series(2, |i| if i >= 49 { 3_000 } else { 1_000 }, |i| if i >= 49 { 0.015 } else { 0.03 }));
        let found = insights(&h);
        assert_eq!(found.iter().map(|i| i.kind.as_str()).collect::<Vec<_>>(), ["ctr_below_own_history"]);
        assert_eq!(found[0].severity, Severity::Warning);
        assert_eq!(found[0].baseline, (date(2026, 10, 16), date(2026, 11, 12)));
    }

    #[test]
    fn silent_on_noise() {
        for seed in 0..20 {
            let h = history(series(seed, |_| 1_000, |_| 0.03));
            assert!(kinds(&h).is_empty(), "seed {seed}: {:?}", insights(&h));
        }
    }

    #[test]
    fn silent_on_small_samples() {
        // CTR from 4% to nothing, but on 100 impressions a day.
        let h = history(series(3, |_| 100, |i| if i >= 49 { 0.0 } else { 0.04 }));
        assert!(kinds(&h).is_empty());
        // A campaign that is two weeks old has no earlier weeks.
        let h = history(series(4, |i| if i >= 42 { 2_000 } else { 0 }, |i| if i >= 49 { 0.01 } else { 0.03 }));
        assert!(kinds(&h).is_empty());
    }

    #[test]
    fn high_ctr_low_conversion_against_the_advertisers_history() {
        let mut days = series(5, |_| 2_000, |_| 0.03);
        for d in &mut days[HISTORY_DAYS - PERIOD_DAYS..] {
            d.conversions = 1; // 7 of ~420 clicks: 1.7% against 10%
        }
        let mut h = history(days);
        let own = Reference { source: "advertiser", impressions: 200_000, clicks: 5_000, conversions: 500 };
        h.references = vec![own];
        let found = insights(&h);
        assert_eq!(found.iter().map(|i| i.kind.as_str()).collect::<Vec<_>>(), ["high_ctr_low_conversion"]);
        assert_eq!(found[0].severity, Severity::Critical);
        assert!(found[0].evidence.contains(&("reference", Figure::Text("advertiser".into()))));
        // Too little reference history: the platform's is used instead, or nothing.
        h.references = vec![Reference { conversions: 10, ..own }];
        assert!(kinds(&h).is_empty());
        h.references.push(Reference { source: "platform", ..own });
        assert_eq!(kinds(&h), ["high_ctr_low_conversion"]);
        // A usual conversion rate is silent.
        for d in &mut h.days[HISTORY_DAYS - PERIOD_DAYS..] {
            d.conversions = d.clicks / 10;
        }
        assert!(kinds(&h).is_empty());
    }

    #[test]
    fn high_ctr_low_conversion_needs_many_clicks() {
        let mut h = history(series(6, |_| 500, |_| 0.03)); // ~105 clicks in the week
        h.references = vec![Reference { source: "advertiser", impressions: 200_000, clicks: 5_000, conversions: 500 }];
        assert!(kinds(&h).is_empty());
    }

    #[test]
    fn budget_spent_before_the_evening() {
        let quarters: Vec<(u32, i64)> = (0..96).map(|q| (q * 15, 10_000)).collect();
        assert_eq!(budget_spent_at(&quarters, 500_000), Some(48 * 15 + 15)); // 98% = 490 000: in the 49th quarter
        assert_eq!(budget_spent_at(&quarters, 10_000_000), None);
        let mut days = series(7, |_| 1_000, |_| 0.03);
        let mut h = history(days.clone());
        h.daily_budget_micros = Some(500_000);
        for (i, d) in days.iter_mut().enumerate().skip(HISTORY_DAYS - PERIOD_DAYS) {
            d.budget_spent_at_minute = Some(if i % 2 == 0 { 14 * 60 } else { 23 * 60 });
        }
        h.days = days;
        let found = insights(&h);
        assert_eq!(found.iter().map(|i| i.kind.as_str()).collect::<Vec<_>>(), ["budget_pacing"]);
        assert!(found[0].evidence.contains(&("days_spent_early", Figure::Int(3))));
        assert!(found[0].evidence.contains(&("median_spent_at", Figure::Text("14:00".into()))));
        // Two early days are not a pattern.
        for d in h.days.iter_mut().skip(HISTORY_DAYS - 3) {
            d.budget_spent_at_minute = None;
        }
        assert!(kinds(&h).is_empty());
    }

    #[test]
    fn total_budget_not_spent_by_the_end_date() {
        // 2 000 000 a day; 30 days left including today; 100 000 000 remaining: 60%.
        let mut h = history(series(8, |_| 1_000, |_| 0.03));
        h.total_budget_micros = 200_000_000;
        h.spent_total_micros = 100_000_000;
        h.end_date = Some(date(2026, 12, 19));
        let found = insights(&h);
        assert_eq!(found.iter().map(|i| i.kind.as_str()).collect::<Vec<_>>(), ["budget_pacing"]);
        assert_eq!(found[0].severity, Severity::Info);
        assert_eq!(found[0].baseline, (date(2026, 11, 20), date(2026, 12, 19)));
        assert!(found[0].evidence.contains(&("projected_spend_micros", Figure::Int(60_000_000))));
        // On pace: silent. Ended: silent.
        h.spent_total_micros = 150_000_000;
        assert!(kinds(&h).is_empty());
        h.spent_total_micros = 0;
        h.end_date = Some(date(2026, 11, 1));
        assert!(kinds(&h).is_empty());
    }

    /// The rate is that of the days the campaign ran: five days old and exactly on plan
    /// (2 000 000 a day, 30 days for 60 000 000 left) is not behind.
    #[test]
    fn a_young_campaign_on_plan_is_not_behind() {
        let last = HISTORY_DAYS - 5;
        let mut h = history(series(9, |i| if i >= last { 1_000 } else { 0 }, |_| 0.03));
        h.total_budget_micros = 70_000_000;
        h.spent_total_micros = 10_000_000;
        h.end_date = Some(date(2026, 12, 19));
        assert!(kinds(&h).is_empty(), "{:?}", insights(&h));
        // Behind for real (half the rate): said, with the bid as the lever.
        h.total_budget_micros = 130_000_000;
        let found = insights(&h);
        assert_eq!(found.iter().map(|i| i.kind.as_str()).collect::<Vec<_>>(), ["budget_pacing"]);
        assert!(found[0].action.starts_with("Raise the bid"), "{}", found[0].action);
        // A daily budget that cannot spend what is left: the daily budget is the lever.
        h.daily_budget_micros = Some(3_000_000);
        let found = insights(&h);
        assert!(found.iter().any(|i| i.action.starts_with("Raise the daily budget")), "{found:?}");
    }
}
